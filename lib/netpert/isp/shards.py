"""A stratum's ISP screen split into jobs of cells (``isp.cells_per_job``), and joined again.

Shard ``k`` of a stratum whose token file holds ``n`` cells is the cells ``[k * c, min((k + 1) * c, n))``
(``c`` = ``isp.cells_per_job``) with every perturbation of those cells: a cell and all its
perturbations stay in one job, so the gene shifts (which need the cell's own token states) are
computed in the job, as in the unsplit run. ``isp_infer`` runs one shard
(:func:`netpert.isp.runner.infer_stratum` with ``shard``), ``isp_merge`` joins a stratum's shards
(:func:`merge_shards`) into the stratum's own records, which ``isp_evaluate`` and the report read
as if one job had run them: the arrays in the unsplit order (cells in token-file order, each cell's
perturbations after it), the times summed over the shards, the memory of the largest shard.

How many shards a stratum has is known before its token file exists: the token file holds
``min(stratum cells, isp.cells_per_stratum)`` cells (:func:`netpert.isp.tokens.tokenize_stratum`
never drops a cell; a cell without tokens is an error), and the stratum's cell count is in the
strata checkpoint's table (``n_output``), so the workflow plans the shards from the config and
that table (:func:`planned_shards`); :func:`merge_shards` checks that the shards cover the token
file's cells exactly once.

What is equal to the unsplit run: the cells, perturbations and labels always; the embeddings and
effects bit for bit wherever every batch holds the same sequences as in the unsplit run (batch
size 1, or batches that do not cross a shard's border), and otherwise to the last bits of float32
(a sequence's embedding depends on the padded length and shape of the batch it is run in; int8
methods that quantise activations per batch also on the batch's other sequences):
tests/test_isp_shards.py measures both.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Sequence

import numpy as np

from netpert.errors import InputError
from netpert.isp.records import (
    NOT_RUN,
    OK,
    RESULT_ARRAYS,
    SHARD_KEYS,
    SHARD_SUMMARY_KEYS,
    PerfRecord,
    empty_result_arrays,
    read_perf,
    read_result,
    write_perf,
    write_result,
)

log = logging.getLogger(__name__)

#: result arrays with one row per cell / per perturbation (joined in shard order); ``cell_index``
#: is per perturbation and moves by the shard's first cell; the skipped counts are summed by label
CELL_ARRAYS = ("cell_ids", "original")
PERTURBATION_ARRAYS = ("perturbed", "perturbation", "cell_index", "kind", "targets", "cosine", "cell_shift",
                       "n_genes_compared", "top_genes", "top_cosines")
SKIPPED_ARRAYS = ("skipped_labels", "skipped_counts")
if set(CELL_ARRAYS + PERTURBATION_ARRAYS + SKIPPED_ARRAYS) != set(RESULT_ARRAYS):  # pragma: no cover - layout guard
    raise ImportError("netpert.isp.shards does not know how to join every array of RESULT_ARRAYS")


def check_cells_per_job(cells_per_job) -> int:
    """``isp.cells_per_job`` as an int; an InputError when it is not a positive integer."""
    if isinstance(cells_per_job, bool) or not isinstance(cells_per_job, (int, np.integer)) or int(cells_per_job) < 1:
        raise InputError(f"isp.cells_per_job must be a positive integer (or null: one job per stratum), got {cells_per_job!r}")
    return int(cells_per_job)


def n_shards(n_cells: int, cells_per_job: int) -> int:
    """How many shards ``n_cells`` cells make (the last one may be smaller)."""
    cells_per_job = check_cells_per_job(cells_per_job)
    if int(n_cells) < 1:
        raise InputError(f"a stratum of {n_cells} cells has no shard")
    return -(-int(n_cells) // cells_per_job)


def token_cells(stratum_cells: int, cells_per_stratum: int | None) -> int:
    """The cells of the token file of a stratum of ``stratum_cells`` cells (the strata table's
    ``n_output``): at most ``cells_per_stratum`` of them (``isp.cells_per_stratum``)."""
    return int(stratum_cells) if cells_per_stratum is None else min(int(stratum_cells), int(cells_per_stratum))


def planned_shards(stratum_cells: int, cells_per_stratum: int | None, cells_per_job: int) -> int:
    """The shards of a stratum of ``stratum_cells`` cells (the strata table's ``n_output``): its
    token file holds at most ``cells_per_stratum`` of them (``isp.cells_per_stratum``)."""
    return n_shards(token_cells(stratum_cells, cells_per_stratum), cells_per_job)


def shard_share(stratum_cells: int, cells_per_stratum: int | None, cells_per_job: int, shard: int) -> float:
    """The share of the stratum's screen that shard ``shard`` runs: its cells over the token file's
    (each cell with all its perturbations; the workflow sizes the shard's time request by it)."""
    n = token_cells(stratum_cells, cells_per_stratum)
    first, stop = shard_bounds(n, cells_per_job, shard)
    return (stop - first) / n


def shard_bounds(n_cells: int, cells_per_job: int, shard: int) -> tuple[int, int]:
    """``(first, stop)``: the cells of shard ``shard`` of ``n_cells``."""
    total = n_shards(n_cells, cells_per_job)
    shard = int(shard)
    if not 0 <= shard < total:
        raise InputError(
            f"shard {shard} does not exist: {n_cells} cells make {total} shard(s) of {cells_per_job} cells; "
            "the workflow planned more shards than the token file has cells for: rerun isp_tokenize and isp_infer"
        )
    first = shard * int(cells_per_job)
    return first, min(first + int(cells_per_job), int(n_cells))


def select_shard(tokens, cells_per_job: int, shard: int):
    """``(token file of the shard's cells, shard facts)`` of a :class:`~netpert.isp.tokens.TokenFile`
    (the perturbation plan and metadata unchanged); the facts are :data:`SHARD_KEYS`."""
    n = len(tokens.cell_ids)
    first, stop = shard_bounds(n, cells_per_job, shard)
    part = dataclasses.replace(tokens, cell_ids=tokens.cell_ids[first:stop], input_ids=tokens.input_ids[first:stop])
    info = dict(zip(SHARD_KEYS, (int(shard), n_shards(n, cells_per_job), first, stop - first, n, int(cells_per_job))))
    return part, info


# --------------------------------------------------------------------------- joining


def merge_results(parts: Sequence[dict], firsts: Sequence[int]) -> dict[str, np.ndarray]:
    """The arrays of a stratum from its shards' (in shard order; ``firsts``: each shard's first cell)."""
    out = {}
    for name in CELL_ARRAYS + PERTURBATION_ARRAYS:
        arrays = [np.asarray(p[name]) for p in parts]
        if name == "cell_index":
            arrays = [a + int(f) for a, f in zip(arrays, firsts)]
        out[name] = np.concatenate(arrays)
    labels = [np.asarray(p["skipped_labels"]).astype(str) for p in parts]
    if any(not np.array_equal(labels[0], lab) for lab in labels):
        raise InputError("the shards ran different perturbation plans (skipped labels differ): rerun isp_infer for the stratum")
    out["skipped_labels"] = np.asarray(parts[0]["skipped_labels"])
    out["skipped_counts"] = np.sum([np.asarray(p["skipped_counts"], dtype=np.int64) for p in parts], axis=0).astype(np.int64)
    return out


def _sum(values):
    values = [float(v) for v in values if v is not None]
    return float(sum(values)) if values else None


def _max(values):
    values = [float(v) for v in values if v is not None]
    return max(values) if values else None


def _weighted(pairs):
    pairs = [(float(v), float(w)) for v, w in pairs if v is not None and w]
    total = sum(w for _, w in pairs)
    return sum(v * w for v, w in pairs) / total if total else None


def _summary(p: PerfRecord) -> dict:
    """One shard in a merged record's ``shards`` (:data:`SHARD_SUMMARY_KEYS`)."""
    out = {
        "index": p.shard["index"], "first_cell": p.shard["first_cell"], "n_cells": p.shard["n_cells"],
        "n_perturbations": p.n_perturbations, "status": p.status, "reason": p.reason, "device": p.device,
        "wall_s": p.wall_s, "cpu_time_s": p.cpu_time_s, "peak_rss_mb": p.peak_rss_mb, "process_peak_rss_mb": p.process_peak_rss_mb,
        "gpu_peak_mem_mb": p.gpu_peak_mem_mb, "cpu": (p.machine or {}).get("cpu"),
    }
    assert tuple(out) == SHARD_SUMMARY_KEYS
    return out


def merge_perfs(parts: Sequence[PerfRecord]) -> PerfRecord:
    """The perf record of a stratum from its shards' (in shard order).

    Times (wall, CPU, load, warm-up, embedding, effects; each repeat's) and counts are the
    shards' sums, as if one job had run the shards one after the other; the memory (peak RSS, GPU
    memory) and the other processes' load the largest shard's; CPU % and GPU use time-weighted;
    the rates recomputed from the sums. How it ran (batching, backend, model, machine) is the
    first shard's; ``shards`` keeps every shard's own figures, and a note says where shards ran
    on different CPUs or devices. A shard that did not run makes the stratum "not run", with the
    shards and the reason.
    """
    from netpert.isp.profiling import throughput

    if not parts:
        raise ValueError("no shard to merge")
    first = parts[0]
    shards = [_summary(p) for p in parts]
    base = dict(method=first.method, stratum=first.stratum, shards=shards, machine=first.machine, model=first.model,
                trained=first.trained)
    not_run = [p for p in parts if p.status != OK]
    if not_run:
        reasons = list(dict.fromkeys(str(p.reason) for p in not_run))
        which = ", ".join(str(p.shard["index"]) for p in not_run)
        reason = reasons[0] if len(not_run) == len(parts) and len(reasons) == 1 else (
            f"shard(s) {which} of {len(parts)} not run: {'; '.join(reasons)}")
        devices = list(dict.fromkeys(p.device for p in parts if p.device))
        return PerfRecord(**base, status=NOT_RUN, reason=reason, device=", ".join(devices) or None)
    repeats = {p.repeats for p in parts}
    if len(repeats) != 1 or any(len(p.wall_repeats_s) != p.repeats for p in parts):
        raise ValueError(f"shards of {first.method} / {first.stratum} ran different numbers of repeats: {sorted(repeats)}")
    n_pert = sum(int(p.n_perturbations) for p in parts)
    n_cells = sum(int(p.n_cells) for p in parts)
    n_seq = sum(int(p.n_sequences) for p in parts)
    wall = _sum(p.wall_s for p in parts)
    # padding over all shards: real tokens = sequences x mean length; padded = real / (1 - padding)
    real = [p.n_sequences * p.mean_length for p in parts if p.mean_length is not None]
    padded = [r / (1 - p.padding_fraction) for r, p in zip(real, parts) if p.padding_fraction is not None]
    skipped: dict[str, int] = {}
    for p in parts:
        for label, n in p.skipped.items():
            skipped[label] = skipped.get(label, 0) + int(n)
    notes = list(dict.fromkeys(n for p in parts for n in p.notes))
    cpus = list(dict.fromkeys(s["cpu"] for s in shards if s["cpu"]))
    devices = list(dict.fromkeys(p.device for p in parts if p.device))
    if len(cpus) > 1:
        notes.append(f"shards ran on {len(cpus)} different CPUs ({' | '.join(cpus)}): see 'shards'")
    if len(devices) > 1:
        notes.append(f"shards ran on different devices ({', '.join(devices)})")
    gpus = [p.gpu for p in parts if p.gpu]
    return PerfRecord(
        **base,
        status=OK,
        note="; ".join(notes) if notes else None,
        notes=notes,
        device=", ".join(devices) or None,
        n_cells=n_cells,
        n_perturbations=n_pert,
        n_sequences=n_seq,
        n_skipped=sum(int(p.n_skipped) for p in parts),
        skipped=skipped,
        wall_s=wall,
        wall_with_warmup_s=_sum(p.wall_with_warmup_s for p in parts),
        cpu_time_s=_sum(p.cpu_time_s for p in parts),
        cpu_percent=_weighted((p.cpu_percent, p.wall_s) for p in parts),
        peak_rss_mb=_max(p.peak_rss_mb for p in parts),
        process_peak_rss_mb=_max(p.process_peak_rss_mb for p in parts),
        repeats=first.repeats,
        wall_repeats_s=[float(sum(w)) for w in zip(*(p.wall_repeats_s for p in parts))],
        cpu_repeats_s=[float(sum(c)) for c in zip(*(p.cpu_repeats_s for p in parts))],
        other_load_cores=_max(p.other_load_cores for p in parts),
        **throughput(n_pert, n_cells, n_seq, wall),
        gpu=gpus[0] if gpus else None,
        gpu_util_percent=_weighted((p.gpu_util_percent, p.wall_s) for p in parts),
        gpu_peak_mem_mb=_max(p.gpu_peak_mem_mb for p in parts),
        load_s=_sum(p.load_s for p in parts),
        warmup_s=_sum(p.warmup_s for p in parts),
        embed_s=_sum(p.embed_s for p in parts),
        effects_s=_sum(p.effects_s for p in parts),
        n_batches=sum(int(p.n_batches or 0) for p in parts),
        padding_fraction=1 - sum(real) / sum(padded) if len(padded) == len(parts) and sum(padded) > 0 else None,
        mean_length=sum(real) / n_seq if len(real) == len(parts) and n_seq else None,
        max_length=max(int(p.max_length) for p in parts) if all(p.max_length is not None for p in parts) else None,
        batching=first.batching,
        batch_size=first.batch_size,
        threads=first.threads,
        layer=first.layer,
        amp_effective=first.amp_effective,
        amp_note=first.amp_note,
        backend=first.backend,
    )


def merge_shards(tokens_path, npz_paths: Sequence, perf_paths: Sequence, npz_out, perf_out) -> PerfRecord:
    """Rule ``isp_merge``: a stratum's shard records (``isp/{method}/{stratum}/shard_{k}.npz`` and
    ``.perf.json``) joined into its own (``isp/{method}/{stratum}.npz`` / ``.perf.json``), written
    atomically. The shards must be those of ``tokens_path`` (the stratum's token file): one method,
    one stratum, every shard once, covering its cells in order; anything else is an InputError
    naming the files. Returns the merged perf record."""
    from netpert.isp.tokens import read_tokens

    if len(npz_paths) != len(perf_paths) or not npz_paths:
        raise InputError(f"isp_merge needs one npz and one perf.json per shard, got {len(npz_paths)} and {len(perf_paths)}")
    perfs = [read_perf(p) for p in perf_paths]
    results = [read_result(p) for p in npz_paths]
    for path, p in zip(perf_paths, perfs):
        if p.shard is None:
            raise InputError(f"{path} is not a shard's record (no 'shard'): rerun isp_infer with isp.cells_per_job")
    for path, perf, r in zip(npz_paths, perfs, results):
        meta = r["metadata"]
        if (meta.get("method"), meta.get("stratum"), meta.get("shard")) != (perf.method, perf.stratum, perf.shard):
            raise InputError(f"{path} is not the shard its perf.json describes ({perf.method} / {perf.stratum} "
                             f"shard {perf.shard['index']}): rerun isp_infer")
    keys = {(p.method, p.stratum) for p in perfs}
    if len(keys) != 1:
        raise InputError(f"isp_merge got shards of several methods or strata: {sorted(keys)}")
    order = sorted(range(len(perfs)), key=lambda i: perfs[i].shard["index"])
    perfs, results = [perfs[i] for i in order], [results[i] for i in order]
    n = len(read_tokens(tokens_path).cell_ids)
    firsts = [p.shard["first_cell"] for p in perfs]
    stops = [p.shard["first_cell"] + p.shard["n_cells"] for p in perfs]
    expected = [shard_bounds(n, perfs[0].shard["cells_per_job"], k) for k in range(n_shards(n, perfs[0].shard["cells_per_job"]))]
    if list(zip(firsts, stops)) != expected or any(p.shard["cells_in_stratum"] != n for p in perfs):
        raise InputError(
            f"the shards of {perfs[0].method} / {perfs[0].stratum} cover cells {list(zip(firsts, stops))}, but "
            f"{tokens_path} holds {n} cells in the shards {expected}: rerun isp_infer for this stratum"
        )
    merged = merge_perfs(perfs)
    meta = {k: v for k, v in results[0]["metadata"].items() if k != "shard"}
    meta["shards"] = {"n_shards": len(perfs), "cells_per_job": perfs[0].shard["cells_per_job"]}
    if merged.status == OK:
        for path, perf, r in zip([npz_paths[i] for i in order], perfs, results):
            if len(r["cell_ids"]) != perf.shard["n_cells"]:
                raise InputError(f"{path} holds {len(r['cell_ids'])} cells, its record says {perf.shard['n_cells']}: rerun isp_infer")
        arrays = merge_results(results, firsts)
        meta["note"] = merged.note
    else:
        arrays = empty_result_arrays()
        meta.update(status=NOT_RUN, reason=merged.reason)
    write_result(npz_out, arrays, meta)
    write_perf(perf_out, merged)
    log.info("%s / %s: %d shard(s) joined, %d cells, %d perturbations, %s", merged.method, merged.stratum, len(perfs),
             merged.n_cells, merged.n_perturbations, merged.status)
    return merged

"""Running an in-silico perturbation screen through one inference method.

(Its inputs, the token files: :mod:`netpert.isp.tokens`; the files it writes: :mod:`netpert.isp.records`.)

* :func:`run_isp`: every cell's original encoding and its perturbations through a
  :class:`~netpert.isp.backends.base.Backend`, batched by a strategy (:func:`make_batches`),
  then per perturbation the cosine of the original and perturbed cell embeddings, Geneformer's
  cell shift (mean over the remaining genes of each gene's original-vs-perturbed cosine) and
  the most affected genes. Each cell's original is embedded once and reused.
* :func:`infer_stratum` (rule ``isp_infer``): load, run under the profiler, write
  ``{method}/{stratum}.npz`` and ``.perf.json`` (or "not run" records and the reason).

Batching strategies: ``input_order`` (Helical's: consecutive batches in the plan's order, a
cell's original then its perturbations), ``length_sorted`` (longest first: batches of near
equal length, little padding), ``cell_grouped`` (whole cells packed into batches: a cell's
original and its perturbations share a batch, needed where activations are quantised per
batch), ``cell`` (one cell per batch: one length but for the token a deletion removes, and a
cell's results independent of the other cells'). :func:`resolve_settings` turns a method's
batch size ``auto`` into the one its artifact was tuned to.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from netpert.errors import InputError
from netpert.isp import metrics
from netpert.isp.backends.base import pad_batch
from netpert.isp.methods import AUTO, BATCHINGS, get_method, run_check
from netpert.isp.perturb import PerturbationSpec, expand
from netpert.isp.records import (
    NOT_RUN,
    OK,
    PerfRecord,
    empty_result_arrays,
    write_perf,
    write_result,
)
from netpert.isp.tokens import read_tokens, special_ends

log = logging.getLogger(__name__)

DEFAULT_TOP_N = 10


# --------------------------------------------------------------------------- batching


def make_batches(lengths, groups, strategy: str = "length_sorted", batch_size: int = 32) -> list[np.ndarray]:
    """Item indices of each batch.

    ``lengths``: tokens per item; ``groups``: the cell each item belongs to (its original and
    its perturbations share one). ``input_order``: consecutive items; ``length_sorted``: by
    length, longest first (stable); ``cell_grouped``: whole cells packed into batches of at
    most ``batch_size`` items (longest cells first; a cell with more items than a batch holds
    is split into consecutive batches of its own); ``cell``: one cell per batch (longest cells
    first; a cell with more items than ``batch_size`` in the fewest near-equal consecutive
    batches), so a batch holds encodings of one length give or take the tokens a perturbation
    adds or removes, and no cell's results depend on another cell's.
    """
    if strategy not in BATCHINGS:
        raise InputError(f"unknown batching '{strategy}'; use one of {', '.join(BATCHINGS)}")
    batch_size = int(batch_size)
    if batch_size < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size}")
    lengths = np.asarray(lengths, dtype=np.int64)
    n = len(lengths)
    if strategy == "input_order":
        order = np.arange(n)
        return [order[s : s + batch_size] for s in range(0, n, batch_size)]
    if strategy == "length_sorted":
        order = np.argsort(-lengths, kind="stable")
        return [order[s : s + batch_size] for s in range(0, n, batch_size)]
    groups = np.asarray(groups)
    uniq, first = np.unique(groups, return_index=True)
    members = {g: np.flatnonzero(groups == g) for g in uniq}
    glen = {g: int(lengths[members[g]].max()) for g in uniq}
    ordered = sorted(uniq[np.argsort(first)], key=lambda g: -glen[g])
    if strategy == "cell":
        # one cell per batch, a cell of more items than a batch holds in near-equal parts
        return [part for g in ordered for part in np.array_split(members[g], -(-len(members[g]) // batch_size))]
    batches, current = [], []
    for g in ordered:
        items = list(members[g])
        if len(items) > batch_size:
            if current:
                batches.append(np.asarray(current))
                current = []
            batches += [np.asarray(items[s : s + batch_size]) for s in range(0, len(items), batch_size)]
            continue
        if len(current) + len(items) > batch_size:
            batches.append(np.asarray(current))
            current = []
        current += items
    if current:
        batches.append(np.asarray(current))
    return batches


def resolve_settings(method: str, batching: str | None = None, batch_size=None, threads: int = 1, artifacts=None) -> dict:
    """The batching, batch size and threads a job of ``method`` runs with.

    ``batching`` / ``batch_size`` None take the registry's (:data:`netpert.isp.methods.REGISTRY`).
    A batch size :data:`~netpert.isp.methods.AUTO` takes the setting the method's artifact rule
    measured fastest on its machine (:func:`netpert.isp.quantize.read_tuning`): its batch size,
    and its thread count where that is below the most it tried (never more than ``threads``, the
    job's); an artifact without one (or tuned for another batching) gets the registry's
    ``fallback_batch_size``. Returns ``batching``, ``batch_size``, ``threads`` and ``tuning``
    (what was read, and from where, or why not; None for a batch size given as a number).
    """
    record = get_method(method)
    batching = batching or record.batching
    if batching not in BATCHINGS:
        raise InputError(f"unknown batching '{batching}'; use one of {', '.join(BATCHINGS)}")
    size = record.batch_size if batch_size is None else batch_size
    threads = int(threads)
    tuning = None
    if size == AUTO:
        tuned = None
        if record.artifact and artifacts is not None:
            from netpert.isp.backends import artifact_path
            from netpert.isp.quantize import read_tuning

            tuned = read_tuning(artifact_path(method, artifacts))
        if tuned is not None and tuned.get("batching") == batching:
            size = int(tuned["batch_size"])
            if int(tuned["threads"]) < max(tuned.get("threads_tried") or [tuned["threads"]]):
                threads = min(threads, int(tuned["threads"]))
            tuning = {**tuned, "source": f"{record.artifact} ({record.artifact_rule})"}
        else:
            if record.fallback_batch_size is None:
                raise InputError(f"method {method} has no batch size to fall back on; give isp.batch_size.{method}")
            size = int(record.fallback_batch_size)
            tuning = {"source": None, "reason": "no tuning recorded in the artifact" if tuned is None
                      else f"tuned for batching {tuned.get('batching')}, not {batching}"}
    try:
        size = int(size)
    except (TypeError, ValueError):
        raise InputError(f"isp.batch_size.{method} must be a positive integer or '{AUTO}', got {size!r}") from None
    if size < 1:
        raise InputError(f"batch_size must be >= 1, got {size}")
    return {"batching": batching, "batch_size": size, "threads": threads, "tuning": tuning}


# --------------------------------------------------------------------------- the run


@dataclass
class IspResult:
    """Embeddings and per-perturbation effects of one run."""

    cell_ids: list[str]
    original: np.ndarray  # (n_cells, H)
    perturbed: np.ndarray  # (n_perturbations, H)
    table: pd.DataFrame  # one row per perturbation
    specs: list[PerturbationSpec]
    skipped: dict[str, int]
    top_genes: np.ndarray  # (n_perturbations, top_n) str, '' padded
    top_cosines: np.ndarray  # (n_perturbations, top_n) float32, nan padded
    stats: dict = field(default_factory=dict)

    @property
    def n_perturbations(self) -> int:
        return len(self.table)


def _pool(tokens: np.ndarray, n_prefix: int, n_suffix: int) -> np.ndarray:
    """Cell embedding from one cell's token states (specials excluded, as Helical does)."""
    stop = tokens.shape[0] - n_suffix
    return tokens[n_prefix:stop].mean(axis=0).astype(np.float32)


def run_isp(
    backend,
    cells: Sequence[np.ndarray],
    cell_ids: Sequence[str],
    specs: Sequence[PerturbationSpec],
    *,
    id_to_gene: Mapping[int, str],
    shift_fraction: float = 0.25,
    max_len: int | None = None,
    pad_id: int = 0,
    special_ids: Sequence[int] = (0, 1),
    n_prefix: int = 0,
    n_suffix: int = 0,
    batch_size: int = 32,
    batching: str = "length_sorted",
    top_n: int = DEFAULT_TOP_N,
    warmup: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> IspResult:
    """Embed every cell and each of its perturbations with ``backend`` and measure the effects.

    ``cells``: token-id arrays (specials included); ``specs``: the perturbations (each applied
    to each cell where it can be, see :func:`netpert.isp.perturb.expand`). ``n_prefix`` /
    ``n_suffix``: the special tokens at the ends (``<cls>`` / ``<eos>``), left out of the cell
    embedding and the gene shifts. With ``warmup`` one small batch runs first, untimed.
    """
    if len(cells) == 0:
        raise InputError("no cells to perturb")
    if len(cells) != len(cell_ids):
        raise InputError(f"{len(cells)} cells but {len(cell_ids)} cell ids")
    cells = [np.asarray(c, dtype=np.int64) for c in cells]
    exp = expand(cells, specs, shift_fraction, max_len, n_prefix, n_suffix)
    n_cells, n_pert = len(cells), len(exp)
    # items: cell-major, the original first (the input order Helical would see)
    seqs, groups, pert_of = [], [], []
    by_cell = [[] for _ in range(n_cells)]
    for j, ci in enumerate(exp.cell_index):
        by_cell[int(ci)].append(j)
    for ci in range(n_cells):
        seqs.append(cells[ci])
        groups.append(ci)
        pert_of.append(-1)
        for j in by_cell[ci]:
            seqs.append(exp.input_ids[j])
            groups.append(ci)
            pert_of.append(j)
    lengths = np.array([len(s) for s in seqs], dtype=np.int64)
    groups_a = np.asarray(groups)
    pert_of_a = np.asarray(pert_of)
    batches = make_batches(lengths, groups_a, batching, batch_size)

    stats = {"warmup_s": 0.0}
    if warmup:
        t = time.perf_counter()
        first = batches[0]  # a whole batch: first-call costs (kernel selection, allocations) stay out of the timing
        backend.embed(*pad_batch([seqs[i] for i in first], pad_id), return_tokens=True)
        stats["warmup_s"] = time.perf_counter() - t

    hidden = None
    original = None
    perturbed = None
    orig_tokens: dict[int, np.ndarray] = {}
    remaining = np.bincount(exp.cell_index, minlength=n_cells) if n_pert else np.zeros(n_cells, dtype=np.int64)
    pending: dict[int, list[tuple[int, np.ndarray]]] = {}
    cosine = np.full(n_pert, np.nan)
    shift = np.full(n_pert, np.nan)
    n_compared = np.zeros(n_pert, dtype=np.int64)
    top_genes = np.full((n_pert, top_n), "", dtype=object)
    top_cos = np.full((n_pert, top_n), np.nan, dtype=np.float32)
    exclude_base = {int(s) for s in special_ids}
    embed_s = shift_s = 0.0
    padded = real = 0

    def effects(j: int, ptok: np.ndarray) -> None:
        ci = int(exp.cell_index[j])
        spec = specs[int(exp.spec_index[j])]
        exclude = sorted(exclude_base | {int(t) for t in spec.token_ids})
        genes, cos = metrics.gene_shifts(orig_tokens[ci], ptok, cells[ci], exp.input_ids[j], exclude)
        cos = np.asarray(cos, dtype=np.float64)
        n_compared[j] = len(cos)
        shift[j] = float(cos.mean()) if len(cos) else np.nan
        top = metrics.top_affected_genes(genes, cos, top_n)
        for k, (gene_id, c) in enumerate(top[:top_n]):
            top_genes[j, k] = id_to_gene.get(int(gene_id), str(gene_id))
            top_cos[j, k] = c
        remaining[ci] -= 1
        if remaining[ci] == 0:
            orig_tokens.pop(ci, None)

    for b, batch in enumerate(batches):
        ids, mask = pad_batch([seqs[i] for i in batch], pad_id)
        padded += ids.size
        real += int(mask.sum())
        t = time.perf_counter()
        out = backend.embed(ids, mask, return_tokens=True)
        embed_s += time.perf_counter() - t
        t = time.perf_counter()
        if hidden is None:
            hidden = out.cell.shape[1]
            original = np.zeros((n_cells, hidden), dtype=np.float32)
            perturbed = np.zeros((n_pert, hidden), dtype=np.float32)
        for row, item in enumerate(batch):
            L = int(lengths[item])
            tok = np.asarray(out.tokens[row, :L], dtype=np.float32)
            cell_emb = _pool(tok, n_prefix, n_suffix) if (n_prefix or n_suffix) else np.asarray(out.cell[row], dtype=np.float32)
            ci, j = int(groups_a[item]), int(pert_of_a[item])
            if j < 0:
                original[ci] = cell_emb
                if remaining[ci] > 0:
                    orig_tokens[ci] = tok
                for pj, ptok in pending.pop(ci, []):
                    effects(pj, ptok)
            else:
                perturbed[j] = cell_emb
                if ci in orig_tokens:
                    effects(j, tok)
                else:
                    pending.setdefault(ci, []).append((j, tok))
        shift_s += time.perf_counter() - t
        if progress is not None:
            progress(b + 1, len(batches))
    if pending:  # pragma: no cover - every original is embedded
        raise RuntimeError("internal error: perturbations left without their original")
    if n_pert:
        cosine[:] = metrics.cosine_rows(original[exp.cell_index], perturbed)
    table = pd.DataFrame(
        {
            "cell_id": [cell_ids[int(i)] for i in exp.cell_index],
            "cell_index": exp.cell_index,
            "perturbation": [specs[int(s)].label for s in exp.spec_index],
            "kind": [specs[int(s)].kind for s in exp.spec_index],
            "targets": ["+".join(specs[int(s)].targets) for s in exp.spec_index],
            "cosine": cosine,
            "cell_shift": shift,
            "n_genes_compared": n_compared,
            "top_gene": [g[0] if len(g) else "" for g in top_genes],
        }
    )
    stats.update(
        {
            "embed_s": embed_s,
            "effects_s": shift_s,
            "n_batches": len(batches),
            "n_sequences": int(len(seqs)),
            "padding_fraction": float(1 - real / padded) if padded else 0.0,
            "mean_length": float(lengths.mean()),
            "max_length": int(lengths.max()),
        }
    )
    return IspResult(
        cell_ids=list(cell_ids),
        original=original,
        perturbed=perturbed if n_pert else np.zeros((0, hidden), dtype=np.float32),
        table=table,
        specs=list(specs),
        skipped=dict(exp.skipped),
        top_genes=top_genes.astype(str),
        top_cosines=top_cos,
        stats=stats,
    )


# --------------------------------------------------------------------------- inference


def result_arrays(result: IspResult) -> dict[str, np.ndarray]:
    """The arrays of :data:`netpert.isp.records.RESULT_ARRAYS` of a run (no object arrays)."""
    t = result.table
    return {
        "cell_ids": np.asarray(result.cell_ids, dtype=str),
        "original": result.original.astype(np.float32),
        "perturbed": result.perturbed.astype(np.float32),
        "perturbation": t["perturbation"].to_numpy(dtype=str),
        "cell_index": t["cell_index"].to_numpy(dtype=np.int64),
        "kind": t["kind"].to_numpy(dtype=str),
        "targets": t["targets"].to_numpy(dtype=str),
        "cosine": t["cosine"].to_numpy(dtype=np.float64),
        "cell_shift": t["cell_shift"].to_numpy(dtype=np.float64),
        "n_genes_compared": t["n_genes_compared"].to_numpy(dtype=np.int64),
        "top_genes": result.top_genes.astype(str),
        "top_cosines": result.top_cosines.astype(np.float32),
        "skipped_labels": np.asarray(list(result.skipped), dtype=str),
        "skipped_counts": np.asarray(list(result.skipped.values()), dtype=np.int64),
    }


def write_not_run(npz_path, perf_path, method: str, stratum: str, reason: str, device: str | None = None,
                  shard: dict | None = None) -> PerfRecord:
    """The records of a job whose method cannot run where it ran: "not run" and why (``shard``: the
    part of the stratum the job had, :data:`netpert.isp.records.SHARD_KEYS`)."""
    from netpert.isp.profiling import machine

    record = PerfRecord(method=method, stratum=stratum, status=NOT_RUN, reason=reason, device=device, machine=machine(),
                        shard=shard)
    meta = {"method": method, "stratum": stratum, "status": NOT_RUN, "reason": reason}
    write_result(npz_path, empty_result_arrays(), {**meta, "shard": shard} if shard is not None else meta)
    write_perf(perf_path, record)
    log.warning("%s / %s not run: %s", method, stratum, reason)
    return record


def repeat_summary(timings: Sequence[Mapping]) -> dict:
    """The timing of a job from its repeats' :meth:`Profiler.summary` dicts: ``wall_s`` and
    ``cpu_time_s`` the medians (``wall_repeats_s`` / ``cpu_repeats_s`` every repeat, in order),
    ``cpu_percent`` the median repeat's CPU over wall, memory the largest, ``other_load_cores``
    the most CPU the rest of the machine took during any repeat (None where unknown)."""
    if not timings:
        raise ValueError("no timed repeat")
    walls = [float(t["wall_s"]) for t in timings]
    cpus = [float(t["cpu_time_s"]) for t in timings]
    mid = sorted(range(len(walls)), key=walls.__getitem__)[(len(walls) - 1) // 2]
    loads = [t.get("other_load_cores") for t in timings if t.get("other_load_cores") is not None]
    peaks = [t["peak_rss_mb"] for t in timings if t.get("peak_rss_mb") is not None]
    out = dict(timings[mid])
    out.update(
        repeats=len(timings),
        wall_s=float(np.median(walls)),
        cpu_time_s=float(np.median(cpus)),
        wall_repeats_s=walls,
        cpu_repeats_s=cpus,
        wall_with_warmup_s=float(timings[0]["wall_with_warmup_s"]),
        peak_rss_mb=max(peaks) if peaks else None,
        process_peak_rss_mb=max(float(t["process_peak_rss_mb"]) for t in timings),
        other_load_cores=max(loads) if loads else None,
    )
    return out


def infer_stratum(
    tokens_path,
    model,
    npz_path,
    perf_path,
    *,
    method: str,
    layer: int = -2,
    batch_size: int | None = None,
    batching: str | None = None,
    device: str = "auto",
    explicit: bool = True,
    threads: int = 1,
    artifacts=None,
    stratum: str | None = None,
    top_n: int = DEFAULT_TOP_N,
    repeats: int = 3,
    cells_per_job: int | None = None,
    shard: int | None = None,
) -> PerfRecord:
    """Rule ``isp_infer``: run one method over one stratum's token file; write the npz and
    perf.json (atomically). With ``cells_per_job`` (``isp.cells_per_job``) and ``shard``, only
    that shard's cells and their perturbations (:func:`netpert.isp.shards.select_shard`): the
    records are the shard's, which ``isp_merge`` joins (:func:`netpert.isp.shards.merge_shards`). ``model``: the bundle folder (or a ModelBundle); ``device``: the
    intent (``isp.device``); ``explicit``: the method was listed in ``isp.methods`` (not chosen
    by ``auto``). Where the method cannot run here (:func:`netpert.isp.methods.run_check`), the
    two files are "not run" records with the reason. ``batch_size`` / ``batching``: None takes
    the method's (:data:`netpert.isp.methods.REGISTRY`); a batch size ``auto`` the one its artifact
    was tuned to, with its threads where fewer were faster (:func:`resolve_settings`; perf.json's
    ``backend.tuning`` says which). ``repeats`` (``isp.repeats``): the timed
    screen runs this many times in the job; the record holds every repeat's wall and CPU time and
    the median (:func:`repeat_summary`). Returns the perf record."""
    if int(repeats) < 1:
        raise InputError(f"isp.repeats must be at least 1, got {repeats}")
    repeats = int(repeats)
    from netpert.isp.backends import make_backend
    from netpert.isp.model import UNTRAINED_NOTE, as_bundle
    from netpert.isp.profiling import Profiler, machine, throughput

    record = get_method(method)
    batching = batching or record.batching
    if batching not in BATCHINGS:
        raise InputError(f"unknown batching '{batching}'; use one of {', '.join(BATCHINGS)}")
    tokens = read_tokens(tokens_path)
    if not tokens.cell_ids:
        raise InputError(f"{tokens_path} holds no cells: the stratum is empty")
    stratum = stratum or tokens.meta.get("stratum") or Path(tokens_path).stem
    shard_info = None
    if (cells_per_job is None) != (shard is None):
        raise InputError(f"a shard needs both cells_per_job and shard (isp.cells_per_job), got {cells_per_job!r} and {shard!r}")
    if shard is not None:
        from netpert.isp.shards import select_shard

        tokens, shard_info = select_shard(tokens, cells_per_job, shard)
    run_device, reason, device_note = run_check(method, device, explicit)
    if reason is not None:
        return write_not_run(npz_path, perf_path, method, stratum, reason, run_device, shard=shard_info)
    settings = resolve_settings(method, batching, batch_size, threads, artifacts)
    batch_size, threads = settings["batch_size"], settings["threads"]
    t0 = time.perf_counter()
    bundle = as_bundle(model)
    backend = make_backend(method, bundle, layer=layer, threads=threads, device=run_device, artifacts=artifacts)
    try:
        load_s = time.perf_counter() - t0
        n_prefix, n_suffix = special_ends(bool(tokens.meta.get("special_tokens", False)))
        timings, result = [], None
        for rep in range(repeats):
            # each repeat is the whole screen; the first one's results are kept (the backends are
            # deterministic: tests/test_isp_runner.py); only the first has the untimed warm-up batch
            with Profiler(gpu=backend.device == "cuda") as prof:
                out = run_isp(
                    backend,
                    tokens.input_ids,
                    tokens.cell_ids,
                    tokens.specs,
                    id_to_gene=bundle.id_to_gene(),
                    shift_fraction=tokens.shift_fraction,
                    max_len=int(tokens.meta.get("max_len", bundle.max_len)),
                    pad_id=bundle.pad_id,
                    special_ids=bundle.special_ids,
                    n_prefix=n_prefix,
                    n_suffix=n_suffix,
                    batch_size=batch_size,
                    batching=batching,
                    top_n=top_n,
                    warmup=rep == 0,
                )
            t = prof.summary()
            # the untimed warm-up batch (first-call costs: kernel selection, allocations) runs inside
            # the profiled block; the throughput is the steady state after it
            t["wall_with_warmup_s"] = t["wall_s"]
            t["wall_s"] = max(t["wall_s"] - out.stats["warmup_s"], 1e-9)
            timings.append(t)
            result = result or out
        desc = backend.describe()
        if settings["tuning"] is not None:
            desc["tuning"] = settings["tuning"]
    finally:
        backend.close()
    timing = repeat_summary(timings)
    n_pert, n_cells = result.n_perturbations, len(result.cell_ids)
    notes = [n for n in (device_note,) if n]
    if not bundle.trained:
        notes.append(UNTRAINED_NOTE)
    if desc.get("amp_effective") is False:
        notes.append(f"amp gives no speedup expected here: {desc.get('amp_note')}")
    perf = PerfRecord(
        method=method,
        stratum=stratum,
        trained=bool(bundle.trained),
        note="; ".join(notes) if notes else None,
        notes=notes,
        n_cells=n_cells,
        n_perturbations=n_pert,
        n_sequences=result.stats["n_sequences"],
        n_skipped=int(sum(result.skipped.values())),
        skipped=result.skipped,
        **{k: timing[k] for k in ("wall_s", "wall_with_warmup_s", "cpu_time_s", "cpu_percent", "peak_rss_mb", "process_peak_rss_mb",
                                  "repeats", "wall_repeats_s", "cpu_repeats_s", "other_load_cores")},
        **throughput(n_pert, n_cells, result.stats["n_sequences"], timing["wall_s"]),
        gpu=timing.get("gpu"),
        gpu_util_percent=timing.get("gpu_util_percent"),
        gpu_peak_mem_mb=timing.get("gpu_peak_mem_mb"),
        load_s=load_s,
        **{k: result.stats[k] for k in ("warmup_s", "embed_s", "effects_s", "n_batches", "padding_fraction", "mean_length", "max_length")},
        batching=batching,
        batch_size=batch_size,
        threads=int(threads),
        layer=int(layer),
        device=backend.device,
        amp_effective=desc.get("amp_effective"),
        amp_note=desc.get("amp_note"),
        backend=desc,
        model=bundle.describe(),
        machine=machine(),
        shard=shard_info,
    )
    meta = {
        "method": method,
        "stratum": stratum,
        "status": OK,
        "layer": int(layer),
        "trained": bool(bundle.trained),
        "note": perf.note,
        "perturbation": tokens.meta.get("perturbation"),
        "targets": tokens.meta.get("targets"),
        "batching": batching,
        "batch_size": batch_size,
        "backend": desc,
        "model": bundle.describe(),
    }
    if shard_info is not None:
        meta["shard"] = shard_info
    write_result(npz_path, result_arrays(result), meta)
    write_perf(perf_path, perf)
    log.info(
        "%s / %s%s: %d cells, %d perturbations (%d skipped) in %.2f s: %.1f perturbations/s",
        method, stratum, f" shard {shard_info['index']} of {shard_info['n_shards']}" if shard_info else "",
        n_cells, n_pert, perf.n_skipped, timing["wall_s"], perf.perturbations_per_s or 0.0,
    )
    return perf

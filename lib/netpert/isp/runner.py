"""Running an in-silico perturbation screen through one inference method.

* :func:`tokenize_stratum` (rule ``isp_tokenize``): one stratum's cells -> rank-value encodings
  + the perturbation plan, in one parquet file (:func:`write_tokens` / :func:`read_tokens`).
* :func:`run_isp`: every cell's original encoding and its perturbations through a
  :class:`~netpert.isp.backends.base.Backend`, batched by a strategy (:func:`make_batches`),
  then per perturbation the cosine of the original and perturbed cell embeddings, Geneformer's
  cell shift (mean over the remaining genes of each gene's original-vs-perturbed cosine) and
  the most affected genes. Each cell's original is embedded once and reused.
* :func:`infer_stratum` (rule ``isp_infer``): load, run under the profiler, write
  ``{method}/{stratum}.npz`` and ``.perf.json``.

Batching strategies: ``input_order`` (Helical's: consecutive batches in the plan's order, a
cell's original then its perturbations), ``length_sorted`` (longest first: batches of near
equal length, little padding), ``cell_grouped`` (a cell's original and its perturbations in
one batch, needed where activations are quantised per batch).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from netpert._io import atomic_path, json_default
from netpert.errors import InputError
from netpert.isp import metrics
from netpert.isp.perturb import PerturbationSpec, check_kind, expand, make_specs

log = logging.getLogger(__name__)

BATCHINGS = ("input_order", "length_sorted", "cell_grouped")
TOKENS_META_KEY = b"netpert"
DEFAULT_TOP_N = 10


# --------------------------------------------------------------------------- batching


def pad_batch(seqs: Sequence[np.ndarray], pad_id: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Right-padded ``(input_ids, attention_mask)`` int64 arrays (B, longest)."""
    if len(seqs) == 0:
        raise InputError("cannot pad an empty batch")
    width = max(len(s) for s in seqs)
    ids = np.full((len(seqs), width), int(pad_id), dtype=np.int64)
    mask = np.zeros((len(seqs), width), dtype=np.int64)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = s
        mask[i, : len(s)] = 1
    return ids, mask


def make_batches(lengths, groups, strategy: str = "length_sorted", batch_size: int = 32) -> list[np.ndarray]:
    """Item indices of each batch.

    ``lengths``: tokens per item; ``groups``: the cell each item belongs to (its original and
    its perturbations share one). ``input_order``: consecutive items; ``length_sorted``: by
    length, longest first (stable); ``cell_grouped``: whole cells packed into batches of at
    most ``batch_size`` items (longest cells first; a cell with more items than a batch holds
    is split into consecutive batches of its own).
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


# --------------------------------------------------------------------------- token files


@dataclass
class TokenFile:
    """A tokenized stratum: cells, their encodings, the perturbations to run, and facts."""

    cell_ids: list[str]
    input_ids: list[np.ndarray]
    specs: list[PerturbationSpec]
    meta: dict

    @property
    def shift_fraction(self) -> float:
        return float(self.meta.get("shift_fraction", 0.25))


def write_tokens(path, cell_ids, input_ids, specs: Sequence[PerturbationSpec], meta: Mapping, extra: Mapping | None = None) -> None:
    """The parquet file of ``isp_tokenize``: columns cell_id, input_ids (list<int32>), length
    (+ ``extra`` columns); the plan and facts as JSON in the schema metadata (``netpert``)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = {
        "cell_id": pa.array([str(c) for c in cell_ids], type=pa.string()),
        "input_ids": pa.array([np.asarray(x, dtype=np.int32) for x in input_ids], type=pa.list_(pa.int32())),
        "length": pa.array([len(x) for x in input_ids], type=pa.int32()),
    }
    for k, v in (extra or {}).items():
        columns[k] = pa.array(list(v))
    table = pa.table(columns)
    full = {**meta, "perturbations": [s.to_dict() for s in specs]}
    table = table.replace_schema_metadata({TOKENS_META_KEY: json.dumps(full, default=json_default).encode()})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def read_tokens(path) -> TokenFile:
    """Read a file written by :func:`write_tokens`."""
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.is_file():
        raise InputError(f"token file not found: {path} (run the isp_tokenize rule first)")
    table = pq.read_table(path)
    missing = {"cell_id", "input_ids"} - set(table.column_names)
    if missing:
        raise InputError(f"{path} lacks the column(s) {', '.join(sorted(missing))}: rerun the isp_tokenize rule")
    raw = (table.schema.metadata or {}).get(TOKENS_META_KEY)
    if raw is None:
        raise InputError(f"{path} has no perturbation plan in its metadata: rerun the isp_tokenize rule")
    meta = json.loads(raw)
    specs = [PerturbationSpec.from_dict(d) for d in meta.pop("perturbations", [])]
    cell_ids = [str(c) for c in table.column("cell_id").to_pylist()]
    input_ids = [np.asarray(x, dtype=np.int64) for x in table.column("input_ids").to_pylist()]
    return TokenFile(cell_ids, input_ids, specs, meta)


def stratum_of(adata, path=None) -> str:
    """The stratum slug of a stratum file: its single ``obs['stratum']`` value, else the file stem."""
    if "stratum" in adata.obs.columns:
        values = pd.unique(adata.obs["stratum"].astype(str))
        if len(values) == 1:
            return str(values[0])
    if path is not None:
        return Path(path).name.removesuffix(".h5ad")
    raise InputError("cannot tell the stratum: obs['stratum'] is missing or not unique and no file name was given")


def _mr_lookup(path, stratum: str, top_k: int, cell_type: str | None) -> tuple[list[str], str | None]:
    """(targets, why none) of ``stratum`` in ``master_regulators.tsv`` (the stratum's cell type
    when the slug is not listed)."""
    from netpert.mr_table import STATUS_LABELS, read_master_regulators

    path = Path(path)
    if not path.is_file():
        raise InputError(f"master-regulator table not found: {path} (run the master_regulators rule, or set isp.targets.source: list)")
    table = read_master_regulators(path)
    key = stratum if stratum in table else cell_type if cell_type is not None and cell_type in table else None
    if key is None:
        raise InputError(
            f"{path} does not list stratum '{stratum}' (strata there: {', '.join(list(table.strata['stratum'])[:10])}): "
            "rerun the master_regulators rule on the same strata"
        )
    targets = table.targets(key, top_k)
    if targets:
        return targets, None
    row = table.status(key)
    return [], f"{STATUS_LABELS.get(row['status'], row['status'])}: {row['reason']}".rstrip(": ")


def master_regulator_targets(path, stratum: str, top_k: int = 5, cell_type: str | None = None) -> list[str]:
    """The ``top_k`` master regulators of ``stratum`` from ``master_regulators.tsv``, best first
    (rank 1 up, rank 1 down, rank 2 up, ...). ``[]`` when the table lists the stratum without
    master regulators (no network of its own, or no significant regulator); an InputError when
    the table is missing or does not list the stratum (nor ``cell_type``)."""
    return _mr_lookup(path, stratum, top_k, cell_type)[0]


def tokenize_stratum(
    adata,
    bundle,
    out_path,
    *,
    targets_source: str = "master_regulators",
    targets_path=None,
    genes: Sequence[str] = (),
    top_k: int = 5,
    perturbation: str = "delete",
    shift_fraction: float = 0.25,
    pairs: bool = False,
    anchor: str | None = None,
    cells_per_stratum: int | None = 20,
    seed: int = 0,
    max_len: int = 2048,
    gene_id_column: str | None = None,
    stratum: str | None = None,
    source: str | None = None,
) -> dict:
    """Rule ``isp_tokenize``: sample up to ``cells_per_stratum`` cells of one stratum, encode
    them for ``bundle`` (a ModelBundle or its folder), choose the targets (the stratum's top
    ``top_k`` master regulators from ``targets_path``, or ``genes``), and write the token file
    with the perturbation plan. Returns the file's metadata. A stratum the master-regulator table
    lists without master regulators gets an empty plan (its cells are embedded, nothing is
    perturbed) and ``meta["no_targets"]`` says why; ``None`` otherwise.
    """
    from netpert.isp.model import as_bundle
    from netpert.isp.tokenizer import tokenize_for_model

    bundle = as_bundle(bundle)
    check_kind(perturbation)
    source = source or "the stratum"
    if adata.n_obs == 0:
        raise InputError(f"{source} is empty (0 cells): nothing to tokenize; drop the stratum or lower the stratification minimum")
    stratum = stratum or stratum_of(adata)
    n_total = int(adata.n_obs)
    if cells_per_stratum is not None and n_total > int(cells_per_stratum):
        rng = np.random.default_rng(int(seed))
        keep = np.sort(rng.choice(n_total, size=int(cells_per_stratum), replace=False))
        adata = adata[keep].copy()
    no_targets = None
    if targets_source == "master_regulators":
        if targets_path is None:
            raise InputError("isp.targets.source is master_regulators but no master-regulator table was given")
        cell_type = str(adata.obs["cell_type"].iloc[0]) if "cell_type" in adata.obs.columns else None
        targets, no_targets = _mr_lookup(targets_path, stratum, top_k, cell_type)
        if no_targets:
            log.warning("stratum %s has no master regulator (%s): its cells are tokenised with no perturbation", stratum, no_targets)
    elif targets_source == "list":
        targets = [str(g) for g in genes]
        if not targets:
            raise InputError("isp.targets.source is 'list' but isp.targets.genes is empty: list the genes to perturb")
    else:
        raise InputError(f"unknown isp.targets.source '{targets_source}'; use master_regulators or list")
    # a stratum without master regulators: no perturbation (its cells are still embedded)
    specs = make_specs(targets, bundle.token_dictionary, perturbation, pairs, anchor, bundle.gene_mapping) if targets else []
    tok = tokenize_for_model(adata, bundle, gene_id_column=gene_id_column, max_len=max_len, source=source)
    meta = {
        "stratum": stratum,
        "n_cells_in_stratum": n_total,
        "n_cells": len(tok),
        "cells_per_stratum": cells_per_stratum,
        "seed": int(seed),
        "targets_source": targets_source,
        "targets": targets,
        "no_targets": no_targets,
        "perturbation": perturbation,
        "shift_fraction": float(shift_fraction),
        "pairs": bool(pairs),
        "anchor": anchor if pairs else None,
        "max_len": int(min(int(max_len), bundle.max_len)),
        "special_tokens": tok.info["special_tokens"],
        "tokenizer": tok.info,
        "model": bundle.describe(),
    }
    # how many cells each target can be perturbed in (delete/inhibit/activate need it expressed)
    exp = expand(tok.input_ids, specs, shift_fraction, meta["max_len"], *_ends(tok.info["special_tokens"]))
    meta["applicable"] = {s.label: int(len(tok) - exp.skipped[s.label]) for s in specs}
    write_tokens(out_path, tok.cell_ids, tok.input_ids, specs, meta)
    return meta


def _ends(special: bool) -> tuple[int, int]:
    return (1, 1) if special else (0, 0)


# --------------------------------------------------------------------------- inference


def result_arrays(result: IspResult, meta: Mapping) -> dict[str, np.ndarray]:
    """The npz content of a run (no object arrays: loads with ``allow_pickle=False``)."""
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
        "metadata": np.asarray(json.dumps(meta, default=json_default)),
    }


def read_result(path) -> dict:
    """An npz written by :func:`infer_stratum` as a dict (``metadata`` parsed)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"ISP result not found: {path} (run the isp_infer rule)")
    with np.load(path, allow_pickle=False) as data:
        out = {k: data[k] for k in data.files}
    if "metadata" in out:
        out["metadata"] = json.loads(str(out["metadata"]))
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
    threads: int = 1,
    artifacts=None,
    stratum: str | None = None,
    top_n: int = DEFAULT_TOP_N,
) -> dict:
    """Rule ``isp_infer``: run one method over one stratum's token file; write the npz and
    perf.json (atomically). ``model``: the bundle folder (or a ModelBundle). Returns perf."""
    from netpert.isp.backends import DEFAULT_BATCH_SIZE, DEFAULT_BATCHING, check_method, make_backend
    from netpert.isp.model import UNTRAINED_NOTE, as_bundle
    from netpert.isp.profiling import Profiler, machine, throughput

    check_method(method)
    batching = batching or DEFAULT_BATCHING[method]
    if batching not in BATCHINGS:
        raise InputError(f"unknown batching '{batching}'; use one of {', '.join(BATCHINGS)}")
    batch_size = int(batch_size or DEFAULT_BATCH_SIZE[method])
    tokens = read_tokens(tokens_path)
    if not tokens.cell_ids:
        raise InputError(f"{tokens_path} holds no cells: the stratum is empty")
    stratum = stratum or tokens.meta.get("stratum") or Path(tokens_path).stem
    t0 = time.perf_counter()
    bundle = as_bundle(model)
    backend = make_backend(method, bundle, layer=layer, threads=threads, device=device, artifacts=artifacts)
    load_s = time.perf_counter() - t0
    special = bool(tokens.meta.get("special_tokens", False))
    n_prefix, n_suffix = _ends(special)
    with Profiler(gpu=backend.device == "cuda") as prof:
        result = run_isp(
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
        )
    timing = prof.summary()
    # the untimed warm-up batch (first-call costs: kernel selection, allocations) runs inside the
    # profiled block; the throughput is the steady state after it
    timing["wall_with_warmup_s"] = timing["wall_s"]
    timing["wall_s"] = max(timing["wall_s"] - result.stats["warmup_s"], 1e-9)
    desc = backend.describe()
    backend.close()
    n_pert, n_cells = result.n_perturbations, len(result.cell_ids)
    notes = []
    if not bundle.trained:
        notes.append(UNTRAINED_NOTE)
    if desc.get("amp_effective") is False:
        notes.append(f"amp gives no speedup expected here: {desc.get('amp_note')}")
    perf = {
        "method": method,
        "stratum": stratum,
        "trained": bool(bundle.trained),
        "note": "; ".join(notes) if notes else None,
        "notes": notes,
        "n_cells": n_cells,
        "n_perturbations": n_pert,
        "n_sequences": result.stats["n_sequences"],
        "n_skipped": int(sum(result.skipped.values())),
        "skipped": result.skipped,
        **{k: timing[k] for k in ("wall_s", "wall_with_warmup_s", "cpu_time_s", "cpu_percent", "peak_rss_mb", "ru_maxrss_mb")},
        **throughput(n_pert, n_cells, result.stats["n_sequences"], timing["wall_s"]),
        "gpu": timing.get("gpu"),
        "gpu_util_percent": timing.get("gpu_util_percent"),
        "gpu_peak_mem_mb": timing.get("gpu_peak_mem_mb"),
        "load_s": load_s,
        **{k: result.stats[k] for k in ("warmup_s", "embed_s", "effects_s", "n_batches", "padding_fraction", "mean_length", "max_length")},
        "batching": batching,
        "batch_size": batch_size,
        "threads": int(threads),
        "layer": int(layer),
        "device": backend.device,
        "amp_effective": desc.get("amp_effective"),
        "amp_note": desc.get("amp_note"),
        "backend": desc,
        "model": bundle.describe(),
        "machine": machine(),
    }
    meta = {
        "method": method,
        "stratum": stratum,
        "layer": int(layer),
        "trained": bool(bundle.trained),
        "note": perf["note"],
        "perturbation": tokens.meta.get("perturbation"),
        "targets": tokens.meta.get("targets"),
        "batching": batching,
        "batch_size": batch_size,
        "backend": desc,
        "model": bundle.describe(),
    }
    arrays = result_arrays(result, meta)
    with atomic_path(npz_path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)
    with atomic_path(perf_path) as tmp:
        tmp.write_text(json.dumps(perf, indent=1, default=json_default))
    log.info(
        "%s / %s: %d cells, %d perturbations (%d skipped) in %.2f s: %.1f perturbations/s",
        method,
        stratum,
        n_cells,
        n_pert,
        perf["n_skipped"],
        timing["wall_s"],
        perf["perturbations_per_s"] or 0.0,
    )
    return perf

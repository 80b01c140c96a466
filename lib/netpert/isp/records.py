"""The files the ISP stage hands on, each layout defined once, with its writer and reader.

* ``isp/{method}/{stratum}.perf.json``: :class:`PerfRecord` (:func:`write_perf` / :func:`read_perf`);
* ``isp/{method}/{stratum}.npz``: the arrays of :data:`RESULT_ARRAYS` plus a JSON ``metadata``
  string (:func:`write_result` / :func:`read_result`);
* with ``isp.cells_per_job``, one job's part of a stratum, ``isp/{method}/{stratum}/shard_{k}.npz``
  and ``.perf.json``: the same two layouts, of the shard's cells (``cell_index`` counts from its
  first cell), with :attr:`PerfRecord.shard` and ``metadata["shard"]`` saying which part
  (:data:`SHARD_KEYS`); the merged files (:mod:`netpert.isp.shards`) are the stratum's records,
  with :attr:`PerfRecord.shards` summing up each part;
* ``isp/metrics.tsv``: :data:`METRICS_COLUMNS` first, then the embedding-quality columns
  (``perturbation_*``, ``cell_type_*``, ``control_*``), :func:`read_metrics`.

A job where its method cannot run writes a record with ``status`` :data:`NOT_RUN` and the
``reason``, and an npz of empty arrays, so that evaluation and the report show it. A reader
fails on a file that does not have the layout (a renamed field is an error, not "n/a"), naming
the file. Nothing here imports torch or onnxruntime (the report reads these files).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from netpert._io import atomic_path, json_default
from netpert.errors import InputError

OK = "ok"
NOT_RUN = "not run"
STATUSES = (OK, NOT_RUN)


@dataclass
class PerfRecord:
    """How one method ran over one stratum (perf.json). Times in seconds, memory in MB.

    ``wall_s`` is the timed screen without its warm-up batch (``wall_with_warmup_s`` the first
    repeat with it), the median of ``repeats`` runs of the screen in the job (``wall_repeats_s``
    and ``cpu_repeats_s`` every repeat's wall and CPU seconds, in order);
    ``cpu_percent`` the process's CPU time over wall time (100 = one core busy);
    ``other_load_cores`` the most CPU (in cores) the rest of the machine used during a repeat;
    ``peak_rss_mb`` the resident memory peak sampled during the screen, ``process_peak_rss_mb`` the
    process's own lifetime peak (model loading included): VmHWM on Linux, getrusage's ru_maxrss
    elsewhere (on Linux that one can carry a spawning parent's peak).

    ``shard``: set on the record of one shard (:data:`SHARD_KEYS`), None on a stratum's record;
    ``shards``: on a stratum's record merged from shards, one summary per shard
    (:data:`SHARD_SUMMARY_KEYS`); times there are the shards' sums, memory the largest shard's.
    """

    method: str
    stratum: str
    status: str = OK
    reason: str | None = None
    note: str | None = None
    notes: list = field(default_factory=list)
    trained: bool | None = None
    device: str | None = None
    n_cells: int = 0
    n_perturbations: int = 0
    n_sequences: int = 0
    n_skipped: int = 0
    skipped: dict = field(default_factory=dict)
    wall_s: float | None = None
    wall_with_warmup_s: float | None = None
    cpu_time_s: float | None = None
    cpu_percent: float | None = None
    peak_rss_mb: float | None = None
    process_peak_rss_mb: float | None = None
    repeats: int = 1
    wall_repeats_s: list = field(default_factory=list)
    cpu_repeats_s: list = field(default_factory=list)
    other_load_cores: float | None = None
    perturbations_per_s: float | None = None
    cells_per_s: float | None = None
    sequences_per_s: float | None = None
    gpu: dict | None = None
    gpu_util_percent: float | None = None
    gpu_peak_mem_mb: float | None = None
    load_s: float | None = None
    warmup_s: float | None = None
    embed_s: float | None = None
    effects_s: float | None = None
    n_batches: int | None = None
    padding_fraction: float | None = None
    mean_length: float | None = None
    max_length: int | None = None
    batching: str | None = None
    batch_size: int | None = None
    threads: int | None = None
    layer: int | None = None
    amp_effective: bool | None = None
    amp_note: str | None = None
    backend: dict = field(default_factory=dict)
    model: dict = field(default_factory=dict)
    machine: dict = field(default_factory=dict)
    shard: dict | None = None
    shards: list = field(default_factory=list)

    def __post_init__(self):
        if self.status not in STATUSES:
            raise ValueError(f"perf status must be one of {STATUSES}, got {self.status!r}")
        if self.shard is not None and sorted(self.shard) != sorted(SHARD_KEYS):
            raise ValueError(f"a shard record's 'shard' has the keys {SHARD_KEYS}, got {sorted(self.shard)}")

    @property
    def ran(self) -> bool:
        return self.status == OK

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


PERF_FIELDS = tuple(f.name for f in dataclasses.fields(PerfRecord))
#: which part of a stratum a shard is: its index, the number of shards, its first cell (in the
#: token file), its cells, the stratum's cells (the token file's) and ``isp.cells_per_job``
SHARD_KEYS = ("index", "n_shards", "first_cell", "n_cells", "cells_in_stratum", "cells_per_job")
#: one shard in a merged record's ``shards``
SHARD_SUMMARY_KEYS = ("index", "first_cell", "n_cells", "n_perturbations", "status", "reason", "device", "wall_s",
                      "cpu_time_s", "peak_rss_mb", "process_peak_rss_mb", "gpu_peak_mem_mb", "cpu")


def write_perf(path, record: PerfRecord) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(record.as_dict(), indent=1, default=json_default))


def read_perf(path) -> PerfRecord:
    """A perf.json as a :class:`PerfRecord`; a file of another layout is an InputError naming it."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"cannot read ISP timing {path}: {exc} (delete it and rerun isp_infer)") from exc
    if isinstance(data, dict) and "ru_maxrss_mb" in data and "process_peak_rss_mb" not in data:
        data["process_peak_rss_mb"] = data.pop("ru_maxrss_mb")  # the field's name in records before 2026-12-08
    unknown = sorted(set(data) - set(PERF_FIELDS)) if isinstance(data, dict) else []
    if unknown or not isinstance(data, dict) or "method" not in data or "stratum" not in data:
        raise InputError(
            f"{path} is not a netpert perf record (unknown fields {unknown}, or no method/stratum): "
            "it was written by another netpert version; delete it and rerun isp_infer"
        )
    return PerfRecord(**data)


#: npz arrays of an ISP run: name -> dtype kind, shape in words
RESULT_ARRAYS = {
    "cell_ids": ("U", "(cells,) cell barcodes"),
    "original": ("f4", "(cells, H) embedding of each unperturbed cell"),
    "perturbed": ("f4", "(perturbations, H) embedding of each perturbed cell"),
    "perturbation": ("U", "(perturbations,) label, e.g. delete:SPI1"),
    "cell_index": ("i8", "(perturbations,) row of its cell in original"),
    "kind": ("U", "(perturbations,) delete / overexpress / inhibit / activate"),
    "targets": ("U", "(perturbations,) perturbed genes joined by +"),
    "cosine": ("f8", "(perturbations,) cosine of perturbed vs original cell embedding"),
    "cell_shift": ("f8", "(perturbations,) Geneformer's cell shift: mean cosine of the other genes' states"),
    "n_genes_compared": ("i8", "(perturbations,) genes in the cell shift"),
    "top_genes": ("U", "(perturbations, top_n) most shifted genes, '' padded"),
    "top_cosines": ("f4", "(perturbations, top_n) their cosines, nan padded"),
    "skipped_labels": ("U", "(k,) perturbations skipped in some cells"),
    "skipped_counts": ("i8", "(k,) cells where each could not be applied"),
}


def empty_result_arrays() -> dict[str, np.ndarray]:
    """The arrays of a run that did not happen (every one empty)."""
    out = {}
    for name, (kind, _) in RESULT_ARRAYS.items():
        shape = (0, 0) if name in ("original", "perturbed", "top_genes", "top_cosines") else (0,)
        out[name] = np.zeros(shape, dtype=np.dtype(kind if kind != "U" else "U1"))
    return out


def write_result(path, arrays: dict, metadata: dict) -> None:
    """The npz of one run: every array of :data:`RESULT_ARRAYS` and ``metadata`` (JSON)."""
    missing = sorted(set(RESULT_ARRAYS) - set(arrays))
    extra = sorted(set(arrays) - set(RESULT_ARRAYS))
    if missing or extra:
        raise ValueError(f"ISP result arrays do not match the layout: missing {missing}, unknown {extra}")
    if metadata.get("status", OK) not in STATUSES:
        raise ValueError(f"unknown status {metadata.get('status')!r}")
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays, metadata=np.asarray(json.dumps(metadata, default=json_default)))


def read_result(path) -> dict:
    """An npz written by :func:`write_result` as a dict (``metadata`` parsed); an InputError
    naming the file when it is missing or of another layout."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"ISP result not found: {path} (run the isp_infer rule)")
    try:
        with np.load(path, allow_pickle=False) as data:
            out = {k: data[k] for k in data.files}
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read ISP result {path}: {exc} (delete it and rerun isp_infer)") from exc
    missing = sorted((set(RESULT_ARRAYS) | {"metadata"}) - set(out))
    if missing:
        raise InputError(f"{path} lacks the arrays {missing}: it is not a netpert ISP result of this version; rerun isp_infer")
    out["metadata"] = json.loads(str(out["metadata"]))
    return out


#: the metrics.tsv columns every row has (``stratum`` "all" = over all strata)
METRICS_COLUMNS = (
    "method", "stratum", "status", "reason", "device",
    "n_cells", "n_perturbations", "wall_s", "wall_min_s", "wall_max_s", "repeats",
    "perturbations_per_s", "cells_per_s", "speedup", "speedup_min", "speedup_max",
    "peak_rss_mb", "cpu_percent", "other_load_cores", "gpu_peak_mem_mb", "trained",
    "mean_effect", "max_effect", "mean_cell_shift",
    "mean_cosine", "min_cosine", "spearman", "max_shift_diff", "passes_bar", "failed_criteria",
)
#: isp_evaluate's embedding-quality columns start with these
QUALITY_PREFIXES = ("perturbation_", "cell_type_", "control_")


def read_metrics(path) -> pd.DataFrame:
    """``isp/metrics.tsv``; an InputError naming the file when a column of the layout is missing."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"ISP metrics not found: {path} (run the isp_evaluate rule)")
    table = pd.read_csv(path, sep="\t", keep_default_na=True)
    missing = [c for c in METRICS_COLUMNS if c not in table.columns]
    if missing:
        raise InputError(f"{path} lacks the columns {missing}: written by another netpert version; rerun isp_evaluate")
    table["stratum"] = table["stratum"].astype(str)
    table["passes_bar"] = table["passes_bar"].map(lambda v: None if pd.isna(v) else str(v).lower() == "true").astype(object)
    return table


def quality_columns(table: pd.DataFrame) -> list[str]:
    """The embedding-quality columns of a metrics table."""
    return [c for c in table.columns if c.startswith(QUALITY_PREFIXES)]


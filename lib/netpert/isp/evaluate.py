"""Rule ``isp_evaluate``: every method's screen against ``baseline``'s, and embedding quality.

Writes ``isp/metrics.tsv`` (layout: :data:`netpert.isp.records.METRICS_COLUMNS`): one row per
method and stratum, and one per method over all strata (``stratum == "all"``), with

- performance from ``perf.json`` (wall time, perturbations/s, cells/s, the job's peak RSS:
  ``process_peak_rss_mb``, the kernel's high-water mark of the job's process);
- consistency with ``baseline`` (:func:`netpert.isp.metrics.consistency`) and ``passes_bar``;
- effect sizes (mean 1 - cosine of perturbed vs original cell, mean cell shift);
- embedding quality (:func:`netpert.isp.metrics.embedding_quality`) for the perturbation label
  (``perturbation_*``: control or the perturbation) and, over all strata, for the cell type
  (``cell_type_*``), and the control-vs-perturbed separation.

A method that did not run (a job's "not run" record, or one the plan left out) gets one row per
stratum with ``status`` "not run" and the ``reason``, its figures empty.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd

from netpert._io import atomic_path
from netpert.errors import InputError
from netpert.isp import metrics as M
from netpert.isp.methods import BASELINE
from netpert.isp.records import (
    METRICS_COLUMNS,
    NOT_RUN,
    OK,
    PerfRecord,
    read_perf,
    read_result,
)

log = logging.getLogger(__name__)

OVERALL = "all"


def _key(npz: Path, result: dict) -> tuple[str, str]:
    meta = result.get("metadata") or {}
    method = meta.get("method") or npz.parent.name
    stratum = meta.get("stratum") or npz.stem
    return str(method), str(stratum)


def _pool(results: list[tuple[str, dict]]) -> dict:
    """Several strata's results as one (cell ids prefixed by the stratum, cell indices offset)."""
    out = defaultdict(list)
    offset = 0
    for stratum, r in results:
        out["cell_ids"].append(np.char.add(f"{stratum}/", np.asarray(r["cell_ids"]).astype(str)))
        out["cell_index"].append(np.asarray(r["cell_index"]) + offset)
        out["stratum_of_cell"].append(np.full(len(r["cell_ids"]), stratum))
        out["stratum_of_pert"].append(np.full(len(r["perturbation"]), stratum))
        for key in ("original", "perturbed", "perturbation", "cosine", "cell_shift"):
            out[key].append(np.asarray(r[key]))
        offset += len(r["cell_ids"])
    return {k: np.concatenate(v) for k, v in out.items()}


def _effects(r: dict) -> dict:
    eff = 1.0 - np.asarray(r["cosine"], dtype=np.float64)
    shift = np.asarray(r["cell_shift"], dtype=np.float64)
    return {
        "mean_effect": float(np.nanmean(eff)) if len(eff) else float("nan"),
        "max_effect": float(np.nanmax(eff)) if len(eff) else float("nan"),
        "mean_cell_shift": float(np.nanmean(shift)) if len(shift) and np.isfinite(shift).any() else float("nan"),
    }


def _quality(r: dict, seed: int, cell_types: np.ndarray | None) -> dict:
    emb = np.concatenate([r["original"], r["perturbed"]])
    labels = np.concatenate([np.full(len(r["original"]), "control"), np.asarray(r["perturbation"]).astype(str)])
    out = M.embedding_quality(emb, labels, seed=seed, prefix="perturbation_")
    if len(r["perturbed"]):
        out.update(M.control_separation(r["original"], r["perturbed"], seed=seed))
    if cell_types is not None:
        out.update(M.embedding_quality(emb, cell_types, seed=seed, prefix="cell_type_"))
    return out


def _repeat_walls(p: PerfRecord) -> list[float]:
    return [float(w) for w in (p.wall_repeats_s or [])] or ([float(p.wall_s)] if p.wall_s else [])


def _perf_row(perfs: list[PerfRecord]) -> dict:
    """Totals over strata: work over total (median) time, ``wall_min_s`` / ``wall_max_s`` the sums
    of each job's fastest / slowest repeat; peak memory the largest; CPU % time-weighted; the
    other processes' load the largest seen."""
    wall = sum(float(p.wall_s or 0) for p in perfs)
    walls = [_repeat_walls(p) for p in perfs]
    loads = [p.other_load_cores for p in perfs if p.other_load_cores is not None]
    n_p = sum(int(p.n_perturbations or 0) for p in perfs)
    n_c = sum(int(p.n_cells or 0) for p in perfs)

    def peak(values):
        values = [v for v in values if v is not None]
        return max(values) if values else float("nan")

    cpu = [(p.cpu_percent, p.wall_s) for p in perfs if p.cpu_percent is not None and p.wall_s]
    devices = sorted({p.device for p in perfs if p.device})
    return {
        "status": OK,
        "reason": None,
        "device": ", ".join(devices) if devices else None,
        "n_cells": n_c,
        "n_perturbations": n_p,
        "wall_s": wall,
        "wall_min_s": sum(min(w) for w in walls if w) if any(walls) else float("nan"),
        "wall_max_s": sum(max(w) for w in walls if w) if any(walls) else float("nan"),
        "repeats": min(len(w) for w in walls) if any(walls) else 0,
        "other_load_cores": max(loads) if loads else float("nan"),
        "perturbations_per_s": n_p / wall if wall > 0 else float("nan"),
        "cells_per_s": n_c / wall if wall > 0 else float("nan"),
        "peak_rss_mb": peak(p.process_peak_rss_mb for p in perfs),  # the job's exact peak, not a sample
        "cpu_percent": sum(c * w for c, w in cpu) / sum(w for _, w in cpu) if cpu else float("nan"),
        "gpu_peak_mem_mb": peak(p.gpu_peak_mem_mb for p in perfs),
        "trained": all(bool(p.trained) for p in perfs),
    }


def _speedup_ranges(table: pd.DataFrame, base: pd.DataFrame, same: pd.Series) -> None:
    """``speedup_min`` / ``speedup_max``, pair by pair against the baseline on the same stratum:
    in a stratum's row the method's slowest repeat against the baseline's fastest and the other
    way round (the same perturbations, so the ratio of times); in the row over all strata the
    smallest and largest of the strata's speedups (each job measured under its own load). ``same``:
    the rows that did the baseline's work (its cells and perturbations)."""
    strata = table["stratum"] != OVERALL
    table.loc[strata, "speedup_min"] = (table["stratum"].map(base["wall_min_s"]) / table["wall_max_s"]).where(same)
    table.loc[strata, "speedup_max"] = (table["stratum"].map(base["wall_max_s"]) / table["wall_min_s"]).where(same)
    per = table[strata].groupby("method")["speedup"]
    overall = table["stratum"] == OVERALL
    table.loc[overall, "speedup_min"] = table.loc[overall, "method"].map(per.min())
    table.loc[overall, "speedup_max"] = table.loc[overall, "method"].map(per.max())


def evaluate(
    results: dict[tuple[str, str], dict],
    perfs: dict[tuple[str, str], PerfRecord],
    bar=None,
    seed: int = 0,
    not_run: dict[tuple[str, str], str] | None = None,
) -> pd.DataFrame:
    """The metrics table from in-memory results keyed by ``(method, stratum)``; ``not_run``:
    ``(method, stratum) -> reason`` of the jobs that did not run (stratum "all": every stratum)."""
    not_run = dict(not_run or {})
    if not results and not not_run:
        raise ValueError("no ISP results to evaluate")
    bar = {**M.DEFAULT_BAR, **(bar or {})}
    methods = list(dict.fromkeys(m for m, _ in results))
    strata = sorted({s for _, s in results})
    has_baseline = BASELINE in methods
    if not has_baseline:
        log.warning("no '%s' among the methods: consistency figures are left empty", BASELINE)
    rows, seen = [], set()
    for method in methods:
        per = [(s, results[(method, s)]) for s in strata if (method, s) in results]
        missing = [s for s in strata if (method, s) not in results and (method, s) not in not_run]
        if missing:
            raise InputError(f"method {method} has no result for strata {missing}: rerun isp_infer")
        scopes = [(s, r, [perfs[(method, s)]]) for s, r in per]
        scopes.append((OVERALL, _pool(per), [perfs[(method, s)] for s, _ in per]))
        pooled_baseline = _pool([(s, results[(BASELINE, s)]) for s, _ in per]) if has_baseline else None
        for stratum, r, perf in scopes:
            row = {"method": method, "stratum": stratum, **_perf_row(perf), **_effects(r)}
            if has_baseline:
                ref = results[(BASELINE, stratum)] if stratum != OVERALL else pooled_baseline
                row.update(M.consistency(r, ref, bar))
            else:
                row.update(passes_bar=None, failed_criteria="no baseline to compare with")
            cell_types = None
            if stratum == OVERALL and len(per) > 1:
                cell_types = np.concatenate([r["stratum_of_cell"], r["stratum_of_pert"]])
            row.update(_quality(r, seed, cell_types))
            rows.append(row)
            seen.add((method, stratum))
    for (method, stratum), reason in not_run.items():
        scopes = [*strata, OVERALL] if stratum == OVERALL else [stratum, OVERALL]
        for scope in scopes:
            if (method, scope) not in seen:
                rows.append({"method": method, "stratum": scope, "status": NOT_RUN, "reason": reason})
                seen.add((method, scope))
    table = pd.DataFrame(rows)
    for col in METRICS_COLUMNS:
        if col not in table.columns:
            table[col] = np.nan
    table["speedup"] = table["speedup_min"] = table["speedup_max"] = np.nan
    if has_baseline:
        base = table[table["method"] == BASELINE].set_index("stratum")
        # on the same work (the baseline's cells and perturbations) the ratio of times, which equals
        # the ratio of perturbation rates and stays defined for a stratum without perturbations
        # (its cells are still embedded and timed), so the row over all strata, whose times include
        # such strata, lies inside its range over the strata
        same = (table["stratum"].map(base["n_perturbations"]) == table["n_perturbations"]) & (
            table["stratum"].map(base["n_cells"]) == table["n_cells"])
        by_time = table["stratum"].map(base["wall_s"]) / table["wall_s"]
        by_rate = table["perturbations_per_s"] / table["stratum"].map(base["perturbations_per_s"])
        table["speedup"] = by_time.where(same, by_rate)
        _speedup_ranges(table, base, same)
    quality = [c for c in table.columns if c not in METRICS_COLUMNS]
    return table[[*METRICS_COLUMNS, *quality]]


def evaluate_run(npz_paths, perf_paths, out_path, bar=None, seed: int = 0, not_planned=None) -> pd.DataFrame:
    """Read every ``{method}/{stratum}.npz`` and ``.perf.json`` (:mod:`netpert.isp.records`),
    write ``metrics.tsv`` atomically. ``not_planned``: method -> why the plan left it out."""
    perfs, results, not_run = {}, {}, {}
    for path in map(Path, perf_paths):
        perf = read_perf(path)
        if perf.shard is not None:
            raise InputError(f"{path} is one shard of {perf.method} / {perf.stratum}, not the stratum's record: "
                             "evaluate the file isp_merge joins from the shards")
        perfs[(perf.method, perf.stratum)] = perf
    for path in map(Path, npz_paths):
        r = read_result(path)
        key = _key(path, r)
        if key not in perfs:
            raise InputError(f"{path} has no perf record beside it ({key[0]} / {key[1]}): rerun isp_infer")
        if perfs[key].status == NOT_RUN:
            not_run[key] = perfs[key].reason
        else:
            results[key] = r
    for method, reason in (not_planned or {}).items():
        not_run[(method, OVERALL)] = reason
    table = evaluate(results, perfs, bar=bar, seed=seed, not_run=not_run)
    for (method, stratum), reason in not_run.items():
        log.info("method %s not run (%s): %s", method, stratum, reason)
    with atomic_path(out_path) as tmp:
        table.to_csv(tmp, sep="\t", index=False, float_format="%.8g")
    under = table[(table["stratum"] == OVERALL) & (table["passes_bar"] == False)]  # noqa: E712
    for row in under.itertuples():
        log.warning("method %s is under the consistency bar: %s", row.method, row.failed_criteria)
    return table

"""Collect every stage's outputs into tables: Snakemake benchmarks, strata, networks,
VIPER activity, ISP performance and consistency.

Each reader takes paths and returns a :class:`pandas.DataFrame`; a value the inputs do not
hold stays missing (NaN / None, printed "n/a"), it is never filled in.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from netpert.errors import InputError

log = logging.getLogger(__name__)

#: columns of a Snakemake ``benchmark:`` file (Snakemake >= 8)
BENCHMARK_COLUMNS = ("s", "h:m:s", "max_rss", "max_vms", "max_uss", "max_pss", "io_in", "io_out", "mean_load", "cpu_time")
#: the workflow's rules in the order they run; rules not listed here follow, by name
STAGE_ORDER = (
    "prepare_data", "stratify",
    "aracne_threshold", "aracne_bootstrap", "aracne_consensus",
    "viper", "master_regulators",
    "isp_model", "isp_tokenize", "export_onnx", "quantize_onnx", "build_tensorrt", "isp_infer", "isp_evaluate",
    "report",
)
#: the ISP methods in the order the report lists them (others follow by name)
METHOD_ORDER = ("baseline", "batched", "amp", "onnx", "onnx_int8", "tensorrt")
#: default consistency bar (config isp.bar)
DEFAULT_BAR = {"mean_cosine": 0.999, "min_cosine": 0.99, "spearman": 0.95}


def stage_family(rule: str) -> str:
    """The part of the workflow a rule belongs to: data, aracne, viper, isp or report."""
    if rule in ("prepare_data", "stratify"):
        return "data"
    if rule.startswith("aracne"):
        return "aracne"
    if rule in ("viper", "master_regulators") or rule.startswith("viper"):
        return "viper"
    if rule.startswith("isp") or rule in ("export_onnx", "quantize_onnx", "build_tensorrt"):
        return "isp"
    if rule == "report":
        return "report"
    return "other"


def _ordered(names: Iterable[str], order: Sequence[str]) -> list[str]:
    names = list(dict.fromkeys(names))
    known = [n for n in order if n in names]
    return known + sorted(n for n in names if n not in order)


# --------------------------------------------------------------------------- benchmarks
def read_benchmark_file(path: str | Path) -> pd.DataFrame:
    """One Snakemake benchmark TSV (one row per repeat); "NA"/"-" become NaN."""
    path = Path(path)
    try:
        table = pd.read_csv(path, sep="\t", na_values=["NA", "-", ""])
    except (pd.errors.EmptyDataError, pd.errors.ParserError) as exc:
        raise InputError(f"benchmark file {path} is not a Snakemake benchmark TSV ({exc}); delete it and rerun the rule") from exc
    if "s" not in table.columns:
        raise InputError(
            f"benchmark file {path} has no 's' column (columns: {', '.join(map(str, table.columns))}); "
            "it is not a Snakemake benchmark file: delete it and rerun the rule"
        )
    return table


def read_benchmarks(folder: str | Path) -> pd.DataFrame:
    """Every ``benchmark:`` file under ``folder``: one row per job.

    The rule is the first path component (``<rule>.tsv`` or ``<rule>/<wildcards...>.tsv``);
    ``job`` is the rest of the path (the wildcards). Repeats (``repeat()``) are averaged.
    Columns: rule, job, repeats, then the numeric benchmark columns (max_rss etc. in MB).
    """
    folder = Path(folder)
    columns = ["rule", "job", "repeats", *[c for c in BENCHMARK_COLUMNS if c != "h:m:s"]]
    if not folder.is_dir():
        return pd.DataFrame(columns=columns)
    rows = []
    for path in sorted(folder.rglob("*.tsv")):
        rel = path.relative_to(folder).with_suffix("")
        parts = rel.parts
        table = read_benchmark_file(path)
        if table.empty:
            continue
        numeric = table.drop(columns=[c for c in table.columns if c == "h:m:s"]).apply(pd.to_numeric, errors="coerce")
        means = numeric.mean(axis=0, skipna=True)
        row = {"rule": parts[0], "job": "/".join(parts[1:]) if len(parts) > 1 else "", "repeats": len(table)}
        for col in columns[3:]:
            row[col] = float(means[col]) if col in means.index else np.nan
        rows.append(row)
    return pd.DataFrame(rows, columns=columns)


def summarize_stages(jobs: pd.DataFrame) -> pd.DataFrame:
    """Per rule: number of jobs, summed seconds and CPU seconds, the largest max_rss (MB).

    Columns: stage, family, n_jobs, seconds, cpu_time, max_rss_mb, cpu_load (CPU seconds per
    wall second over the rule's jobs: 1.0 = one core busy). Rows in workflow order.
    """
    cols = ["stage", "family", "n_jobs", "seconds", "cpu_time", "max_rss_mb", "cpu_load"]
    if jobs.empty:
        return pd.DataFrame(columns=cols)
    rows = []
    for rule, grp in jobs.groupby("rule", sort=False):
        seconds = grp["s"].sum(min_count=1)
        cpu = grp["cpu_time"].sum(min_count=1)
        rows.append({
            "stage": rule,
            "family": stage_family(rule),
            "n_jobs": len(grp),
            "seconds": seconds,
            "cpu_time": cpu,
            "max_rss_mb": grp["max_rss"].max(),
            "cpu_load": cpu / seconds if pd.notna(cpu) and pd.notna(seconds) and seconds > 0 else np.nan,
        })
    table = pd.DataFrame(rows, columns=cols)
    order = _ordered(table["stage"], STAGE_ORDER)
    return table.set_index("stage").loc[order].reset_index()


# --------------------------------------------------------------------------- strata, networks
def read_strata(path: str | Path) -> pd.DataFrame:
    """``strata.tsv`` (a file, e.g. ``results/aracne/strata.tsv`` with each stratum's network outcome,
    or the strata folder holding the stratify checkpoint's table)."""
    path = Path(path)
    if path.is_dir():
        path = path / "strata.tsv"
    if not path.exists():
        raise InputError(f"strata table {path} does not exist: run the stratify rule first")
    table = pd.read_csv(path, sep="\t", keep_default_na=False, dtype={"slug": str, "stratum": str})
    missing = {"slug", "status"} - set(table.columns)
    if missing:
        raise InputError(f"strata table {path} lacks the column(s) {', '.join(sorted(missing))}: rerun the stratify rule")
    return table


def _slug_of(path: Path) -> str:
    return path.parent.name


def network_sizes(networks: Sequence[str | Path] = (), regulons: Sequence[str | Path] = ()) -> pd.DataFrame:
    """Per stratum (the file's folder name): ARACNe edges, regulators and targets; regulons kept.

    Columns: stratum, n_edges, n_regulators, n_targets, n_regulons, regulon_edges,
    median_regulon_size (missing where the regulon file is not given).
    """
    rows: dict[str, dict] = {}
    for path in map(Path, networks):
        net = pd.read_csv(path, sep="\t")
        cols = {c.lower(): c for c in net.columns}
        if "regulator" not in cols or "target" not in cols:
            raise InputError(f"network {path} lacks Regulator/Target columns (has {', '.join(net.columns)})")
        rows.setdefault(_slug_of(path), {})
        rows[_slug_of(path)].update(
            n_edges=len(net),
            n_regulators=net[cols["regulator"]].nunique(),
            n_targets=net[cols["target"]].nunique(),
        )
    for path in map(Path, regulons):
        reg = pd.read_csv(path, sep="\t")
        cols = {c.lower(): c for c in reg.columns}
        if "regulator" not in cols or "target" not in cols:
            raise InputError(f"regulon table {path} lacks regulator/target columns (has {', '.join(reg.columns)})")
        sizes = reg.groupby(cols["regulator"]).size()
        rows.setdefault(_slug_of(path), {})
        rows[_slug_of(path)].update(
            n_regulons=len(sizes),
            regulon_edges=len(reg),
            median_regulon_size=float(sizes.median()) if len(sizes) else np.nan,
        )
    cols = ["stratum", "n_edges", "n_regulators", "n_targets", "n_regulons", "regulon_edges", "median_regulon_size"]
    return pd.DataFrame([{"stratum": k, **v} for k, v in rows.items()], columns=cols)


# --------------------------------------------------------------------------- VIPER
def read_master_regulators(path: str | Path):
    """``viper/master_regulators.tsv`` as a :class:`netpert.mr_table.MasterRegulatorTable`
    (``.regulators``: the reported ones; ``.strata``: what every stratum had)."""
    from netpert.mr_table import read_master_regulators as read

    return read(path)


def mr_strata_table(mr_strata: pd.DataFrame, strata: pd.DataFrame, perf: pd.DataFrame | None = None,
                    regulators: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per stratum of the master-regulator summary: its cell type, status label (``master
    regulators`` / ``no network`` / ``no significant regulator``), counts, the regulators reported
    (up / down) and, where ISP ran, the perturbations it ran and the ``isp_note`` (why a stratum
    had no perturbation target). Columns: stratum, cell_type, status, label, reason, n_regulons,
    n_tested, n_candidates_up, n_candidates_down, n_reported, up, down, isp_perturbations, isp_note."""
    from netpert.mr_table import REPORTED, STATUS_LABELS

    cols = ["stratum", "cell_type", "status", "label", "reason", "n_regulons", "n_tested", "n_candidates_up",
            "n_candidates_down", "n_reported", "up", "down", "isp_perturbations", "isp_note"]
    if mr_strata is None or mr_strata.empty:
        return pd.DataFrame(columns=cols)
    cell_type = dict(zip(strata["slug"], strata["cell_type"])) if "cell_type" in strata.columns else {}
    n_pert = {}
    if perf is not None and not perf.empty and "n_perturbations" in perf.columns:
        n_pert = pd.to_numeric(perf["n_perturbations"], errors="coerce").groupby(perf["stratum"].astype(str)).max().to_dict()
    regs = regulators if regulators is not None else pd.DataFrame(columns=["stratum", "regulator", "direction", "rank"])
    rows = []
    for r in mr_strata.itertuples(index=False):
        mine = regs[regs["stratum"] == r.stratum].sort_values("rank", kind="stable") if len(regs) else regs
        by_dir = {d: ", ".join(mine.loc[mine["direction"] == d, "regulator"].astype(str)) for d in ("up", "down")}
        n = n_pert.get(str(r.stratum))
        note = ""
        if n is not None and np.isfinite(n) and n == 0:
            note = (f"{STATUS_LABELS.get(r.status, r.status)}: {r.reason}".rstrip(": ") if r.status != REPORTED
                    else "no target applies to the sampled cells (e.g. none expressed)")
        rows.append(dict(stratum=r.stratum, cell_type=cell_type.get(r.stratum, r.stratum), status=r.status,
                         label=STATUS_LABELS.get(r.status, r.status), reason=r.reason, n_regulons=r.n_regulons,
                         n_tested=r.n_tested, n_candidates_up=r.n_candidates_up, n_candidates_down=r.n_candidates_down,
                         n_reported=r.n_reported, up=by_dir["up"], down=by_dir["down"],
                         isp_perturbations=n if n is not None else np.nan, isp_note=note))
    table = pd.DataFrame(rows, columns=cols)
    # strata with a network first (in the table's order), then the background ones
    return table.iloc[np.argsort((table["status"] == "no_network").to_numpy(), kind="stable")].reset_index(drop=True)


def mr_row_notes(mr_strata: pd.DataFrame, strata: pd.DataFrame) -> dict[str, str]:
    """Cell type -> "no network" / "no significant regulator" for the cell types whose strata
    all lack master regulators (the heatmap marks those rows instead of hiding them)."""
    from netpert.mr_table import REPORTED, STATUS_LABELS

    if mr_strata is None or mr_strata.empty:
        return {}
    cell_type = dict(zip(strata["slug"], strata["cell_type"])) if "cell_type" in strata.columns else {}
    status: dict[str, set] = {}
    for r in mr_strata.itertuples(index=False):
        status.setdefault(str(cell_type.get(r.stratum, r.stratum)), set()).add(r.status)
    return {ct: " / ".join(STATUS_LABELS[s] for s in sorted(st)) for ct, st in status.items() if REPORTED not in st}


def master_regulator_activity(
    activity: str | Path,
    master_regulators: pd.DataFrame,
    groupby: str = "cell_type",
    max_regulators: int = 40,
) -> pd.DataFrame:
    """Mean NES of each master regulator (columns) over the cells of each group (rows).

    ``activity`` is ``viper/activity.h5ad`` (cells x regulators, NES in X); ``master_regulators``
    the reported regulators (a frame with stratum, regulator, direction, rank, e.g.
    ``MasterRegulatorTable.regulators``, or the table itself). Regulators are taken in the
    table's order (stratum, then rank), at most ``max_regulators``; those absent from the
    activity matrix are left out (logged). Every group of cells is a row, those of strata
    without master regulators included.
    """
    if hasattr(master_regulators, "regulators"):
        master_regulators = master_regulators.regulators
    import anndata as ad

    adata = ad.read_h5ad(activity)
    if groupby not in adata.obs.columns:
        raise InputError(
            f"activity {activity} has no obs column '{groupby}' (has {', '.join(map(str, adata.obs.columns))}): rerun the viper rule"
        )
    table = master_regulators.copy()
    table["regulator"] = table["regulator"].astype(str)
    missing = sorted(set(table["regulator"]) - set(adata.var_names))
    if missing:
        log.warning("master regulators missing from %s: %s", activity, ", ".join(missing))
        table = table[~table["regulator"].isin(missing)]
    if "rank" in table.columns:
        # the best ranks of every stratum and direction first, as many ranks as fit max_regulators
        table = table.assign(_dir=table.get("direction", pd.Series("", index=table.index)).map({"up": 0, "down": 1}))
        table = table.sort_values(["stratum", "_dir", "rank"], kind="stable")
        ranks = sorted(pd.to_numeric(table["rank"], errors="coerce").dropna().unique())
        keep = table.iloc[0:0]
        for r in ranks:
            cand = table[pd.to_numeric(table["rank"], errors="coerce") <= r]
            if cand["regulator"].nunique() > max_regulators and len(keep):
                break
            keep = cand
        table = keep
    present = list(dict.fromkeys(table["regulator"]))[:max_regulators]
    if not present:
        return pd.DataFrame()
    X = adata[:, present].X
    X = X.toarray() if hasattr(X, "toarray") else np.asarray(X)
    frame = pd.DataFrame(X, columns=present, index=adata.obs_names)
    groups = adata.obs[groupby].astype(str).values
    return frame.groupby(groups, sort=True).mean()


# --------------------------------------------------------------------------- ISP
def _flatten(d: Mapping, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def read_json(path: str | Path) -> dict:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"{path} is not valid JSON ({exc}): delete it and rerun the rule that wrote it") from exc


def read_perf(paths: Sequence[str | Path]) -> pd.DataFrame:
    """The ``isp/{method}/{stratum}.perf.json`` files: one row per (method, stratum), nested keys
    flattened with dots (``backend.providers``). Method and stratum come from the path."""
    rows = []
    for path in map(Path, paths):
        data = _flatten(read_json(path))
        data.pop("method", None)
        data.pop("stratum", None)
        rows.append({"method": path.parent.name, "stratum": path.name.removesuffix(".perf.json"), **data})
    return pd.DataFrame(rows)


def _col(frame: pd.DataFrame, *names: str) -> pd.Series | None:
    """The first of ``names`` that is a column of ``frame`` (as numbers), else None."""
    for name in names:
        if name in frame.columns:
            return pd.to_numeric(frame[name], errors="coerce")
    return None


#: perf.json keys (first match wins) for each quantity of the methods table
PERF_KEYS = {
    "wall_s": ("wall_s", "wall_time_s", "seconds", "time_s", "timing.wall_s"),
    "n_perturbations": ("n_perturbations", "perturbations", "n_perturbed"),
    "n_cells": ("n_cells", "cells"),
    "n_forward": ("n_sequences", "n_forward", "sequences"),
    "perturbations_per_s": ("perturbations_per_s", "throughput.perturbations_per_s"),
    "cells_per_s": ("cells_per_s", "throughput.cells_per_s"),
    "peak_rss_mb": ("peak_rss_mb", "max_rss_mb", "memory.peak_rss_mb"),
    "cpu_percent": ("cpu_percent", "mean_cpu_percent", "cpu.percent"),
    "gpu_peak_mem_mb": ("gpu_peak_mem_mb", "gpu.peak_mem_mb", "gpu_max_memory_mb", "gpu.max_memory_allocated_mb"),
    "gpu_util_percent": ("gpu_util_percent", "gpu.util_percent", "gpu.utilization_percent"),
}


def summarize_perf(perf: pd.DataFrame) -> pd.DataFrame:
    """Per method over its strata: total wall seconds, work done, throughputs, peak memory.

    Throughput is total work over total time: where a file gives a rate but not the count, the
    count is rate x wall time. Peak memory is the max over strata, CPU % the time-weighted mean.
    """
    cols = ["method", *PERF_KEYS]
    if perf.empty:
        return pd.DataFrame(columns=cols)
    rows = []
    for method, grp in perf.groupby("method", sort=False):
        get = {k: _col(grp, *names) for k, names in PERF_KEYS.items()}
        wall = get["wall_s"]
        row = {"method": method, "wall_s": wall.sum(min_count=1) if wall is not None else np.nan}

        def count(total_key, rate_key):
            if get[total_key] is not None and get[total_key].notna().all():
                return get[total_key].sum()
            if get[rate_key] is not None and wall is not None and (get[rate_key] * wall).notna().all():
                return (get[rate_key] * wall).sum()
            return np.nan

        n_pert, n_cells = count("n_perturbations", "perturbations_per_s"), count("n_cells", "cells_per_s")
        row["n_perturbations"], row["n_cells"] = n_pert, n_cells
        row["n_forward"] = get["n_forward"].sum(min_count=1) if get["n_forward"] is not None else np.nan
        ok = pd.notna(row["wall_s"]) and row["wall_s"] > 0
        row["perturbations_per_s"] = n_pert / row["wall_s"] if ok and pd.notna(n_pert) else np.nan
        row["cells_per_s"] = n_cells / row["wall_s"] if ok and pd.notna(n_cells) else np.nan
        for key in ("peak_rss_mb", "gpu_peak_mem_mb"):
            row[key] = get[key].max() if get[key] is not None else np.nan
        for key in ("cpu_percent", "gpu_util_percent"):
            s = get[key]
            if s is None or s.isna().all():
                row[key] = np.nan
            elif wall is not None and wall.notna().all() and wall.sum() > 0:
                row[key] = float((s * wall).sum() / wall.sum())
            else:
                row[key] = float(s.mean())
        rows.append(row)
    return pd.DataFrame(rows, columns=cols)


#: perf.json keys describing how a method ran (shown per method in the report, where present)
FACT_KEYS = ("device", "batching", "batch_size", "threads", "backend.runtime", "backend.precision",
             "backend.quantization", "backend.providers", "backend.attn_implementation")


def perf_facts(perf: pd.DataFrame) -> pd.DataFrame:
    """Per method, how it ran: device, batching, batch size, threads and the backend's own
    description (precision, providers ...), as strings; values that differ between strata are
    joined with " | "."""
    if perf.empty:
        return pd.DataFrame(columns=["method"])
    cols = [c for c in FACT_KEYS if c in perf.columns]
    rows = []
    for method, grp in perf.groupby("method", sort=False):
        row = {"method": method}
        for col in cols:
            values = grp[col].dropna()
            if values.empty:
                continue
            uniq = list(dict.fromkeys(map(_fmt_fact, values)))
            row[col] = uniq[0] if len(uniq) == 1 else " | ".join(uniq)
        rows.append(row)
    return pd.DataFrame(rows, columns=["method", *cols])


def _fmt_fact(v) -> str:
    if isinstance(v, (list, tuple)):
        return ", ".join(map(str, v))
    if isinstance(v, float) and v == int(v):
        return str(int(v))
    return str(v)


def read_metrics(path: str | Path | None, overall: str = "all") -> pd.DataFrame:
    """``isp/metrics.tsv`` as one row per method (consistency vs baseline, embedding quality).

    Where the table has a ``stratum`` column, the rows of stratum ``overall`` (over all strata)
    are used; a method without such a row gets its strata combined: ``min_*`` columns by their
    minimum, ``max_*`` by their maximum, other numbers by their mean.
    """
    if path is None or not Path(path).exists():
        return pd.DataFrame(columns=["method"])
    table = pd.read_csv(path, sep="\t")
    if "method" not in table.columns:
        raise InputError(f"ISP metrics {path} has no 'method' column: rerun the isp_evaluate rule")
    if "stratum" not in table.columns:
        return table.drop_duplicates("method", keep="last").reset_index(drop=True)
    table["stratum"] = table["stratum"].astype(str)
    rows = []
    for method, grp in table.groupby("method", sort=False):
        top = grp[grp["stratum"] == overall]
        if not top.empty:
            rows.append(top.iloc[-1].to_dict())
            continue
        if len(grp) == 1:
            rows.append(grp.iloc[0].to_dict())
            continue
        row = {"method": method, "stratum": overall}
        for col in grp.columns:
            if col in ("method", "stratum"):
                continue
            values = pd.to_numeric(grp[col], errors="coerce")
            if values.notna().any() and not pd.api.types.is_bool_dtype(grp[col]):
                row[col] = values.min() if col.startswith("min_") else values.max() if col.startswith("max_") else values.mean()
            else:
                uniq = grp[col].dropna().unique()
                row[col] = uniq[0] if len(uniq) == 1 else None
        rows.append(row)
    return pd.DataFrame(rows).drop(columns=["stratum"])


#: metrics.tsv columns (first match wins) for the consistency quantities
CONSISTENCY_KEYS = {
    "mean_cosine": ("mean_cosine", "cosine_mean", "consistency_mean_cosine"),
    "min_cosine": ("min_cosine", "cosine_min", "consistency_min_cosine"),
    "spearman": ("spearman", "effect_spearman", "spearman_effects", "consistency_spearman"),
    "max_shift_diff": ("max_shift_diff", "shift_max_abs_diff", "max_abs_shift_diff"),
}
#: metrics.tsv columns that say whether the method passed the bar
PASS_KEYS = ("passes_bar", "pass_bar", "bar_pass", "passed", "pass")


def _as_bool(v) -> bool | None:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    s = str(v).strip().lower()
    if s in ("true", "1", "yes", "pass", "passed"):
        return True
    if s in ("false", "0", "no", "fail", "failed"):
        return False
    return None


def method_table(
    perf_summary: pd.DataFrame,
    metrics: pd.DataFrame,
    baseline: str = "baseline",
    bar: Mapping[str, float] | None = None,
) -> pd.DataFrame:
    """One row per ISP method: performance, speedup over ``baseline``, consistency and the bar.

    ``speedup`` is perturbations/s over the baseline's (wall-time ratio where no throughput is
    known). ``passes_bar`` is taken from metrics.tsv where it says so, else computed from
    ``bar`` (mean_cosine, min_cosine, spearman minima) on the columns present; ``bar_failures``
    names the criteria missed. Every other metrics.tsv column is carried along unchanged.
    """
    bar = {**DEFAULT_BAR, **(bar or {})}
    table = perf_summary.copy()
    if table.empty and metrics.empty:
        return pd.DataFrame(columns=["method"])
    if not metrics.empty:
        m = metrics.copy()
        rename = {}
        for key, names in CONSISTENCY_KEYS.items():
            for name in names:
                if name in m.columns:
                    rename[name] = key
                    break
        m = m.rename(columns=rename)
        table = table.merge(m, on="method", how="outer", suffixes=("", "_metrics"))
    for key in CONSISTENCY_KEYS:
        if key not in table.columns:
            table[key] = np.nan
    # speedup
    base = table[table["method"] == baseline]
    table["speedup"] = np.nan
    if not base.empty:
        b = base.iloc[0]
        if "perturbations_per_s" in table and pd.notna(b.get("perturbations_per_s")) and b["perturbations_per_s"] > 0:
            table["speedup"] = table["perturbations_per_s"] / b["perturbations_per_s"]
        elif "wall_s" in table and pd.notna(b.get("wall_s")):
            table["speedup"] = b["wall_s"] / table["wall_s"]
    # the bar
    passes, failures = [], []
    pass_col = next((c for c in PASS_KEYS if c in table.columns), None)
    for _, row in table.iterrows():
        missed = []
        for key in ("mean_cosine", "min_cosine", "spearman"):
            value = pd.to_numeric(row.get(key), errors="coerce")
            if key in bar and pd.notna(value) and value < bar[key]:
                missed.append(f"{key} {value:.4g} < {bar[key]:g}")
        given = _as_bool(row[pass_col]) if pass_col else None
        if row["method"] == baseline:
            passes.append(True if given is None else given)
        elif given is not None:
            passes.append(given)
        elif all(pd.isna(row.get(k)) for k in ("mean_cosine", "min_cosine", "spearman")):
            passes.append(None)
        else:
            passes.append(not missed)
        failures.append("; ".join(missed))
    table["passes_bar"] = pd.Series(passes, index=table.index, dtype=object)
    table["bar_failures"] = failures
    if pass_col and pass_col != "passes_bar":
        table = table.drop(columns=[pass_col])
    order = _ordered(table["method"], METHOD_ORDER)
    table = table.set_index("method").loc[order].reset_index()
    table.attrs["quality_columns"] = quality_columns_of(metrics)
    return table


#: substrings of metrics.tsv columns that are about consistency with the baseline, not quality
_CONSISTENCY_WORDS = ("cosine", "spearman", "shift", "bar", "pass", "consisten", "diff", "baseline")
#: ... and those about performance or effect size, reported in their own columns
_PERF_WORDS = ("wall", "_per_s", "rss", "trained", "speedup", "effect", "seconds", "cpu", "gpu")
#: isp_evaluate's embedding-quality columns start with these
QUALITY_PREFIXES = ("perturbation_", "cell_type_", "control_")


def quality_columns_of(metrics: pd.DataFrame) -> list[str]:
    """The embedding-quality columns of metrics.tsv: numeric, and not consistency measures or counts."""
    out = []
    prefixed = [c for c in metrics.columns if c.startswith(QUALITY_PREFIXES)]
    for col in prefixed or metrics.columns:
        low = col.lower()
        if col == "method" or low.startswith("n_") or (
            not prefixed and any(w in low for w in _CONSISTENCY_WORDS + _PERF_WORDS)
        ):
            continue
        if pd.to_numeric(metrics[col], errors="coerce").notna().any():
            out.append(col)
    return out


def fastest_method(methods: pd.DataFrame, baseline: str = "baseline", require_bar: bool = False) -> str | None:
    """The method with the highest throughput (speedup), optionally only among those passing the bar."""
    if methods.empty or "speedup" not in methods or methods["speedup"].isna().all():
        return None
    cand = methods.dropna(subset=["speedup"])
    if require_bar:
        cand = cand[cand["passes_bar"].map(lambda v: v is True)]
    if cand.empty:
        return None
    return str(cand.sort_values("speedup", ascending=False, kind="stable").iloc[0]["method"])


def read_embeddings(path: str | Path) -> dict[str, np.ndarray]:
    """An ``isp/{method}/{stratum}.npz`` as a dict of arrays."""
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


#: npz keys (first match wins): original cells' embeddings, perturbed embeddings, perturbation labels
NPZ_ORIGINAL = ("original", "originals", "cell", "cells", "emb_original")
NPZ_PERTURBED = ("perturbed", "perturbed_cell", "emb_perturbed")
NPZ_LABELS = ("perturbation", "perturbations", "labels", "perturbation_labels", "targets")


def _first_key(data: Mapping, names: Sequence[str]):
    return next((data[k] for k in names if k in data), None)


def embedding_points(paths: Sequence[str | Path]) -> tuple[np.ndarray, np.ndarray]:
    """The cell embeddings of a method's npz files as UMAP input: (X (n, H), labels (n,)).

    Each file holds ``original`` (cells, H) and ``perturbed`` (perturbations, H) with one
    ``perturbation`` label per row (netpert.isp.runner's format). Original cells are labelled
    "original", perturbed ones by their perturbation.
    """
    xs, labels = [], []
    for path in paths:
        data = read_embeddings(path)
        orig = _first_key(data, NPZ_ORIGINAL)
        pert = _first_key(data, NPZ_PERTURBED)
        labs = _first_key(data, NPZ_LABELS)
        if orig is None and pert is None:
            raise InputError(
                f"{path} holds none of the embedding arrays {NPZ_ORIGINAL + NPZ_PERTURBED} (keys: {', '.join(data)}): "
                "rerun the isp_infer rule"
            )
        for X, lab in ((orig, None), (pert, labs)):
            if X is None or X.size == 0:
                continue
            X = np.asarray(X, dtype=np.float32)
            if X.ndim != 2:
                raise InputError(f"{path}: embeddings of shape {X.shape}, expected (rows, hidden): rerun the isp_infer rule")
            if lab is not None and len(lab) != len(X):
                raise InputError(f"{path}: {len(lab)} perturbation labels for {len(X)} perturbed embeddings: rerun isp_infer")
            xs.append(X)
            labels += ["original"] * len(X) if X is orig else [str(v) for v in (lab if lab is not None else ["perturbed"] * len(X))]
    if not xs:
        return np.zeros((0, 0), dtype=np.float32), np.array([], dtype=str)
    return np.concatenate(xs, axis=0), np.asarray(labels)


def quality_table(methods: pd.DataFrame, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """The embedding-quality columns of the methods table (``columns``; by default those
    recorded as such in ``methods.attrs['quality_columns']``), with 'method' first."""
    if columns is None:
        columns = methods.attrs.get("quality_columns", [])
    keep = [c for c in columns if c in methods.columns and pd.to_numeric(methods[c], errors="coerce").notna().any()]
    out = methods[["method", *keep]].copy() if "method" in methods else pd.DataFrame(columns=["method"])
    for c in keep:
        out[c] = pd.to_numeric(out[c], errors="coerce")
    return out


# --------------------------------------------------------------------------- model provenance
def model_provenance(model_dir: str | Path | None, perf: pd.DataFrame | None = None) -> dict:
    """The model's provenance (``isp/model/netpert_model.json``) with ``trained`` normalised to
    True/False/None; when the file does not say, the perf files' ``trained`` flag is used."""
    info: dict = {}
    if model_dir is not None:
        path = Path(model_dir)
        path = path / "netpert_model.json" if path.is_dir() else path
        if path.exists():
            info = read_json(path)
    trained = None
    for key in ("trained", "weights_trained", "pretrained"):
        if key in info:
            trained = _as_bool(info[key])
            break
    if trained is None and "random_init" in info:
        ri = _as_bool(info["random_init"])
        trained = None if ri is None else not ri
    if trained is None and perf is not None and not perf.empty:
        for col in ("trained", "weights_trained", "model.trained", "model_trained"):
            if col in perf.columns:
                vals = {_as_bool(v) for v in perf[col]}
                if len(vals) == 1:
                    trained = vals.pop()
                break
    info = dict(info)
    info["trained"] = trained
    return info


def artifact_reports(artifacts: Sequence[str | Path] = ()) -> dict[str, dict]:
    """The JSON reports beside the ONNX / TensorRT artifacts (``model.onnx.json`` ...), keyed by artifact file name."""
    out = {}
    for path in map(Path, artifacts):
        rep = path.with_name(path.name + ".json")
        if rep.exists():
            out[path.name] = read_json(rep)
    return out


# --------------------------------------------------------------------------- everything
@dataclass
class ReportData:
    """Everything the report shows, as tables."""

    stages: pd.DataFrame
    jobs: pd.DataFrame
    strata: pd.DataFrame
    networks: pd.DataFrame
    mr_activity: pd.DataFrame
    master_regulators: pd.DataFrame  # the reported ones (MasterRegulatorTable.regulators)
    perf: pd.DataFrame
    methods: pd.DataFrame
    method_facts: pd.DataFrame
    model: dict
    artifacts: dict
    skipped: dict
    bar: dict
    embeddings: dict = field(default_factory=dict)  # method -> list of npz paths
    baseline: str = "baseline"
    dataset: dict = field(default_factory=dict)
    #: what every stratum had (MasterRegulatorTable.strata: status, reason, regulons, candidates)
    mr_strata: pd.DataFrame = field(default_factory=pd.DataFrame)


def collect(
    strata: str | Path,
    networks: Sequence[str | Path] = (),
    regulons: Sequence[str | Path] = (),
    activity: str | Path | None = None,
    master_regulators: str | Path | None = None,
    metrics: str | Path | None = None,
    model: str | Path | None = None,
    npz: Sequence[str | Path] = (),
    perf: Sequence[str | Path] = (),
    artifacts: Sequence[str | Path] = (),
    benchmarks: str | Path | None = None,
    skipped: Mapping[str, str] | None = None,
    bar: Mapping[str, float] | None = None,
    baseline: str = "baseline",
    dataset: Mapping | None = None,
) -> ReportData:
    """Read every stage's outputs into a :class:`ReportData` (see the module docstring)."""
    jobs = read_benchmarks(benchmarks) if benchmarks is not None else pd.DataFrame(columns=["rule", "job", "repeats", "s"])
    strata_table = read_strata(strata)
    if master_regulators:
        mr_table = read_master_regulators(master_regulators)
        mrs, mr_strata = mr_table.regulators, mr_table.strata
    else:
        mrs, mr_strata = pd.DataFrame(columns=["stratum", "regulator"]), pd.DataFrame()
    perf_table = read_perf(perf)
    metrics_table = read_metrics(metrics)
    methods = method_table(summarize_perf(perf_table), metrics_table, baseline=baseline, bar=bar)
    embeddings: dict[str, list[str]] = {}
    for path in map(Path, npz):
        embeddings.setdefault(path.parent.name, []).append(str(path))
    ds = dict(dataset or {})
    kept = strata_table[strata_table["status"] == "kept"]
    if "n_cells" in strata_table.columns:
        ds.setdefault("n_cells", int(pd.to_numeric(strata_table["n_cells"], errors="coerce").sum()))
    ds.setdefault("n_strata", len(strata_table))
    ds.setdefault("n_kept", len(kept))
    return ReportData(
        stages=summarize_stages(jobs),
        jobs=jobs,
        strata=strata_table,
        networks=network_sizes(networks, regulons),
        mr_activity=master_regulator_activity(activity, mrs) if activity and not mrs.empty else pd.DataFrame(),
        master_regulators=mrs,
        perf=perf_table,
        methods=methods,
        method_facts=perf_facts(perf_table),
        model=model_provenance(model, perf_table),
        artifacts=artifact_reports(artifacts),
        skipped=dict(skipped or {}),
        bar={**DEFAULT_BAR, **(bar or {})},
        embeddings=embeddings,
        baseline=baseline,
        dataset=ds,
        mr_strata=mr_strata,
    )


def benchmark_table(data: ReportData) -> pd.DataFrame:
    """``benchmark.csv``: one row per ISP method (kind ``isp_method``) and per workflow stage
    (kind ``stage``), with the columns of both (empty where they do not apply)."""
    m = data.methods.copy()
    m.insert(0, "kind", "isp_method")
    m = m.rename(columns={"method": "name"})
    s = data.stages.copy()
    s.insert(0, "kind", "stage")
    s = s.rename(columns={"stage": "name"})
    skipped = pd.DataFrame(
        [{"kind": "isp_method", "name": k, "status": "not run", "reason": v} for k, v in data.skipped.items()],
        columns=["kind", "name", "status", "reason"],
    )
    if not m.empty:
        m.insert(2, "status", "ran")
    if not s.empty:
        s.insert(2, "status", "ran")
    frames = [f for f in (m, skipped, s) if not f.empty]
    if not frames:
        return pd.DataFrame(columns=["kind", "name", "status"])
    return pd.concat(frames, ignore_index=True, sort=False)

"""Collect every stage's outputs into tables: Snakemake benchmarks, strata, networks,
VIPER activity, ISP performance and consistency.

Each reader takes paths and returns a :class:`pandas.DataFrame`. The ISP stage's files are read
with their own readers (:mod:`netpert.isp.records`): a perf.json, npz or metrics.tsv of another
layout is an InputError naming the file, never a guess. The ISP figures are isp_evaluate's
(``isp/metrics.tsv``, computed once there); the perf records add how each method ran. A value
the inputs do not hold stays missing (NaN / None, printed "n/a"), it is never filled in.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from netpert.errors import InputError
from netpert.isp.evaluate import OVERALL
from netpert.isp.methods import BASELINE, METHODS
from netpert.isp.records import (
    METRICS_COLUMNS,
    NOT_RUN,
    OK,
    PERF_FIELDS,
    PerfRecord,
    quality_columns,
    read_metrics,
    read_perf,
    read_result,
)
from netpert.report.inputs import ReportInputs, ReportOptions

log = logging.getLogger(__name__)

#: columns of a Snakemake ``benchmark:`` file (Snakemake >= 8)
BENCHMARK_COLUMNS = ("s", "h:m:s", "max_rss", "max_vms", "max_uss", "max_pss", "io_in", "io_out", "mean_load", "cpu_time")
#: the workflow's rules in the order they run; rules not listed here follow, by name
STAGE_ORDER = (
    "prepare_data", "stratify",
    "aracne_threshold", "aracne_bootstrap", "aracne_consensus", "aracne_import", "aracne_summary",
    "viper", "master_regulators",
    "isp_model", "isp_tokenize", "export_onnx", "quantize_onnx", "build_tensorrt", "isp_infer", "isp_merge", "isp_evaluate",
    "report",
)
#: the ISP methods in the order the report lists them: the registry's (others follow by name)
METHOD_ORDER = METHODS


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


def benchmark_job(folder: str | Path, path: str | Path) -> tuple[str, str]:
    """``(rule, job)`` of the benchmark file ``path`` under ``folder``: the rule is the first path
    component (``<rule>.tsv`` or ``<rule>/<wildcards...>.tsv``), the job the rest (the wildcards)."""
    try:
        parts = Path(path).relative_to(folder).with_suffix("").parts
    except ValueError:
        raise ValueError(f"benchmark file {path} is not under the benchmarks folder {folder}") from None
    return parts[0], "/".join(parts[1:])


def _planned_files(folder: Path, planned: Iterable[str | Path]) -> list[Path]:
    files = list(dict.fromkeys(Path(p) for p in planned))
    for path in files:
        benchmark_job(folder, path)  # each under the folder
    return files


def read_benchmarks(folder: str | Path, planned: Iterable[str | Path] | None = None) -> pd.DataFrame:
    """The ``benchmark:`` files under ``folder``: one row per job.

    ``planned``: the benchmark files of the jobs the workflow plans now (the report rule passes
    them): only those that exist are read, so files left by jobs of an earlier plan (another
    ``isp.cells_per_job``, a method or stratum since dropped) are not counted; ``None``: every
    file under ``folder``. Rule and job as :func:`benchmark_job`; repeats (``repeat()``) averaged.
    Columns: rule, job, repeats, then the numeric benchmark columns (max_rss etc. in MB).
    """
    folder = Path(folder)
    columns = ["rule", "job", "repeats", *[c for c in BENCHMARK_COLUMNS if c != "h:m:s"]]
    if planned is not None:
        paths = sorted(p for p in _planned_files(folder, planned) if p.is_file())
    elif folder.is_dir():
        paths = sorted(folder.rglob("*.tsv"))
    else:
        paths = []
    rows = []
    for path in paths:
        table = read_benchmark_file(path)
        if table.empty:
            continue
        numeric = table.drop(columns=[c for c in table.columns if c == "h:m:s"]).apply(pd.to_numeric, errors="coerce")
        means = numeric.mean(axis=0, skipna=True)
        rule, job = benchmark_job(folder, path)
        row = {"rule": rule, "job": job, "repeats": len(table)}
        for col in columns[3:]:
            row[col] = float(means[col]) if col in means.index else np.nan
        rows.append(row)
    return pd.DataFrame(rows, columns=columns)


def missing_benchmarks(folder: str | Path, planned: Iterable[str | Path] | None) -> pd.DataFrame:
    """The planned jobs (``planned``: their benchmark files under ``folder``) without a benchmark
    file: their time and memory are not in the stages table. Columns: rule, job (workflow order)."""
    folder = Path(folder)
    rows = [benchmark_job(folder, p) for p in _planned_files(folder, planned or ()) if not p.is_file()]
    table = pd.DataFrame(rows, columns=["rule", "job"])
    order = {rule: i for i, rule in enumerate(_ordered(table["rule"], STAGE_ORDER))}
    return table.sort_values(["rule", "job"], key=lambda c: c.map(order) if c.name == "rule" else c,
                             kind="stable").reset_index(drop=True)


def summarize_stages(jobs: pd.DataFrame) -> pd.DataFrame:
    """Per rule: number of jobs, summed seconds and CPU seconds, the largest max_rss (MB) (the
    shards of a stratum's ISP screen, with ``isp.cells_per_job``, are ``isp_infer`` jobs: their
    time summed, the largest shard's memory).

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


#: where each job's peak memory comes from (one source per job: the report shows one number)
SNAKEMAKE_MEMORY = "Snakemake benchmark max_rss (sampled each second for 30 s, then every 30 s)"
ISP_MEMORY = ("the job's own peak (VmHWM, process_peak_rss_mb in its perf.json, as in the ISP methods table; "
              "every shard is a job where isp.cells_per_job split a stratum)")


def one_memory_per_job(stages: pd.DataFrame, perf: pd.DataFrame) -> pd.DataFrame:
    """``stages`` with ``memory_source``: isp_infer's peak memory is the jobs' own exact peak
    (``process_peak_rss_mb`` of their perf records: the number the ISP methods table shows) where they
    recorded one, every other rule's Snakemake's sampled ``max_rss``."""
    stages = stages.assign(memory_source=SNAKEMAKE_MEMORY)
    own = pd.to_numeric(perf["process_peak_rss_mb"], errors="coerce").dropna() if "process_peak_rss_mb" in perf else pd.Series([])
    row = stages["stage"] == "isp_infer"
    if row.any() and not own.empty:
        stages.loc[row, "max_rss_mb"] = float(own.max())
        stages.loc[row, "memory_source"] = ISP_MEMORY
    return stages


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


def network_outcomes(data: "ReportData") -> pd.DataFrame:
    """Per stratum of strata.tsv: cell type, cells, edges, regulons and its network's outcome:
    ``network`` (regulons to score), ``empty`` (built, but no regulon kept: skipped) or ``not built``
    (skipped before ARACNe), with the reason."""
    st = data.strata
    rows = []
    for _, r in st.iterrows():
        edges = pd.to_numeric(r.get("edges", np.nan), errors="coerce")
        regulons = pd.to_numeric(r.get("regulons", np.nan), errors="coerce")
        net_status = str(r.get("network_status", "") or "")
        if r["status"] == "kept" and (pd.isna(regulons) or regulons > 0):  # no count: the stratify table
            outcome = "network"
        elif net_status in ("ok", "skipped") or (not pd.isna(edges) and edges > 0):
            outcome = "empty"
        else:
            outcome = "not built"
        rows.append({"slug": r["slug"], "cell_type": str(r.get("cell_type", r["slug"]) or r["slug"]),
                     "n_cells": r.get("n_cells", ""), "edges": edges, "regulons": regulons, "outcome": outcome,
                     "reason": "" if outcome == "network" else str(r.get("reason", "") or "")})
    return pd.DataFrame(rows, columns=["slug", "cell_type", "n_cells", "edges", "regulons", "outcome", "reason"])


def _perf_machine_line(perf: pd.DataFrame) -> str:
    """The CPU lines (model, cores, vector flags) and GPUs of perf records, each named once."""
    cpus = list(dict.fromkeys(perf["machine.cpu"].dropna().astype(str))) if "machine.cpu" in perf else []
    gpus = list(dict.fromkeys(perf["machine.gpu_name"].dropna().astype(str))) if "machine.gpu_name" in perf else []
    return " | ".join(cpus or ["n/a"]) + "; GPU: " + (", ".join(gpus) if gpus else "none")


def machine_line(data: "ReportData", env: Mapping | None = None) -> str:
    """Where the ISP jobs ran (their perf records' CPU line: model, cores, vector flags; GPU),
    else the report machine's."""
    if env and ("machine.cpu" not in data.perf or data.perf["machine.cpu"].dropna().empty):
        return env_machine_line(env)
    return _perf_machine_line(data.perf)


def env_machine_line(env: Mapping | None) -> str:
    """The machine the report job ran on (:func:`netpert.report.environment.capture_environment`),
    in the words of :func:`machine_line`: the CPU line (model, cores, vector flags) and the GPU."""
    env = env or {}
    return f"{env.get('cpu') or env.get('cpu_model') or 'n/a'}; GPU: {env.get('gpu') or 'none'}"


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
    if perf is not None and not perf.empty:
        ran = perf[perf["status"] == OK]  # a "not run" record ran no perturbation, for want of a device
        n_pert = pd.to_numeric(ran["n_perturbations"], errors="coerce").groupby(ran["stratum"].astype(str)).max().to_dict()
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


def read_perfs(paths: Sequence[str | Path]) -> list[PerfRecord]:
    """The ``isp/{method}/{stratum}.perf.json`` records (:func:`netpert.isp.records.read_perf`:
    a file of another layout is an InputError naming it)."""
    return [read_perf(path) for path in paths]


def perf_table(records: Sequence[PerfRecord]) -> pd.DataFrame:
    """The perf records as a table: one row per (method, stratum), the record's fields with the
    nested ones flattened with dots (``backend.providers``)."""
    if not records:
        return pd.DataFrame(columns=list(PERF_FIELDS))
    return pd.DataFrame([_flatten(r.as_dict()) for r in records])


#: perf record fields describing how a method ran (shown per method where a backend records them)
FACT_KEYS = ("device", "batching", "batch_size", "threads", "backend.runtime", "backend.precision",
             "backend.quantization", "backend.providers", "backend.attn_implementation")


def perf_facts(perf: pd.DataFrame) -> pd.DataFrame:
    """Per method that ran, how it ran: device, batching, batch size, threads and the backend's
    own description (precision, providers ...), as strings; values that differ between strata
    are joined with " | "."""
    if perf.empty:
        return pd.DataFrame(columns=["method"])
    ran = perf[perf["status"] == OK]
    cols = [c for c in FACT_KEYS if c in ran.columns]
    rows = []
    for method, grp in ran.groupby("method", sort=False):
        row = {"method": method}
        for col in cols:
            values = grp[col].dropna()
            if values.empty:
                continue
            uniq = list(dict.fromkeys(map(_fmt_fact, values)))
            row[col] = uniq[0] if len(uniq) == 1 else " | ".join(uniq)
        rows.append(row)
    table = pd.DataFrame(rows, columns=["method", *cols])
    return table.set_index("method").loc[_ordered(table["method"], METHOD_ORDER)].reset_index()


def _fmt_fact(v) -> str:
    if isinstance(v, (list, tuple)):
        return ", ".join(map(str, v))
    if isinstance(v, float) and v == int(v):
        return str(int(v))
    return str(v)


def read_metrics_table(path: str | Path | None) -> pd.DataFrame:
    """``isp/metrics.tsv`` (:func:`netpert.isp.records.read_metrics`; no file given: an empty
    table of the layout). Every method must have its row over all strata (stratum "all")."""
    if path is None:
        return pd.DataFrame(columns=list(METRICS_COLUMNS))
    table = read_metrics(path)
    lacking = sorted(set(table["method"]) - set(table.loc[table["stratum"] == OVERALL, "method"]))
    if lacking:
        raise InputError(f"{path} has no row over all strata (stratum '{OVERALL}') for {', '.join(lacking)}: "
                         "written by another netpert version; rerun isp_evaluate")
    return table


def method_table(metrics: pd.DataFrame) -> pd.DataFrame:
    """One row per ISP method that ran: isp_evaluate's row over all strata (performance, speedup
    over the baseline, consistency, ``passes_bar`` / ``failed_criteria``, embedding quality), in
    the registry's order; ``attrs['quality_columns']`` names the embedding-quality columns."""
    rows = metrics[(metrics["stratum"] == OVERALL) & (metrics["status"] == OK)]
    table = rows.drop(columns=["stratum"]).drop_duplicates("method", keep="last")
    table = table.set_index("method").loc[_ordered(table["method"], METHOD_ORDER)].reset_index()
    table["passes_bar"] = table["passes_bar"].astype(object)
    table["failed_criteria"] = table["failed_criteria"].map(lambda v: "" if pd.isna(v) else str(v))
    table.attrs["quality_columns"] = quality_columns(metrics)
    return table


def not_run_table(metrics: pd.DataFrame) -> pd.DataFrame:
    """What did not run, from isp_evaluate's "not run" rows: one row per method that ran nowhere
    (``stratum`` "all") and one per stratum where a method that ran elsewhere did not.
    Columns: method, stratum, reason."""
    cols = ["method", "stratum", "reason"]
    rows = metrics[metrics["status"] == NOT_RUN]
    if rows.empty:
        return pd.DataFrame(columns=cols)
    nowhere = set(rows.loc[rows["stratum"] == OVERALL, "method"])
    keep = rows[(rows["stratum"] == OVERALL) | ~rows["method"].isin(nowhere)]
    out = keep[cols].copy()
    out["reason"] = out["reason"].map(lambda v: "" if pd.isna(v) else str(v))
    order = {m: i for i, m in enumerate(_ordered(out["method"], METHOD_ORDER))}
    return out.sort_values(["method", "stratum"], key=lambda s: s.map(order) if s.name == "method" else s,
                           kind="stable").reset_index(drop=True)


def not_run_text(row) -> str:
    """``not run: <reason>`` (``... in <stratum>`` for one stratum)."""
    where = "" if row["stratum"] == OVERALL else f" in {row['stratum']}"
    return f"not run{where}: {row['reason'] or 'no reason recorded'}"


def fastest_method(methods: pd.DataFrame, baseline: str = BASELINE, require_bar: bool = False) -> str | None:
    """The method with the highest throughput (speedup), optionally only among those passing the bar."""
    if methods.empty or "speedup" not in methods or methods["speedup"].isna().all():
        return None
    cand = methods.dropna(subset=["speedup"])
    if require_bar:
        cand = cand[cand["passes_bar"].map(lambda v: v is True)]
    if cand.empty:
        return None
    return str(cand.sort_values("speedup", ascending=False, kind="stable").iloc[0]["method"])


def embedding_points(paths: Sequence[str | Path]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The cell embeddings of a method's npz files as UMAP input: (X (n, H), labels (n,), strata (n,)).

    Each file is an ISP result (:func:`netpert.isp.records.read_result`): ``original`` (cells,
    H) and ``perturbed`` (perturbations, H) with one ``perturbation`` label per row. Original
    cells are labelled "original", perturbed ones by their perturbation; ``strata`` is the
    stratum (its file name) of every row, original or perturbed. A "not run" result (empty
    arrays) adds nothing.
    """
    xs, labels, strata = [], [], []
    for path in paths:
        r = read_result(path)
        orig, pert = np.asarray(r["original"], dtype=np.float32), np.asarray(r["perturbed"], dtype=np.float32)
        labs = np.asarray(r["perturbation"]).astype(str)
        stratum = str((r.get("metadata") or {}).get("stratum") or Path(path).stem)
        for X in (orig, pert):
            if X.size and X.ndim != 2:
                raise InputError(f"{path}: embeddings of shape {X.shape}, expected (rows, hidden): rerun the isp_infer rule")
        if len(labs) != len(pert):
            raise InputError(f"{path}: {len(labs)} perturbation labels for {len(pert)} perturbed embeddings: rerun isp_infer")
        if orig.size:
            xs.append(orig)
            labels += ["original"] * len(orig)
        if pert.size:
            xs.append(pert)
            labels += labs.tolist()
        strata += [stratum] * ((len(orig) if orig.size else 0) + (len(pert) if pert.size else 0))
    if not xs:
        return np.zeros((0, 0), dtype=np.float32), np.array([], dtype=str), np.array([], dtype=str)
    return np.concatenate(xs, axis=0), np.asarray(labels), np.asarray(strata)


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
def model_provenance(model_dir: str | Path | None, perfs: Sequence[PerfRecord] = ()) -> dict:
    """The model's provenance (``isp/model/netpert_model.json``, written by
    :meth:`netpert.isp.model.ModelBundle.save`); where it has no ``trained`` flag (or there is no
    model folder), the perf records' ``trained`` flag when they agree, else None."""
    info: dict = {}
    if model_dir is not None:
        path = Path(model_dir)
        path = path / "netpert_model.json" if path.is_dir() else path
        if path.exists():
            info = read_json(path)
    trained = info.get("trained")
    if trained is not None and not isinstance(trained, bool):
        raise InputError(f"{model_dir}: 'trained' is {trained!r}, not true/false: rerun the isp_model rule")
    if trained is None:
        flags = {p.trained for p in perfs if p.trained is not None}
        trained = flags.pop() if len(flags) == 1 else None
    return {**info, "trained": trained}


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
    perf: pd.DataFrame  # the perf records, one row per (method, stratum)
    methods: pd.DataFrame  # isp_evaluate's rows over all strata of the methods that ran
    not_run: pd.DataFrame  # method, stratum, reason (not_run_table)
    method_facts: pd.DataFrame
    model: dict
    artifacts: dict
    bar: dict
    embeddings: dict = field(default_factory=dict)  # method -> list of npz paths
    baseline: str = BASELINE
    dataset: dict = field(default_factory=dict)
    #: what every stratum had (MasterRegulatorTable.strata: status, reason, regulons, candidates)
    mr_strata: pd.DataFrame = field(default_factory=pd.DataFrame)
    #: planned jobs without a benchmark file (rule, job): not in ``stages`` (:func:`missing_benchmarks`);
    #: None where no plan was given (every file of the benchmarks folder read)
    missing_benchmarks: pd.DataFrame | None = None


def collect(inputs: ReportInputs, options: ReportOptions | None = None) -> ReportData:
    """Read every stage's outputs named by ``inputs`` into a :class:`ReportData`."""
    options = options or ReportOptions()
    jobs, missing = pd.DataFrame(columns=["rule", "job", "repeats", "s"]), None
    if inputs.benchmarks is not None:
        jobs = read_benchmarks(inputs.benchmarks, inputs.benchmark_files)
        if inputs.benchmark_files is not None:
            missing = missing_benchmarks(inputs.benchmarks, inputs.benchmark_files)
            if not missing.empty:
                log.warning("%d planned job(s) have no benchmark file, not counted in the stages table: %s",
                            len(missing), ", ".join(f"{r.rule} {r.job}".strip() for r in missing.itertuples()))
    strata_table = read_strata(inputs.strata)
    if inputs.master_regulators:
        mr_table = read_master_regulators(inputs.master_regulators)
        mrs, mr_strata = mr_table.regulators, mr_table.strata
    else:
        mrs, mr_strata = pd.DataFrame(columns=["stratum", "regulator"]), pd.DataFrame()
    perfs = read_perfs(inputs.perf)
    perf = perf_table(perfs)
    metrics = read_metrics_table(inputs.metrics)
    methods = method_table(metrics)
    ran = set(methods["method"])
    embeddings: dict[str, list[str]] = {}
    for path in inputs.npz:  # isp/{method}/{stratum}.npz
        if path.parent.name in ran:
            embeddings.setdefault(path.parent.name, []).append(str(path))
    ds = options.dataset()
    kept = strata_table[strata_table["status"] == "kept"]
    if "n_cells" in strata_table.columns:
        ds.setdefault("n_cells", int(pd.to_numeric(strata_table["n_cells"], errors="coerce").sum()))
    ds.setdefault("n_strata", len(strata_table))
    ds.setdefault("n_kept", len(kept))
    return ReportData(
        stages=one_memory_per_job(summarize_stages(jobs), perf),
        jobs=jobs,
        strata=strata_table,
        networks=network_sizes(inputs.networks, inputs.regulons),
        mr_activity=(master_regulator_activity(inputs.activity, mrs) if inputs.activity and not mrs.empty
                     else pd.DataFrame()),
        master_regulators=mrs,
        perf=perf,
        methods=methods,
        not_run=not_run_table(metrics),
        method_facts=perf_facts(perf),
        model=model_provenance(inputs.model, perfs),
        artifacts=artifact_reports(inputs.artifacts),
        bar=dict(options.bar),
        embeddings=embeddings,
        baseline=options.baseline,
        dataset=ds,
        mr_strata=mr_strata,
        missing_benchmarks=missing,
    )


def methods_csv(data: ReportData) -> pd.DataFrame:
    """``methods.csv``: one row per ISP method (``status`` ok or "not run" with the ``reason``):
    isp_evaluate's row over all strata, and ``machine``, the CPU line (model, cores, vector flags)
    and GPU its jobs ran on. A method that ran but not in every stratum says where not in its
    ``reason``."""
    m = data.methods.copy()
    nr = data.not_run
    partial = nr[nr["stratum"] != OVERALL]
    if not m.empty:
        notes = {method: "; ".join(not_run_text(r) for _, r in grp.iterrows()) for method, grp in partial.groupby("method")}
        m["reason"] = [notes.get(method, "") for method in m["method"]]
    whole = nr[nr["stratum"] == OVERALL]
    skipped = pd.DataFrame({"method": whole["method"], "status": NOT_RUN, "reason": whole["reason"]})
    methods = pd.concat([f for f in (m, skipped) if not f.empty], ignore_index=True, sort=False) if len(m) + len(skipped) \
        else pd.DataFrame(columns=["method", "status", "reason"])
    if not methods.empty:
        order = _ordered(methods["method"], METHOD_ORDER)
        methods = methods.set_index("method").loc[order].reset_index()
        ran = data.perf[data.perf["status"] == OK] if "status" in data.perf else data.perf
        methods["machine"] = [_perf_machine_line(ran[ran["method"] == k]) if k in set(ran.get("method", ())) else ""
                              for k in methods["method"]]
    lead = ["method", "status", "reason"]
    return methods[[*lead, *[c for c in methods.columns if c not in lead]]]


def stages_csv(data: ReportData, env: Mapping | None = None) -> pd.DataFrame:
    """``stages.csv``: one row per workflow rule (Snakemake's benchmark files summed over its jobs,
    :func:`summarize_stages`), and ``machine``: the report job's (:func:`env_machine_line`)."""
    s = data.stages.rename(columns={"stage": "rule", "family": "stage"})
    if env and not s.empty:
        s = s.assign(machine=env_machine_line(env))
    return s

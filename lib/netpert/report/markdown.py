"""``benchmark_report.md``: environment, model, data set, figures with readings computed from
the data, the methods table with the consistency bar, and what did not run and why."""

from __future__ import annotations

import datetime as _dt
import math
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from netpert.report.aggregate import (
    ISP_MEMORY,
    SNAKEMAKE_MEMORY,
    ReportData,
    env_machine_line,
    fastest_method,
    machine_line,
    mr_strata_table,
    network_outcomes,
    not_run_text,
    quality_table,
)
from netpert.report.plots import UNTRAINED_NOTE, quality_label

NA = "n/a"


# --------------------------------------------------------------------------- formatting
def fmt(v, digits: int = 3, unit: str = "") -> str:
    """A number with ``digits`` significant digits (or "n/a" when missing)."""
    if v is None or isinstance(v, str) and not v:
        return NA
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, str):
        return v
    try:
        x = float(v)
    except (TypeError, ValueError):
        return str(v)
    if not math.isfinite(x):
        return NA
    text = f"{x:.0f}" if abs(x) >= 10**digits else f"{x:.{digits}g}"
    return f"{text}{unit}"


def count(v, noun: str) -> str:
    """A count with its noun, singular for exactly one ("1 edge", "2 edges"; "n/a edges" when missing)."""
    text = fmt(v)
    return f"{text} {noun}" if text == "1" else f"{text} {noun}s"


def fmt_cos(v) -> str:
    """A cosine / correlation near 1, with enough digits to see the distance from 1."""
    try:
        x = float(v)
    except (TypeError, ValueError):
        return NA
    if not math.isfinite(x):
        return NA
    return f"{x:.4f}" if x < 0.9999 else f"{x:.6f}"


def md_table(rows: Sequence[Sequence], header: Sequence[str], align: str | None = None) -> str:
    """A GitHub-flavoured markdown table (cells already formatted; '|' escaped)."""
    def cell(c):
        return str(c).replace("|", "\\|").replace("\n", " ")

    align = align or "l" * len(header)
    sep = ["---:" if a == "r" else ":---:" if a == "c" else "---" for a in align]
    lines = ["| " + " | ".join(map(cell, header)) + " |", "| " + " | ".join(sep) + " |"]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _get(row, key):
    return row[key] if key in row.index else None


# --------------------------------------------------------------------------- readings
def reading_throughput(data: ReportData) -> str:
    m = data.methods
    fast = fastest_method(m, data.baseline)
    if fast is None:
        return "No throughput could be compared (no baseline timing)."
    row = m.set_index("method").loc[fast]
    if fast == data.baseline:
        text = f"{data.baseline} is the fastest method ({fmt(row['perturbations_per_s'])} perturbations/s); no method beat it here"
    else:
        text = (f"{fast} is the fastest: {row['speedup']:.1f}x {data.baseline} "
                f"({fmt(row['perturbations_per_s'])} vs {fmt(m.set_index('method').loc[data.baseline, 'perturbations_per_s'])} "
                f"perturbations/s) at mean cosine {fmt_cos(row.get('mean_cosine'))}")
    if row.get("passes_bar") is False:
        ok = fastest_method(m, data.baseline, require_bar=True)
        text += " but it is under the consistency bar"
        if ok and ok != data.baseline:
            r2 = m.set_index("method").loc[ok]
            text += f"; the fastest within the bar is {ok}: {r2['speedup']:.1f}x at mean cosine {fmt_cos(r2.get('mean_cosine'))}"
        elif ok == data.baseline:
            text += f"; no method beats {data.baseline} within the bar"
    return text + "."


def reading_memory(data: ReportData) -> str:
    m = data.methods.dropna(subset=["peak_rss_mb"]) if "peak_rss_mb" in data.methods else pd.DataFrame()
    if m.empty:
        return "No memory measurements."
    lo, hi = m.loc[m["peak_rss_mb"].idxmin()], m.loc[m["peak_rss_mb"].idxmax()]
    text = (f"{lo['method']} peaks lowest at {lo['peak_rss_mb']:.0f} MB resident, {hi['method']} highest at "
            f"{hi['peak_rss_mb']:.0f} MB (each method's largest job)")
    if "gpu_peak_mem_mb" in m and m["gpu_peak_mem_mb"].notna().any():
        g = m.dropna(subset=["gpu_peak_mem_mb"])
        gh = g.loc[g["gpu_peak_mem_mb"].idxmax()]
        text += f"; on the GPU {gh['method']} peaks highest at {gh['gpu_peak_mem_mb']:.0f} MB"
    return text + "."


def _criteria(failed: str) -> str:
    """isp_evaluate's ``failed_criteria`` ("mean_cosine 0.995 < 0.999; ...") in words."""
    return str(failed or "").replace("_", " ")


def reading_consistency(data: ReportData) -> str:
    m = data.methods[data.methods["method"] != data.baseline]
    if m.empty:
        return "Only the baseline ran: nothing to compare."
    bar = data.bar
    bar_text = ", ".join(f"{k.replace('_', ' ')} >= {v:g}" for k, v in bar.items())
    judged = m[m["passes_bar"].map(lambda v: v is not None)]
    fails = judged[judged["passes_bar"].map(lambda v: v is False)]
    text = f"{len(judged) - len(fails)} of {len(judged)} methods meet the bar ({bar_text})"
    if not fails.empty:
        text += "; under it: " + ", ".join(
            f"{r['method']} ({_criteria(r['failed_criteria']) or 'flagged by isp_evaluate'})" for _, r in fails.iterrows()
        )
    if "mean_cosine" in m and m["mean_cosine"].notna().any():
        worst = m.loc[m["mean_cosine"].astype(float).idxmin()]
        text += f"; lowest mean cosine: {worst['method']} ({fmt_cos(worst['mean_cosine'])})"
    return text + "."


def reading_umap(data: ReportData, points: Mapping[str, tuple] | None) -> str:
    if not points:
        return "No embeddings to show."
    parts = []
    for method, (X, labels, *_) in points.items():
        labels = np.asarray(labels)
        n_orig = int((labels == "original").sum())
        kinds = sorted(set(labels) - {"original"})
        parts.append(f"{method}: {n_orig} original cells and {len(labels) - n_orig} perturbed embeddings "
                     f"({len(kinds)} perturbation{'s' if len(kinds) != 1 else ''})")
    return "; ".join(parts) + "."


def reading_quality(data: ReportData) -> str:
    """The largest difference of a method's embedding quality from the baseline's (relative to the
    baseline's value), in words; where only one method has numbers, its cell-type silhouette."""
    q = quality_table(data.methods)
    cols = [c for c in q.columns if c != "method"]
    if not cols:
        return "No embedding-quality metrics."
    q = q.set_index("method")
    text = f"{len(cols)} metrics"
    if data.baseline in q.index and len(q) > 1:
        base = q.loc[data.baseline, cols]
        diff = (q.drop(index=data.baseline)[cols] - base).abs() / base.abs().where(base.abs() > 0, 1.0)
        if diff.notna().any().any():
            method, col = diff.stack().idxmax()
            text += (f"; the largest difference from {data.baseline}: {quality_label(col)}, {fmt(base[col])} for "
                     f"{data.baseline} and {fmt(q.loc[method, col])} for {method} ({100 * diff.loc[method, col]:.2g}%); "
                     "every other metric of every method differs less")
    elif "cell_type_silhouette" in cols:
        text += f"; silhouette (cosine) of cell types {fmt(q['cell_type_silhouette'].dropna().iloc[0])}"
    text += "."
    if data.model.get("trained") is False:
        text = f"({UNTRAINED_NOTE}: these numbers describe random weights) " + text
    return text


def reading_stages(data: ReportData) -> str:
    s = data.stages.dropna(subset=["seconds"])
    if s.empty:
        return "No Snakemake benchmark files."
    total = s["seconds"].sum()
    top = s.loc[s["seconds"].idxmax()]
    mem = s.dropna(subset=["max_rss_mb"])
    text = (f"{top['stage']} takes the longest: {top['seconds']:.1f} s over {int(top['n_jobs'])} job(s), "
            f"{100 * top['seconds'] / total:.0f}% of {total:.1f} s summed over {int(s['n_jobs'].sum())} jobs")
    if not mem.empty:
        big = mem.loc[mem["max_rss_mb"].idxmax()]
        text += f"; the largest job memory is {big['max_rss_mb']:.0f} MB ({big['stage']})"
    return text + "."


def _mr_gaps(data: ReportData) -> str:
    """'X (no network), Y (no significant regulator)' for the strata without master regulators."""
    t = mr_strata_table(data.mr_strata, data.strata)
    t = t[t["status"] != "reported"]
    return ", ".join(f"{r.cell_type} ({r.label})" for r in t.itertuples())


def reading_mr(data: ReportData) -> str:
    a = data.mr_activity
    gaps = _mr_gaps(data)
    if a.empty:
        return "No master-regulator activity." + (f" No master regulator in: {gaps}." if gaps else "")
    values = a.to_numpy(dtype=float)
    i, j = np.unravel_index(np.nanargmax(np.abs(values)), values.shape)
    text = (f"{a.shape[1]} master regulators over {a.shape[0]} cell types; the strongest mean activity is "
            f"{a.columns[j]} in {a.index[i]} (mean NES {values[i, j]:+.2f})")
    if gaps:
        text += f". Rows in brackets have no master regulator: {gaps}"
    return text + "."


def reading_mr_strata(data: ReportData) -> str:
    """One sentence: how many strata have master regulators, and which ISP strata had no target and why."""
    t = mr_strata_table(data.mr_strata, data.strata, data.perf, data.master_regulators)
    if t.empty:
        return ""
    n_net = int((t["status"] != "no_network").sum())
    n_mr = int((t["status"] == "reported").sum())
    text = f"Master regulators in {n_mr} of {n_net} strata with a network ({len(t)} strata in all)"
    no_target = t[t["isp_note"] != ""]
    if not no_target.empty:
        text += "; no ISP perturbation ran in " + "; ".join(f"{r.cell_type} ({r.isp_note})" for r in no_target.itertuples())
    return text + "."


def reading_networks(data: ReportData) -> str:
    n = data.networks.dropna(subset=["n_edges"])
    if n.empty:
        return "No ARACNe networks."
    labels = dict(zip(data.strata["slug"], data.strata.get("cell_type", data.strata["slug"])))
    big, small = n.loc[n["n_edges"].idxmax()], n.loc[n["n_edges"].idxmin()]
    if big["n_edges"] == small["n_edges"]:
        if big["n_edges"] == 0:
            return f"Every network ({len(n)}) is empty: no edge passed ARACNe's threshold and the bootstrap consensus."
        return f"Every network ({len(n)}) has {count(int(big['n_edges']), 'edge')}."
    text = (f"{labels.get(big['stratum'], big['stratum'])} has the largest network ({count(int(big['n_edges']), 'edge')}, "
            f"{count(big['n_regulators'], 'regulator')})")
    if len(n) > 1:
        text += f"; {labels.get(small['stratum'], small['stratum'])} the smallest ({count(int(small['n_edges']), 'edge')})"
    return text + "."


def reading_network_strata(data: ReportData) -> str:
    """One sentence: which strata have a network, which came out empty and which were not built."""
    t = network_outcomes(data)
    if t.empty:
        return ""
    has = t[t["outcome"] == "network"].sort_values("edges", ascending=False)
    empty, unbuilt = t[t["outcome"] == "empty"], t[t["outcome"] == "not built"]
    text = f"Networks: {len(has)} of {len(t)} strata have one"
    if len(has):
        text += " (" + "; ".join(f"{r.cell_type}: {count(r.edges, 'edge')}, {count(r.regulons, 'regulon')}" for r in has.itertuples()) + ")"
    if len(empty):
        text += (f"; {len(empty)} built but kept no regulon, so skipped (" +
                 "; ".join(f"{r.cell_type}: {count(r.edges, 'edge')}" for r in empty.itertuples()) + ")")
    if len(unbuilt):
        text += f"; {len(unbuilt)} not built (" + "; ".join(f"{r.cell_type}: {r.reason or 'skipped'}" for r in unbuilt.itertuples()) + ")"
    return text + "."


def section_networks(data: ReportData) -> str:
    t = network_outcomes(data)
    out = ["## Networks", ""]
    if t.empty:
        return "\n".join(out + ["No strata table.", ""])
    label = {"network": "network", "empty": "**empty: skipped**", "not built": "**not built**"}
    rows = [(r.cell_type, fmt(r.n_cells), fmt(r.edges), fmt(r.regulons), label[r.outcome], r.reason or "")
            for r in t.itertuples()]
    out += [md_table(rows, ["stratum", "cells", "edges", "regulons", "outcome", "reason"], "lrrrll"), "",
            reading_network_strata(data), ""]
    return "\n".join(out)


FIGURE_TITLES = {
    "isp__throughput.png": ("ISP throughput and speedup per method", reading_throughput),
    "isp__memory.png": ("ISP memory per method", reading_memory),
    "isp__consistency.png": ("ISP consistency with the baseline", reading_consistency),
    "isp__umap.png": ("UMAP of cell embeddings by cell type and by perturbation", None),
    "isp__embedding_quality.png": ("Embedding quality per method", reading_quality),
    "workflow__stage_time.png": ("Time and memory per workflow rule", reading_stages),
    "viper__master_regulators.png": ("Master-regulator activity per cell type", reading_mr),
    "aracne__network_size.png": ("ARACNe network size per stratum", reading_networks),
}


# --------------------------------------------------------------------------- sections
def section_environment(env: Mapping) -> str:
    cores = f"{fmt(env.get('cores_logical'))} logical / {fmt(env.get('cores_physical'))} physical"
    if env.get("cpu_affinity") is not None:
        cores += f" ({env['cpu_affinity']} usable by this process)"
    rows = [
        ("CPU", env.get("cpu_model") or NA),
        ("Cores", cores),
        ("RAM", fmt(env.get("ram_gb"), 4, " GiB")),
        ("GPU", env.get("gpu") or "none"),
        ("CPU vector flags", " ".join(env.get("vector_flags") or []) or NA),
        ("CPU bf16 support", fmt(env.get("cpu_bf16")) if env.get("cpu_bf16") is not None else NA),
        ("Platform", env.get("platform") or NA),
        ("Python", env.get("python") or NA),
    ]
    out = ["## Environment", "", md_table(rows, ["", ""]), ""]
    pkgs = env.get("packages") or {}
    if pkgs:
        out += ["Package versions:", "", md_table([(k, v or "not installed") for k, v in pkgs.items()], ["package", "version"]), ""]
    return "\n".join(out)


#: how quantize_onnx chose among the int8 recipes that met the bar (its ``select_used``), in words
INT8_CHOICE = {
    "shift": "the one whose perturbation shifts differ least from fp32's (cells and their perturbations in mixed batches)",
    "accuracy": "the one closest to fp32 (highest mean cosine)",
    "speed": "the fastest",
}


def artifact_sentence(rep: Mapping) -> str:
    """An ONNX / int8 / TensorRT artifact's report (``model.onnx.json`` ...) in plain words."""
    parts = []
    if rep.get("status") == "not built":
        return f"not built: {rep.get('reason') or 'no reason recorded'}"
    if rep.get("exporter"):
        parts.append(f"exported with the {rep['exporter']} exporter" + (f" (opset {rep['opset']})" if rep.get("opset") else ""))
    if rep.get("max_abs_diff") is not None:
        check = f"largest difference from PyTorch {fmt(rep['max_abs_diff'], 2)}"
        if rep.get("atol") is not None:
            check += f" (tolerance {fmt(rep['atol'], 2)})"
        if rep.get("passed") is not None:
            check += ": " + ("passed" if rep["passed"] else "FAILED")
        parts.append(check)
    if rep.get("chosen"):
        rule = INT8_CHOICE.get(str(rep.get("select_used") or rep.get("select")), str(rep.get("select_used") or ""))
        parts.append(f"int8 recipe kept: {rep['chosen']}" + (f", of those meeting the bar {rule}" if rule else ""))
    if rep.get("precision"):
        parts.append(f"precision {rep['precision']}")
    if rep.get("file_size_bytes") is not None:
        parts.append(f"{float(rep['file_size_bytes']) / 2**20:.1f} MiB")
    for key, what in (("export_seconds", "exported"), ("build_seconds", "built")):
        if rep.get(key) is not None:
            parts.append(f"{what} in {fmt(rep[key], 3)} s")
    return "; ".join(parts) if parts else "built"


def section_model(data: ReportData) -> str:
    info = data.model
    trained = info.get("trained")
    rows = [("specification", info.get("spec") or info.get("source") or NA),
            ("weights", "trained" if trained else "untrained (random initialisation)" if trained is False else NA)]
    flat = {**{k: v for k, v in info.items() if not isinstance(v, (dict, list))},
            **{k: v for k, v in (info.get("architecture") or {}).items() if not isinstance(v, (dict, list))}}
    for key, label in (("kind", "kind"), ("preset", "preset"), ("class", "architecture"),
                       ("num_hidden_layers", "layers"), ("n_layers", "layers"), ("hidden_size", "hidden size"),
                       ("num_attention_heads", "attention heads"), ("max_position_embeddings", "max input length"),
                       ("vocab_size", "vocabulary size"), ("n_genes_in_vocabulary", "genes in the vocabulary"),
                       ("n_parameters", "parameters"), ("seed", "seed"), ("sha256", "weights sha256")):
        if key in flat and flat[key] is not None and label not in {r[0] for r in rows}:
            v = flat[key]
            rows.append((label, v if isinstance(v, str) else f"{v:,}" if isinstance(v, int) else fmt(v, 6)))
    out = ["## Model", "", md_table(rows, ["", ""]), ""]
    for name, rep in data.artifacts.items():
        out.append(f"- `{name}`: {artifact_sentence(rep)}.")
        candidates = rep.get("candidates")
        if isinstance(candidates, dict) and candidates:
            rows = []
            for cname, c in candidates.items():
                c = c if isinstance(c, dict) else {}
                rows.append((cname + (" (kept)" if cname == rep.get("chosen") else ""), fmt_cos(c.get("mean_cosine")),
                             fmt_cos(c.get("min_cosine")), fmt(c.get("passed")) if "passed" in c else NA,
                             c.get("error", "")))
            out += ["", "  int8 recipes scored against the fp32 ONNX model on held-out cells (cosine of the cell embeddings):", "",
                    "  " + md_table(rows, ["recipe", "mean cosine", "min cosine", "passes", "error"]).replace("\n", "\n  "),
                    ""]
    if data.artifacts:
        out.append("")
    return "\n".join(out)


#: the strata table's columns in words
STRATA_HEADERS = {
    "slug": "file name", "cell_type": "cell type", "n_cells": "cells", "aggregation": "aggregation",
    "n_output": "cells (or metacells) used", "mean_overlap": "mean metacell overlap",
}
#: the ISP batching strategies (netpert.isp.methods.BATCHINGS) and method facts in words
BATCHING_WORDS = {"input_order": "in input order", "length_sorted": "sorted by length",
                  "cell_grouped": "each cell with its perturbations"}
FACT_HEADERS = {"batch_size": "batch size", "backend.attn_implementation": "attention kernel",
                "backend.providers": "ONNX Runtime providers", "backend.quantization": "int8 recipe"}


def section_dataset(data: ReportData) -> str:
    ds = data.dataset
    st = data.strata
    lines = ["## Data set", ""]
    head = [f"input `{ds['input']}`" if ds.get("input") else None,
            f"cell types from obs column `{ds['cell_type_key']}`" if ds.get("cell_type_key") else None,
            f"{fmt(ds.get('n_cells'))} cells in {fmt(ds.get('n_strata'))} strata, {fmt(ds.get('n_kept'))} kept"]
    lines.append("; ".join(h for h in head if h) + ".")
    lines.append("")
    cols = [c for c in ("stratum", "slug", "cell_type", "tissue", "n_cells", "aggregation", "n_output", "mean_overlap",
                        "edges", "regulons", "status", "reason") if c in st.columns]
    if "tissue" in cols and (st["tissue"].astype(str) == "").all():
        cols.remove("tissue")
    if "cell_type" in cols and "stratum" in cols and (st["cell_type"].astype(str) == st["stratum"].astype(str)).all():
        cols.remove("cell_type")
    lines.append(md_table(st[cols].astype(str).values.tolist(), [STRATA_HEADERS.get(c, c) for c in cols]))
    lines.append("")
    return "\n".join(lines)


def section_master_regulators(data: ReportData) -> str:
    """Per stratum: network, regulators tested, candidates, the master regulators reported and the
    ISP perturbations, with "no network" / "no significant regulator" where there are none."""
    t = mr_strata_table(data.mr_strata, data.strata, data.perf, data.master_regulators)
    out = ["## Master regulators", ""]
    if t.empty:
        return "\n".join(out + ["No master-regulator table.", ""])
    cutoff = pd.to_numeric(data.mr_strata.get("padj_cutoff", pd.Series(dtype=float)), errors="coerce").dropna()
    rule = f"BH padj < {cutoff.iloc[0]:g}" if len(cutoff) else "BH padj under the cut-off"
    out += [f"Per stratum with its own network, the regulators whose NES in the stratum differs from the other "
            f"cells' (two-sided Mann-Whitney U, {rule}, effect in the direction reported), ranked by specificity "
            "(rank-biserial correlation); strata without a network are only background.", ""]
    has_isp = t["isp_perturbations"].notna().any()
    rows = []
    for r in t.itertuples():
        cells = [r.cell_type, r.label if r.status != "reported" else "master regulators", fmt(r.n_regulons),
                 fmt(r.n_tested), f"{r.n_candidates_up} / {r.n_candidates_down}", r.up or "-", r.down or "-"]
        if has_isp:
            cells.append(fmt(r.isp_perturbations) + (f" ({r.isp_note})" if r.isp_note else ""))
        rows.append(cells)
    header = ["stratum", "status", "regulons", "tested", "candidates up / down", "reported up", "reported down"]
    if has_isp:
        header.append("ISP perturbations")
    out.append(md_table(rows, header, "llrrrll" + ("r" if has_isp else "")))
    out.append("")
    gaps = t[t["status"] != "reported"]
    if not gaps.empty:
        out += ["No master regulator:", ""]
        for (label, reason), g in gaps.groupby(["label", "reason"], sort=False):
            out.append(f"- {label}" + (f" ({reason})" if reason else "") + ": " + ", ".join(g["cell_type"].astype(str)))
        out.append("")
    sentence = reading_mr_strata(data)
    if sentence:
        out += [sentence, ""]
    return "\n".join(out)


def _range(lo, hi, digits: int = 3, unit: str = "") -> str:
    if lo is None or hi is None or not (np.isfinite(float(lo)) and np.isfinite(float(hi))):
        return ""
    return f" [{fmt(lo, digits)}-{fmt(hi, digits)}{unit}]"


METHOD_COLUMNS = (
    ("method", "method", None, "the inference method (netpert.isp.methods.REGISTRY)"),
    ("wall_s", "time (s), median [range]", lambda r: fmt(r["wall_s"], 3) + _range(_get(r, "wall_min_s"), _get(r, "wall_max_s")),
     "seconds of the timed screen summed over the strata (and over the shards of a stratum that "
     "`isp.cells_per_job` split into several jobs): the median of the `isp.repeats` runs in each job, in "
     "brackets the sums over the strata of each stratum's fastest and slowest repeat (a split stratum's "
     "repeat timed as the sum of its shards' runs of that repeat)"),
    ("repeats", "repeats", lambda r: fmt(r["repeats"]), "timed runs of the screen in each job"),
    ("perturbations_per_s", "perturbations/s", lambda r: fmt(r["perturbations_per_s"], 3),
     "perturbations over the median time"),
    ("speedup", "speedup [range over strata]",
     lambda r: fmt(r["speedup"], 3, "x") + _range(_get(r, "speedup_min"), _get(r, "speedup_max"), 3, "x"),
     "perturbations per second over the baseline's, i.e. the baseline's time over the method's on the same work "
     "(a stratum without perturbations counts by the time to embed its cells); in brackets the smallest and largest "
     "speedup of one stratum, method and baseline compared pair by pair on the same cells"),
    ("peak_rss_mb", "peak memory (MB)", lambda r: fmt(r["peak_rss_mb"], 4),
     "the peak resident memory of the method's largest job, model loading included (the kernel's high-water mark "
     "of its process, VmHWM): the largest over the strata, and over the shards where "
     "`isp.cells_per_job` split a stratum; the Workflow stages table shows the same number for isp_infer"),
    ("gpu_peak_mem_mb", "peak GPU mem (MB)", lambda r: fmt(r["gpu_peak_mem_mb"], 4),
     "peak GPU memory allocated, the largest job's (over strata and shards)"),
    ("cpu_percent", "CPU s per wall s", lambda r: fmt(float(r["cpu_percent"]) / 100.0, 3),
     "the jobs' CPU seconds over their wall seconds, summed over the strata and shards (2 = two cores kept busy); "
     "under the jobs' thread count means they waited (for memory, for other work on the machine)"),
    ("other_load_cores", "other load (cores)", lambda r: fmt(r["other_load_cores"], 2),
     "CPU the rest of the machine used meanwhile, in cores (machine-wide busy time less the job's); the "
     "largest over repeats, strata and shards"),
    ("mean_cosine", "mean cosine", lambda r: fmt_cos(r["mean_cosine"]), "mean cosine of the method's cell embeddings to the baseline's"),
    ("min_cosine", "min cosine", lambda r: fmt_cos(r["min_cosine"]), "the worst cell's cosine"),
    ("spearman", "Spearman (effects)", lambda r: fmt_cos(r["spearman"]),
     "rank correlation of the per-perturbation effects (embedding shifts) with the baseline's"),
    ("max_shift_diff", "max shift diff", lambda r: fmt(r["max_shift_diff"], 3),
     "largest absolute difference of a perturbation's cell shift from the baseline's"),
)

#: other processes' CPU (share of the machine's cores) above which the report warns
LOAD_WARNING_SHARE = 0.1


def _cell_type(data: ReportData, slug: str) -> str:
    """The cell type (stratum name) of a stratum's file name (slug)."""
    st = data.strata
    if "slug" in st and "cell_type" in st:
        match = st.loc[st["slug"].astype(str) == str(slug), "cell_type"]
        if len(match) and str(match.iloc[0]):
            return str(match.iloc[0])
    return str(slug)


def load_warning(data: ReportData) -> str | None:
    """A sentence when other work took a visible share of the machine during the ISP timing."""
    p = data.perf
    if p.empty or "other_load_cores" not in p:
        return None
    load = pd.to_numeric(p["other_load_cores"], errors="coerce")
    cores = pd.to_numeric(p.get("machine.cpu_count_logical", pd.Series(np.nan, index=p.index)), errors="coerce")
    share = load / cores
    busy = p[share > LOAD_WARNING_SHARE]
    if busy.empty:
        return None
    worst = busy.loc[share[busy.index].idxmax()]
    return (f"**The machine was busy**: other processes took up to {fmt(worst['other_load_cores'], 2)} of "
            f"{fmt(cores[worst.name])} cores during ISP timing ({len(busy)} of {len(p)} screens, one per method and "
            f"stratum, above {LOAD_WARNING_SHARE:.0%}; worst: {worst['method']} on {_cell_type(data, worst['stratum'])}). Absolute rates are "
            "lower than on a quiet machine; the ranges show how much they moved.")


def section_methods(data: ReportData) -> str:
    m = data.methods
    out = ["## ISP methods", ""]
    if m.empty:
        out += ["No ISP method ran.", ""]
    else:
        cols = [c for c in METHOD_COLUMNS if c[0] in m.columns and (c[0] in ("method", "wall_s", "speedup", "mean_cosine")
                                                                     or m[c[0]].notna().any())]
        rows = []
        for _, r in m.iterrows():
            cells = [f(r) if k != "method" else f"**{r[k]}**" for k, _, f, _ in cols]
            p = r["passes_bar"]
            if r["method"] == data.baseline:
                cells.append("reference")
            elif p is True:
                cells.append("pass")
            elif p is False:
                cells.append("**UNDER THE BAR**" + (f": {_criteria(r['failed_criteria'])}" if r["failed_criteria"] else ""))
            else:
                cells.append(NA)
            rows.append(cells)
        out.append(md_table(rows, [c[1] for c in cols] + ["consistency bar"], "l" + "r" * (len(cols) - 1) + "l"))
        bar_text = ", ".join(f"{k.replace('_', ' ')} >= {v:g}" for k, v in data.bar.items())
        out += ["", f"Measured on: {machine_line(data)}.", "",
                f"Consistency is measured against `{data.baseline}`; the bar is {bar_text}. The columns:", ""]
        out += [f"- **{label}**: {why}" for _, label, _, why in cols[1:]]
        out += ["- **consistency bar**: whether the method meets every criterion of the bar", ""]
        warning = load_warning(data)
        if warning:
            out += [warning, ""]
        facts = data.method_facts
        if not facts.empty and facts.shape[1] > 1:
            keep = [c for c in facts.columns if c != "method" and facts[c].notna().any()]
            if keep:
                shown = facts[["method", *keep]].fillna(NA).astype(str)
                if "batching" in shown:
                    shown["batching"] = shown["batching"].map(lambda v: BATCHING_WORDS.get(v, v))
                out += ["How each method ran:", "",
                        md_table(shown.values.tolist(),
                                 ["method", *[FACT_HEADERS.get(c, c.removeprefix("backend.").replace("_", " ")) for c in keep]]),
                        ""]
        notes = sorted({n for n in data.perf.get("note", pd.Series(dtype=object)).dropna().astype(str)
                        for n in n.split("; ") if n and n != "untrained weights: timings and consistency only"})
        if notes:
            out += ["Notes from the runs:", ""] + [f"- {n}" for n in notes] + [""]
    out += ["### Not run", ""]
    if not data.not_run.empty:
        out += ["The methods the workflow left out, and the jobs that could not run where they ran, with the reason.", "",
                md_table([(r["method"], not_run_text(r)) for _, r in data.not_run.iterrows()], ["method", "why"]), ""]
    else:
        out += ["Every requested method ran.", ""]
    return "\n".join(out)


def missing_benchmarks_text(missing: pd.DataFrame | None, shown: int = 5) -> str:
    """'Not counted: ...' for the planned jobs without a benchmark file ('' when none)."""
    if missing is None or missing.empty:
        return ""
    parts = []
    for rule, grp in missing.groupby("rule", sort=False):
        jobs = [j for j in grp["job"] if j]
        more = f", and {len(jobs) - shown} more" if len(jobs) > shown else ""
        parts.append(f"{rule}" + (f" ({', '.join(jobs[:shown])}{more})" if jobs else ""))
    return (f"Not counted: {len(missing)} job(s) of this run's plan have no benchmark file (their outputs were made "
            f"without Snakemake's benchmark, or the file was deleted): {'; '.join(parts)}.")


def section_stages(data: ReportData, env: Mapping | None = None) -> str:
    s = data.stages
    out = ["## Workflow stages", ""]
    missing = missing_benchmarks_text(data.missing_benchmarks)
    if s.empty:
        return "\n".join(out + ["No Snakemake benchmark files were found.", ""] + ([missing, ""] if missing else []))
    own = s.get("memory_source", pd.Series(dtype=object)) == ISP_MEMORY
    rows = [(r["stage"], r["family"], int(r["n_jobs"]), fmt(r["seconds"], 4), fmt(r["cpu_time"], 4),
             fmt(r["max_rss_mb"], 4) + (" *" if mine else "")) for (_, r), mine in zip(s.iterrows(), own)]
    out.append(md_table(rows, ["rule", "stage", "jobs", "seconds (sum)", "CPU seconds (sum)", "peak memory (MB)"], "llrrrr"))
    source = ("From Snakemake's `benchmark:` files of the jobs this run's workflow plans (files left by jobs of an "
              "earlier plan are not read)" if data.missing_benchmarks is not None
              else "From every Snakemake `benchmark:` file of the benchmarks folder")
    out += ["", f"{source}, summed over the jobs of each rule. Peak memory: the largest "
            f"job's, one number per job: {SNAKEMAKE_MEMORY}"
            + (f"; * {ISP_MEMORY}" if own.any() else "") + ".", ""]
    if missing:
        out += [missing, ""]
    if env:
        out += [f"Measured on: {env_machine_line(env)} (the report job's machine; jobs sent to a cluster may have run "
                "elsewhere).", ""]
    return "\n".join(out)


def render_markdown(
    data: ReportData,
    env: Mapping,
    figures: Mapping[str, str] | Sequence[str] = (),
    missing_figures: Mapping[str, str] | None = None,
    umap_points: Mapping[str, tuple] | None = None,
    figures_dir: str = "figures",
    formats: Sequence[str] = ("png",),
    title: str = "netpert benchmark report",
    now: _dt.datetime | None = None,
) -> str:
    """The whole report as markdown. ``figures`` are the figure file names written into
    ``figures_dir`` (relative to the markdown file), each also in the vector ``formats`` besides PNG
    (linked under it); ``missing_figures`` {name: why not drawn}."""
    now = now or _dt.datetime.now(_dt.timezone.utc)
    out = [f"# {title}", "", f"Generated {now.strftime('%Y-%m-%d %H:%M UTC')}.", ""]
    if data.model.get("trained") is False:
        out += [f"> **{UNTRAINED_NOTE.capitalize()}.** The model's weights are randomly initialised "
                f"(`{data.model.get('spec', NA)}`): the timings and the consistency between methods are real measurements, "
                "but the embeddings carry no biology, so the embedding-quality numbers and the UMAP mean nothing "
                "about cells.", ""]
    # summary
    out += ["## Summary", ""]
    summary = []
    if not data.perf.empty:
        summary.append(f"In-silico perturbation (ISP) timed on: {machine_line(data, env)}.")
        warning = load_warning(data)
        if warning:
            summary.append(warning)
    if not data.methods.empty:
        summary += [reading_throughput(data), reading_consistency(data)]
    if not data.not_run.empty:
        summary.append("Not run: " + "; ".join(f"{r['method']} ({not_run_text(r).removeprefix('not run: ')})"
                                               for _, r in data.not_run.iterrows()) + ".")
    if not data.stages.empty:
        summary.append(reading_stages(data))
    if not data.strata.empty and "slug" in data.strata:
        summary.append(reading_network_strata(data))
    if not data.mr_strata.empty:
        summary.append(reading_mr_strata(data))
    out += [f"- {s}" for s in summary] + [""]
    out.append(section_environment(env))
    out.append(section_model(data))
    out.append(section_dataset(data))
    out.append(section_networks(data))
    out.append(section_master_regulators(data))
    out.append(section_methods(data))
    # figures
    out += ["## Figures", ""]
    names = list(figures)
    for name in sorted(names, key=lambda n: list(FIGURE_TITLES).index(n) if n in FIGURE_TITLES else 99):
        title_, reader = FIGURE_TITLES.get(name, (name, None))
        reading = reading_umap(data, umap_points) if name == "isp__umap.png" else (reader(data) if reader else "")
        if name.startswith("isp__") and name not in ("isp__throughput.png", "isp__memory.png", "isp__consistency.png") \
                and data.model.get("trained") is False:
            title_ += f" ({UNTRAINED_NOTE})"
        out += [f"### {title_}", "", f"![{title_}]({figures_dir}/{name})", ""]
        vector = [f for f in formats if f != "png"]
        if vector:
            stem = name.rsplit(".", 1)[0]
            out += ["Also as " + ", ".join(f"[{f.upper()}]({figures_dir}/{stem}.{f})" for f in vector) + ".", ""]
        out += [reading, ""]
    if missing_figures:
        out += ["Figures not drawn:", ""] + [f"- `{k}`: {v}" for k, v in missing_figures.items()] + [""]
    out.append(section_stages(data, env))
    return "\n".join(out).rstrip() + "\n"

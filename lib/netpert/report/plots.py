"""The report's figures (matplotlib, Agg): one function per figure, each returns a Figure.

File names are ``{stage}__{name}.png`` with stage in isp, workflow, viper, aracne (the
``report`` rule's ``report()`` pattern relies on it). :func:`write_figures` draws every figure
the data allows and returns {file name: path}; a figure whose data is absent is left out and
listed with the reason in the returned ``missing`` dict.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg", force=False)
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from netpert.report.aggregate import (  # noqa: E402
    ISP_MEMORY,
    METHOD_ORDER,
    ReportData,
    env_machine_line,
    fastest_method,
    machine_line,
    mr_row_notes,
)

log = logging.getLogger(__name__)

UNTRAINED_NOTE = "untrained weights: timings and consistency only"
DPI = 110
#: Okabe & Ito's colour-blind-safe colours for the workflow stages
FAMILY_COLORS = {
    "data": "#999999", "aracne": "#0072B2", "viper": "#009E73", "isp": "#D55E00", "report": "#CC79A7", "other": "#F0E442",
}
FAIL_COLOR = "#bbbbbb"
#: Okabe & Ito's colour-blind-safe palette (black left out: it marks original cells and text)
OKABE_ITO = ("#E69F00", "#56B4E9", "#009E73", "#0072B2", "#D55E00", "#CC79A7", "#F0E442")


#: the methods' colours, in the registry's order (Okabe-Ito: baseline blue, batched orange, amp green ...)
METHOD_PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#D55E00", "#56B4E9", "#F0E442")


def method_colors(methods: Sequence[str]) -> dict[str, str]:
    """A fixed, colour-blind-safe colour per method (the same in every figure)."""
    order = list(METHOD_ORDER) + sorted(m for m in methods if m not in METHOD_ORDER)
    return {m: METHOD_PALETTE[order.index(m) % len(METHOD_PALETTE)] for m in methods}


def _machine_note(fig, machine: str | None) -> None:
    """The machine a speed figure was measured on, small, at the bottom left."""
    if machine:
        fig.text(0.005, 0.005, f"measured on: {machine}", fontsize=7, color="#555555", ha="left", va="bottom")


def _title(fig, text: str, untrained: bool = False) -> None:
    if untrained:
        text += f"\n[{UNTRAINED_NOTE}]"
    fig.suptitle(text, fontsize=12, fontweight="bold")


def _annotate_bars(ax, bars, labels, horizontal: bool = False) -> None:
    for bar, label in zip(bars, labels):
        if horizontal:
            ax.annotate(label, (bar.get_width(), bar.get_y() + bar.get_height() / 2), xytext=(3, 0),
                        textcoords="offset points", va="center", ha="left", fontsize=8)
        else:
            ax.annotate(label, (bar.get_x() + bar.get_width() / 2, bar.get_height()), xytext=(0, 2),
                        textcoords="offset points", ha="center", va="bottom", fontsize=8)


def _fmt(v: float, digits: int = 3) -> str:
    if v is None or not np.isfinite(v):
        return "n/a"
    return f"{v:.{digits}g}"


def _near_one(v: float) -> str:
    """A value near 1 with enough decimals to show how far from 1 it is (0.9999990, 0.995)."""
    if not np.isfinite(v):
        return "n/a"
    gap = abs(1.0 - v)
    decimals = 3 if gap == 0 else int(min(8, max(3, np.ceil(-np.log10(gap)) + 1)))
    return f"{v:.{decimals}f}"


def _bar_colors(methods: pd.DataFrame) -> list[str]:
    colors = method_colors(methods["method"].tolist())
    return [colors[m] for m in methods["method"]]


def _hatches(methods: pd.DataFrame) -> list[str]:
    return ["//" if p is False else "" for p in methods.get("passes_bar", [None] * len(methods))]


def _fail_legend(ax, methods: pd.DataFrame) -> None:
    if any(p is False for p in methods.get("passes_bar", [])):
        from matplotlib.patches import Patch

        ax.legend(handles=[Patch(facecolor="white", edgecolor="black", hatch="//", label="under the consistency bar")],
                  loc="upper left", fontsize=8, frameon=False)


# --------------------------------------------------------------------------- ISP
def plot_throughput(methods: pd.DataFrame, baseline: str = "baseline", untrained: bool = False, machine: str | None = None):
    """Perturbations per second and speedup over the baseline, one bar per method."""
    m = methods.dropna(subset=["perturbations_per_s"]) if "perturbations_per_s" in methods else methods.iloc[0:0]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    x = np.arange(len(m))
    colors, hatches = _bar_colors(m), _hatches(m)
    bars = axes[0].bar(x, m["perturbations_per_s"], color=colors, hatch=hatches, edgecolor="black", linewidth=0.5)
    _annotate_bars(axes[0], bars, [_fmt(v) for v in m["perturbations_per_s"]])
    axes[0].set_ylabel("perturbations per second")
    axes[0].set_title("Throughput (higher is better)", fontsize=10)
    speed = m["speedup"] if "speedup" in m else pd.Series(np.nan, index=m.index)
    bars = axes[1].bar(x, speed.fillna(0), color=colors, hatch=hatches, edgecolor="black", linewidth=0.5)
    _annotate_bars(axes[1], bars, [f"{v:.2f}x" if np.isfinite(v) else "n/a" for v in speed])
    axes[1].axhline(1.0, color="black", linestyle="--", linewidth=1)
    axes[1].set_ylabel(f"speedup over {baseline} (x)")
    axes[1].set_title(f"Speedup over {baseline} (dashed: 1x)", fontsize=10)
    for ax in axes:
        ax.set_xticks(x, m["method"], rotation=20, ha="right")
        ax.set_xlabel("inference method")
        ax.margins(y=0.15)
        ax.grid(axis="y", alpha=0.3)
    _fail_legend(axes[1], m)
    _title(fig, "ISP inference throughput per method", untrained)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    _machine_note(fig, machine)
    return fig


def plot_memory(methods: pd.DataFrame, untrained: bool = False, machine: str | None = None):
    """Peak resident memory (and peak GPU memory where measured) per method."""
    has_gpu = "gpu_peak_mem_mb" in methods and methods["gpu_peak_mem_mb"].notna().any()
    fig, axes = plt.subplots(1, 2 if has_gpu else 1, figsize=(10 if has_gpu else 6, 4.2), squeeze=False)
    panels = [("peak_rss_mb", "peak resident memory (MB)",
               "Host memory: the largest job's own peak RSS (VmHWM)\n(over strata and, where a stratum was split, its shards)")]
    if has_gpu:
        panels.append(("gpu_peak_mem_mb", "peak GPU memory (MB)", "GPU memory (peak allocated)"))
    for ax, (col, ylabel, title) in zip(axes[0], panels):
        m = methods.dropna(subset=[col]) if col in methods else methods.iloc[0:0]
        x = np.arange(len(m))
        bars = ax.bar(x, m[col], color=_bar_colors(m), edgecolor="black", linewidth=0.5)
        _annotate_bars(ax, bars, [f"{v:.0f}" for v in m[col]])
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize=10)
        ax.set_xticks(x, m["method"], rotation=20, ha="right")
    for ax in axes[0]:
        ax.set_xlabel("inference method")
        ax.margins(y=0.15)
        ax.grid(axis="y", alpha=0.3)
    _title(fig, "ISP memory per method", untrained)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    _machine_note(fig, machine)
    return fig


CONSISTENCY_PANELS = (
    ("mean_cosine", "1 - mean cosine", "mean cosine to baseline"),
    ("min_cosine", "1 - min cosine", "worst-cell cosine to baseline"),
    ("spearman", "1 - Spearman rho", "per-gene effects vs baseline"),
)
EXACT = 1e-8  # floor of the log axis: a method identical to the baseline sits here


def plot_consistency(methods: pd.DataFrame, bar: Mapping[str, float], baseline: str = "baseline", untrained: bool = False):
    """Distance of each method's embeddings and effects from the baseline's, against the bar.

    Each panel plots 1 - value on a log axis (lower is closer to the baseline); the dashed line
    is the bar (1 - threshold): a bar above it fails. Values of exactly 1 sit on the floor.
    """
    m = methods[methods["method"] != baseline]
    panels = [p for p in CONSISTENCY_PANELS if p[0] in m and m[p[0]].notna().any()]
    fig, axes = plt.subplots(1, max(len(panels), 1), figsize=(4.2 * max(len(panels), 1), 4.4), squeeze=False)
    colors = method_colors(m["method"].tolist())
    for ax, (key, ylabel, title) in zip(axes[0], panels):
        sub = m.dropna(subset=[key])
        dist = np.clip(1.0 - sub[key].astype(float).to_numpy(), EXACT, None)
        x = np.arange(len(sub))
        hatches = ["//" if p is False else "" for p in sub["passes_bar"]]
        bars = ax.bar(x, dist, bottom=0, color=[colors[k] for k in sub["method"]], hatch=hatches,
                      edgecolor="black", linewidth=0.5)
        raw = 1.0 - sub[key].astype(float).to_numpy()
        clipped = raw < EXACT
        _annotate_bars(ax, bars, [_near_one(v) + ("\n(clipped)" if c else "") for v, c in zip(sub[key], clipped)])
        if clipped.any():
            ax.scatter(x[clipped], np.full(clipped.sum(), EXACT), marker="v", color="black", zorder=3, s=28,
                       label=f"clipped: 1 - value < {EXACT:g}, drawn at the axis floor")
        ax.set_yscale("log")
        ax.set_ylim(EXACT / 2, max(1.0, dist.max() * 20))
        if key in bar:
            ax.axhline(1.0 - bar[key], color="crimson", linestyle="--", linewidth=1.2,
                       label=f"bar: {key.replace('_', ' ')} >= {bar[key]:g}")
        if key in bar or clipped.any():
            ax.legend(loc="upper left", fontsize=8, frameon=False)
        ax.set_xticks(x, sub["method"], rotation=20, ha="right")
        ax.set_xlabel("inference method")
        ax.set_ylabel(f"{ylabel} (log, lower is better)")
        ax.set_title(title, fontsize=10)
        ax.grid(axis="y", alpha=0.3, which="major")
    if not panels:
        axes[0, 0].text(0.5, 0.5, "no consistency metrics", ha="center", va="center", transform=axes[0, 0].transAxes)
    _title(fig, f"ISP consistency with {baseline} (hatched: under the bar)", untrained)
    fig.tight_layout()
    return fig


#: isp_evaluate's embedding-quality columns (netpert.isp.metrics.embedding_quality) in words:
#: the labels they separate (by prefix), the metric, and which direction is better
QUALITY_GROUPS = {"perturbation_": "perturbations", "cell_type_": "cell types", "control_": "originals vs perturbed"}
QUALITY_METRICS = {
    "ridge_accuracy": "ridge classifier accuracy", "ridge_f1": "ridge classifier F1", "silhouette": "silhouette (cosine)",
    "davies_bouldin": "Davies-Bouldin index", "calinski_harabasz": "Calinski-Harabasz index",
    "separation_ratio": "centroid separation ratio", "knn_consistency": "kNN label agreement",
    "kmeans_ari": "k-means ARI", "kmeans_nmi": "k-means NMI",
}


def quality_label(column: str) -> str:
    """'silhouette (cosine) of cell types' for ``cell_type_silhouette``."""
    for prefix, group in QUALITY_GROUPS.items():
        if column.startswith(prefix):
            metric = column.removeprefix(prefix)
            return f"{QUALITY_METRICS.get(metric, metric.replace('_', ' '))} of {group}"
    return column.replace("_", " ")


def quality_direction(column: str) -> str:
    """Which way is better for an embedding-quality column, in words."""
    if column.startswith("control_"):  # an effect size: how far the perturbations moved the cells
        return "higher: perturbed cells further from their originals"
    return "lower is better" if column.endswith("davies_bouldin") else "higher is better"


def plot_embedding_quality(quality: pd.DataFrame, untrained: bool = False, baseline: str = "baseline"):
    """Every embedding-quality metric (columns of ``quality`` but 'method') in one panel: one row per
    metric (in words, with which way is better and the baseline's value), one marker per other
    method at its change from the baseline in % of the baseline's value, signed so that right
    is better (for the originals-vs-perturbed effect sizes: larger). Without a baseline row the
    values themselves are drawn, one panel per metric group."""
    metrics = [c for c in quality.columns if c != "method" and quality[c].notna().any()]
    q = quality.set_index("method")
    colors = method_colors(list(q.index))
    if baseline not in q.index or len(q) < 2:
        fig, ax = plt.subplots(figsize=(8, 0.34 * len(metrics) + 1.8))
        y = np.arange(len(metrics))[::-1]
        for method, row in q.iterrows():
            ax.scatter(row[metrics].astype(float), y, color=colors[method], label=method, zorder=3)
        ax.set_yticks(y, [f"{quality_label(k)} ({quality_direction(k)})" for k in metrics], fontsize=8)
        ax.set_xlabel("value")
        ax.legend(fontsize=8, frameon=False)
        ax.grid(axis="x", alpha=0.3)
        _title(fig, "Embedding quality", untrained)
        fig.tight_layout()
        return fig
    base = q.loc[baseline, metrics].astype(float)
    others = [m for m in q.index if m != baseline]
    sign = pd.Series([-1.0 if k.endswith("davies_bouldin") else 1.0 for k in metrics], index=metrics)
    scale = base.abs().where(base.abs() > 0, np.nan)
    change = 100.0 * (q.loc[others, metrics].astype(float) - base) * sign / scale  # %, right = better
    fig, ax = plt.subplots(figsize=(10.5, 0.34 * len(metrics) + 2.0))
    y = np.arange(len(metrics))[::-1]
    for j, method in enumerate(others):
        offset = (j - (len(others) - 1) / 2) * min(0.12, 0.6 / max(len(others), 1))
        ax.scatter(change.loc[method], y + offset, color=colors[method], edgecolors="black", linewidths=0.4, s=36,
                   label=method, zorder=3)
    ax.axvline(0, color="black", linewidth=1)
    finite = change.to_numpy()[np.isfinite(change.to_numpy())]
    lim = max(1.0, float(np.abs(finite).max()) * 1.2) if finite.size else 1.0
    ax.set_xscale("symlog", linthresh=0.1)
    ax.set_xlim(-lim, lim)
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:+g}%" if v else "0"))
    labels = [f"{quality_label(k)} ({quality_direction(k).split(':')[0]}); {baseline} {_fmt(base[k])}" for k in metrics]
    ax.set_yticks(y, labels, fontsize=8)
    for ylab, k in zip(y, metrics):
        if k.startswith("control_"):
            ax.get_yticklabels()[list(y).index(ylab)].set_fontstyle("italic")
    ax.set_xlabel(f"change from {baseline}, % of its value (symmetric log axis; right: better, for the italic "
                  "originals-vs-perturbed rows: larger)", fontsize=8)
    ax.grid(axis="x", alpha=0.3, which="major")
    ax.legend(title="method", fontsize=8, title_fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    _title(fig, f"Embedding quality: each method against {baseline}", untrained)
    fig.tight_layout()
    return fig


#: at most this many points per UMAP panel: larger sets are subsampled (per label, seeded) before the UMAP
MAX_UMAP_POINTS = 10_000
#: markers that, with the palette's colours, keep up to 21 categories apart
CATEGORY_MARKERS = ("o", "s", "^")


def category_styles(labels: Sequence[str], most: int = len(OKABE_ITO) * len(CATEGORY_MARKERS) - 1) -> dict[str, tuple]:
    """A (colour, marker) per label from the colour-blind-safe Okabe-Ito palette: colours first, then
    the next marker; beyond ``most`` labels the rest share one light grey ("other")."""
    styles = {}
    for i, lab in enumerate(labels):
        if i >= most and len(labels) > most + 1:
            styles[lab] = ("#bbbbbb", "o")
        else:
            styles[lab] = (OKABE_ITO[i % len(OKABE_ITO)], CATEGORY_MARKERS[(i // len(OKABE_ITO)) % len(CATEGORY_MARKERS)])
    return styles


def _subsample(n: int, groups: np.ndarray, limit: int, seed: int) -> np.ndarray:
    """Row indices: all rows when ``n <= limit``, else a seeded sample keeping each group's share."""
    if n <= limit:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    keep = []
    for g in np.unique(groups):
        rows = np.flatnonzero(groups == g)
        keep.append(rng.choice(rows, size=max(1, int(round(len(rows) * limit / n))), replace=False))
    return np.sort(np.concatenate(keep))


def plot_umap(panels: Mapping[str, tuple], seed: int = 0, untrained: bool = False, max_points: int = MAX_UMAP_POINTS):
    """UMAP (scanpy) of cell embeddings: one column per method, the top row coloured by cell type,
    the bottom row by perturbation (the original cells as black rings on top).

    ``panels`` maps a title (e.g. the method) to ``(X, labels, cell_types)``: embeddings (n, H),
    one label per row ("original" or the perturbation) and the cell type of every row. The
    methods share one UMAP (fitted on all their embeddings together): the columns share
    coordinates. Colours are the colour-blind-safe Okabe-Ito palette (with markers beyond
    seven categories); points are small and translucent, drawn in a shuffled order (no category
    hides another by being drawn last); above ``max_points`` per method a seeded sample is shown.
    """
    import anndata as ad
    import scanpy as sc

    rng = np.random.default_rng(seed)
    shown, n_total = {}, {}
    for title, (X, labels, cell_types) in panels.items():
        labels, cell_types = np.asarray(labels).astype(str), np.asarray(cell_types).astype(str)
        keep = _subsample(len(labels), labels, max_points, seed)
        shown[title] = (np.asarray(X, dtype=np.float32)[keep], labels[keep], cell_types[keep])
        n_total[title] = len(labels)
    a = ad.AnnData(np.concatenate([v[0] for v in shown.values()]))
    n_neighbors = int(max(2, min(15, a.n_obs - 1)))
    # exact kNN by scikit-learn: scanpy's default above 4,096 points (pynndescent) fails on scipy's sparse arrays
    sc.pp.neighbors(a, n_neighbors=n_neighbors, use_rep="X", random_state=seed, transformer="sklearn")
    sc.tl.umap(a, random_state=seed)
    xy_all, offset, xy = a.obsm["X_umap"], 0, {}
    for title, (X, _, _) in shown.items():
        xy[title], offset = xy_all[offset:offset + len(X)], offset + len(X)

    types = sorted({t for _, _, c in shown.values() for t in c})
    counts = pd.Series(np.concatenate([labs for _, labs, _ in shown.values()])).value_counts()
    # the most frequent perturbations get the colours (ties by name); beyond 20 the rest are "other"
    perts = sorted((p for p in counts.index if p != "original"), key=lambda p: (-counts[p], p))
    type_style, pert_style = category_styles(types), category_styles(perts)
    n_max = max(len(v[1]) for v in shown.values())
    size = float(np.clip(4000.0 / max(n_max, 1), 3.0, 40.0))
    legend_in = 2.6
    ncol = len(shown)
    fig, axes = plt.subplots(2, ncol, figsize=(4.6 * ncol + legend_in, 9.0), squeeze=False)
    for j, (title, (X, labels, cell_types)) in enumerate(shown.items()):
        pts = xy[title]
        orig = labels == "original"
        order = rng.permutation(len(labels))
        # top: cell types, perturbed embeddings under their (larger, outlined) original cells
        top = axes[0, j]
        for rows, edge, scale in ((order[~orig[order]], "none", 1.0), (order[orig[order]], "black", 1.6)):
            for marker in CATEGORY_MARKERS:
                sel = rows[[type_style[t][1] == marker for t in cell_types[rows]]]
                if len(sel):
                    top.scatter(pts[sel, 0], pts[sel, 1], s=size * scale, marker=marker, alpha=0.75,
                                c=[type_style[t][0] for t in cell_types[sel]], edgecolors=edge, linewidths=0.4)
        # bottom: perturbations in a shuffled order, the original cells as black rings on top
        bottom = axes[1, j]
        rows = order[~orig[order]]
        for marker in CATEGORY_MARKERS:
            sel = rows[[pert_style[p][1] == marker for p in labels[rows]]]
            if len(sel):
                bottom.scatter(pts[sel, 0], pts[sel, 1], s=size, marker=marker, alpha=0.75,
                               c=[pert_style[p][0] for p in labels[sel]], linewidths=0)
        if orig.any():
            bottom.scatter(pts[orig, 0], pts[orig, 1], s=size * 1.6, facecolors="none", edgecolors="black",
                           linewidths=0.6)
        sample = f", {len(labels)} of {n_total[title]} shown" if len(labels) < n_total[title] else ""
        top.set_title(f"{title}: by cell type ({n_total[title]} embeddings{sample})", fontsize=9)
        bottom.set_title(f"{title}: by perturbation", fontsize=9)
        for ax in (top, bottom):
            ax.set_xlabel("UMAP 1")
            ax.set_ylabel("UMAP 2")
            ax.set_xticks([])
            ax.set_yticks([])
    from matplotlib.lines import Line2D

    def handles(styles, names, **kw):
        seen = list(dict.fromkeys((styles[n], n if styles[n][0] != "#bbbbbb" else None) for n in names))
        out = []
        for (color, marker), name in seen:
            label = name if name is not None else f"other ({sum(styles[n][0] == '#bbbbbb' for n in names)})"
            out.append(Line2D([], [], linestyle="none", marker=marker, color=color, markersize=6, label=label, **kw))
        return out

    right = 1 - legend_in / fig.get_figwidth()
    fig.legend(handles=handles(type_style, types) + [Line2D([], [], linestyle="none", marker="o", markerfacecolor="white",
                                                           markeredgecolor="black", markersize=7,
                                                           label="original cell (outlined)")],
               title="cell type", loc="center left", bbox_to_anchor=(right, 0.73), fontsize=7, title_fontsize=8,
               frameon=False)
    fig.legend(handles=[Line2D([], [], linestyle="none", marker="o", markerfacecolor="none", markeredgecolor="black",
                               markersize=7, label="original cell")] + handles(pert_style, perts),
               title="perturbation", loc="center left", bbox_to_anchor=(right, 0.27), fontsize=7, title_fontsize=8,
               frameon=False, ncol=1 if len(perts) <= 18 else 2)
    _title(fig, "Cell embeddings, original and perturbed (one UMAP for the methods shown)", untrained)
    fig.tight_layout(rect=(0, 0, right, 1))
    return fig


# --------------------------------------------------------------------------- workflow, VIPER, ARACNe
def plot_stage_time(stages: pd.DataFrame, machine: str | None = None):
    """Wall seconds (summed over jobs) and peak memory per workflow rule, coloured by stage;
    ``machine`` (the report job's) is named at the bottom."""
    s = stages.iloc[::-1]  # first stage at the top
    fig, axes = plt.subplots(1, 2, figsize=(11, 0.38 * len(s) + 2.3), sharey=True)
    y = np.arange(len(s))
    colors = [FAMILY_COLORS.get(f, FAMILY_COLORS["other"]) for f in s["family"]]
    bars = axes[0].barh(y, s["seconds"].fillna(0), color=colors, edgecolor="black", linewidth=0.4)
    _annotate_bars(axes[0], bars, [f"{v:.1f} s ({n} job{'s' if n != 1 else ''})" for v, n in zip(s["seconds"], s["n_jobs"])],
                   horizontal=True)
    axes[0].set_xlabel("wall time, summed over the rule's jobs (s)")
    axes[0].set_title("Time per rule", fontsize=10)
    bars = axes[1].barh(y, s["max_rss_mb"].fillna(0), color=colors, edgecolor="black", linewidth=0.4)
    own = s["memory_source"] == ISP_MEMORY if "memory_source" in s else pd.Series(False, index=s.index)
    _annotate_bars(axes[1], bars, [(f"{v:.0f} MB" if np.isfinite(v) else "n/a") + (" *" if o else "")
                                   for v, o in zip(s["max_rss_mb"], own)], horizontal=True)
    axes[1].set_xlabel("peak memory of the largest job (MB)" + ("\n* isp_infer: the job's own peak (VmHWM),\nas in the methods table (each shard a job)"
                                                               if "memory_source" in s and (s["memory_source"] == ISP_MEMORY).any() else ""))
    axes[1].set_title("Peak memory per rule", fontsize=10)
    axes[0].set_yticks(y, s["stage"])
    axes[0].set_ylabel("rule")
    for ax in axes:
        ax.margins(x=0.35)
        ax.grid(axis="x", alpha=0.3)
    from matplotlib.patches import Patch

    fams = list(dict.fromkeys(stages["family"]))
    fig.legend(handles=[Patch(color=FAMILY_COLORS.get(f, FAMILY_COLORS["other"]), label=f) for f in fams],
               loc="lower center", bbox_to_anchor=(0.5, 0.22 / fig.get_figheight()), ncol=len(fams), fontsize=8,
               title="workflow stage", title_fontsize=8, frameon=False)
    _title(fig, "Workflow: time and memory per rule (Snakemake benchmark files)")
    fig.tight_layout(rect=(0, 0.72 / fig.get_figheight(), 1, 1))
    _machine_note(fig, machine and f"{machine} (the report job's machine; jobs sent to a cluster may have run elsewhere)")
    return fig


def plot_mr_heatmap(activity: pd.DataFrame, mr_source: Mapping[str, str] | None = None,
                    row_notes: Mapping[str, str] | None = None):
    """Mean VIPER NES of each master regulator (columns) per cell type (rows), diverging colour map.

    ``mr_source`` maps a regulator to the cell type it is a master regulator of (shown in the
    column label); ``row_notes`` maps a cell type without master regulators to why ("no network",
    "no significant regulator"): its row is kept and labelled, in grey.
    """
    values = activity.to_numpy(dtype=float)
    lim = float(np.nanmax(np.abs(values))) if values.size else 1.0
    lim = lim if lim > 0 else 1.0
    ncol, nrow = activity.shape[1], activity.shape[0]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.42 * ncol + 3.0), max(3.2, 0.42 * nrow + 2.4)))
    im = ax.imshow(values, cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto")
    labels = [f"{c} ({mr_source[c]})" if mr_source and c in mr_source else str(c) for c in activity.columns]
    ax.set_xticks(np.arange(ncol), labels, rotation=60, ha="right", fontsize=8)
    notes = dict(row_notes or {})
    ax.set_yticks(np.arange(nrow), [f"{r} [{notes[str(r)]}]" if str(r) in notes else str(r) for r in activity.index],
                  fontsize=9)
    for tick, r in zip(ax.get_yticklabels(), activity.index):
        if str(r) in notes:
            tick.set_color("#777777")
            tick.set_fontstyle("italic")
    ax.set_xlabel("master regulator (cell type it was found in)")
    ax.set_ylabel("cell type")
    if ncol * nrow <= 300:
        for i in range(nrow):
            for j in range(ncol):
                v = values[i, j]
                if np.isfinite(v):
                    ax.text(j, i, f"{v:.1f}".replace("-0.0", "0.0"), ha="center", va="center", fontsize=7,
                            color="white" if abs(v) > 0.6 * lim else "black")
    cb = fig.colorbar(im, ax=ax, fraction=0.04, pad=0.02)
    cb.set_label("mean NES (VIPER activity)")
    _title(fig, "Master-regulator activity per cell type")
    fig.tight_layout()
    return fig


def plot_network_size(networks: pd.DataFrame, labels: Mapping[str, str] | None = None,
                      outcomes: pd.DataFrame | None = None):
    """Per stratum: ARACNe edges (left) and regulators / regulons kept (right). ``outcomes``
    (:func:`netpert.report.aggregate.network_outcomes`) adds the strata without a network: their
    rows are labelled "[empty: skipped]" or "[not built]", in grey."""
    n = networks.sort_values("stratum")
    marks: dict[str, str] = {}
    if outcomes is not None and not outcomes.empty:
        extra = outcomes[~outcomes["slug"].isin(n["stratum"])]
        n = pd.concat([n, pd.DataFrame({"stratum": extra["slug"], "n_edges": np.nan, "n_regulators": np.nan, "n_regulons": np.nan})],
                      ignore_index=True).sort_values("stratum")
        marks = {r.slug: ("empty: skipped" if r.outcome == "empty" else "not built")
                 for r in outcomes.itertuples() if r.outcome != "network"}
    names = [(labels.get(s, s) if labels else s) + (f" [{marks[s]}]" if s in marks else "") for s in n["stratum"]]
    fig, axes = plt.subplots(1, 2, figsize=(11, 0.6 * len(n) + 2.1), sharey=True)
    y = np.arange(len(n))
    bars = axes[0].barh(y, n["n_edges"].fillna(0), color="#0072B2", edgecolor="black", linewidth=0.4)
    _annotate_bars(axes[0], bars, [f"{v:.0f}" if np.isfinite(v) else "n/a" for v in n["n_edges"]], horizontal=True)
    axes[0].set_xlabel("edges in the consensus network")
    axes[0].set_title("Network edges", fontsize=10)
    h = 0.38
    b1 = axes[1].barh(y + h / 2, n["n_regulators"].fillna(0), height=h, color="#E69F00", edgecolor="black",
                      linewidth=0.4, label="regulators with an edge")
    b2 = axes[1].barh(y - h / 2, n["n_regulons"].fillna(0), height=h, color="#009E73", edgecolor="black",
                      linewidth=0.4, label="regulons kept (after pruning)")
    _annotate_bars(axes[1], b1, [f"{v:.0f}" if np.isfinite(v) else "n/a" for v in n["n_regulators"]], horizontal=True)
    _annotate_bars(axes[1], b2, [f"{v:.0f}" if np.isfinite(v) else "n/a" for v in n["n_regulons"]], horizontal=True)
    axes[1].set_xlabel("number of regulators")
    axes[1].set_title("Regulators and regulons", fontsize=10)
    fig.legend(handles=[b1, b2], loc="lower center", ncol=2, fontsize=8, frameon=False)
    axes[0].set_yticks(y, names)
    for tick, slug in zip(axes[0].get_yticklabels(), n["stratum"]):
        if slug in marks:
            tick.set_color("#777777")
            tick.set_fontstyle("italic")
    axes[0].set_ylabel("stratum (cell type)")
    for ax in axes:
        ax.margins(x=0.25)
        ax.grid(axis="x", alpha=0.3)
    _title(fig, "ARACNe network size per stratum" + (" (grey: no network, see the report's Networks table)" if marks else ""))
    fig.tight_layout(rect=(0, 0.3 / fig.get_figheight(), 1, 1))
    return fig


# --------------------------------------------------------------------------- all figures
#: no creation date in the vector files: the same figure is the same bytes
_NO_DATE = {"pdf": {"CreationDate": None}, "svg": {"Date": None}}


def save(fig, path: str | os.PathLike, formats: Sequence[str] = ("png",)) -> Path:
    """Write ``fig`` as ``path`` with each suffix of ``formats`` (``x.png``, ``x.pdf`` ...); returns the PNG's path."""
    path = Path(path)
    with plt.rc_context({"svg.hashsalt": "netpert"}):  # the SVG's element ids: fixed, not random
        for fmt in formats:
            fig.savefig(path.with_suffix(f".{fmt}"), dpi=DPI, facecolor="white", metadata=_NO_DATE.get(fmt))
    plt.close(fig)
    return path.with_suffix(".png")


def write_figures(
    data: ReportData,
    folder: str | os.PathLike,
    umap: bool = True,
    umap_points=None,
    quality_columns: Sequence[str] | None = None,
    seed: int = 0,
    environment: Mapping | None = None,
    formats: Sequence[str] = ("png",),
) -> tuple[dict[str, Path], dict[str, str]]:
    """Draw every figure the data allows into ``folder``.

    ``umap_points(npz_paths) -> (X, labels, strata)`` turns a method's npz files into UMAP input
    (see :func:`netpert.report.aggregate.embedding_points`); ``quality_columns`` are the
    embedding-quality columns of the methods table; ``environment`` the report machine's
    (:func:`netpert.report.environment.capture_environment`), named under the stage-time figure
    (and under the ISP speed figures where the perf records do not name theirs); ``formats`` the
    files written per figure (:data:`netpert.report.inputs.FIGURE_FORMATS`, PNG among them). Returns ``(written, missing)``:
    {file name: path} and {file name: why it was not drawn}.
    """
    from netpert.report.aggregate import embedding_points, quality_table

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    umap_points = umap_points or embedding_points
    written: dict[str, Path] = {}
    missing: dict[str, str] = {}
    untrained = data.model.get("trained") is False
    m = data.methods

    def attempt(name, make, why_absent=None):
        if why_absent:
            missing[name] = why_absent
            return
        written[name] = save(make(), folder / name, formats)

    has_perf = not m.empty and "perturbations_per_s" in m and m["perturbations_per_s"].notna().any()
    machine = machine_line(data, environment)
    attempt("isp__throughput.png", lambda: plot_throughput(m, data.baseline, untrained, machine),
            None if has_perf else "no ISP performance files")
    has_mem = not m.empty and "peak_rss_mb" in m and m["peak_rss_mb"].notna().any()
    attempt("isp__memory.png", lambda: plot_memory(m, untrained, machine), None if has_mem else "no peak-memory measurements")
    has_cons = not m.empty and any(
        k in m and m.loc[m["method"] != data.baseline, k].notna().any() for k, _, _ in CONSISTENCY_PANELS
    )
    attempt("isp__consistency.png", lambda: plot_consistency(m, data.bar, data.baseline, untrained),
            None if has_cons else "no consistency metrics (only the baseline ran?)")
    quality = quality_table(m, quality_columns)
    attempt("isp__embedding_quality.png", lambda: plot_embedding_quality(quality, untrained, data.baseline),
            None if quality.shape[1] > 1 and len(quality) else "no embedding-quality metrics in isp/metrics.tsv")
    if not umap:
        missing["isp__umap.png"] = "report.umap is false"
    elif data.baseline not in data.embeddings:
        missing["isp__umap.png"] = f"no {data.baseline} embeddings"
    else:
        fast = fastest_method(m, data.baseline)
        shown = [data.baseline] + ([fast] if fast and fast != data.baseline and fast in data.embeddings else [])
        panels = {}
        cell_type = dict(zip(data.strata["slug"].astype(str), data.strata.get("cell_type", data.strata["slug"]).astype(str))) \
            if "slug" in data.strata else {}
        for method in shown:
            X, labels, strata = umap_points(data.embeddings[method])
            if len(X) >= 4:
                panels[method + (" (fastest)" if method == fast and method != data.baseline else "")] = (
                    X, labels, np.array([cell_type.get(s, s) for s in strata]))
        attempt("isp__umap.png", lambda: plot_umap(panels, seed=seed, untrained=untrained),
                None if panels else "fewer than 4 embeddings")
    attempt("workflow__stage_time.png", lambda: plot_stage_time(data.stages, env_machine_line(environment) if environment else None),
            None if not data.stages.empty else "no Snakemake benchmark files")
    mr_source = None
    if not data.master_regulators.empty:
        labels = dict(zip(data.strata["slug"], data.strata.get("cell_type", data.strata["slug"])))
        mr_source = {}
        for _, row in data.master_regulators.iterrows():
            mr_source.setdefault(str(row["regulator"]), labels.get(str(row["stratum"]), str(row["stratum"])))
    no_mr = "no master-regulator activity"
    if data.mr_activity.empty and not data.mr_strata.empty and data.master_regulators.empty:
        no_mr = "no stratum has a master regulator (no network or no significant regulator in every stratum)"
    row_notes = mr_row_notes(data.mr_strata, data.strata)
    attempt("viper__master_regulators.png", lambda: plot_mr_heatmap(data.mr_activity, mr_source, row_notes),
            None if not data.mr_activity.empty else no_mr)
    labels = dict(zip(data.strata["slug"], data.strata.get("cell_type", data.strata["slug"])))
    from netpert.report.aggregate import network_outcomes

    outcomes = network_outcomes(data) if "slug" in data.strata else None
    attempt("aracne__network_size.png", lambda: plot_network_size(data.networks, labels, outcomes),
            None if not data.networks.empty else "no ARACNe networks")
    return written, missing

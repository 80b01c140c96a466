"""The benchmark report: every stage's outputs and Snakemake benchmarks aggregated into
``benchmark.csv``, ``benchmark_report.md`` and ``figures/{stage}__{name}.png``.

* :mod:`netpert.report.aggregate` reads the outputs into tables (:class:`ReportData`);
* :mod:`netpert.report.plots` draws the figures (matplotlib, Agg; UMAP with scanpy);
* :mod:`netpert.report.markdown` writes the report with readings computed from the data;
* :mod:`netpert.report.environment` records the machine and package versions;
* :mod:`netpert.report.tracking` optionally logs the run to Weights & Biases.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Mapping, Sequence

from netpert._io import atomic_dir, atomic_path
from netpert.report.aggregate import ReportData, benchmark_table, collect, embedding_points, fastest_method

log = logging.getLogger(__name__)

__all__ = ["ReportData", "build_report", "benchmark_table", "collect"]


def build_report(
    strata: str | os.PathLike,
    out_csv: str | os.PathLike,
    out_markdown: str | os.PathLike,
    out_figures: str | os.PathLike,
    networks: Sequence[str | os.PathLike] = (),
    regulons: Sequence[str | os.PathLike] = (),
    activity: str | os.PathLike | None = None,
    master_regulators: str | os.PathLike | None = None,
    metrics: str | os.PathLike | None = None,
    model: str | os.PathLike | None = None,
    npz: Sequence[str | os.PathLike] = (),
    perf: Sequence[str | os.PathLike] = (),
    artifacts: Sequence[str | os.PathLike] = (),
    benchmarks: str | os.PathLike | None = None,
    skipped: Mapping[str, str] | None = None,
    bar: Mapping[str, float] | None = None,
    baseline: str = "baseline",
    umap: bool = True,
    config: Mapping | None = None,
    wandb: bool = False,
    wandb_project: str = "netpert",
    wandb_mode: str = "offline",
    wandb_dir: str | os.PathLike | None = None,
    environment: Mapping | None = None,
    seed: int = 0,
) -> ReportData:
    """Aggregate every stage's outputs and write the report (CSV, markdown, figures), atomically.

    Arguments name the workflow's outputs (see :func:`netpert.report.aggregate.collect`);
    ``config`` is the run's config (the data set's input and cell-type key are taken from it);
    ``environment`` defaults to :func:`netpert.report.environment.capture_environment` of this
    machine. With ``wandb`` true and wandb installed, the run is also logged to wandb
    (``wandb_mode`` offline by default, written under ``wandb_dir``).
    """
    from netpert.report.environment import capture_environment
    from netpert.report.markdown import render_markdown
    from netpert.report.plots import write_figures

    config = dict(config or {})
    dataset = {
        "input": config.get("input"),
        "cell_type_key": (config.get("data") or {}).get("cell_type_key"),
    }
    data = collect(
        strata=strata, networks=networks, regulons=regulons, activity=activity, master_regulators=master_regulators,
        metrics=metrics, model=model, npz=npz, perf=perf, artifacts=artifacts, benchmarks=benchmarks,
        skipped=skipped, bar=bar, baseline=baseline, dataset={k: v for k, v in dataset.items() if v is not None},
    )
    env = dict(environment) if environment is not None else capture_environment()
    table = benchmark_table(data)

    # UMAP inputs for the markdown's reading (the figure computes its own from the same files)
    points = {}
    if umap and baseline in data.embeddings:
        fast = fastest_method(data.methods, baseline)
        for method in dict.fromkeys([baseline, fast]):
            if method and method in data.embeddings:
                points[method] = embedding_points(data.embeddings[method])

    out_figures = Path(out_figures)
    with atomic_dir(out_figures) as tmp_fig:
        written, missing = write_figures(data, tmp_fig, umap=umap, seed=seed)
        rel = os.path.relpath(out_figures, Path(out_markdown).parent)
        text = render_markdown(data, env, figures=list(written), missing_figures=missing, umap_points=points,
                               figures_dir=rel)
        # everything is computed: only the renames are left
        with atomic_path(out_markdown) as tmp_md:
            Path(tmp_md).write_text(text)
        with atomic_path(out_csv) as tmp_csv:
            table.to_csv(tmp_csv, index=False)
    for name, why in missing.items():
        log.warning("figure %s not drawn: %s", name, why)
    if wandb:
        from netpert.report.tracking import log_to_wandb

        log_to_wandb(table, {n: out_figures / n for n in written}, environment=env, model=data.model, config=config,
                     project=wandb_project, mode=wandb_mode, directory=wandb_dir)
    log.info("report written: %s, %s, %d figures", out_csv, out_markdown, len(written))
    return data


"""The benchmark report: every stage's outputs and Snakemake benchmarks aggregated into
``methods.csv`` (one row per ISP method), ``stages.csv`` (one row per workflow rule),
``benchmark_report.md`` and ``figures/{stage}__{name}.png``.

* :mod:`netpert.report.aggregate` reads the outputs into tables (:class:`ReportData`);
* :mod:`netpert.report.plots` draws the figures (matplotlib, Agg; UMAP with scanpy);
* :mod:`netpert.report.markdown` writes the report with readings computed from the data;
* :mod:`netpert.report.environment` records the machine and package versions;
* :mod:`netpert.report.tracking` optionally logs the run to Weights & Biases.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

from netpert._io import atomic_dir, atomic_path
from netpert.report.aggregate import (
    ReportData,
    collect,
    embedding_points,
    fastest_method,
    methods_csv,
    stages_csv,
)
from netpert.report.inputs import ReportInputs, ReportOptions, ReportOutputs

log = logging.getLogger(__name__)

__all__ = ["ReportData", "ReportInputs", "ReportOptions", "ReportOutputs", "build_report", "collect", "methods_csv",
           "stages_csv"]


def build_report(
    inputs: ReportInputs,
    outputs: ReportOutputs,
    options: ReportOptions | None = None,
    environment: Mapping | None = None,
) -> ReportData:
    """Aggregate every stage's outputs and write the report (CSV, markdown, figures), atomically.

    ``inputs`` names the workflow's outputs (see :func:`netpert.report.aggregate.collect`),
    ``outputs`` where the report goes, ``options`` how it is made (bar, UMAP, seed, the data
    set's facts, wandb). ``environment`` defaults to
    :func:`netpert.report.environment.capture_environment` of this machine. With
    ``options.wandb`` true and wandb installed, the run is also logged to wandb
    (``options.wandb_mode`` offline by default, written under ``options.wandb_dir``).
    """
    from netpert.report.environment import capture_environment
    from netpert.report.markdown import render_markdown
    from netpert.report.plots import write_figures

    options = options or ReportOptions()
    data = collect(inputs, options)
    env = dict(environment) if environment is not None else capture_environment()
    methods, stages = methods_csv(data), stages_csv(data, env)
    baseline = options.baseline

    # UMAP inputs for the markdown's reading (the figure computes its own from the same files)
    points = {}
    if options.umap and baseline in data.embeddings:
        fast = fastest_method(data.methods, baseline)
        for method in dict.fromkeys([baseline, fast]):
            if method and method in data.embeddings:
                points[method] = embedding_points(data.embeddings[method])

    with atomic_dir(outputs.figures) as tmp_fig:
        written, missing = write_figures(data, tmp_fig, umap=options.umap, seed=options.seed, environment=env,
                                         formats=options.formats)
        rel = os.path.relpath(outputs.figures, outputs.markdown.parent)
        text = render_markdown(data, env, figures=list(written), missing_figures=missing, umap_points=points,
                               figures_dir=rel, formats=options.formats)
        # everything is computed: only the renames are left
        with atomic_path(outputs.markdown) as tmp_md:
            Path(tmp_md).write_text(text)
        for table, path in ((methods, outputs.methods), (stages, outputs.stages)):
            with atomic_path(path) as tmp_csv:
                table.to_csv(tmp_csv, index=False)
    for name, why in missing.items():
        log.warning("figure %s not drawn: %s", name, why)
    if options.wandb:
        from netpert.report.tracking import log_to_wandb

        log_to_wandb(methods, stages, {n: outputs.figures / n for n in written}, environment=env, model=data.model,
                     config=options.run_facts(), project=options.wandb_project, mode=options.wandb_mode,
                     directory=options.wandb_dir)
    log.info("report written: %s, %s, %s, %d figures", outputs.methods, outputs.stages, outputs.markdown, len(written))
    return data

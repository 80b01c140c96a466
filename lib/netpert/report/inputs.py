"""What the report reads, writes and how: three small frozen records instead of a long signature.

* :class:`ReportInputs`: the path of every stage output the report aggregates;
* :class:`ReportOutputs`: ``methods.csv``, ``stages.csv``, ``benchmark_report.md`` and the figures folder;
* :class:`ReportOptions`: the few settings (consistency bar, baseline, UMAP, seed, wandb) and
  the data set's facts (input, cell-type key) the workflow passes as the rule's params.

The report never reads the workflow's ``config``: whatever it needs is a field here.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from netpert.errors import InputError
from netpert.isp.methods import BASELINE
from netpert.isp.metrics import DEFAULT_BAR

PathLike = str | os.PathLike
#: the figure formats the report can write (PNG always: the markdown and the HTML report show it)
FIGURE_FORMATS = ("png", "pdf", "svg")


def _path(value) -> Path | None:
    return None if value is None else Path(value)


def _paths(values) -> tuple[Path, ...]:
    if values is None:
        return ()
    if isinstance(values, (str, os.PathLike)):
        return (Path(values),)
    return tuple(Path(v) for v in values)


@dataclass(frozen=True)
class ReportInputs:
    """The workflow outputs the report reads (paths; ``None`` / empty: that stage is not shown).

    ``strata``: ``aracne/strata.tsv`` (or the folder holding ``strata.tsv``); ``networks`` /
    ``regulons``: ``aracne/{stratum}/network.tsv`` / ``regulon.tsv``; ``activity``:
    ``viper/activity.h5ad``; ``master_regulators``: ``viper/master_regulators.tsv``;
    ``metrics``: ``isp/metrics.tsv``; ``model``: the ``isp/model`` folder; ``npz`` / ``perf``:
    ``isp/{method}/{stratum}.npz`` / ``.perf.json``; ``artifacts``: the ONNX / TensorRT files
    (their ``.json`` reports beside them are read); ``benchmarks``: the ``benchmarks/`` folder;
    ``benchmark_files``: the benchmark files (under ``benchmarks``) of the jobs the workflow plans
    now: only those are read, and those missing are listed (``None``: every file in the folder).
    """

    strata: Path
    networks: tuple[Path, ...] = ()
    regulons: tuple[Path, ...] = ()
    activity: Path | None = None
    master_regulators: Path | None = None
    metrics: Path | None = None
    model: Path | None = None
    npz: tuple[Path, ...] = ()
    perf: tuple[Path, ...] = ()
    artifacts: tuple[Path, ...] = ()
    benchmarks: Path | None = None
    benchmark_files: tuple[Path, ...] | None = None

    def __post_init__(self):
        object.__setattr__(self, "strata", Path(self.strata))
        for name in ("activity", "master_regulators", "metrics", "model", "benchmarks"):
            object.__setattr__(self, name, _path(getattr(self, name)))
        for name in ("networks", "regulons", "npz", "perf", "artifacts"):
            object.__setattr__(self, name, _paths(getattr(self, name)))
        if self.benchmark_files is not None:
            object.__setattr__(self, "benchmark_files", _paths(self.benchmark_files))


@dataclass(frozen=True)
class ReportOutputs:
    """Where the report goes: ``methods`` (methods.csv: one row per ISP method), ``stages``
    (stages.csv: one row per workflow rule), ``markdown`` (benchmark_report.md) and the
    ``figures`` folder (``{stage}__{name}.{format}``)."""

    methods: Path
    stages: Path
    markdown: Path
    figures: Path

    def __post_init__(self):
        for name in ("methods", "stages", "markdown", "figures"):
            object.__setattr__(self, name, Path(getattr(self, name)))

    @classmethod
    def in_folder(cls, folder: PathLike) -> ReportOutputs:
        """The workflow's names under ``folder`` (``results/report``)."""
        folder = Path(folder)
        return cls(folder / "methods.csv", folder / "stages.csv", folder / "benchmark_report.md", folder / "figures")


@dataclass(frozen=True)
class ReportOptions:
    """How the report is made (defaults: the config schema's).

    ``bar``: the consistency bar isp_evaluate judged against (config ``isp.bar``; shown, and
    drawn in the consistency figure); ``baseline``: the reference method; ``umap``: draw the
    UMAP (config ``report.umap``); ``seed``: its seed (``isp.seed``); ``input`` /
    ``cell_type_key``: the data set's facts shown (``input``, ``data.cell_type_key``);
    ``wandb*``: optional Weights & Biases logging (``report.wandb*``), written under
    ``wandb_dir``; ``formats``: the files written per figure (``report.formats``: png, pdf, svg;
    PNG among them, the markdown shows it).
    """

    bar: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_BAR))
    baseline: str = BASELINE
    umap: bool = True
    seed: int = 0
    input: str | None = None
    cell_type_key: str | None = None
    wandb: bool = False
    wandb_project: str = "netpert"
    wandb_mode: str = "offline"
    wandb_dir: Path | None = None
    formats: tuple[str, ...] = ("png", "pdf")

    def __post_init__(self):
        object.__setattr__(self, "bar", {**DEFAULT_BAR, **dict(self.bar or {})})
        object.__setattr__(self, "wandb_dir", _path(self.wandb_dir))
        formats = tuple(dict.fromkeys(str(f).lower().lstrip(".") for f in (self.formats or ())))
        unknown = [f for f in formats if f not in FIGURE_FORMATS]
        if unknown or "png" not in formats:
            raise InputError(
                f"report.formats {list(self.formats or ())}: " + (f"unknown format(s) {unknown}; " if unknown else "")
                + f"use png (always: the report shows it) and any of {', '.join(FIGURE_FORMATS[1:])}, e.g. [png, pdf]"
            )
        object.__setattr__(self, "formats", formats)

    def dataset(self) -> dict:
        """The data set's facts given (input, cell_type_key), without the missing ones."""
        facts = {"input": self.input, "cell_type_key": self.cell_type_key}
        return {k: v for k, v in facts.items() if v is not None}

    def run_facts(self) -> dict:
        """What the run was made with, for the wandb run's config."""
        return {"bar": dict(self.bar), "baseline": self.baseline, "umap": self.umap, "seed": self.seed,
                "formats": list(self.formats), **self.dataset()}

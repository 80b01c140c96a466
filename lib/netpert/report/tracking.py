"""Optional experiment tracking with Weights & Biases.

wandb is imported only inside :func:`log_to_wandb`, and only when the caller asked for
tracking and the package is installed; otherwise nothing about wandb is imported.
Offline mode (the default) needs no network and no account: the run is written under
``directory/wandb/offline-run-*`` and can be uploaded later with ``wandb sync``.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import os
from pathlib import Path
from typing import Mapping

import pandas as pd

log = logging.getLogger(__name__)


def wandb_available() -> bool:
    """Whether the wandb package is installed (without importing it)."""
    return importlib.util.find_spec("wandb") is not None


def _scalar(v):
    if isinstance(v, bool):
        return v
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def benchmark_rows(methods: pd.DataFrame, stages: pd.DataFrame) -> pd.DataFrame:
    """``methods.csv`` and ``stages.csv`` as one table for wandb: ``kind`` (isp_method / stage) and
    ``name`` (the method / the rule) first."""
    frames = [t.rename(columns={key: "name"}).assign(kind=kind) for t, key, kind in
              ((methods, "method", "isp_method"), (stages, "rule", "stage")) if not t.empty]
    if not frames:
        return pd.DataFrame(columns=["kind", "name"])
    table = pd.concat(frames, ignore_index=True, sort=False)
    return table[["kind", "name", *[c for c in table.columns if c not in ("kind", "name")]]]


def flat_metrics(benchmark: pd.DataFrame) -> dict[str, float]:
    """The numeric cells of :func:`benchmark_rows` as ``{kind}/{name}/{column}`` scalars."""
    out = {}
    for _, row in benchmark.iterrows():
        for col, v in row.items():
            if col in ("kind", "name"):
                continue
            x = _scalar(v)
            if x is not None:
                out[f"{row['kind']}/{row['name']}/{col}"] = x
    return out


def log_to_wandb(
    methods: pd.DataFrame,
    stages: pd.DataFrame,
    figures: Mapping[str, str | os.PathLike] | None = None,
    environment: Mapping | None = None,
    model: Mapping | None = None,
    config: Mapping | None = None,
    project: str = "netpert",
    mode: str = "offline",
    directory: str | os.PathLike | None = None,
    name: str | None = None,
) -> str | None:
    """Log the methods and stages tables (as one, :func:`benchmark_rows`), their numbers and the
    figures as one wandb run.

    Returns the run's local folder, or None (with a warning) when wandb is not installed.
    ``mode`` is "offline" (no network; ``wandb sync`` later) or "online".
    """
    if not wandb_available():
        log.warning("report.wandb is true but wandb is not installed (pip install 'netpert[wandb]'): nothing logged")
        return None
    import wandb

    directory = Path(directory) if directory is not None else Path.cwd()
    directory.mkdir(parents=True, exist_ok=True)
    run_config = {"netpert": dict(config or {}), "environment": dict(environment or {}), "model": dict(model or {})}
    settings = wandb.Settings(silent=True, console="off", disable_git=True, save_code=False)
    run = wandb.init(project=project, mode=mode, dir=str(directory), name=name, config=run_config,
                     job_type="benchmark", settings=settings)
    benchmark = benchmark_rows(methods, stages)
    try:
        run.summary.update(flat_metrics(benchmark))
        table = benchmark.astype(object).where(benchmark.notna(), None).astype(str)
        payload = {"benchmark": wandb.Table(dataframe=table)}
        for fname, path in (figures or {}).items():
            payload[f"figures/{Path(fname).stem}"] = wandb.Image(str(path), caption=Path(fname).stem)
        run.log(payload)
        run_dir = str(Path(run.dir).parent)
    finally:
        run.finish()
        # the wandb service writes the run's record asynchronously: wait for it to be on disk
        wandb.teardown()
    log.info("wandb run logged (%s mode) in %s", mode, run_dir)
    return run_dir

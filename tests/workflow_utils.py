"""Run the workflow on a tiny config in a temporary directory (workflow, report and slurm tests)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SNAKEFILE = ROOT / "Snakefile"

#: the tiny config (the catalog convention's .test/config/config.yaml): small enough for CI (2 cores),
#: 2 strata of 40 cells, few bootstraps, a 2-layer model
TINY_CONFIG_PATH = ROOT / ".test" / "config" / "config.yaml"
TINY_CONFIG = yaml.safe_load(TINY_CONFIG_PATH.read_text())


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def write_tiny_config(directory: str | os.PathLike, **overrides) -> Path:
    """Write the tiny config (.test/config/config.yaml deep-merged with ``overrides``) to ``directory/tiny.yaml``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "tiny.yaml"
    path.write_text(yaml.safe_dump(_merge(TINY_CONFIG, overrides), sort_keys=False))
    return path


def run_snakemake(workdir, config_path, extra_args=(), check: bool = True, cores: int = 2, timeout: int = 1800):
    """Run snakemake on the repository's workflow with ``--directory workdir``."""
    cmd = [
        sys.executable, "-m", "snakemake",
        "--snakefile", str(SNAKEFILE),
        "--directory", str(workdir),
        "--configfile", str(config_path),
        "--cores", str(cores),
        *extra_args,
    ]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"snakemake failed ({proc.returncode}): {' '.join(cmd)}\n--- stdout\n{proc.stdout[-8000:]}\n--- stderr\n{proc.stderr[-8000:]}"
        )
    return proc

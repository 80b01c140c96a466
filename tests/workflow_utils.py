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


#: run in a child process (Snakemake changes the working directory while it plans): Snakemake's own
#: DAG for the workflow in a run folder, as JSON: every job's rule, wildcards, benchmark file and
#: resources, and the report job's ``benchmark_files`` param (the jobs the workflow plans for it)
_DAG_PROBE = r"""
import json, sys
from pathlib import Path
from snakemake.api import SnakemakeApi
from snakemake.settings.types import ConfigSettings, ResourceSettings

snakefile, workdir, configfile = map(Path, sys.argv[1:4])
with SnakemakeApi() as api:
    wf = api.workflow(snakefile=snakefile, workdir=workdir, resource_settings=ResourceSettings(cores=2),
                      config_settings=ConfigSettings(configfiles=[configfile]))
    wf.dag()
    workflow = wf._workflow
    workflow._prepare_dag(forceall=False, ignore_incomplete=True, lock_warn_only=True)
    workflow._build_dag()
    jobs = []
    for job in workflow.dag.jobs:
        row = {"rule": job.rule.name, "wildcards": dict(job.wildcards_dict),
               "benchmark": str(job.benchmark) if job.benchmark else None,
               "resources": {k: v for k, v in job.resources.items() if isinstance(v, (int, float, str))}}
        if job.rule.name == "report":
            row["benchmark_files"] = list(job.params.benchmark_files)
        jobs.append(row)
print("DAG-JSON " + json.dumps(jobs))
"""


def workflow_dag(workdir, config_path) -> list[dict]:
    """The jobs of Snakemake's own DAG for ``workdir`` with ``config_path`` (the strata checkpoint
    must have run: ``--until stratify``), each a dict: rule, wildcards, benchmark, resources (and,
    for the report, its ``benchmark_files``)."""
    import json

    proc = subprocess.run([sys.executable, "-c", _DAG_PROBE, str(SNAKEFILE), str(workdir), str(config_path)],
                          capture_output=True, text=True, timeout=600)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("DAG-JSON ")]
    if proc.returncode != 0 or len(lines) != 1:
        raise AssertionError(f"planning the DAG failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return json.loads(lines[0][len("DAG-JSON "):])

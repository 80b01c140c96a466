import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
# The reference outputs of ARACNe-AP and R viper live in the repo (tests/data/fixtures, see the README
# in each folder); NETPERT_FIXTURES points elsewhere when needed.
FIXTURES = Path(os.environ.get("NETPERT_FIXTURES", ROOT / "tests" / "data" / "fixtures"))


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    if not FIXTURES.is_dir():
        pytest.fail(f"reference fixtures not found at {FIXTURES}: the clone is incomplete, or set NETPERT_FIXTURES")
    return FIXTURES


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """The tiny workflow, run once per test session to the end; returns its working directory."""
    from workflow_utils import run_snakemake, write_tiny_config

    workdir = tmp_path_factory.mktemp("tiny_run")
    config = write_tiny_config(workdir)
    proc = run_snakemake(workdir, config)
    (workdir / "snakemake.stdout").write_text(proc.stdout + proc.stderr)
    return workdir

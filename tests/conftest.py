import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# The reference fixtures live in ../shared/fixtures beside the clone (CI and developers alike);
# NETPERT_FIXTURES points elsewhere when needed.
FIXTURES = Path(os.environ.get("NETPERT_FIXTURES", ROOT.parent / "shared" / "fixtures"))


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    if not FIXTURES.is_dir():
        pytest.fail(f"reference fixtures not found at {FIXTURES}: clone beside shared/ or set NETPERT_FIXTURES")
    return FIXTURES


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT

"""netpert.jit: numba's on-disk cache follows every kernel source, not only the decorated function's file."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from netpert.jit import CACHE_PREFIX, cache_dir, kernel_sources_hash

LIB = Path(__file__).resolve().parents[1] / "lib"


def _package(root: Path, g_body: str) -> Path:
    pkg = root / "kpkg"
    pkg.mkdir(exist_ok=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "b.py").write_text(textwrap.dedent(f"""
        from netpert.jit import njit

        @njit(cache=True)
        def g(x):
            return {g_body}
    """))
    (pkg / "a.py").write_text(textwrap.dedent("""
        from netpert.jit import njit
        from kpkg.b import g

        @njit(cache=True)
        def f(x):
            return g(x) * 10
    """))
    return pkg


def _run(root: Path, env_extra=None) -> str:
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env.update(PYTHONPATH=os.pathsep.join([str(root), str(LIB)]), **(env_extra or {}))
    code = "from kpkg.a import f; print(f(1))"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout.strip()


def test_a_kernel_sees_the_new_code_of_a_kernel_it_calls_in_another_file(tmp_path):
    pkg = _package(tmp_path, "x + 1")
    assert _run(tmp_path) == "20"
    first = sorted((pkg / "__pycache__").glob(CACHE_PREFIX + "*"))
    assert len(first) == 1 and any(first[0].rglob("*.nbi")), "the kernels were cached in the hashed folder"
    assert _run(tmp_path) == "20"  # from the cache
    (pkg / "b.py").write_text((pkg / "b.py").read_text().replace("x + 1", "x + 2"))  # a.py unchanged
    assert _run(tmp_path) == "30"  # plain numba caching returned 20 here (f kept the old g)
    now = sorted((pkg / "__pycache__").glob(CACHE_PREFIX + "*"))
    assert len(now) == 1 and now != first, "a new folder for the new sources, the old one removed"


def test_cache_folder_under_numba_cache_dir_and_none_where_unwritable(tmp_path):
    pkg = _package(tmp_path, "x + 1")
    user = tmp_path / "user_cache"
    assert _run(tmp_path, {"NUMBA_CACHE_DIR": str(user)}) == "20"
    assert [p.name for p in user.iterdir()] == [f"kpkg-{CACHE_PREFIX}{kernel_sources_hash(str(pkg))}"]
    blocked = tmp_path / "file_not_dir"
    blocked.write_text("")
    assert cache_dir(str(pkg), "kpkg", str(blocked)) is None


def test_hash_covers_kernel_files_only(tmp_path):
    pkg = _package(tmp_path, "x + 1")
    before = kernel_sources_hash.__wrapped__(str(pkg))
    (pkg / "plain.py").write_text("X = 1\n")
    assert kernel_sources_hash.__wrapped__(str(pkg)) == before
    (pkg / "b.py").write_text((pkg / "b.py").read_text() + "\n# edited\n")
    assert kernel_sources_hash.__wrapped__(str(pkg)) != before

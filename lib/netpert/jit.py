"""numba's JIT for netpert's kernels, with an on-disk cache that follows every kernel source.

numba's own cache (``njit(cache=True)``) keys a compiled function by the time stamp of the one
file that defines it. A kernel calling a kernel of another file is compiled with the callee's
code inside, so after the callee's file changes (``git pull`` in an editable install, an edited
kernel) the caller's cache still holds the old callee, silently: measured with two files, ``f``
calling ``g`` of another file went on returning ``g``'s former result after ``g`` changed.

:func:`njit` is ``numba.njit`` that caches into a folder named by a hash of every source file of
the package that defines kernels (the ``.py`` files under the package's root that call
``njit``), so a change to any of them starts a fresh cache there: ``<root>/__pycache__/numba-<hash>``,
or ``$NUMBA_CACHE_DIR/<package>-numba-<hash>`` where the user set that variable. Caches of
earlier hashes in ``__pycache__`` are removed when a new one is made. Where the folder cannot
be written, numba's own locations are used (as with plain ``cache=True``).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import sys
from functools import lru_cache
from pathlib import Path

log = logging.getLogger(__name__)

#: the text that marks a source file as defining kernels (its hash is part of the cache's name)
KERNEL_MARK = "njit("
CACHE_PREFIX = "numba-"


@lru_cache(maxsize=None)
def kernel_sources_hash(root: str) -> str:
    """Hash (16 hex digits) of the names and contents of the ``.py`` files under ``root`` that define kernels."""
    digest = hashlib.sha256()
    for path in sorted(Path(root).rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        try:
            text = path.read_bytes()
        except OSError:
            continue
        if KERNEL_MARK.encode() in text:
            digest.update(str(path.relative_to(root)).encode() + b"\0" + text + b"\0")
    return digest.hexdigest()[:16]


def _package_root(module: str) -> Path | None:
    top = sys.modules.get(module.split(".")[0])
    path = getattr(top, "__file__", None)
    return Path(path).resolve().parent if path else None


@lru_cache(maxsize=None)
def cache_dir(root: str, package: str, user_dir: str | None = None) -> str | None:
    """The cache folder of the kernels under ``root`` (created), or None where it cannot be written."""
    name = CACHE_PREFIX + kernel_sources_hash(root)
    if user_dir:
        folder = Path(user_dir) / f"{package}-{name}"
    else:
        pycache = Path(root) / "__pycache__"
        folder = pycache / name
        if not folder.is_dir() and pycache.is_dir():
            for old in pycache.glob(CACHE_PREFIX + "*"):
                shutil.rmtree(old, ignore_errors=True)  # another process may be removing it too
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".probe-{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError as exc:
        log.debug("numba cache folder %s not writable (%s): numba's own locations are used", folder, exc)
        return None
    return str(folder)


@contextlib.contextmanager
def _numba_cache_dir(folder: str | None):
    """numba reads its cache folder when a function is decorated: point it at ``folder`` meanwhile."""
    from numba.core import config

    if folder is None:
        yield
        return
    before = config.CACHE_DIR
    config.CACHE_DIR = folder
    try:
        yield
    finally:
        config.CACHE_DIR = before


def njit(*args, **options):
    """``numba.njit`` (same arguments); with ``cache=True`` the cache lives in :func:`cache_dir`."""
    import numba

    if len(args) == 1 and callable(args[0]) and not options:
        return numba.njit(args[0])

    def decorate(fn):
        if not options.get("cache"):
            return numba.njit(*args, **options)(fn)
        root = _package_root(fn.__module__)
        folder = None
        if root is not None:
            folder = cache_dir(str(root), fn.__module__.split(".")[0], os.environ.get("NUMBA_CACHE_DIR") or None)
        with _numba_cache_dir(folder):
            return numba.njit(*args, **options)(fn)

    return decorate

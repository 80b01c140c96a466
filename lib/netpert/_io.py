"""Atomic writes (outputs appear complete or not at all) and reads that name the file they fail on."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np

from netpert.errors import InputError


def json_default(value):
    """``json.dumps(default=...)`` for numpy scalars and arrays and paths."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


@contextlib.contextmanager
def reading(path: str | os.PathLike, what: str, hint: str = "") -> Iterator[None]:
    """Turn a failure to read or parse ``path`` inside the block into an :class:`InputError` that
    names the file (``what`` says which kind, e.g. ``"regulon file"``; ``hint`` what to do).
    InputErrors raised inside pass through unchanged."""
    try:
        yield
    except InputError:
        raise
    except Exception as exc:  # parsers raise many types (ParserError, UnicodeDecodeError, BadZipFile, ...)
        raise InputError(
            f"{what} '{path}' could not be read ({type(exc).__name__}: {str(exc)[:300]})" + (f"; {hint}" if hint else "")
        ) from exc


def read_tsv(path: str | os.PathLike, what: str, hint: str = "", **kwargs):
    """``pandas.read_csv(path, sep="\\t", **kwargs)``; a file that fails to parse is an InputError naming it."""
    import pandas as pd

    with reading(path, what, hint):
        return pd.read_csv(path, sep="\t", **kwargs)


def read_text(path: str | os.PathLike, what: str, hint: str = "") -> str:
    """The text of ``path`` (UTF-8); a file that is not text is an InputError naming it."""
    with reading(path, what, hint):
        return Path(path).read_text(encoding="utf-8")


def read_json(path: str | os.PathLike, what: str, hint: str = ""):
    """The JSON value in ``path``; a file that is not JSON is an InputError naming it."""
    import json

    text = read_text(path, what, hint)
    with reading(path, what, hint):
        return json.loads(text)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success.

    On any exception the temporary file is removed and ``path`` is left untouched,
    so a failed step leaves no partial output behind. The temporary name keeps the
    suffix of ``path`` so writers that dispatch on the extension still work.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{''.join(path.suffixes)}", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    tmp.unlink()
    try:
        yield tmp
        if tmp.is_dir():
            if path.exists():
                shutil.rmtree(path)
            os.replace(tmp, path)
        else:
            os.replace(tmp, path)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        raise


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Like :func:`atomic_path` for a directory: yields a fresh empty temporary directory."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise

"""Where an ARACNe run spends its time: named stages, timed only when a caller asks.

``with timing.collect() as split: aracne(...)`` fills ``split`` (a dict) with the wall time of every
:func:`stage` entered meanwhile, keyed by its path of enclosing stages (``"calibration/MI"`` is the
MI computed inside the calibration stage) and summed over entries. Without a ``collect`` a stage
costs one global lookup. One collection at a time (not thread-safe).
"""

from __future__ import annotations

import time
from contextlib import contextmanager

_active: dict | None = None
_stack: list[str] = []


@contextmanager
def collect():
    """Collect stage times into the dict this yields (stage path -> seconds)."""
    global _active
    previous, _active = _active, {}
    try:
        yield _active
    finally:
        _active = previous


@contextmanager
def stage(name: str):
    """Time the block under ``name`` (within the stages entered around it) while a :func:`collect` is open."""
    split = _active
    if split is None:
        yield
        return
    _stack.append(name)
    key = "/".join(_stack)
    t0 = time.perf_counter()
    try:
        yield
    finally:
        split[key] = split.get(key, 0.0) + time.perf_counter() - t0
        _stack.pop()

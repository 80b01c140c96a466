"""The one seed scheme of netpert: every random stream is derived here from a user seed.

A stream is ``numpy.random.SeedSequence(seed, spawn_key=(PURPOSE, *keys))``: streams of
different purposes, indices or user seeds are statistically independent (seeds 1 and 2 share
no bootstrap), and a stream depends only on (seed, purpose, keys), never on how the work is
split over jobs. Integer seeds handed to functions that take an ``int`` (e.g.
:func:`netpert.aracne.network`) are the first 32-bit word of that stream's state.

This module imports numpy only, so rule files and light scripts can use it.
"""

from __future__ import annotations

import zlib

import numpy as np

#: purposes of the random streams (the first spawn-key word); never renumber
PURPOSES = {
    "bootstrap": 0,  # resampling + tie-breaking of bootstrap network i
    "null": 1,  # the threshold null (resampling of the null data, tie-breaking)
    "permutation": 2,  # the permuted null data of a stratum
    "metacells": 3,  # metacell construction of a stratum
    "strata": 4,  # subsampling of large strata
}


def _key(k) -> int:
    if isinstance(k, (int, np.integer)):
        if k < 0:
            raise ValueError(f"seed keys must be >= 0, got {k}")
        return int(k)
    return zlib.crc32(str(k).encode("utf-8"))  # a stratum name, stable across runs and machines


def seed_sequence(seed: int, purpose: str, *keys) -> np.random.SeedSequence:
    """The SeedSequence of ``purpose`` (a key of :data:`PURPOSES`) and ``keys`` under user ``seed``."""
    if purpose not in PURPOSES:
        raise ValueError(f"unknown seed purpose {purpose!r}; one of {sorted(PURPOSES)}")
    return np.random.SeedSequence(int(seed) % 2**63, spawn_key=(PURPOSES[purpose], *(_key(k) for k in keys)))


def rng(seed: int, purpose: str, *keys) -> np.random.Generator:
    """A Generator for ``purpose`` and ``keys`` under user ``seed``."""
    return np.random.default_rng(seed_sequence(seed, purpose, *keys))


def derive(seed: int, purpose: str, *keys) -> int:
    """An int seed (32 bits) for ``purpose`` and ``keys`` under user ``seed``."""
    return int(seed_sequence(seed, purpose, *keys).generate_state(1, dtype=np.uint32)[0])


def bootstrap_seeds(seed: int, n: int, start: int = 0) -> list[int]:
    """Int seeds of bootstraps ``start .. start+n-1`` of a run with user ``seed``.

    Bootstrap ``i`` gets ``derive(seed, "bootstrap", i)`` whatever ``start`` and ``n`` are, so a
    chunked workflow and one ``aracne()`` call draw the same networks.
    """
    if n < 0 or start < 0:
        raise ValueError(f"need n >= 0 and start >= 0, got n={n}, start={start}")
    return [derive(seed, "bootstrap", i) for i in range(start, start + n)]

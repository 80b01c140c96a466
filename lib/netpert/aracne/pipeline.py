"""The whole ARACNe run in one call, and the step helpers the workflow scripts use."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from netpert.aracne.consensus import ConsensusAccumulator
from netpert.aracne.bootstrap import network
from netpert.aracne.prepare import SUBSAMPLE_FRACTION, Expression, effective_samples, ensure_expression
from netpert.aracne.threshold import compute_threshold
from netpert.errors import InputError

log = logging.getLogger(__name__)


def bootstrap_seeds(seed: int, n: int, start: int = 0) -> list[int]:
    """Seeds of bootstraps ``start .. start+n-1`` of a run with ``seed`` (distinct, reproducible)."""
    states = np.random.SeedSequence(int(seed)).generate_state(start + n, dtype=np.uint32)
    return [int(s) for s in states[start:]]


def threshold_for_data(
    data,
    pvalue: float = 1e-8,
    seed: int = 1,
    method: str = "fit",
    cache_dir: str | Path | None = None,
    resampling: str | None = "bootstrap",
    subsample_fraction: float = SUBSAMPLE_FRACTION,
    backend: str = "numba",
) -> tuple[float, dict]:
    """MI threshold for the networks of ``data``: the null depends only on their sample count.

    That count is the number of samples (cells) of ``data``, or the subsample size with
    ``resampling="subsample"``. Returns ``(threshold, info)`` as
    :func:`netpert.aracne.threshold.compute_threshold`; ``info`` also records the resampling.
    """
    if isinstance(data, Expression):
        n = data.n_samples
    else:
        n = data.shape[0]
    if n < 10:
        raise InputError(f"ARACNe needs at least 10 samples/cells, the data have {n}")
    n_eff = effective_samples(n, resampling, subsample_fraction)
    thr, info = compute_threshold(n_eff, pvalue=pvalue, seed=seed, method=method, cache_dir=cache_dir, backend=backend)
    info["resampling"] = resampling
    info["n_cells"] = int(n)
    return thr, info


def aracne(
    data,
    regulators: Sequence[str],
    bootstraps: int = 100,
    pvalue: float = 1e-8,
    dpi: bool = True,
    seed: int = 1,
    consensus_pvalue: float = 0.05,
    backend: str = "numba",
    resampling: str = "bootstrap",
    dpi_tolerance: float = 0.0,
    bonferroni: bool = True,
    threshold: float | None = None,
    threshold_method: str = "fit",
    cache_dir: str | Path | None = None,
    subsample_fraction: float = SUBSAMPLE_FRACTION,
    progress: bool = True,
) -> pd.DataFrame:
    """ARACNe consensus network of ``data`` (AnnData cells x genes or DataFrame samples x genes).

    Steps: MI threshold for ``pvalue`` (unless ``threshold`` is given), ``bootstraps`` networks
    (resampling, APMI, threshold, DPI) with seeds from :func:`bootstrap_seeds`, Poisson consensus
    at ``consensus_pvalue``. ``bootstraps=0`` returns the single network of all samples (ARACNe-AP
    ``--nobootstrap``) with ``pvalue`` NaN and ``count`` 1.

    Returns
    -------
    DataFrame ``regulator, target, mi, pvalue, count``.
    """
    if bootstraps < 0:
        raise InputError(f"bootstraps must be >= 0, got {bootstraps}")
    if backend not in ("numba", "python"):
        raise InputError(f"unknown ARACNe backend {backend!r}; use 'numba' or 'python'")
    expr = ensure_expression(data, regulators)
    mode = None if bootstraps == 0 else resampling
    if threshold is None:
        threshold, info = threshold_for_data(expr, pvalue, seed, threshold_method, cache_dir, mode, subsample_fraction, backend)
    if bootstraps == 0:
        net = network(expr, None, threshold, seed, None, dpi, dpi_tolerance, backend, subsample_fraction, progress=progress)
        out = net.assign(regulator=net["regulator"].astype(str), target=net["target"].astype(str), pvalue=np.nan, count=1)
        return out.sort_values(["regulator", "mi"], ascending=[True, False], kind="mergesort").reset_index(drop=True)
    acc = ConsensusAccumulator()
    for s in tqdm(bootstrap_seeds(seed, bootstraps), desc="bootstraps", unit="net", disable=not progress):
        acc.add(network(expr, None, threshold, s, resampling, dpi, dpi_tolerance, backend, subsample_fraction, progress=False))
    return acc.result(pvalue=consensus_pvalue, bonferroni=bonferroni)

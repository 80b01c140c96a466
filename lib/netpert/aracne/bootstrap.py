"""Mutual information over regulators x genes, thresholded networks and one bootstrap network.

Memory stays bounded at any scale: regulators are processed in chunks, each chunk's
(regulators x genes) MI block is thresholded at once and only the edges above the threshold are
kept (the DPI needs nothing else: the MI of regulator-regulator and regulator-target pairs above
the threshold). Progress is shown with tqdm (stderr, i.e. the rule's log in the workflow).
"""

from __future__ import annotations

import logging
from typing import Iterator, Sequence

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from netpert.aracne import timing
from netpert.aracne.dpi import dpi_keep
from netpert.aracne.estimators import check_estimator, copula_block, transform
from netpert.aracne.mi import _mi_block, rank_bitsets
from netpert.aracne.prepare import (
    SUBSAMPLE_FRACTION,
    Expression,
    ensure_expression,
    resample_indices,
)
from netpert.aracne.threshold import NullModel, bh_select
from netpert.errors import InputError

log = logging.getLogger(__name__)

#: MI block memory per chunk (bytes): caps the regulators per chunk
_CHUNK_BYTES = 64 * 2**20
#: pairs per chunk: large enough to keep both cores busy between progress updates
_CHUNK_PAIRS = 2_000_000


def _check_backend(backend: str) -> None:
    if backend not in ("numba", "python"):
        raise InputError(f"unknown ARACNe backend {backend!r}; use 'numba' or 'python'")


def _chunk_size(n_regs: int, n_genes: int, chunk_size: int | None) -> int:
    if chunk_size is not None:
        return max(1, int(chunk_size))
    by_memory = max(1, _CHUNK_BYTES // (8 * max(n_genes, 1)))
    by_pairs = max(1, _CHUNK_PAIRS // max(n_genes, 1))
    return int(min(by_memory, by_pairs, max(n_regs, 1)))


def iter_mi_chunks(
    expr: Expression,
    ranks: np.ndarray,
    threshold: float | None = None,
    backend: str = "numba",
    chunk_size: int | None = None,
    progress: bool = True,
    desc: str = "MI",
    estimator: str = "apmi",
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Yield ``(regulator_rows, target_rows, mi)`` arrays chunk by chunk (regulator != target).

    ``ranks`` is what :func:`netpert.aracne.estimators.transform` gives for ``estimator``.
    With ``threshold``, only pairs with ``mi >= threshold`` (ARACNe-AP's test) are yielded.
    """
    _check_backend(backend)
    check_estimator(estimator)
    regs = expr.reg_rows
    size = _chunk_size(len(regs), expr.n_genes, chunk_size)
    with timing.stage("MI"):
        bits = rank_bitsets(ranks) if backend == "numba" and estimator == "apmi" else None
    with tqdm(total=len(regs), desc=desc, unit="reg", disable=not progress, leave=False) as bar:
        for c0 in range(0, len(regs), size):
            rows = regs[c0 : c0 + size]
            with timing.stage("MI"):
                block = _mi_block(ranks, rows, backend, bits) if estimator == "apmi" else copula_block(ranks, rows)
                if threshold is None:
                    mask = ~np.isnan(block)
                else:
                    mask = block >= threshold  # NaN on the diagonal compares False
                ri, gi = np.nonzero(mask)
                found = rows[ri], gi.astype(np.int64), block[ri, gi]
            yield found
            bar.update(len(rows))


def iter_mi_values(expr: Expression, ranks: np.ndarray, backend: str = "numba", estimator: str = "apmi") -> Iterator[np.ndarray]:
    """The MI of every regulator x gene pair (regulator != target), chunk by chunk, float64, in the
    order :func:`iter_mi_chunks` yields them without a threshold (the calibrated null's values)."""
    _check_backend(backend)
    check_estimator(estimator)
    regs = expr.reg_rows
    size = _chunk_size(len(regs), expr.n_genes, None)
    with timing.stage("MI"):
        bits = rank_bitsets(ranks) if backend == "numba" and estimator == "apmi" else None
    for c0 in range(0, len(regs), size):
        rows = regs[c0 : c0 + size]
        with timing.stage("MI"):
            block = _mi_block(ranks, rows, backend, bits) if estimator == "apmi" else copula_block(ranks, rows)
            values = block[~np.isnan(block)]  # row-major, as np.nonzero orders the pairs
        yield values.astype(np.float64, copy=False)


def _order(expr: Expression, backend: str) -> np.ndarray | None:
    """The genes' sorted samples the numba rankings read every resample from (computed once per data)."""
    if backend != "numba":
        return None
    with timing.stage("sort"):
        return expr.sorted_order()


def _edges_frame(expr: Expression, src, dst, mi) -> pd.DataFrame:
    """Long table ``regulator, target, mi`` (categoricals) from gene-row indices."""
    reg_code = np.full(expr.n_genes, -1, dtype=np.int64)
    reg_code[expr.reg_rows] = np.arange(len(expr.reg_rows))
    return pd.DataFrame(
        {
            "regulator": pd.Categorical.from_codes(reg_code[np.asarray(src, dtype=np.int64)], categories=expr.regulators),
            "target": pd.Categorical.from_codes(np.asarray(dst, dtype=np.int64), categories=expr.genes),
            "mi": np.asarray(mi, dtype=np.float64),
        }
    )


def mutual_information(
    data,
    regulators: Sequence[str] | None = None,
    backend: str = "numba",
    seed: int = 0,
    threshold: float | None = None,
    chunk_size: int | None = None,
    progress: bool = True,
    estimator: str = "apmi",
) -> pd.DataFrame:
    """MI (``estimator``: APMI or copula, :mod:`netpert.aracne.estimators`) of every regulator x gene
    pair (regulator != target), long format.

    Parameters
    ----------
    data
        AnnData (cells x genes) or DataFrame (samples x genes), or a prepared
        :class:`~netpert.aracne.prepare.Expression`.
    regulators
        regulator gene names (those absent from the data are ignored; none present is an error).
    backend
        ``"numba"`` (parallel kernel) or ``"python"`` (plain reference, slow).
    seed
        seed of the random tie-breaking of equal values (irrelevant without ties).
    threshold
        keep only pairs with ``mi >= threshold``. Without it the table has one row per
        regulator x gene pair (36M rows for 1,800 x 20,000): at that scale pass a threshold or
        stream the chunks with :func:`iter_mi_chunks`.
    chunk_size
        regulators per chunk (default: ~2M pairs and at most 64 MB per MI block).

    Returns
    -------
    DataFrame with columns ``regulator``, ``target`` (categoricals) and ``mi`` (nats).
    """
    _check_backend(backend)
    check_estimator(estimator)
    expr = ensure_expression(data, regulators)
    idx = np.arange(expr.n_samples)
    ranks = transform(estimator, expr.values, idx, np.random.default_rng(seed), backend, order=_order(expr, backend))
    parts = list(iter_mi_chunks(expr, ranks, threshold, backend, chunk_size, progress, estimator=estimator))
    src = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, np.int64)
    dst = np.concatenate([p[1] for p in parts]) if parts else np.zeros(0, np.int64)
    mi = np.concatenate([p[2] for p in parts]) if parts else np.zeros(0)
    return _edges_frame(expr, src, dst, mi)


def network(
    data,
    regulators: Sequence[str] | None,
    threshold: float | None,
    seed: int = 1,
    resampling: str | None = "bootstrap",
    dpi: bool = True,
    dpi_tolerance: float = 0.0,
    backend: str = "numba",
    subsample_fraction: float = SUBSAMPLE_FRACTION,
    chunk_size: int | None = None,
    progress: bool = True,
    fdr: float | None = None,
    null: NullModel | None = None,
    estimator: str = "apmi",
) -> pd.DataFrame:
    """One ARACNe network: resample, rank, MI (``estimator``), threshold, DPI.

    Parameters
    ----------
    data, regulators
        as in :func:`mutual_information` (``regulators`` may be None when ``data`` is an
        :class:`~netpert.aracne.prepare.Expression`).
    threshold
        MI threshold (from :func:`netpert.aracne.threshold.compute_threshold` for the number of
        samples the network is computed from; with ``resampling="subsample"`` that is
        ``subsample_size(n)``).
    seed
        seed of the resampling and of the tie-breaking; the network is a deterministic function
        of (data, regulators, threshold, seed, options).
    resampling
        ``"bootstrap"`` (n samples with replacement, as ARACNe-AP; duplicated samples become ties
        that are broken at random), ``"subsample"`` (``subsample_fraction`` of the samples without
        replacement, as ARACNe3) or ``None`` (all samples once, ARACNe-AP ``--nobootstrap``).
    estimator
        ``"apmi"`` (ARACNe-AP) or ``"copula"`` (:mod:`netpert.aracne.estimators`); a calibrated
        null must have been drawn with the same estimator (``Calibration.cut()`` passes it).
    dpi, dpi_tolerance
        apply the DPI (:mod:`netpert.aracne.dpi`) with this tolerance.
    fdr, null
        with ``fdr``, the edges are the pairs that Benjamini-Hochberg keeps at that false
        discovery rate among all regulator x gene tests of this network, with p-values from
        ``null`` (:func:`netpert.aracne.calibration.calibrated_null`); ``threshold`` is then ignored.

    Returns
    -------
    DataFrame ``regulator, target, mi`` of the edges kept.
    """
    _check_backend(backend)
    check_estimator(estimator)
    expr = ensure_expression(data, regulators)
    if fdr is not None:
        if null is None:
            raise InputError("an FDR threshold needs the null distribution (null=...); see netpert.aracne.calibrated_null")
        threshold = null.threshold(fdr)  # no pair with a null p-value above fdr can pass BH
    elif threshold is None:
        raise InputError("give an MI threshold, or fdr= with its null distribution")
    rng = np.random.default_rng(seed)
    with timing.stage("ranking"):
        idx = resample_indices(expr.n_samples, rng, resampling, subsample_fraction)
        ranks = transform(estimator, expr.values, idx, rng, backend, order=_order(expr, backend))
    parts = list(iter_mi_chunks(expr, ranks, threshold, backend, chunk_size, progress, desc=f"MI seed {seed}", estimator=estimator))
    src = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, np.int64)
    dst = np.concatenate([p[1] for p in parts]) if parts else np.zeros(0, np.int64)
    mi = np.concatenate([p[2] for p in parts]) if parts else np.zeros(0)
    if fdr is not None and len(src):
        with timing.stage("FDR"):
            m = len(expr.reg_rows) * (expr.n_genes - 1)
            keep = bh_select(null.pvalues(mi), m, fdr)
            src, dst, mi = src[keep], dst[keep], mi[keep]
    n_thr = len(src)
    if dpi and n_thr:
        with timing.stage("DPI"):
            keep = dpi_keep(src, dst, mi, expr.n_genes, expr.reg_rows, tolerance=dpi_tolerance, backend=backend)
            src, dst, mi = src[keep], dst[keep], mi[keep]
    log.info(
        "network seed=%s (%s, %d samples): %d edges %s, %d after DPI",
        seed, resampling, len(idx), n_thr, f"at FDR {fdr}" if fdr is not None else f">= {threshold:.6g}", len(src),
    )
    return _edges_frame(expr, src, dst, mi)


def bootstrap_networks(
    data,
    regulators: Sequence[str] | None,
    threshold: float,
    seeds: Sequence[int],
    resampling: str = "bootstrap",
    dpi: bool = True,
    dpi_tolerance: float = 0.0,
    backend: str = "numba",
    subsample_fraction: float = SUBSAMPLE_FRACTION,
    progress: bool = True,
    fdr: float | None = None,
    null: NullModel | None = None,
    estimator: str = "apmi",
) -> pd.DataFrame:
    """Several bootstrap networks in long format: ``bootstrap`` (the seed), ``regulator, target, mi``.

    ``threshold`` or ``fdr`` + ``null`` and ``estimator`` as in :func:`network`.
    """
    _check_backend(backend)
    check_estimator(estimator)
    expr = ensure_expression(data, regulators)
    frames = []
    # per-network progress too when one network takes several chunks (large data)
    inner = progress and len(expr.reg_rows) * expr.n_genes > _CHUNK_PAIRS
    for s in tqdm(list(seeds), desc="bootstraps", unit="net", disable=not progress):
        net = network(expr, None, threshold, int(s), resampling, dpi, dpi_tolerance, backend, subsample_fraction,
                      progress=inner, fdr=fdr, null=null, estimator=estimator)
        net.insert(0, "bootstrap", int(s))
        frames.append(net)
    if not frames:
        return pd.DataFrame({"bootstrap": pd.Series([], dtype=np.int64), "regulator": [], "target": [], "mi": []})
    return pd.concat(frames, ignore_index=True)

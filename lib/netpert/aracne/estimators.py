"""MI estimators of the networks (``aracne.estimator``): the registry and how each scores a block.

* ``apmi``: ARACNe-AP's adaptive-partitioning MI on ranks with ties broken at random (the
  reference; bit-exact against ARACNe-AP, see :mod:`netpert.aracne.mi`).
* ``copula``: the Gaussian-copula MI of two genes given the sample's depth, ``-0.5 ln(1 - r^2)``
  with ``r`` the partial correlation of the genes' normal scores (the standard normal quantiles
  of their mid-ranks) given, on counts, the normal scores of each sample's detected (nonzero)
  genes and of its total, and their squares (:func:`depth_basis`). Ties keep their mid-rank
  instead of a random order: on sparse UMI counts most values of a gene are tied zeros, and
  breaking them at random (APMI) turns them into noise that hides the dependence. Conditioning
  on depth removes what every gene shares with it: a deeper cell has fewer zeros in every gene,
  which makes unrelated genes rank-correlated (on SERGIO counts their mean Spearman rho was
  0.10-0.14; scaling the counts to equal totals leaves it at 0.07, the zeros staying zeros). On
  values that are not counts (normalised, continuous) nothing is removed and ``r`` is the plain
  normal-score correlation. The DPI and the consensus compare MI values only, so they work
  unchanged. Measured in benchmarks/benchmark_networks.py (README).

``auto`` (the default) is ``copula`` with the ``calibrated`` threshold, whose null is drawn with
the estimator itself, and ``apmi`` with ``fit`` and ``aracne-ap``, whose nulls are those of APMI
on distinct ranks.
"""

from __future__ import annotations

import numba
import numpy as np
from scipy.special import ndtri
from scipy.stats import rankdata

from netpert.aracne.prepare import _PARALLEL_MIN_WORK, _invert_row, check_perm, rank_matrix, resample_csr, sort_rows
from netpert.errors import InputError
from netpert.jit import njit

#: copula: a gene with fewer nonzero values than this among a network's samples is left out of that
#: network (scored 0, as a constant gene). Genes seen in a handful of cells tie at zero everywhere
#: else, and their chance overlaps give the null a long tail that raises every pair's threshold
COPULA_MIN_NONZERO = 5

#: the estimators; ``auto`` resolves to one of them (:func:`resolve_estimator`)
ESTIMATORS = ("apmi", "copula")
ESTIMATOR_CHOICES = ("auto",) + ESTIMATORS


def check_estimator(estimator: str) -> None:
    """InputError unless ``estimator`` is one of :data:`ESTIMATORS` (``auto`` resolved already)."""
    if estimator not in ESTIMATORS:
        raise InputError(f"unknown MI estimator {estimator!r}; use one of {', '.join(ESTIMATORS)}")


def resolve_estimator(estimator: str, threshold_method: str = "calibrated") -> tuple[str, str]:
    """``(estimator, reason)``: ``auto`` decided for ``threshold_method``; a named estimator checked.

    ``threshold_method="given"`` (a fixed MI threshold the caller gives): ``auto`` is ``apmi``, the
    units of ARACNe-AP's thresholds; a named estimator is taken as named."""
    name = str(estimator).strip().lower()
    if name not in ESTIMATOR_CHOICES:
        raise InputError(f"unknown MI estimator {estimator!r} (config key aracne.estimator); use one of {', '.join(ESTIMATOR_CHOICES)}")
    if name == "auto":
        if threshold_method == "given":
            return "apmi", "aracne.estimator auto with a given MI threshold (ARACNe-AP's units)"
        if threshold_method == "calibrated":
            return "copula", "aracne.estimator auto with the calibrated threshold"
        return "apmi", f"aracne.estimator auto with threshold_method {threshold_method} (a null of APMI)"
    if name != "apmi" and threshold_method not in ("calibrated", "given"):
        raise InputError(
            f"threshold_method {threshold_method!r} is the null of APMI on distinct ranks and does not hold for the "
            f"{name} estimator: use threshold_method calibrated (its null is drawn with the estimator), or aracne.estimator apmi"
        )
    return name, f"aracne.estimator {name}"


def _normal_scores(x: np.ndarray, axis: int) -> np.ndarray:
    n = x.shape[axis]
    return ndtri(rankdata(x, axis=axis) / (n + 1.0))


def depth_basis(sub: np.ndarray) -> np.ndarray:
    """Orthonormal basis (samples x k, centred) of the depth covariates of ``sub`` (genes x samples):
    the normal scores of each sample's detected genes and of its total, and their squares (a
    linear term alone leaves the bend of low counts' dependence on depth: on Poisson counts
    around a shared size factor it kept 10-900 edges per stratum, the square 0-10). Counts only:
    on normalised (non-integer) values, such as the embedded data set, or without variation in
    the detected genes (continuous data without zeros) k = 0; a constant total drops out."""
    cols = []
    detected = np.count_nonzero(sub, axis=0)
    if np.ptp(detected) == 0 or not np.array_equal(sub, np.round(sub)):
        # no zeros (or as many in every sample), or normalised values (not integers: the user's
        # normalisation has dealt with depth): no depth to remove
        return np.zeros((sub.shape[1], 0))
    for c in (detected, sub.sum(axis=0)):
        if np.ptp(c) > 0:
            t = _normal_scores(np.asarray(c, dtype=np.float64), axis=0)
            cols += [t, t * t]
    if not cols:
        return np.zeros((sub.shape[1], 0))
    a = np.column_stack(cols)
    a -= a.mean(axis=0)
    u, sv, _ = np.linalg.svd(a, full_matrices=False)
    return u[:, sv > 1e-8 * sv[0]]


@njit(cache=True, nogil=True)
def _scores_row(values, order, perm, has_perm, start, items, lut, z, sub, g):
    # normal scores of gene g's resample from its sorted samples: a run of equal values (ties, or a
    # sample drawn several times) holding c of the resample's values after r smaller ones has the
    # average rank r + (c + 1) / 2, i.e. lut[2r + c + 1] = ndtri(rank / (m + 1)) as rankdata + ndtri
    n_src = values.shape[1]
    row = values[g]
    pinv = np.empty(n_src if has_perm else 0, np.int64)
    if has_perm:
        _invert_row(perm, g, pinv)
    r = 0
    i = 0
    while i < n_src:
        v = row[order[g, i]]
        i1 = i
        while i1 + 1 < n_src and row[order[g, i1 + 1]] == v:
            i1 += 1
        c = 0
        for t in range(i, i1 + 1):
            s = order[g, t]
            j = pinv[s] if has_perm else s
            c += start[j + 1] - start[j]
        if c:
            score = lut[2 * r + c + 1]
            for t in range(i, i1 + 1):
                s = order[g, t]
                j = pinv[s] if has_perm else s
                for q in range(start[j], start[j + 1]):
                    z[g, items[q]] = score
                    sub[g, items[q]] = row[s]
        r += c
        i = i1 + 1


@njit(cache=True, parallel=True)
def _scores_par(values, order, perm, has_perm, start, items, lut, z, sub):
    for g in numba.prange(values.shape[0]):
        _scores_row(values, order, perm, has_perm, start, items, lut, z, sub, g)


@njit(cache=True)
def _scores_ser(values, order, perm, has_perm, start, items, lut, z, sub):
    for g in range(values.shape[0]):
        _scores_row(values, order, perm, has_perm, start, items, lut, z, sub, g)


def normal_scores(values: np.ndarray, idx, backend: str = "numba", perm=None, order=None) -> tuple[np.ndarray, np.ndarray]:
    """``(scores, sub)``: ``sub`` the resample ``idx`` of ``values`` (genes x samples; each gene
    permuted by ``perm`` first, when given) and ``scores`` its rows' normal scores,
    ``ndtri(average rank / (m + 1))`` for ``m`` samples. ``numba`` reads them off the rows' sorted
    order (``order``, :func:`netpert.aracne.prepare.sort_rows`; computed when not given) and
    equals the ``python`` reference (scipy's rankdata and ndtri) bit for bit."""
    idx = np.asarray(idx, dtype=np.int64)
    if perm is not None:
        perm = check_perm(perm, values)
    if backend == "python":
        rows = np.asarray(values) if perm is None else np.take_along_axis(np.asarray(values), perm, axis=1)
        sub = rows[:, idx]
        return _normal_scores(sub, axis=1), sub
    if backend != "numba":
        raise ValueError(f"unknown backend {backend!r}; use 'numba' or 'python'")
    values = np.ascontiguousarray(values)
    m = len(idx)
    order = sort_rows(values) if order is None else order
    start, items = resample_csr(idx, values.shape[1])
    lut = ndtri((np.arange(2 * m + 2) * 0.5) / (m + 1.0))
    z = np.empty((values.shape[0], m), np.float64)
    sub = np.empty((values.shape[0], m), values.dtype)
    has_perm = perm is not None
    run = _scores_par if z.size >= _PARALLEL_MIN_WORK else _scores_ser
    run(values, order, perm if has_perm else np.zeros((1, 1), np.int32), has_perm, start, items, lut, z, sub)
    return z, sub


def transform(
    estimator: str,
    values: np.ndarray,
    idx: np.ndarray,
    rng: np.random.Generator,
    backend: str = "numba",
    perm: np.ndarray | None = None,
    order: np.ndarray | None = None,
) -> np.ndarray:
    """What the estimator's blocks are computed from, for samples ``idx`` of ``values`` (genes x samples).

    ``apmi``: ARACNe-AP ranks with random tie-breaking (int32). ``copula``: each gene's normal
    scores, centred, with the part explained by the samples' depth (:func:`depth_basis`, over
    these genes and samples) removed, scaled to unit norm (float64); a gene that is constant, or
    nonzero in fewer than :data:`COPULA_MIN_NONZERO` samples, is all zeros. The dot product of
    two rows is then their partial correlation given the depth.

    ``perm`` (genes x samples): transform the data with each gene permuted, ``values[g, perm[g]]``
    (the calibrated null); ``order``: the rows' :func:`netpert.aracne.prepare.sort_rows` (the
    numba kernels read every resample off it; computed when not given).
    """
    if estimator == "apmi":
        return rank_matrix(values, idx, rng, backend=backend, perm=perm, order=order)
    if estimator != "copula":
        raise ValueError(f"unknown estimator {estimator!r}")
    z, sub = normal_scores(values, idx, backend, perm, order)
    z -= z.mean(axis=1, keepdims=True)
    q = depth_basis(sub)
    if q.shape[1]:
        z -= (z @ q) @ q.T
    norm = np.sqrt(np.einsum("ij,ij->i", z, z))
    z /= np.where(norm > 1e-12, norm, 1.0)[:, None]
    z[(norm <= 1e-12) | (np.count_nonzero(sub, axis=1) < COPULA_MIN_NONZERO)] = 0.0
    return z


def gaussian_mi(r: np.ndarray) -> np.ndarray:
    """MI (nats) of a bivariate Gaussian with correlation ``r``: ``-0.5 ln(1 - r^2)``."""
    r = np.clip(r, -1.0, 1.0)
    return -0.5 * np.log1p(-np.minimum(r * r, 1.0 - 1e-15))


def copula_block(z: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Copula MI of the genes ``rows`` against every gene of ``z`` (from :func:`transform`); NaN on the diagonal."""
    rows = np.asarray(rows, dtype=np.int64)
    out = gaussian_mi(z[rows] @ z.T)
    out[np.arange(len(rows)), rows] = np.nan
    return out

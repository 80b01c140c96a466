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

import numpy as np
from scipy.special import ndtri
from scipy.stats import rankdata

from netpert.aracne.prepare import rank_matrix
from netpert.errors import InputError

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


def transform(estimator: str, values: np.ndarray, idx: np.ndarray, rng: np.random.Generator, backend: str = "numba") -> np.ndarray:
    """What the estimator's blocks are computed from, for samples ``idx`` of ``values`` (genes x samples).

    ``apmi``: ARACNe-AP ranks with random tie-breaking (int32). ``copula``: each gene's normal
    scores, centred, with the part explained by the samples' depth (:func:`depth_basis`, over
    these genes and samples) removed, scaled to unit norm (float64); a gene that is constant, or
    nonzero in fewer than :data:`COPULA_MIN_NONZERO` samples, is all zeros. The dot product of
    two rows is then their partial correlation given the depth.
    """
    if estimator == "apmi":
        return rank_matrix(values, idx, rng, backend=backend)
    if estimator != "copula":
        raise ValueError(f"unknown estimator {estimator!r}")
    sub = np.asarray(values)[:, np.asarray(idx, dtype=np.int64)]
    z = _normal_scores(sub, axis=1)
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

"""Calibrated MI thresholds: a null built from the data itself, resampled as the networks are.

Why. The rank-permutation null of :func:`netpert.aracne.threshold.null_distribution` (ARACNe-AP's
design) assumes that every network is computed from ``n`` distinct samples. A bootstrap network is
not: about a third of its samples are duplicates, and a duplicated cell puts two (or more) points
at the same place in every regulator x gene plane, which raises the APMI of independent genes
above that null. On pure Gaussian noise one bootstrap network passed 3 % of the pairs at a
nominal p = 1e-8. Aggregating cells into metacells (shared cells, a kNN graph built from the
same genes) adds more dependence of the same kind.

What. ``calibrated_null`` draws the null MI from **null data of the same shape as the data**:
either the data with every gene permuted independently across samples (``null_data=None``:
valid for samples that are cells; each replicate draws a fresh permutation) or a null data set
given by the caller (``null_data``: the workflow's ``{stratum}.null.h5ad``, i.e. the stratum's
cells permuted gene by gene and then aggregated into metacells exactly as the stratum was; only
resampled here, since permuting it again would undo what the aggregation did). Each replicate
then goes through the networks' own steps: the same resampling (bootstrap with replacement,
subsample, or none) with the data's sample count, the same rank transform with random
tie-breaking, the same APMI of every regulator x gene pair. Replicates are added until the null
holds at least ``target_pairs`` values (genes are subsampled per replicate for very large data).

The null's upper tail is summarised as a :class:`netpert.aracne.threshold.NullModel` (top values,
quantile grid, exponential tail fit for p-values below its resolution). From it
:func:`netpert.aracne.bootstrap.network` either cuts at a fixed threshold (``pvalue``) or controls
the false discovery rate per network (``fdr``: Benjamini-Hochberg over all regulator x gene tests,
as ARACNe3 does).
"""

from __future__ import annotations

import copy
import logging
import math
from typing import Sequence

import numpy as np

from netpert import seeds
from netpert.aracne import timing
from netpert.aracne.bootstrap import iter_mi_values
from netpert.aracne.estimators import check_estimator, transform
from netpert.aracne.prepare import (
    SUBSAMPLE_FRACTION,
    Expression,
    ensure_expression,
    resample_indices,
    subsample_size,
)
from netpert.aracne.threshold import NULL_TOP_FRACTION, NullModel, summarize_null
from netpert.errors import InputError

log = logging.getLogger(__name__)

#: bump when the calibrated null's definition changes
CALIBRATION_VERSION = 1
#: null values drawn at least (replicates are added until reached)
CALIBRATION_PAIRS = 1_000_000
#: most replicates (small data sets: one replicate holds few pairs)
MAX_REPLICATES = 1000


def _indices(n: int, n_src: int, resampling: str | None, rng: np.random.Generator, fraction: float) -> np.ndarray:
    """Sample indices of one null replicate: ``n`` samples drawn from the ``n_src`` null samples as a
    network of ``n`` samples draws its own."""
    if n_src == n:
        return resample_indices(n, rng, resampling, fraction)
    if resampling == "bootstrap":
        return rng.integers(0, n_src, size=n)
    size = subsample_size(n, fraction) if resampling == "subsample" else n
    if size > n_src:
        raise InputError(
            f"the null data hold {n_src} samples, fewer than the {size} a network of these data is computed from; "
            "give null data with at least as many samples (cells / metacells) as the data"
        )
    return np.sort(rng.choice(n_src, size=size, replace=False))


def _subset(src: Expression, n_genes: int, rng: np.random.Generator) -> Expression:
    """``src`` restricted to its regulators and a random subset of the other genes (``n_genes`` rows)."""
    if n_genes >= src.n_genes:
        return src
    others = np.setdiff1d(np.arange(src.n_genes), src.reg_rows)
    pick = np.sort(np.concatenate([src.reg_rows, rng.choice(others, size=max(0, n_genes - len(src.reg_rows)), replace=False)]))
    pos = {int(g): i for i, g in enumerate(pick)}
    out = Expression(
        values=np.ascontiguousarray(src.values[pick]),
        genes=[src.genes[i] for i in pick],
        regulators=src.regulators,
        reg_rows=np.array([pos[int(r)] for r in src.reg_rows], dtype=np.int64),
        samples=src.samples,
    )
    if src._order is not None:
        out._order = np.ascontiguousarray(src._order[pick])  # the rows' sorted samples, as computed for src
    return out


def calibrated_null(
    data,
    regulators: Sequence[str] | None = None,
    resampling: str | None = "subsample",
    seed: int = 1,
    null_data=None,
    subsample_fraction: float = SUBSAMPLE_FRACTION,
    target_pairs: int = CALIBRATION_PAIRS,
    max_replicates: int = MAX_REPLICATES,
    backend: str = "numba",
    estimator: str = "apmi",
) -> NullModel:
    """The null MI distribution of networks of ``data`` (see the module docstring), for the MI
    ``estimator`` the networks use (``apmi`` or ``copula``).

    Parameters
    ----------
    data, regulators
        the data the networks are built from (AnnData cells x genes, DataFrame samples x genes or
        an :class:`~netpert.aracne.prepare.Expression`) and the regulator names.
    resampling
        what each network does to the samples: ``"bootstrap"``, ``"subsample"`` or None.
    seed
        user seed; replicate ``r`` uses ``netpert.seeds.rng(seed, "null", r)``.
    null_data
        null data of the same genes (already permuted, e.g. aggregated permuted cells), or None
        to permute ``data`` gene by gene in every replicate.
    target_pairs, max_replicates
        draw replicates until at least ``target_pairs`` null values (at most ``max_replicates``).
    """
    return calibrated_nulls(data, regulators, (resampling,), seed, null_data, subsample_fraction, target_pairs, max_replicates,
                            backend, estimator)[0]


def calibrated_nulls(
    data,
    regulators: Sequence[str] | None = None,
    resamplings: Sequence[str | None] = ("subsample", None),
    seed: int = 1,
    null_data=None,
    subsample_fraction: float = SUBSAMPLE_FRACTION,
    target_pairs: int = CALIBRATION_PAIRS,
    max_replicates: int = MAX_REPLICATES,
    backend: str = "numba",
    estimator: str = "apmi",
) -> list[NullModel]:
    """:func:`calibrated_null` for each of ``resamplings`` (e.g. the networks' subsampling and the
    full-data gate's none), drawn in one pass: each replicate's genes and permutation are drawn
    once and serve every resampling (each of which then continues from a copy of the replicate's
    random state, so every null is the one :func:`calibrated_null` draws alone, value for value).
    With the numba backend the permutation is never applied to the data: the rankings read each
    permuted, resampled gene off the data's sorted samples."""
    check_estimator(estimator)
    expr = ensure_expression(data, regulators)
    if null_data is None:
        src, permute, source = expr, True, "the data, every gene permuted independently in each replicate"
    else:
        try:
            src = ensure_expression(null_data, expr.regulators)
        except InputError as exc:
            raise InputError(f"the null data do not fit the data: {exc}") from exc
        permute, source = False, "the given null data (permuted and aggregated as the data), resampled"
    n = expr.n_samples
    n_regs = len(src.reg_rows)
    if n_regs == 0 or src.n_genes < 2:
        raise InputError("the null data hold no regulator or fewer than two genes; they must have the data's genes")
    per_rep_genes = src.n_genes
    if n_regs * (src.n_genes - 1) > target_pairs:
        per_rep_genes = max(n_regs + 1, int(math.ceil(target_pairs / n_regs)) + 1)
    pairs_per_rep = n_regs * (min(per_rep_genes, src.n_genes) - 1)
    n_rep_all = int(min(max_replicates, max(1, math.ceil(target_pairs / pairs_per_rep))))
    n_reps = []
    for resampling in resamplings:
        n_rep = n_rep_all
        if not permute and resampling is None and per_rep_genes >= src.n_genes:
            n_rep = 1  # every replicate would be the same null data, whole: one set of values is all there is
        n_reps.append(n_rep)
    chunks: list[list[np.ndarray]] = [[] for _ in resamplings]
    fast = backend == "numba"
    if fast:
        with timing.stage("sort"):
            src.sorted_order()
    for r in range(max(n_reps)):
        rng = seeds.rng(seed, "null", r)
        with timing.stage("permute"):
            rep = _subset(src, per_rep_genes, rng)
            perm = None
            if permute:
                if fast:  # the permutation rng.permuted(values, axis=1) applies (the same draws)
                    perm = np.tile(np.arange(rep.n_samples, dtype=np.int32), (rep.n_genes, 1))
                    rng.permuted(perm, axis=1, out=perm)
                else:
                    rep = Expression(rng.permuted(rep.values, axis=1), rep.genes, rep.regulators, rep.reg_rows, rep.samples)
        todo = [i for i in range(len(resamplings)) if r < n_reps[i]]
        for i in todo:
            rng_i = rng if i == todo[-1] else copy.deepcopy(rng)
            with timing.stage("ranking"):
                idx = _indices(n, rep.n_samples, resamplings[i], rng_i, subsample_fraction)
                ranks = transform(estimator, rep.values, idx, rng_i, backend, perm=perm, order=rep.sorted_order() if fast else None)
            chunks[i].extend(iter_mi_values(rep, ranks, backend, estimator))
    out = []
    for i, resampling in enumerate(resamplings):
        with timing.stage("summary"):
            values = np.concatenate(chunks[i])
            chunks[i] = []
            n_total = len(values)
            n_top = min(n_total, max(1000, int(math.ceil(NULL_TOP_FRACTION * n_total))))
            top, grid = summarize_null(values, n_top)
            del values
        info = {
            "model": "calibrated",
            "version": CALIBRATION_VERSION,
            "estimator": estimator,
            "source": source,
            "resampling": resampling or "none",
            "n_samples": int(n),
            "null_samples": int(src.n_samples),
            "replicates": n_reps[i],
            "genes_per_replicate": int(min(per_rep_genes, src.n_genes)),
            "regulators": n_regs,
            "null_size": int(n_total),
            "null_max": float(top[0]),
            "seed": int(seed),
        }
        log.info(
            "calibrated null: %d replicates x %d pairs (%s; %s, %d samples): %d values, max %.4g",
            n_reps[i], pairs_per_rep, source, resampling, n, n_total, top[0],
        )
        out.append(NullModel(top, n_total, grid, info))
    return out

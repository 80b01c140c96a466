"""msVIPER with a sample-permutation null model, the t-test null builder, and NES p-values.

- :func:`row_ttest`: R viper's ``rowTtest(x, y)`` (two-sample, pooled variance) per gene.
- :func:`ttest_null`: R's ``ttestNull``: each permutation resamples the pooled samples (with
  replacement by default), redraws until both groups hold more than one distinct sample, and
  stores the z-transformed t, ``qnorm(pt(|t|, df, lower=FALSE), lower=FALSE) * sign(t)``. (numpy's
  generator, so the columns differ from R's; msviper only uses their ranks.)
- :func:`aecdf_nes`: R's ``aecdf(dnull, symmetric=TRUE)(x)$nes``: the (interpolated) empirical
  CDF of |null ES| with an exponential upper tail; ``p`` is the two-sided tail probability and
  ``nes = qnorm(p / 2, lower=FALSE) * sign(x)``.
- :func:`msviper`: ES of the signature and of every null column by aREA, NES from the null,
  two-sided ``p = 2 * pnorm(-|nes|)``.
- :func:`nes_pvalues`: per-cell two-sided p-values from NES and Benjamini-Hochberg adjustment
  across the regulators of each cell.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
from scipy.stats import false_discovery_control, norm
from scipy.stats import t as t_dist

from netpert.errors import InputError
from netpert.viper.area import area_block, prepare_network
from netpert.viper.io import validate_regulons

log = logging.getLogger(__name__)


def _as_frame(x, name: str) -> pd.DataFrame:
    if isinstance(x, pd.Series):
        return x.to_frame()
    if isinstance(x, pd.DataFrame):
        return x
    raise InputError(f"{name} must be a pandas Series or DataFrame indexed by gene, got {type(x).__name__}")


def row_ttest(x: pd.DataFrame, y: pd.DataFrame) -> pd.Series:
    """Two-sample t statistic (pooled variance) of ``x`` against ``y``, both samples x genes."""
    if list(x.columns) != list(y.columns):
        raise InputError("row_ttest: both groups need the same genes (columns) in the same order")
    a, b = x.to_numpy(np.float64), y.to_numpy(np.float64)
    n1, n2 = a.shape[0], b.shape[0]
    if n1 < 2 or n2 < 2:
        raise InputError(f"row_ttest needs at least 2 samples per group, got {n1} and {n2}")
    t = _pooled_t(a, b)
    return pd.Series(t, index=x.columns, name="t")


def _pooled_t(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    n1, n2 = a.shape[0], b.shape[0]
    v1 = a.var(axis=0, ddof=1)
    v2 = b.var(axis=0, ddof=1)
    sp2 = ((n1 - 1) * v1 + (n2 - 1) * v2) / (n1 + n2 - 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        return (a.mean(axis=0) - b.mean(axis=0)) / np.sqrt(sp2) / np.sqrt(1 / n1 + 1 / n2)


def ttest_null(x: pd.DataFrame, y: pd.DataFrame, per: int = 1000, repos: bool = True, seed: int = 1) -> pd.DataFrame:
    """Null model by sample permutation (genes x ``per``), as R's ``ttestNull(x, y)``.

    ``x``, ``y``: the two groups, samples x genes (same columns).
    """
    if list(x.columns) != list(y.columns):
        raise InputError("ttest_null: both groups need the same genes (columns) in the same order")
    pooled = np.vstack([x.to_numpy(np.float64), y.to_numpy(np.float64)])
    n1, n = x.shape[0], pooled.shape[0]
    if n1 < 2 or n - n1 < 2:
        raise InputError(f"ttest_null needs at least 2 samples per group, got {n1} and {n - n1}")
    rng = np.random.default_rng(seed)
    out = np.empty((pooled.shape[1], per))
    for i in range(per):
        for _ in range(10000):
            order = rng.choice(n, size=n, replace=repos)
            if len(np.unique(order[:n1])) > 1 and len(np.unique(order[n1:])) > 1:
                break
        else:  # pragma: no cover
            raise InputError("ttest_null could not draw groups with more than one distinct sample")
        t = _pooled_t(pooled[order[:n1]], pooled[order[n1:]])
        out[:, i] = norm.isf(t_dist.sf(np.abs(t), n - 2)) * np.sign(t)
    return pd.DataFrame(out, index=x.columns, columns=[str(i + 1) for i in range(per)])


def aecdf_nes(dnull: np.ndarray, x) -> np.ndarray:
    """NES of ``x`` against the null ES ``dnull`` (R viper 1.41's ``aecdf(dnull, symmetric=TRUE)(x)$nes``).

    Transcribes R's procedure, quirks included (they are what the fixture holds):

    - going down the sorted ``|dnull|``, ``iq1`` is the last count of top values holding 5 distinct
      values and ``tl1`` the first count holding 14;
    - the tail starts at the ``1 - iq1/N`` type-7 quantile ``q``; the exponential tail
      ``log(1 - F(q)) - log(1 - F(v)) = slope * (v - q)`` is fitted through the origin on the
      values at positions ``N - tl1 + 1 .. N - iq1 + 1`` of ``|dnull|`` **in the null's column
      order** (R indexes the unsorted vector), keeping finite points;
    - below ``q`` the CDF is the linear interpolation of the empirical CDF at 14 evenly spaced
      points in ``[0, q]`` (R's ``n`` argument is overwritten by the loop counter, which ends at 14).
    """
    d = np.asarray(dnull, dtype=np.float64)
    a = np.abs(d[np.isfinite(d)])
    n = len(a)
    srt = np.sort(a)
    desc = srt[::-1]
    if len(np.unique(a)) < 14:
        raise InputError(f"the null model gives only {len(np.unique(a))} distinct enrichment scores; it needs at least 14 (use ~1000 permutations)")
    i, k, iq1 = 4, 4, None
    while k < 14:
        i += 1
        k = len(np.unique(desc[:i]))
        if k == 5:
            iq1 = i
    tl1 = i
    q = np.quantile(a, 1 - iq1 / n)  # R's type-7 quantile

    def ecdf(v):
        return np.searchsorted(srt, v, side="right") / n

    idx = n - np.arange(tl1, iq1 - 1, -1)
    xs = a[idx] - q
    with np.errstate(divide="ignore"):
        ys = np.log(1 - ecdf(q)) - np.log(1 - ecdf(a[idx]))
    ok = np.isfinite(ys)
    if ok.sum() < 3:
        raise InputError("not enough permutations to compute the null distribution (fewer than 3 tail points)")
    slope = np.sum(xs[ok] * ys[ok]) / np.sum(xs[ok] * xs[ok])
    grid = np.linspace(0, q, 14)
    grid_cdf = ecdf(grid)

    def cdf(v):
        return np.interp(v, grid, grid_cdf, left=0.0)

    x = np.asarray(x, dtype=np.float64)
    x1 = np.abs(x)
    with np.errstate(over="ignore", divide="ignore"):
        p_tail = np.exp(np.log(1 - cdf(q)) - slope * (x1 - q))
    p_tail = np.where(np.isfinite(p_tail), p_tail, 1.0)
    p = np.where(x1 > q, p_tail, 1 - cdf(x1))
    return norm.isf(p / 2) * np.sign(x)


def msviper(signature, regulons: pd.DataFrame, null, min_targets: int = 25, ges_filter: bool = True) -> pd.DataFrame:
    """Master-regulator analysis of one signature with a permutation null (R's ``msviper``).

    ``signature``: a Series (gene -> value) or a one-column DataFrame; ``null``: a DataFrame,
    genes x permutations (e.g. :func:`ttest_null`). Returns a DataFrame with the columns
    ``regulator, nes, pvalue, size, es`` in regulon order.
    """
    sig = _as_frame(signature, "signature")
    if sig.shape[1] != 1:
        raise InputError(f"msviper takes one signature; got {sig.shape[1]} columns")
    null = _as_frame(null, "null")
    regulons = validate_regulons(regulons, "msviper regulons")
    sig = sig.iloc[:, 0].astype(np.float64)
    sig.index = sig.index.astype(str)
    if not np.all(np.isfinite(sig.to_numpy())):
        raise InputError("the msviper signature has NaN or infinite values; remove them first")
    if ges_filter:
        named = set(regulons["regulator"]) | set(regulons["target"])
        sig = sig.loc[sig.index.isin(named)]
    if sig.empty:
        raise InputError("no gene of the signature is named in the regulons")
    null.index = null.index.astype(str)
    missing = sig.index.difference(null.index)
    if len(missing):
        raise InputError(f"the null model lacks {len(missing)} gene(s) of the signature (e.g. {list(missing[:5])}); build it on the same genes")
    dnull = null.loc[sig.index].to_numpy(np.float64)
    if not np.all(np.isfinite(dnull)):
        raise InputError("the null model has NaN or infinite values")
    net = prepare_network(regulons, sig.index, eset_filter=False, min_targets=min_targets, name="msviper regulons")
    es = area_block(sig.to_numpy()[None, :], net, m_global=None) / net.factor
    null_es = area_block(np.ascontiguousarray(dnull.T), net) / net.factor
    nes = np.array([aecdf_nes(null_es[:, r], es[0, r]) for r in range(len(net.regulators))])
    return pd.DataFrame({
        "regulator": net.regulators, "nes": nes, "pvalue": 2 * norm.sf(np.abs(nes)),
        "size": np.diff(net.ptr), "es": es[0],
    })


def nes_pvalues(nes: pd.DataFrame | np.ndarray):
    """Two-sided p-values ``2 * pnorm(-|NES|)`` and their Benjamini-Hochberg adjustment across the
    regulators of each cell (row). Returns ``(pvalue, padj)`` shaped like ``nes``."""
    values = nes.to_numpy(np.float64) if isinstance(nes, pd.DataFrame) else np.asarray(nes, dtype=np.float64)
    p = 2 * norm.sf(np.abs(values))
    padj = false_discovery_control(p, axis=1, method="bh") if p.size else p.copy()
    if isinstance(nes, pd.DataFrame):
        return pd.DataFrame(p, index=nes.index, columns=nes.columns), pd.DataFrame(padj, index=nes.index, columns=nes.columns)
    return p, padj

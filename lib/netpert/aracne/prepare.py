"""Input checks, resampling and rank transformation for the ARACNe engine.

Data come in scverse orientation: an AnnData (cells x genes, ``.X`` dense or sparse, gene names
in ``var_names``) or a pandas DataFrame (samples x genes). They are held internally as a dense
genes x samples matrix so that one gene's values are contiguous.

Ranks follow ARACNe-AP: rank 1 is the largest value, ranks run 1..n. ARACNe-AP breaks ties by
adding U(0,1)/1e5 noise; here ties (the zeros of single-cell data, duplicated bootstrap samples)
are broken by independent random keys per gene drawn from ``numpy.random.default_rng(seed)``, so
the ranks are a permutation of 1..n, deterministic for a seed and independent of the thread count.

Fast path (numba): each gene's samples are sorted once per data set (:meth:`Expression.sorted_order`);
the ranks of any resample (bootstrap, subsample, all samples) of the data, or of the data with each
gene permuted, are then read off that order in one pass per gene (:func:`resample_csr`), sorting
only inside runs of equal values. The plain-Python reference sorts each resampled gene; the tests
hold both equal.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Sequence

import numba
import numpy as np
import pandas as pd
import scipy.sparse as sp

from netpert.errors import InputError
from netpert.jit import njit

log = logging.getLogger(__name__)

#: fewest samples ARACNe accepts (the APMI of fewer points is meaningless)
MIN_SAMPLES = 10
#: default fraction of cells drawn without replacement by ``resampling="subsample"`` (ARACNe3)
SUBSAMPLE_FRACTION = 1.0 - math.exp(-1.0)
#: genes ranked per block (bounds the memory of the random keys)
_RANK_BLOCK = 1024
#: runs of equal values up to this length are ordered by insertion sort
_SMALL_RUN = 16
#: below this much work (array elements) the kernels run serially
_PARALLEL_MIN_WORK = 200_000


@dataclass
class Expression:
    """Validated expression data for ARACNe.

    Attributes
    ----------
    values
        genes x samples float array (C-contiguous), constant genes removed.
    genes
        gene names (rows of ``values``).
    regulators
        the requested regulators found in the data, in data order.
    reg_rows
        their row indices in ``values``.
    samples
        sample / cell names.
    """

    values: np.ndarray
    genes: list[str]
    regulators: list[str]
    reg_rows: np.ndarray
    samples: list[str]
    #: :func:`sort_rows` of ``values``, computed on first use (:meth:`sorted_order`)
    _order: np.ndarray | None = field(default=None, init=False, repr=False, compare=False)

    def sorted_order(self) -> np.ndarray:
        """Each gene's samples in increasing order of value (int32 genes x samples; cached)."""
        if self._order is None:
            self._order = sort_rows(self.values)
        return self._order

    @property
    def n_samples(self) -> int:
        return self.values.shape[1]

    @property
    def n_genes(self) -> int:
        return self.values.shape[0]


def _as_genes_by_samples(data) -> tuple[np.ndarray, list[str], list[str]]:
    try:
        import anndata as ad
    except ImportError:  # pragma: no cover
        ad = None
    if ad is not None and isinstance(data, ad.AnnData):
        X = data.X
        genes = [str(g) for g in data.var_names]
        samples = [str(s) for s in data.obs_names]
        if X is None:
            raise InputError("the AnnData has no .X matrix; put the expression (cells x genes) in .X")
        if sp.issparse(X):
            if np.issubdtype(X.dtype, np.floating) and not np.all(np.isfinite(X.data)):
                bad = int(np.sum(~np.isfinite(X.data)))
                raise InputError(f"the AnnData .X holds {bad} NaN/infinite values; impute or drop them before ARACNe")
            values = X.T.toarray()
        else:
            values = np.asarray(X).T
    elif isinstance(data, pd.DataFrame):
        genes = [str(g) for g in data.columns]
        samples = [str(s) for s in data.index]
        non_numeric = [c for c, t in data.dtypes.items() if not np.issubdtype(t, np.number)]
        if non_numeric:
            raise InputError(
                f"the DataFrame has non-numeric columns {non_numeric[:5]}; give samples x genes with numeric values only"
            )
        values = data.to_numpy(dtype=np.float64).T
    else:
        raise InputError(
            f"ARACNe data must be an AnnData (cells x genes) or a pandas DataFrame (samples x genes), got {type(data).__name__}"
        )
    if not np.issubdtype(values.dtype, np.floating):
        values = values.astype(np.float64)
    return np.ascontiguousarray(values), genes, samples


def prepare_expression(data, regulators: Sequence[str], min_samples: int = MIN_SAMPLES) -> Expression:
    """Validate ``data`` and locate ``regulators`` in it.

    Raises :class:`netpert.InputError` for fewer than ``min_samples`` samples, NaN/infinite values,
    duplicated gene names, or no requested regulator among the (non-constant) genes. Constant genes
    carry no information and are dropped with a logged warning that counts them.
    """
    values, genes, samples = _as_genes_by_samples(data)
    n = values.shape[1]
    if n < min_samples:
        raise InputError(
            f"ARACNe needs at least {min_samples} samples/cells, the data have {n}; "
            "use a larger stratum (or lower the stratification's min_cells only if it stays >= 10)"
        )
    if values.shape[0] == 0:
        raise InputError("the data have no genes")
    if not np.all(np.isfinite(values)):
        bad_rows = np.where(~np.all(np.isfinite(values), axis=1))[0]
        raise InputError(
            f"the data hold NaN/infinite values in {len(bad_rows)} genes (e.g. {', '.join(genes[i] for i in bad_rows[:5])}); "
            "impute or drop them before ARACNe"
        )
    if len(set(genes)) != len(genes):
        dup = pd.Index(genes)[pd.Index(genes).duplicated()].unique()[:5]
        raise InputError(
            f"gene names are not unique (e.g. {', '.join(map(str, dup))}); make them unique (AnnData.var_names_make_unique())"
        )
    if isinstance(regulators, str):
        regulators = [regulators]
    asked = list(dict.fromkeys(str(r) for r in regulators))
    asked_set = set(asked)
    if not asked:
        raise InputError("no regulator given; pass the regulator gene names (e.g. netpert.regulators.load_regulators())")
    constant = np.all(values == values[:, :1], axis=1)
    n_const = int(constant.sum())
    if n_const:
        const_regs = [g for g, c in zip(genes, constant) if c and g in asked_set]
        log.warning(
            "dropping %d constant gene(s) of %d (no information for mutual information)%s",
            n_const,
            len(genes),
            f", among them regulator(s) {', '.join(const_regs[:10])}" if const_regs else "",
        )
        keep = ~constant
        values = np.ascontiguousarray(values[keep])
        genes = [g for g, k in zip(genes, keep) if k]
    if not genes:
        raise InputError("every gene of the data is constant; ARACNe needs varying expression")
    index = {g: i for i, g in enumerate(genes)}
    found = [g for g in genes if g in asked_set]
    if not found:
        shown = ", ".join(asked[:10]) + (f", ... ({len(asked)} in all)" if len(asked) > 10 else "")
        raise InputError(
            f"none of the {len(asked)} requested regulators ({shown}) is a non-constant gene of the data "
            f"({len(genes)} genes, e.g. {', '.join(genes[:5])}); check the regulator lists and that gene symbols match"
        )
    missing = len(asked) - len(found)
    if missing:
        log.info("%d of %d requested regulators are in the data; %d are not (ignored, as ARACNe-AP does)", len(found), len(asked), missing)
    reg_rows = np.array([index[g] for g in found], dtype=np.int64)
    return Expression(values=values, genes=genes, regulators=found, reg_rows=reg_rows, samples=samples)


def ensure_expression(data, regulators: Sequence[str] | None) -> Expression:
    """``data`` if it is already an :class:`Expression`, else :func:`prepare_expression`."""
    if isinstance(data, Expression):
        return data
    if regulators is None:
        raise InputError("no regulator given; pass the regulator gene names")
    return prepare_expression(data, regulators)


# --------------------------------------------------------------------------------------------
# resampling
# --------------------------------------------------------------------------------------------
def subsample_size(n: int, fraction: float = SUBSAMPLE_FRACTION) -> int:
    """Number of samples kept by ``resampling="subsample"`` with ``fraction`` (at least 2)."""
    if not 0 < fraction <= 1:
        raise InputError(f"subsample fraction must be in (0, 1], got {fraction}")
    return max(2, int(round(n * fraction)))


def resample_indices(n: int, rng: np.random.Generator, resampling: str | None, fraction: float = SUBSAMPLE_FRACTION) -> np.ndarray:
    """Sample indices for one network: all (``None``), drawn with replacement (``"bootstrap"``),
    or ``subsample_size(n, fraction)`` drawn without replacement (``"subsample"``, ARACNe3)."""
    if resampling in (None, "none"):
        return np.arange(n)
    if resampling == "bootstrap":
        return rng.integers(0, n, size=n)
    if resampling == "subsample":
        return np.sort(rng.choice(n, size=subsample_size(n, fraction), replace=False))
    raise InputError(f"unknown resampling {resampling!r}; use 'bootstrap', 'subsample' or None")


def effective_samples(n: int, resampling: str | None, fraction: float = SUBSAMPLE_FRACTION) -> int:
    """Number of samples a network is computed from (the sample size its threshold must be for)."""
    return subsample_size(n, fraction) if resampling == "subsample" else n


# --------------------------------------------------------------------------------------------
# ranking
# --------------------------------------------------------------------------------------------
@njit(cache=True, nogil=True)
def _sort_row(values, out, g):
    out[g] = np.argsort(values[g])  # equal values end up adjacent, all the rankings need


@njit(cache=True, parallel=True)
def _sort_rows_par(values, out):
    for g in numba.prange(values.shape[0]):
        _sort_row(values, out, g)


@njit(cache=True)
def _sort_rows_ser(values, out):
    for g in range(values.shape[0]):
        _sort_row(values, out, g)


def sort_rows(values: np.ndarray) -> np.ndarray:
    """Each row's column indices in increasing order of value (int32; equal values adjacent, in no
    particular order): the order the fast rankings read resamples from."""
    values = np.ascontiguousarray(values)
    out = np.empty(values.shape, np.int32)
    (_sort_rows_par if values.size >= _PARALLEL_MIN_WORK else _sort_rows_ser)(values, out)
    return out


def resample_csr(idx: np.ndarray, n_src: int) -> tuple[np.ndarray, np.ndarray]:
    """``(start, items)``: the positions ``k`` with ``idx[k] == j`` are ``items[start[j]:start[j+1]]``."""
    idx = np.asarray(idx, dtype=np.int64)
    items = np.argsort(idx, kind="stable")
    start = np.zeros(n_src + 1, np.int64)
    np.cumsum(np.bincount(idx, minlength=n_src), out=start[1:])
    return start, items


def check_perm(perm, values: np.ndarray) -> np.ndarray:
    """``perm`` (genes x samples: the source sample of each gene at each position) as C-contiguous int32."""
    perm = np.ascontiguousarray(perm, dtype=np.int32)
    if perm.shape != values.shape:
        raise ValueError(f"perm has shape {perm.shape}, the values {values.shape}")
    return perm


@njit(cache=True, nogil=True, inline="always")
def _source_position(perm, has_perm, g, s, pinv):
    # position j of the (permuted) row at which sample s of gene g lies
    return pinv[s] if has_perm else s


@njit(cache=True, nogil=True)
def _invert_row(perm, g, pinv):
    for j in range(perm.shape[1]):
        pinv[perm[g, j]] = j


@njit(cache=True, nogil=True)
def _rank_row_sorted(values, order, perm, has_perm, start, items, keys, out, row0, g):
    # ARACNe ranks (1 = largest) of the resample of gene row0+g: walk its sorted samples from the
    # largest value down; a run of equal values (ties, or a sample drawn several times) is ordered
    # by its random keys, exactly as sorting by (-value, key)
    G = row0 + g
    n_src = values.shape[1]
    row = values[G]
    pinv = np.empty(n_src if has_perm else 0, np.int64)
    if has_perm:
        _invert_row(perm, G, pinv)
    buf = np.empty(items.shape[0], np.int64)
    kv = np.empty(items.shape[0], np.float64)
    r = 0
    i = n_src - 1
    while i >= 0:
        v = row[order[G, i]]
        i0 = i
        while i0 > 0 and row[order[G, i0 - 1]] == v:
            i0 -= 1
        cnt = 0
        for t in range(i0, i + 1):
            j = _source_position(perm, has_perm, G, order[G, t], pinv)
            for q in range(start[j], start[j + 1]):
                buf[cnt] = items[q]
                cnt += 1
        if cnt == 1:
            out[G, buf[0]] = r + 1
        elif cnt <= _SMALL_RUN:  # a sample drawn a few times, a few equal values: insertion sort by key
            for t in range(cnt):
                kv[t] = keys[g, buf[t]]
            for t in range(1, cnt):
                kt = kv[t]
                bt = buf[t]
                u = t - 1
                while u >= 0 and kv[u] > kt:
                    kv[u + 1] = kv[u]
                    buf[u + 1] = buf[u]
                    u -= 1
                kv[u + 1] = kt
                buf[u + 1] = bt
            for t in range(cnt):
                out[G, buf[t]] = r + 1 + t
        elif cnt > 1:
            for t in range(cnt):
                kv[t] = keys[g, buf[t]]
            o = np.argsort(kv[:cnt])
            for t in range(cnt):
                out[G, buf[o[t]]] = r + 1 + t
        r += cnt
        i = i0 - 1


@njit(cache=True, parallel=True)
def _rank_block_par(values, order, perm, has_perm, start, items, keys, out, row0):
    for g in numba.prange(keys.shape[0]):
        _rank_row_sorted(values, order, perm, has_perm, start, items, keys, out, row0, g)


@njit(cache=True)
def _rank_block_ser(values, order, perm, has_perm, start, items, keys, out, row0):
    for g in range(keys.shape[0]):
        _rank_row_sorted(values, order, perm, has_perm, start, items, keys, out, row0, g)


def _rank_block_python(values, idx, keys, out, row0, perm=None):
    rows = values[row0 : row0 + keys.shape[0]]
    if perm is not None:
        rows = np.take_along_axis(rows, perm[row0 : row0 + keys.shape[0]], axis=1)
    sub = rows[:, idx]
    for g in range(keys.shape[0]):
        order = np.lexsort((keys[g], -sub[g].astype(np.float64)))
        out[row0 + g, order] = np.arange(1, len(idx) + 1)


def rank_matrix(
    values: np.ndarray,
    idx: np.ndarray | None = None,
    rng: np.random.Generator | int = 0,
    backend: str = "numba",
    perm: np.ndarray | None = None,
    order: np.ndarray | None = None,
) -> np.ndarray:
    """ARACNe-AP ranks (1 = largest) of every row of ``values`` (genes x samples) over samples ``idx``.

    Ties, including those from samples drawn twice, are broken by random keys from ``rng``
    (a Generator or a seed), independently per gene. ``perm`` (genes x samples, optional): rank
    the data with gene ``g``'s values permuted, ``values[g, perm[g]]``. ``order``: the
    :func:`sort_rows` of ``values`` (:meth:`Expression.sorted_order`), computed here when not
    given (numba backend). Returns int32 (genes, len(idx)).
    """
    rng = np.random.default_rng(rng) if not isinstance(rng, np.random.Generator) else rng
    idx = np.arange(values.shape[1]) if idx is None else np.asarray(idx, dtype=np.int64)
    if backend not in ("numba", "python"):
        raise ValueError(f"unknown backend {backend!r}; use 'numba' or 'python'")
    if perm is not None:
        perm = check_perm(perm, values)
    out = np.empty((values.shape[0], len(idx)), dtype=np.int32)
    if backend == "numba":
        values = np.ascontiguousarray(values)
        order = sort_rows(values) if order is None else order
        start, items = resample_csr(idx, values.shape[1])
        has_perm = perm is not None
        perm_arg = perm if has_perm else np.zeros((1, 1), np.int32)
    for row0 in range(0, values.shape[0], _RANK_BLOCK):
        nrow = min(_RANK_BLOCK, values.shape[0] - row0)
        keys = rng.random((nrow, len(idx)))
        if backend == "numba":
            # serial for small blocks: on a busy machine waking the thread pool can take milliseconds
            run = _rank_block_par if keys.size >= _PARALLEL_MIN_WORK else _rank_block_ser
            run(values, order, perm_arg, has_perm, start, items, keys, out, row0)
        else:
            _rank_block_python(values, idx, keys, out, row0, perm)
    return out

"""Per-cell gene expression signatures for VIPER, computed in blocks of cells.

Methods (R viper's ``viper(method=)`` semantics where R has them; genes are columns here):

- ``none``: the values as given.
- ``scale``: each gene z-scored across cells, ``(x - mean) / sd`` (sd with n - 1), as R's
  ``t(scale(t(eset)))``. The per-gene mean and sd come from a first, sparse-friendly pass over
  blocks of cells (Chan's pairwise merge of block means and sums of squares).
- ``rank``: each gene's rank across cells (average ranks for ties), as R's
  ``t(apply(eset, 1, rank)) * punif(length(eset), -.1, .1)`` (the ``punif`` factor is 1).
  (For integer counts the mean and sd come from exact sums, so genes with the same values get
  bit-identical z-scores and stay tied, whatever the blocking.)
- ``mad``: ``(x - median) / mad`` per gene across cells, with R's ``mad`` (constant 1.4826).
- ``ttest``: without a reference, R's ``rowTtest(eset[, i] - eset[, -i])$statistic``: the
  one-sample t of the cell against every other cell,
  ``(x_i - mean_-i) / (sd_-i / sqrt(n - 1))``, computed from the all-cell mean and sum of squares
  (leave-one-out update). With a reference group, R's ``viperSignature(method="ttest")``
  statistic ``rowTtest(x - ref)``: ``(x - mean_ref) / (sd_ref / sqrt(n_ref))`` (R then turns it
  into a z-score with the same degrees of freedom for every gene, a monotone map that aREA's
  within-cell ranks do not see, so the t is kept).
- ``doublerank``: PISCES' ``RankNorm``: rank the genes within each cell, then scale each gene's
  ranks across cells by their median and MAD (exact medians from a streamed two-level histogram,
  so memory stays bounded).

Genes whose spread is zero (``sd`` for scale / ttest, ``mad`` for mad / doublerank) have no
defined signature: R gives NaN (constant genes) and drops them per sample in aREA's loop path.
Here they are flagged in :attr:`Signature.keep` and left out of the ranking (a warning says how
many); for ``mad`` / ``doublerank`` / reference ``ttest`` R would give +-Inf next to NaN for a
zero-spread gene that is not constant, which is dropped the same way.

Memory: ``none``, ``scale``, ``ttest`` hold O(genes) statistics; ``mad`` reads genes in chunks
of at most ``block_size * n_genes`` values; ``doublerank`` keeps two small histograms per gene;
``rank`` keeps each gene's distinct values and their counts (for count data a few hundred per
gene; for continuous data up to the number of non-zero values).
"""

from __future__ import annotations

import logging
from typing import Iterator, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.stats import rankdata

from netpert.errors import InputError
from netpert.viper._kernels import rank_codes_numba

log = logging.getLogger(__name__)

METHODS = ("none", "scale", "rank", "mad", "ttest", "doublerank")
MAD_CONSTANT = 1.4826


# --------------------------------------------------------------------------------------------- input
def as_matrix(data, layer: str | None = None):
    """``(X, genes, cells, obs)`` from an AnnData (cells x genes) or a DataFrame (samples x genes).

    X stays as given (scipy CSR / CSC is converted to CSR; dense arrays are not copied).
    """
    try:
        import anndata as ad
    except ImportError:  # pragma: no cover
        ad = None
    if ad is not None and isinstance(data, ad.AnnData):
        X = data.X if layer is None else data.layers[layer]
        genes, cells, obs = pd.Index(data.var_names.astype(str)), pd.Index(data.obs_names.astype(str)), data.obs
    elif isinstance(data, pd.DataFrame):
        if layer is not None:
            raise InputError("layer= applies to AnnData input only")
        X = data.to_numpy()
        genes, cells, obs = pd.Index(data.columns.astype(str)), pd.Index(data.index.astype(str)), None
    else:
        raise InputError(f"expected an AnnData (cells x genes) or a DataFrame (samples x genes), got {type(data).__name__}")
    if sp.issparse(X):
        X = sp.csr_matrix(X)
    else:
        X = np.asarray(X)
        if X.dtype.kind not in "fiub":
            raise InputError(f"expression values must be numeric, got dtype {X.dtype}")
    if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
        raise InputError(f"expression matrix must be 2-D with at least one cell and one gene, got shape {X.shape}")
    if genes.has_duplicates:
        dup = genes[genes.duplicated()].unique()
        raise InputError(f"gene names must be unique; {len(dup)} repeated (e.g. {list(dup[:5])}); make var_names unique first")
    return X, genes, cells, obs


def _check_finite(values: np.ndarray, where: str) -> None:
    if not np.all(np.isfinite(values)):
        n_nan = int(np.isnan(values).sum())
        n_inf = int(np.isinf(values).sum())
        raise InputError(
            f"expression data contain {n_nan} NaN and {n_inf} infinite value(s) ({where}); "
            "VIPER needs finite values: impute or drop them first"
        )


def _is_sparse(X) -> bool:
    """scipy sparse, or a reader whose row blocks are CSR (:class:`netpert.viper.h5blocks.H5Rows`)."""
    return sp.issparse(X) or bool(getattr(X, "sparse_rows", False))


def dense_rows(X, rows) -> np.ndarray:
    """The rows ``rows`` (a slice or an index array) of X as a dense float64 block, checked finite.

    X: a dense array, scipy CSR or an on-demand row reader (``X[rows]`` gives either)."""
    if _is_sparse(X):
        blk = X[rows]
        _check_finite(blk.data, "rows " + _describe(rows))
        return blk.astype(np.float64).toarray()
    blk = np.array(X[rows], dtype=np.float64)
    _check_finite(blk, "rows " + _describe(rows))
    return blk


def _describe(rows) -> str:
    if isinstance(rows, slice):
        return f"{rows.start}..{rows.stop}"
    return f"{len(rows)} selected"


def iter_blocks(n_rows: int, block_size: int, rows: np.ndarray | None = None) -> Iterator[slice | np.ndarray]:
    """Row selections of at most ``block_size`` rows covering ``range(n_rows)`` (or ``rows``)."""
    block_size = max(int(block_size), 1)
    if rows is None:
        for start in range(0, n_rows, block_size):
            yield slice(start, min(start + block_size, n_rows))
    else:
        for start in range(0, len(rows), block_size):
            yield rows[start:start + block_size]


# --------------------------------------------------------------------------------------------- statistics
def _moments(X, block_size: int, rows: np.ndarray | None = None):
    """Per-gene count, mean and sum of squared deviations over the selected rows (blockwise).

    Integer-valued data (counts): the plain sums of x and x^2 are exact in float64 whatever the
    order, so mean and M2 come from them and are identical for any blocking (genes whose values are
    the same multiset get bit-identical statistics, keeping their z-scores tied). Other data: Chan's
    pairwise merge of block means and M2 (numerically stable), as accurate as R's two-pass formula.
    """
    n_genes = X.shape[1]
    n = 0
    mean = np.zeros(n_genes)
    m2 = np.zeros(n_genes)
    s1 = np.zeros(n_genes)
    s2 = np.zeros(n_genes)
    integral = True
    for sel in iter_blocks(X.shape[0], block_size, rows):
        if _is_sparse(X):
            blk = X[sel]
            _check_finite(blk.data, "rows " + _describe(sel))
            nb = blk.shape[0]
            data = blk.data.astype(np.float64, copy=False)
            integral = integral and bool(np.all(data == np.round(data)))
            sb = np.bincount(blk.indices, weights=data, minlength=n_genes)
            s1 += sb
            s2 += np.bincount(blk.indices, weights=data * data, minlength=n_genes)
            mb = sb / nb
            nnz = np.bincount(blk.indices, minlength=n_genes)
            m2b = np.bincount(blk.indices, weights=(data - mb[blk.indices]) ** 2, minlength=n_genes) + (nb - nnz) * mb**2
        else:
            blk = dense_rows(X, sel)
            nb = blk.shape[0]
            integral = integral and bool(np.all(blk == np.round(blk)))
            s1 += blk.sum(axis=0)
            s2 += (blk * blk).sum(axis=0)
            mb = blk.mean(axis=0)
            m2b = ((blk - mb) ** 2).sum(axis=0)
        if nb == 0:
            continue
        tot = n + nb
        delta = mb - mean
        mean = mean + delta * (nb / tot)
        m2 = m2 + m2b + delta**2 * (n * nb / tot)
        n = tot
    if integral and n > 0 and np.all(s2 < 2.0**53):
        mean = s1 / n
        m2 = np.maximum(s2 - s1 * s1 / n, 0.0)
    return n, mean, m2


def _gene_chunks(X, block_size: int):
    """Dense column chunks (all cells x a few genes) of at most ``block_size * n_genes`` values."""
    n, g = X.shape
    width = max(1, min(g, (max(int(block_size), 1) * g) // max(n, 1)))
    Xc = X.tocsc() if sp.issparse(X) and width < g else X
    for a in range(0, g, width):
        b = min(a + width, g)
        if sp.issparse(Xc):
            blk = Xc[:, a:b]
            _check_finite(blk.data, f"genes {a}..{b}")
            yield a, b, blk.toarray().astype(np.float64, copy=False)
        else:
            blk = np.array(Xc[:, a:b], dtype=np.float64)
            _check_finite(blk, f"genes {a}..{b}")
            yield a, b, blk


def _median_mad(X, block_size: int):
    g = X.shape[1]
    med = np.empty(g)
    mad = np.empty(g)
    for a, b, blk in _gene_chunks(X, block_size):
        m = np.median(blk, axis=0)
        med[a:b] = m
        mad[a:b] = MAD_CONSTANT * np.median(np.abs(blk - m), axis=0)
    return med, mad


def _column_distributions(X, block_size: int):
    """Each gene's sorted distinct values, their counts and the counts below them (CSR-like)."""
    vals, less, cnts, ptr = [], [], [], [0]
    for a, b, blk in _gene_chunks(X, block_size):
        for j in range(b - a):
            u, c = np.unique(blk[:, j], return_counts=True)
            vals.append(u)
            cnts.append(c)
            less.append(np.concatenate(([0], np.cumsum(c)[:-1])))
            ptr.append(ptr[-1] + len(u))
    return np.concatenate(vals), np.concatenate(less), np.concatenate(cnts), np.asarray(ptr)


def rank_codes(block: np.ndarray, backend: str = "numba") -> np.ndarray:
    """``2 * rank`` of each row's values (average ranks for ties) as int64."""
    if backend == "numba":
        return rank_codes_numba(np.ascontiguousarray(block, dtype=np.float64))
    return np.rint(rankdata(block, axis=1) * 2).astype(np.int64)


def _streamed_median(code_blocks, n_cols: int, max_code: int, n_rows: int) -> np.ndarray:
    """Exact per-column median of non-negative integer codes streamed in row blocks.

    ``code_blocks`` is a callable returning an iterator of (rows, n_cols) int64 blocks; it is
    called twice: a coarse histogram finds each column's bins holding the two middle order
    statistics, a fine histogram within those bins gives their exact values.
    """
    width = int(np.ceil(np.sqrt(max_code + 1)))
    n_bins = max_code // width + 1
    k_lo, k_hi = (n_rows - 1) // 2, n_rows // 2
    offs = np.arange(n_cols, dtype=np.int64)
    hist = np.zeros(n_cols * n_bins, dtype=np.int64)
    for codes in code_blocks():
        for s in range(0, codes.shape[0], 256):
            sub = codes[s:s + 256] // width + offs * n_bins
            hist += np.bincount(sub.ravel(), minlength=n_cols * n_bins)
    hist = hist.reshape(n_cols, n_bins)
    cum = np.cumsum(hist, axis=1)
    result = np.zeros(n_cols)
    for k in (k_lo, k_hi):
        b = np.argmax(cum > k, axis=1)
        before = cum[offs, b] - hist[offs, b]
        fine = np.zeros(n_cols * width, dtype=np.int64)
        for codes in code_blocks():
            for s in range(0, codes.shape[0], 256):
                sub = codes[s:s + 256]
                hit = (sub // width) == b
                rows_, cols_ = np.nonzero(hit)
                fine += np.bincount(cols_ * width + (sub[rows_, cols_] % width), minlength=n_cols * width)
        fine = np.cumsum(fine.reshape(n_cols, width), axis=1) + before[:, None]
        result += b * width + np.argmax(fine > k, axis=1)
    return result / 2.0


# --------------------------------------------------------------------------------------------- model
class Signature:
    """A fitted signature method: per-gene statistics from a first pass, then blockwise transform.

    Use :meth:`fit`, then :meth:`transform` on dense blocks of cells (rows of the same matrix).
    :attr:`keep` flags the genes with a defined signature.
    """

    def __init__(self, method: str, n_genes: int):
        self.method = method
        self.n_genes = n_genes
        self.keep = np.ones(n_genes, dtype=bool)
        self.params: dict = {}
        self.backend = "numba"

    @classmethod
    def fit(cls, X, method: str = "none", reference: np.ndarray | None = None, block_size: int = 5000, backend: str = "numba") -> "Signature":
        """Compute the per-gene statistics the method needs from X (cells x genes, dense or CSR).

        ``reference``: for ``ttest``, the row indices (or a boolean mask) of the reference cells;
        None compares each cell with all the others.
        """
        if method not in METHODS:
            raise InputError(f"unknown signature method {method!r}; use one of {list(METHODS)}")
        if reference is not None and method != "ttest":
            raise InputError("a reference group applies to method='ttest' only")
        self = cls(method, X.shape[1])
        self.backend = backend
        n = X.shape[0]
        if method in ("scale", "ttest") and reference is None:
            if method == "scale" and n < 2:
                raise InputError("method='scale' needs at least 2 cells")
            if method == "ttest" and n < 3:
                raise InputError("method='ttest' without a reference needs at least 3 cells (each cell is compared with the others)")
            cnt, mean, m2 = _moments(X, block_size)
            self.params = {"n": cnt, "mean": mean, "m2": m2}
            self.keep = m2 > 0
        elif method == "ttest":
            ref = np.asarray(reference)
            if ref.dtype == bool:
                if ref.shape != (n,):
                    raise InputError(f"reference mask has {ref.shape[0]} entries for {n} cells")
                ref = np.flatnonzero(ref)
            ref = np.asarray(ref, dtype=np.int64)
            if len(ref) < 2:
                raise InputError(f"the ttest reference group has {len(ref)} cell(s); it needs at least 2")
            cnt, mean, m2 = _moments(X, block_size, rows=ref)
            self.params = {"n": cnt, "mean": mean, "m2": m2, "reference": True}
            self.keep = m2 > 0
        elif method == "mad":
            med, mad = _median_mad(X, block_size)
            self.params = {"median": med, "mad": mad}
            self.keep = mad > 0
        elif method == "rank":
            self.params = dict(zip(("vals", "less", "cnts", "ptr"), _column_distributions(X, block_size)))
        elif method == "doublerank":
            g = X.shape[1]

            def codes4():
                for sel in iter_blocks(n, block_size):
                    yield 2 * rank_codes(dense_rows(X, sel), backend)  # 4 * rank: even integers

            med4 = _streamed_median(codes4, g, 4 * g, n)
            m4 = np.rint(2 * med4).astype(np.int64)  # 2 * med4 is an integer (med4 a multiple of 0.5)

            def devs():
                for c in codes4():
                    yield np.abs(2 * c - m4)  # 2 * |4 rank - med4|, an integer

            mad4 = _streamed_median(devs, g, 8 * g, n) / 2.0
            self.params = {"median": med4 / 4.0, "mad": MAD_CONSTANT * mad4 / 4.0}
            self.keep = self.params["mad"] > 0
        n_drop = int((~self.keep).sum())
        if n_drop:
            log.warning("signature %r: %d gene(s) have zero spread across the cells and are left out of the ranking", method, n_drop)
        return self

    def transform(self, block: np.ndarray) -> np.ndarray:
        """The signature of a dense (cells x genes) float64 block of the fitted matrix (in place
        where possible). Dropped genes (``~keep``) hold NaN."""
        m = self.method
        p = self.params
        with np.errstate(divide="ignore", invalid="ignore"):
            if m == "none":
                out = block
            elif m == "scale":
                sd = np.sqrt(p["m2"] / (p["n"] - 1))
                out = np.subtract(block, p["mean"], out=block)
                np.divide(out, sd, out=out)
            elif m == "ttest" and not p.get("reference"):
                n = p["n"]
                d = block - p["mean"]
                var = (p["m2"] - d * d * (n / (n - 1.0))) / (n - 2.0)
                np.maximum(var, 0.0, out=var)
                out = (d * (n / (n - 1.0))) / np.sqrt(var / (n - 1.0))
            elif m == "ttest":
                n = p["n"]
                sd = np.sqrt(p["m2"] / (n - 1.0))
                out = (block - p["mean"]) / (sd / np.sqrt(n))
            elif m == "mad":
                out = (block - p["median"]) / p["mad"]
            elif m == "rank":
                out = np.empty_like(block)
                vals, less, cnts, ptr = p["vals"], p["less"], p["cnts"], p["ptr"]
                for j in range(block.shape[1]):
                    a, b = ptr[j], ptr[j + 1]
                    idx = np.searchsorted(vals[a:b], block[:, j]) + a
                    out[:, j] = less[idx] + (cnts[idx] + 1) / 2.0
            elif m == "doublerank":
                r = rank_codes(block, self.backend) / 2.0
                out = (r - p["median"]) / p["mad"]
            else:  # pragma: no cover
                raise AssertionError(m)
        if not self.keep.all():
            out[:, ~self.keep] = np.nan
        return out


def compute_signature(data, method: str = "scale", reference: Sequence | np.ndarray | None = None, layer: str | None = None,
              block_size: int = 5000, backend: str = "numba") -> pd.DataFrame:
    """The signature of every cell as a dense DataFrame (cells x genes): for small data and checks.

    ``reference`` (ttest only): a boolean mask over the cells or a list of cell names.
    """
    X, genes, cells, _ = as_matrix(data, layer)
    ref = resolve_reference(reference, cells)
    sig = Signature.fit(X, method, ref, block_size, backend)
    out = np.vstack([sig.transform(dense_rows(X, sel)) for sel in iter_blocks(X.shape[0], block_size)])
    return pd.DataFrame(out, index=cells, columns=genes)


def resolve_reference(reference, cells: pd.Index) -> np.ndarray | None:
    """Row indices of the reference cells from a boolean mask, cell names or indices (None: none)."""
    if reference is None:
        return None
    ref = np.asarray(reference)
    if ref.dtype == bool:
        if ref.shape != (len(cells),):
            raise InputError(f"reference mask has {ref.shape} entries for {len(cells)} cells")
        return np.flatnonzero(ref)
    if ref.dtype.kind in "iu":
        return ref.astype(np.int64)
    pos = cells.get_indexer(ref.astype(str))
    if (pos < 0).any():
        missing = ref[pos < 0]
        raise InputError(f"{len(missing)} reference cell name(s) are not in the data (e.g. {list(missing[:5])})")
    return pos.astype(np.int64)

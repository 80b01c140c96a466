"""Metacells of a stratum, the switch that decides whether to make them, and the null data.

Sparse UMI counts (80-90 % zeros) gave ARACNe's APMI empty networks: most regulator x target planes
are a pile of ties at zero. The field's answer (PISCES, pyviper) is to sum the counts of small
neighbourhoods of similar cells ("metacells") until each sample holds enough UMIs for the
regulators' transcripts to be detected, then to infer the network from the metacells. netpert's
default instead keeps the cells and scores them with the copula estimator
(:mod:`netpert.aracne.estimators`), which measured better on simulated counts (README); metacells
stay an option (``strata.metacells.enabled: true``).

Two methods, sharing one neighbour graph (:func:`neighbour_graph`: a PCA of the log-normalised
counts, exact Euclidean kNN with scikit-learn, every cell its own first neighbour):

``representative`` (default; the idea of pyviper's ``repr_metacells``)
    Each cell's neighbourhood is the shortest prefix of its neighbour list (itself first) whose
    summed UMIs reach ``target_umis``, capped at ``max_k`` neighbours. Up to ``max_cells``
    neighbourhoods are then picked greedily: at every step the one whose cells have been used
    least so far (the mean, over its cells, of how many picked metacells already hold each cell;
    ties broken in a seeded random order). Metacells so share as few cells as possible, and
    while uncovered cells remain every new metacell is made of them first.
``knn`` (PISCES-style)
    ``max_cells`` random cells, each summed with its ``k`` nearest neighbours (``k + 1`` cells).

Each metacell's summed counts are then scaled to the same total (the median of the metacells'
summed totals, so values stay on the count scale of the data; float32): library size no longer
varies between samples. obs of a metacell are those of its centre cell, plus ``n_merged`` (cells
summed) and ``umis`` (the summed total before scaling).

**mean_overlap**: the mean, over metacells, of the fraction of its cells that belong to at least
one other metacell (0: disjoint metacells; 1: every cell of every metacell is shared).
**cells_used**: the fraction of the stratum's cells that belong to at least one metacell.
"""

from __future__ import annotations

import logging

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from netpert.errors import InputError

log = logging.getLogger(__name__)

METHODS = ("representative", "knn")
#: PISCES' recommended depth of a metacell (pyviper's ``min_median_depth`` default), see metacells()
TARGET_UMIS = 10_000
#: holds_counts: the least fraction of zero entries for integer data to count as sparse UMI counts
MIN_ZERO_FRACTION = 0.5
#: values inspected by the integer test (the first nonzero ones)
_INTEGER_SAMPLE = 1_000_000


# --------------------------------------------------------------------------------------------- the switch
def holds_counts(adata: ad.AnnData, min_zero_fraction: float = MIN_ZERO_FRACTION) -> tuple[bool, str]:
    """Whether ``adata`` holds sparse integer counts (logged by :func:`netpert.data.stratify`).

    The rule looks at X itself (a user's h5ad can hold counts in X whatever ``uns`` says): X holds
    counts when its values are integers (the first million nonzero values are tested) AND at
    least ``min_zero_fraction`` (default 50 %) of its entries are zero. Normalised or continuous
    values (e.g. the embedded pbmc68k_reduced data, expm1 of log-normalised values) and dense
    integer data are not counts in this sense. Returns ``(decision, reason)``; the reason is one sentence.
    """
    X = adata.X
    n_entries = int(adata.n_obs) * int(adata.n_vars)
    if n_entries == 0:
        return False, "X is empty"
    if sp.issparse(X):
        vals = np.asarray(X.data)
        n_nonzero = int(np.count_nonzero(vals))
    else:
        vals = np.asarray(X).ravel()
        n_nonzero = int(np.count_nonzero(vals))
    nz = vals[: 4 * _INTEGER_SAMPLE]
    nz = nz[nz != 0][:_INTEGER_SAMPLE]
    integer = bool(np.all(np.isfinite(nz)) and np.array_equal(nz, np.round(nz)))
    zeros = 1.0 - n_nonzero / n_entries
    flag = adata.uns.get("netpert", {}).get("raw_counts") if isinstance(adata.uns.get("netpert"), dict) else None
    note = "" if flag is None else f" (uns['netpert']['raw_counts'] says {bool(flag)})"
    if not integer:
        return False, f"X holds non-integer values (normalised or continuous data, {zeros:.0%} zeros){note}"
    if zeros < min_zero_fraction:
        return False, (
            f"X holds integer counts with {zeros:.0%} zeros (< {min_zero_fraction:.0%}): dense, not sparse UMI counts{note}"
        )
    return True, (
        f"X holds integer counts with {zeros:.0%} zeros (>= {min_zero_fraction:.0%}): sparse UMI counts{note}"
    )


def parse_use_metacells(value) -> bool:
    """``True`` or ``False`` from a config value (booleans, or strings as ``--config`` gives)."""
    if value is None:
        return False
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    text = str(value).strip().lower()
    if text == "auto":
        raise InputError(
            "strata.metacells.enabled: auto is gone: on UMI counts, networks from the cells themselves with "
            "aracne.estimator auto (copula) measured better than any metacells (README, 'Networks against a known truth'); "
            "use false (the default) or true"
        )
    if text in ("true", "yes", "on", "1"):
        return True
    if text in ("false", "no", "off", "0"):
        return False
    raise InputError(f"strata.metacells.enabled is {value!r}; use true or false")


def _rng(seed) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    return np.random.default_rng(seed)


# --------------------------------------------------------------------------------------------- null data
#: cells are permuted within this many bins of equal size by total counts (see permute_genes)
DEPTH_BINS = 10


def permute_genes(adata: ad.AnnData, seed: int | np.random.Generator = 0, depth_bins: int = DEPTH_BINS) -> ad.AnnData:
    """``adata`` with each gene's values permuted independently across cells (float32 CSR X).

    Every column keeps its multiset of values (the gene's marginal) while the dependence between
    genes is destroyed. The permutation runs within ``depth_bins`` bins of cells of similar total
    counts (equal-size bins by rank of the cell's total; 1 = across all cells), so each gene keeps
    its relation to sequencing depth: genes that depend on each other only through a cell's library
    size (and the heteroscedasticity it brings into metacells) keep that dependence in the null,
    which therefore calibrates it away. Sparse-friendly: within a bin, a column's nonzero values are
    placed on a uniformly random set of the bin's rows in random order. Genes are drawn in var order
    from one stream, so the result is a function of ``seed`` alone.
    """
    rng = _rng(seed)
    X = adata.X
    X = sp.csc_matrix(X, dtype=np.float32) if sp.issparse(X) else sp.csc_matrix(np.asarray(X, dtype=np.float32))
    X.eliminate_zeros()
    X.sort_indices()
    n = X.shape[0]
    totals = np.asarray(X.sum(axis=1)).ravel()
    n_bins = int(max(1, min(depth_bins, n // 10)))
    order = np.argsort(totals, kind="stable")
    bin_of = np.empty(n, np.int64)
    bin_of[order] = (np.arange(n) * n_bins) // n
    members = [np.flatnonzero(bin_of == b) for b in range(n_bins)]
    indices = np.empty_like(X.indices)
    for j in range(X.shape[1]):
        a, b = X.indptr[j], X.indptr[j + 1]
        if b == a:
            continue
        rows = X.indices[a:b]
        if n_bins == 1:
            indices[a:b] = rng.choice(n, size=b - a, replace=False, shuffle=True)
            continue
        bins = bin_of[rows]
        for k in np.unique(bins):
            sel = np.flatnonzero(bins == k)
            indices[a + sel] = rng.choice(members[k], size=len(sel), replace=False, shuffle=True)
    P = sp.csc_matrix((X.data.copy(), indices, X.indptr.copy()), shape=X.shape)
    P.sort_indices()
    out = ad.AnnData(X=sp.csr_matrix(P, dtype=np.float32), obs=adata.obs.copy(), var=adata.var.copy())
    prov = dict(adata.uns.get("netpert", {}))
    prov["null"] = "each gene's values permuted independently across cells (netpert.metacells.permute_genes)"
    out.uns["netpert"] = prov
    return out


# --------------------------------------------------------------------------------------------- neighbours
def neighbour_graph(adata: ad.AnnData, n_neighbors: int, n_pcs: int = 30, seed: int = 0) -> np.ndarray:
    """``(n_cells, n_neighbors + 1)`` indices: each cell itself, then its nearest cells, nearest first.

    Distances are Euclidean on a PCA (scanpy, ``random_state=seed``) of the log-normalised counts
    (``normalize_total`` to 1e4, ``log1p``); the kNN is exact (scikit-learn), so the graph is a
    deterministic function of the data and ``seed``.
    """
    import scanpy as sc
    from sklearn.neighbors import NearestNeighbors

    n = adata.n_obs
    K = int(min(n_neighbors, n - 1))
    work = ad.AnnData(X=sp.csr_matrix(adata.X, dtype=np.float32), obs=pd.DataFrame(index=np.arange(n).astype(str)))
    sc.pp.normalize_total(work, target_sum=1e4)
    sc.pp.log1p(work)
    comps = int(max(1, min(n_pcs, n - 1, adata.n_vars - 1)))
    if comps >= 2:
        sc.pp.pca(work, n_comps=comps, random_state=int(seed))
        emb = np.asarray(work.obsm["X_pca"], dtype=np.float64)
    else:
        emb = work.X.toarray().astype(np.float64)
    nn = NearestNeighbors(n_neighbors=K + 1, algorithm="brute").fit(emb)
    _, idx = nn.kneighbors(emb)
    # each cell its own first neighbour (duplicated cells may list a twin first)
    is_self = idx == np.arange(n)[:, None]
    no_self = ~is_self.any(axis=1)
    is_self[no_self, -1] = True
    rest = idx[~is_self].reshape(n, K)
    return np.concatenate([np.arange(n)[:, None], rest], axis=1)


# --------------------------------------------------------------------------------------------- selection
def _representative_sets(nbr: np.ndarray, totals: np.ndarray, target_umis: float, max_cells: int, rng: np.random.Generator):
    """Greedy least-shared neighbourhoods: (centres, list of member arrays)."""
    n = nbr.shape[0]
    cum = np.cumsum(totals[nbr], axis=1)
    reached = cum >= target_umis
    size = np.where(reached.any(axis=1), reached.argmax(axis=1) + 1, nbr.shape[1])
    rows = np.repeat(np.arange(n), size)
    cols = np.concatenate([nbr[i, : size[i]] for i in range(n)])
    # cell -> candidate neighbourhoods holding it
    holders = sp.csr_matrix((np.ones(len(rows), dtype=np.int32), (cols, rows)), shape=(n, n))
    uses = np.zeros(n, dtype=np.int64)  # metacells picked so far holding each cell
    load = np.zeros(n, dtype=np.float64)  # sum of `uses` over each candidate's cells
    priority = rng.permutation(n).astype(np.float64)
    picked = np.zeros(n, dtype=bool)
    centres = []
    for _ in range(min(max_cells, n)):
        score = load / size
        score[picked] = np.inf
        best = score.min()
        i = int(np.argmin(np.where(score == best, priority, np.inf)))
        picked[i] = True
        centres.append(i)
        members = nbr[i, : size[i]]
        uses[members] += 1
        hit = np.concatenate([holders.indices[holders.indptr[c] : holders.indptr[c + 1]] for c in members])
        load += np.bincount(hit, minlength=n)
    centres = np.sort(np.asarray(centres, dtype=np.int64))
    return centres, [nbr[i, : size[i]] for i in centres]


def _knn_sets(nbr: np.ndarray, k: int, max_cells: int, rng: np.random.Generator):
    n = nbr.shape[0]
    centres = np.sort(rng.choice(n, size=min(max_cells, n), replace=False))
    return centres, [nbr[i, : k + 1] for i in centres]


def mean_overlap(members: list[np.ndarray], n_cells: int) -> float:
    """Mean over metacells of the fraction of its cells that belong to at least one other metacell."""
    if not members:
        return float("nan")
    uses = np.bincount(np.concatenate(members), minlength=n_cells)
    return float(np.mean([np.mean(uses[m] > 1) for m in members]))


# --------------------------------------------------------------------------------------------- metacells
def check_params(method, k, max_k, max_cells, target_umis, n_pcs):
    if method not in METHODS:
        raise InputError(f"strata.metacells.method is {method!r}; use one of {', '.join(METHODS)}")
    for key, val in (("k", k), ("max_k", max_k), ("max_cells", max_cells), ("n_pcs", n_pcs)):
        if not isinstance(val, (int, np.integer)) or isinstance(val, bool) or val < 1:
            raise InputError(f"strata.metacells.{key} is {val!r}; it must be a whole number >= 1")
    try:
        ok = float(target_umis) > 0 and np.isfinite(float(target_umis))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise InputError(
            f"strata.metacells.target_umis is {target_umis!r}; it must be a number > 0 (the UMIs a metacell should "
            f"reach, e.g. {TARGET_UMIS})"
        )


def metacells(
    adata: ad.AnnData,
    method: str = "representative",
    *,
    k: int = 5,
    max_k: int = 30,
    max_cells: int = 250,
    target_umis: float = TARGET_UMIS,
    n_pcs: int = 30,
    seed: int | np.random.Generator = 0,
    name: str = "stratum",
) -> ad.AnnData:
    """Aggregate the cells of ``adata`` (one stratum, counts in X) into at most ``max_cells`` metacells.

    ``method="representative"`` (default) sizes each neighbourhood so its summed UMIs reach
    ``target_umis`` (at most ``max_k`` neighbours plus the centre) and picks the neighbourhoods
    greedily so that they share as few cells as possible; ``method="knn"`` sums ``max_cells`` random
    cells with their ``k`` nearest neighbours (PISCES). See the module docstring for both and for
    the normalisation (every metacell scaled to the median summed total).

    ``target_umis`` defaults to 10 000: the median depth PISCES recommends for ARACNe on metacells
    (pyviper's ``repr_metacells`` default ``min_median_depth``), at which transcription factors
    expressed at a few per 10 000 transcripts are detected in most samples, and the scale of the
    usual CP10k normalisation. ``max_k=30`` keeps neighbourhoods local for shallow data (a cell of
    ~330 UMIs reaches the target with 30 neighbours).

    ``name`` (the stratum) only names it in error messages. Raises :class:`InputError` for bad
    parameters or a stratum with too few cells.
    """
    method = str(method).strip().lower()
    check_params(method, k, max_k, max_cells, target_umis, n_pcs)
    n = int(adata.n_obs)
    need = k + 2 if method == "knn" else 3
    if n < need:
        key = "strata.metacells.k" if method == "knn" else "strata.min_cells"
        raise InputError(
            f"stratum '{name}' has {n} cells, too few for {method} metacells (at least {need} needed; config key {key}); "
            "raise strata.min_cells so that such strata are skipped, lower strata.metacells.k, or set strata.metacells.enabled: false"
        )
    rng = _rng(seed)
    pca_seed = int(rng.integers(0, 2**31 - 1))
    X = sp.csr_matrix(adata.X, dtype=np.float32)
    totals = np.asarray(X.sum(axis=1), dtype=np.float64).ravel()
    nbr = neighbour_graph(adata, n_neighbors=(max_k if method == "representative" else k), n_pcs=n_pcs, seed=pca_seed)
    if method == "representative":
        centres, members = _representative_sets(nbr, totals, float(target_umis), int(max_cells), rng)
    else:
        centres, members = _knn_sets(nbr, int(k), int(max_cells), rng)
    rows = np.repeat(np.arange(len(members)), [len(m) for m in members])
    agg = sp.csr_matrix((np.ones(len(rows), dtype=np.float64), (rows, np.concatenate(members))), shape=(len(members), n))
    summed = sp.csr_matrix(agg @ X.astype(np.float64))
    umis = np.asarray(summed.sum(axis=1)).ravel()
    positive = umis > 0
    if not positive.all():
        log.warning("stratum '%s': %d metacells hold no counts and stay zero", name, int((~positive).sum()))
    norm_total = float(np.median(umis[positive])) if positive.any() else 0.0
    scale = np.where(positive, norm_total / np.where(positive, umis, 1.0), 0.0)
    Xn = sp.csr_matrix(sp.diags(scale) @ summed, dtype=np.float32)
    obs = adata.obs.iloc[centres].copy()
    obs["n_merged"] = np.array([len(m) for m in members], dtype=np.int64)
    obs["umis"] = umis.astype(np.float64)
    obs.index = [f"meta_{c}" for c in obs.index]
    out = ad.AnnData(X=Xn, obs=obs, var=adata.var.copy())
    overlap = mean_overlap(members, n)
    covered = float(np.mean(np.bincount(np.concatenate(members), minlength=n) > 0))
    reached = float(np.mean(umis >= float(target_umis)))
    info = {
        "method": method,
        "k": int(k),
        "max_k": int(max_k),
        "max_cells": int(max_cells),
        "target_umis": float(target_umis),
        "n_pcs": int(min(n_pcs, n - 1, adata.n_vars - 1)),
        "n_cells": n,
        "n_metacells": int(len(members)),
        "mean_overlap": overlap,
        "cells_used": covered,
        "median_n_merged": float(np.median(obs["n_merged"])),
        "median_umis": float(np.median(umis)),
        "fraction_reaching_target": reached,
        "normalised_total": norm_total,
        "definition_mean_overlap": "mean over metacells of the fraction of its cells that belong to at least one other metacell",
    }
    if isinstance(seed, (int, np.integer)):
        info["seed"] = int(seed)
    out.uns["netpert"] = dict(adata.uns.get("netpert", {}))
    out.uns["netpert"]["metacells"] = info
    log.info(
        "stratum '%s': %d %s metacells from %d cells (median %g cells, median %.0f UMIs, %.0f%% reach %g; "
        "mean overlap %.2f, %.0f%% of cells used)",
        name, len(members), method, n, info["median_n_merged"], info["median_umis"], 100 * reached, float(target_umis),
        overlap, 100 * covered,
    )
    return out

"""aREA (analytic rank-based enrichment analysis) exactly as R viper computes it.

For every cell (R: sample column) and regulon:

1. rank the signature over the network's genes (average ranks for ties), ``t2 = rank / (n + 1)``;
2. one-tail quantiles ``t1 = |t2 - 0.5| * 2``, shifted by ``(1 - max(t1)) / 2``, where the
   maximum runs over the whole matrix in R's *matrix* path (at most 1000 distinct targets and no
   NaN) and over each sample in R's *loop* path (more targets, or NaN genes): ``tail="auto"``
   follows that rule, ``"global"`` / ``"column"`` force one;
3. inverse normal of both: ``q2 = qnorm(t2)``, ``q1 = qnorm(t1)``;
4. weights ``w = likelihood / max(likelihood)`` per regulon, NES factor ``sqrt(sum(w^2))``, then
   ``w / sum(w)``;
5. ``sum1 = sum(mor * w * q2)`` (two-tail, signed by the mode of regulation),
   ``sum2 = sum((1 - |mor|) * w * q1)`` (one-tail), ES ``= (|sum1| + max(sum2, 0)) * sign(sum1)``
   (sign 0 -> +1), NES ``= ES * factor``.

``eset_filter`` keeps only the genes named in the regulon table (regulators and targets), before
the minimum-size filter, as R does. Two backends: ``numba`` (ranks and quantile lookup tables in a
parallel kernel, the enrichment as a sparse weighted sum per regulon) and ``python`` (scipy ranks,
``scipy.special.ndtri`` and dense matrix products, a literal transcription of R's matrix path).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numba
import numpy as np
import pandas as pd
from scipy.special import ndtri
from scipy.stats import rankdata

from netpert.errors import InputError
from netpert.viper._kernels import area_block_numba, extreme_ties_numba

log = logging.getLogger(__name__)

BACKENDS = ("numba", "python")
MATRIX_PATH_MAX_TARGETS = 1000


@dataclass
class Network:
    """One regulon table prepared for a given signature gene set (see :func:`prepare_network`)."""

    name: str
    regulators: list
    genes: np.ndarray          # (n,) signature columns ranked for this network
    targets: np.ndarray        # (T,) positions within ``genes`` of the union of targets
    ptr: np.ndarray            # (R+1,) CSR row pointers over edges
    tgt: np.ndarray            # (E,) index into ``targets``
    mor: np.ndarray            # (E,)
    lik: np.ndarray            # (E,) raw likelihood
    tail: str                  # "global" (R matrix path) or "column" (R loop path)
    sizes: pd.Series = field(default=None)  # regulon sizes after gene filtering (before minsize)
    w2: np.ndarray = field(init=False)
    w1: np.ndarray = field(init=False)
    factor: np.ndarray = field(init=False)

    def __post_init__(self):
        self.w2, self.w1, self.factor = edge_weights(self.ptr, self.mor, self.lik)

    @property
    def n_genes(self) -> int:
        return len(self.genes)


def edge_weights(ptr: np.ndarray, mor: np.ndarray, lik: np.ndarray):
    """``(mor * w, (1 - |mor|) * w, factor)`` with ``w = lik / max / sum`` per regulon (R's aREA)."""
    w2 = np.empty_like(lik)
    w1 = np.empty_like(lik)
    factor = np.empty(len(ptr) - 1)
    for r in range(len(ptr) - 1):
        a, b = ptr[r], ptr[r + 1]
        w = lik[a:b] / lik[a:b].max()
        factor[r] = np.sqrt(np.sum(w**2))
        w = w / np.sum(w)
        w2[a:b] = mor[a:b] * w
        w1[a:b] = (1 - np.abs(mor[a:b])) * w
    return w2, w1, factor


def prepare_network(regulons: pd.DataFrame, genes: pd.Index, keep: np.ndarray | None = None, eset_filter: bool = False,
                    min_targets: int = 25, tail: str = "auto", name: str = "network") -> Network:
    """Match a validated regulon table to the signature's genes, as R viper does.

    ``genes``: the signature's gene names (columns); ``keep``: genes with a defined signature
    (None: all). Steps: ``eset_filter`` keeps genes named in the table (regulators and targets);
    targets are restricted to those genes; regulons smaller than ``min_targets`` are dropped
    (InputError when none is left, naming the sizes seen); genes without a signature are then left
    out of the ranking and of the regulons (R's loop path, per-sample maximum).
    """
    if tail not in ("auto", "global", "column"):
        raise InputError(f"unknown tail mode {tail!r}; use 'auto', 'global' or 'column'")
    genes = pd.Index(genes)
    in_net = np.ones(len(genes), dtype=bool)
    if eset_filter:
        named = pd.Index(pd.unique(np.concatenate([regulons["regulator"].to_numpy(), regulons["target"].to_numpy()])))
        in_net = genes.isin(named)
    kept = np.flatnonzero(in_net)
    pos_in_kept = pd.Series(np.arange(len(kept)), index=genes[kept])
    edges = regulons.loc[regulons["target"].isin(pos_in_kept.index)]
    regs_all = pd.unique(regulons["regulator"])
    sizes = edges.groupby("regulator", sort=False).size().reindex(regs_all, fill_value=0)
    ok = sizes.index[sizes.to_numpy() >= min_targets]
    if len(ok) == 0:
        raise InputError(
            f"{name}: no regulon has at least min_targets={min_targets} targets in the data "
            f"(sizes after matching the data's genes: min {int(sizes.min()) if len(sizes) else 0}, "
            f"median {float(sizes.median()) if len(sizes) else 0:g}, max {int(sizes.max()) if len(sizes) else 0} "
            f"over {len(sizes)} regulon(s)); lower min_targets or check that gene names match"
        )
    dropped = len(sizes) - len(ok)
    if dropped:
        log.info("%s: %d of %d regulon(s) have fewer than %d targets in the data and are dropped", name, dropped, len(sizes), min_targets)
    has_nan = False
    if keep is not None and not keep[kept].all():
        has_nan = True
        good = genes[kept][keep[kept]]
        kept = kept[keep[kept]]
        pos_in_kept = pd.Series(np.arange(len(kept)), index=genes[kept])
        edges = edges.loc[edges["target"].isin(good)]
    edges = edges.loc[edges["regulator"].isin(ok)]
    present = set(edges["regulator"])
    regs = [r for r in ok if r in present]
    if len(regs) < len(ok):
        lost = [r for r in ok if r not in present]
        log.warning("%s: regulon(s) %s have no target with a defined signature and are dropped", name, lost[:10])
        if not regs:
            raise InputError(f"{name}: no regulon keeps a target with a defined signature (all its targets have zero spread)")
    # edges grouped by regulator in regulator order, file order within a regulator
    order = pd.Series(np.arange(len(regs)), index=regs)
    edges = edges.assign(_r=edges["regulator"].map(order).to_numpy()).sort_values("_r", kind="stable")
    tpos_all = pos_in_kept.reindex(edges["target"]).to_numpy()
    union, tgt = np.unique(tpos_all, return_inverse=True)
    # R's union order is first appearance; it only matters for summation order, not for results
    counts = np.bincount(edges["_r"].to_numpy(), minlength=len(regs))
    ptr = np.concatenate(([0], np.cumsum(counts)))
    if tail == "auto":
        tail = "column" if (has_nan or len(union) > MATRIX_PATH_MAX_TARGETS) else "global"
    return Network(
        name=name, regulators=list(regs), genes=kept.astype(np.int64), targets=union.astype(np.int64), ptr=ptr.astype(np.int64),
        tgt=tgt.astype(np.int64), mor=edges["mor"].to_numpy(np.float64), lik=edges["likelihood"].to_numpy(np.float64),
        tail=tail, sizes=sizes,
    )


# --------------------------------------------------------------------------------------------- tails
def tail_max_from_codes(cmin, cmax, n: int):
    """R's ``max(|rank / (n + 1) - 0.5| * 2)`` from the smallest and largest rank codes (2 * rank)."""
    a = np.abs((np.asarray(cmin) * 0.5) / (n + 1.0) - 0.5) * 2.0
    b = np.abs((np.asarray(cmax) * 0.5) / (n + 1.0) - 0.5) * 2.0
    return np.maximum(a, b)


def cell_tail_max(sig_block: np.ndarray, net: Network, backend: str = "numba") -> np.ndarray:
    """Per-cell maximum of the one-tail quantiles (depends only on the ties at both extremes)."""
    n = len(net.genes)
    if backend == "numba":
        k_lo, k_hi = extreme_ties_numba(np.ascontiguousarray(sig_block, dtype=np.float64), net.genes)
    else:
        x = sig_block if n == sig_block.shape[1] else sig_block[:, net.genes]
        k_lo = (x == x.min(axis=1, keepdims=True)).sum(axis=1)
        k_hi = (x == x.max(axis=1, keepdims=True)).sum(axis=1)
    return tail_max_from_codes(1 + k_lo, 2 * n - k_hi + 1, n)


def best_tail_max(n: int) -> float:
    """The largest possible tail maximum (a cell with a unique minimum or maximum)."""
    return float(tail_max_from_codes(2, 2 * n, n))


def quantile_luts(n: int, m: float):
    """qnorm lookup tables over rank codes 0..2n+1: one-tail (for tail maximum m) and two-tail."""
    codes = np.arange(2 * n + 2, dtype=np.float64)
    t2 = (codes * 0.5) / (n + 1.0)
    t1 = np.abs(t2 - 0.5) * 2.0 + (1.0 - m) / 2.0
    with np.errstate(divide="ignore", invalid="ignore"):
        q1 = ndtri(np.clip(t1, 0, 1))
        q2 = ndtri(t2)
    q1[~np.isfinite(q1)] = 0.0  # codes 0 and 2n+1 never occur
    q2[~np.isfinite(q2)] = 0.0
    return q1, q2


# --------------------------------------------------------------------------------------------- kernels
def area_block(sig_block: np.ndarray, net: Network, m_global: float | None = None, backend: str = "numba") -> np.ndarray:
    """NES (cells x regulators) of one dense signature block for one prepared network.

    ``m_global``: the tail maximum over all cells (needed when ``net.tail == "global"``; None
    takes it from this block, which is exact when the block holds every cell).
    """
    if backend not in BACKENDS:
        raise InputError(f"unknown backend {backend!r}; use one of {list(BACKENDS)}")
    sig_block = np.ascontiguousarray(sig_block, dtype=np.float64)
    n = net.n_genes
    column = net.tail == "column"
    if not column and m_global is None:
        m_global = float(cell_tail_max(sig_block, net, backend).max())
    if backend == "python":
        return _area_python(sig_block, net, None if column else m_global)
    m_lut = best_tail_max(n) if column else m_global
    q1, q2 = quantile_luts(n, m_lut)
    out = np.empty((sig_block.shape[0], len(net.regulators)))
    area_block_numba(sig_block, net.genes, net.targets, net.ptr, net.tgt, net.w2, net.w1, net.factor, q1, q2, m_lut, column,
                     4 * numba.get_num_threads(), out)
    return out


def _area_python(sig_block: np.ndarray, net: Network, m_global: float | None) -> np.ndarray:
    """Reference: R's aREA matrix path (per-row maximum when ``m_global`` is None)."""
    x = sig_block[:, net.genes]
    n = x.shape[1]
    t2 = rankdata(x, axis=1) / (n + 1)
    t1 = np.abs(t2 - 0.5) * 2
    m = t1.max(axis=1, keepdims=True) if m_global is None else m_global
    t1 = t1 + (1 - m) / 2
    q1 = ndtri(t1[:, net.targets])
    q2 = ndtri(t2[:, net.targets])
    n_reg = len(net.regulators)
    W2 = np.zeros((len(net.targets), n_reg))
    W1 = np.zeros((len(net.targets), n_reg))
    reg_of_edge = np.repeat(np.arange(n_reg), np.diff(net.ptr))
    W2[net.tgt, reg_of_edge] = net.w2
    W1[net.tgt, reg_of_edge] = net.w1
    sum1 = q2 @ W2
    sum2 = q1 @ W1
    ss = np.sign(sum1)
    ss[ss == 0] = 1
    es = (np.abs(sum1) + sum2 * (sum2 > 0)) * ss
    return es * net.factor


def area_signature_vector(values: np.ndarray, ptr: np.ndarray, tpos: np.ndarray, mor: np.ndarray, lik: np.ndarray):
    """Single-sample aREA ``(es, nes)`` for one signature vector and regulons given as CSR rows of
    positions into ``values`` (used by the pleiotropy correction and msviper)."""
    n = len(values)
    t2 = rankdata(values) / (n + 1)
    t1 = np.abs(t2 - 0.5) * 2
    t1 = t1 + (1 - t1.max()) / 2
    q1 = ndtri(t1)
    q2 = ndtri(t2)
    w2, w1, factor = edge_weights(ptr, mor, lik)
    reg = np.repeat(np.arange(len(ptr) - 1), np.diff(ptr))
    sum1 = np.bincount(reg, weights=w2 * q2[tpos], minlength=len(ptr) - 1)
    sum2 = np.bincount(reg, weights=w1 * q1[tpos], minlength=len(ptr) - 1)
    ss = np.where(sum1 < 0, -1.0, 1.0)
    es = (np.abs(sum1) + np.where(sum2 > 0, sum2, 0.0)) * ss
    return es, es * factor

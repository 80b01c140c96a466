"""Data processing inequality (DPI) on a thresholded regulator -> target network.

ARACNe-AP's rule (``DPI.java``; the fixture README, fact 4): for each unordered regulator pair
(a, b) joined by an edge, with ``tftf`` the MI of that edge, and for each target t of both:
remove a->t if ``MI(a,t) < tftf`` and ``MI(a,t) < MI(b,t)``; else remove b->t if
``MI(b,t) < tftf`` and ``MI(b,t) < MI(a,t)``. Ties remove nothing. Every triangle is judged on the
pre-DPI values and removals do not cascade (an edge marked for removal still takes part in other
triangles); regulator-regulator edges can be removed as targets of a third regulator.

ARACNe-AP visits a pair only when the edge a->b exists for the regulator a that comes first in
Java HashMap order (an order without meaning) and uses MI(a->b) as ``tftf``. Here "first" is the
lower gene index: the pair is used if a->b passed the threshold (``tftf`` = MI(a->b)), or else if
b->a did (``tftf`` = MI(b->a)). MI(a,b) and MI(b,a) differ at most in the last bit, so this only
matters at exact ties.

With ``tolerance`` (original ARACNe, Margolin et al. 2006, as minet's ``aracne``), an edge is
removed only if it is weaker than both others by more than that fraction:
``MI(a,t) < (1 - tolerance) * min(tftf, MI(b,t))``. ``tolerance=0`` is ARACNe-AP's rule.

Edges are given as integer arrays ``src`` (gene index of the regulator), ``dst`` (gene index of the
target) and ``mi``; :func:`dpi_keep` returns a boolean keep mask in input order.
"""

from __future__ import annotations

import numba
import numpy as np

from netpert.jit import njit


@njit(cache=True)
def _csr(src, dst, n_genes):
    key = src * n_genes + dst
    order = np.argsort(key, kind="mergesort")
    ptr = np.zeros(n_genes + 1, np.int64)
    for e in range(src.shape[0]):
        ptr[src[e] + 1] += 1
    for g in range(n_genes):
        ptr[g + 1] += ptr[g]
    return order, ptr


@njit(cache=True)
def _find(targets, lo, hi, t):
    # binary search of t in the sorted targets[lo:hi]; returns position or -1
    while lo < hi:
        mid = (lo + hi) // 2
        v = targets[mid]
        if v < t:
            lo = mid + 1
        elif v > t:
            hi = mid
        else:
            return mid
    return -1


@njit(cache=True, nogil=True)
def _dpi_edge(e, a, b, tftf, t_sorted, m_sorted, ptr, factor, remove):
    # the triangles of regulator edge e = (a -> b) with MI tftf over the common targets of a and b
    if a > b:
        # the pair is handled from b's side when the edge b->a exists
        if _find(t_sorted, ptr[b], ptr[b + 1], a) >= 0:
            return
        a, b = b, a
    i = ptr[a]
    i_end = ptr[a + 1]
    j = ptr[b]
    j_end = ptr[b + 1]
    lim = tftf * factor
    while i < i_end and j < j_end:
        ti = t_sorted[i]
        tj = t_sorted[j]
        if ti < tj:
            i += 1
        elif tj < ti:
            j += 1
        else:
            v1 = m_sorted[i]
            v2 = m_sorted[j]
            if v1 < lim and v1 < v2 * factor:
                remove[i] = True
            elif v2 < lim and v2 < v1 * factor:
                remove[j] = True
            i += 1
            j += 1


@njit(cache=True, parallel=True)
def _dpi_par(s_sorted, t_sorted, m_sorted, ptr, is_reg, factor, remove):
    for e in numba.prange(s_sorted.shape[0]):
        if is_reg[t_sorted[e]] and s_sorted[e] != t_sorted[e]:
            _dpi_edge(e, s_sorted[e], t_sorted[e], m_sorted[e], t_sorted, m_sorted, ptr, factor, remove)


@njit(cache=True)
def _dpi_ser(s_sorted, t_sorted, m_sorted, ptr, is_reg, factor, remove):
    for e in range(s_sorted.shape[0]):
        if is_reg[t_sorted[e]] and s_sorted[e] != t_sorted[e]:
            _dpi_edge(e, s_sorted[e], t_sorted[e], m_sorted[e], t_sorted, m_sorted, ptr, factor, remove)


def _dpi_numba(src, dst, mi, is_reg, n_genes, factor):
    order, ptr = _csr(src, dst, n_genes)
    remove = np.zeros(len(src), np.bool_)  # in sorted positions; concurrent writes only ever set True
    run = _dpi_par if len(src) >= 20_000 else _dpi_ser
    run(src[order], dst[order], mi[order], ptr, is_reg, factor, remove)
    keep = np.ones(len(src), dtype=bool)
    keep[order[remove]] = False
    return keep


def _dpi_python(src, dst, mi, is_reg, factor):
    net: dict[int, dict[int, float]] = {}
    for a, t, v in zip(src.tolist(), dst.tolist(), mi.tolist()):
        net.setdefault(a, {})[t] = v
    removed: set[tuple[int, int]] = set()
    regs = sorted(net)
    for a in regs:
        for b in regs:
            if b <= a or not is_reg[b] or not is_reg[a]:
                continue
            if b in net[a]:
                tftf = net[a][b]
            elif a in net[b]:
                tftf = net[b][a]
            else:
                continue
            for t in set(net[a]) & set(net[b]):
                v1 = net[a][t]
                v2 = net[b][t]
                if v1 < tftf * factor and v1 < v2 * factor:
                    removed.add((a, t))
                elif v2 < tftf * factor and v2 < v1 * factor:
                    removed.add((b, t))
    return np.array([(a, t) not in removed for a, t in zip(src.tolist(), dst.tolist())], dtype=bool)


def dpi_keep(src, dst, mi, n_genes: int, reg_genes, tolerance: float = 0.0, backend: str = "numba") -> np.ndarray:
    """Keep mask of the DPI over edges ``src[k] -> dst[k]`` with MI ``mi[k]`` (gene indices < ``n_genes``).

    ``reg_genes`` are the gene indices of all regulators. Edges must be unique (no duplicated
    regulator-target pair) and ``src`` must be regulators.
    """
    if not 0.0 <= tolerance < 1.0:
        raise ValueError(f"DPI tolerance must be in [0, 1), got {tolerance}")
    src = np.ascontiguousarray(src, dtype=np.int64)
    dst = np.ascontiguousarray(dst, dtype=np.int64)
    mi = np.ascontiguousarray(mi, dtype=np.float64)
    is_reg = np.zeros(n_genes, dtype=np.bool_)
    is_reg[np.asarray(reg_genes, dtype=np.int64)] = True
    factor = 1.0 - float(tolerance)
    if len(src) == 0:
        return np.ones(0, dtype=bool)
    if backend == "numba":
        return _dpi_numba(src, dst, mi, is_reg, int(n_genes), factor)
    if backend == "python":
        return _dpi_python(src, dst, mi, is_reg, factor)
    raise ValueError(f"unknown backend {backend!r}; use 'numba' or 'python'")

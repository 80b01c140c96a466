"""Adaptive-partitioning mutual information (APMI) exactly as ARACNe-AP computes it.

Definition (ARACNe-AP ``MI.computeMI``, checked against ``fixtures/aracne/mi.tsv``):

* Each gene is rank-transformed over the samples: rank 1 is the largest value, ranks run 1..n
  (ties are broken before, see :func:`netpert.aracne.prepare.rank_matrix`).
* The rank square starts as the cell ``[0, n] x [0, n]``. A cell with ``m`` points splits at
  ``sx = (xlo + xhi) // 2`` and ``sy = (ylo + yhi) // 2`` (integer midpoints); a point is in the
  lower half of an axis when its rank is ``<= split``. Quadrants: Q1 = (x<=sx, y<=sy),
  Q2 = (x<=sx, y>sy), Q3 = (x>sx, y>sy), Q4 = (x>sx, y<=sy).
* Uniformity test ``chi2 = sum_k (c_k - m/4)^2 / (m/4)``. When ``chi2 > 7.815`` (or at the top
  cell, which always splits) each quadrant with more than 2 points is partitioned again and a
  quadrant with 0, 1 or 2 points is a leaf; otherwise the whole cell is a leaf.
* A leaf with ``c`` points and widths ``wx, wy`` (in rank units) contributes ``c*ln(c/(wx*wy))``
  (0 when empty); ``MI = sum(leaves)/n + ln(n)`` in nats.

The numba kernel walks the partition tree with an explicit stack of frames (no recursion, no
allocation per pair) and adds the leaves in the same nested order as ARACNe-AP's recursion, so
the floating-point sums are the same operations as in Java: on the fixture every one of the 5980
values is bit-identical to ARACNe-AP's. Instead of moving points into quadrant arrays it counts
the cells of the first levels with precomputed per-gene bitsets and deeper cells with
branch-free scans (see below). :func:`apmi_python` is the plain-Python recursive reference of the
same function; the tests hold both equal to each other and to ARACNe-AP's own output.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numba import types
from numba.extending import intrinsic

from netpert.jit import njit

#: chi-square (3 degrees of freedom, 95%) cut-off hard-coded in ARACNe-AP
CHI2_CUTOFF = 7.815
#: genes per parallel work item of the numba block kernel
_GENE_BLOCK = 64
#: frames of the explicit stack; the partition depth is at most log2(n) + 2 for a permutation
_MAX_DEPTH = 64
#: below this much work (array elements) the kernels run serially: on a busy machine waking the
#: thread pool can take milliseconds
_PARALLEL_MIN_WORK = 200_000


# --------------------------------------------------------------------------------------------
# plain Python reference
# --------------------------------------------------------------------------------------------
def _information(c: float, wx: float, wy: float) -> float:
    if c == 0:
        return 0.0
    return c * math.log(c / (wx * wy))


def _apmi_cell(xs: list, ys: list, xlo: int, xhi: int, ylo: int, yhi: int, first: bool) -> float:
    sx = (xlo + xhi) // 2
    sy = (ylo + yhi) // 2
    q = ([], [], [], [])
    for x, y in zip(xs, ys):
        if x <= sx:
            q[0 if y <= sy else 1].append((x, y))
        else:
            q[2 if y > sy else 3].append((x, y))
    m = len(xs)
    expected = m / 4.0
    tst = sum((len(qq) - expected) * (len(qq) - expected) for qq in q) / expected
    if not (tst > CHI2_CUTOFF or first):
        return 0.0 + _information(m, xhi - xlo, yhi - ylo)
    bounds = ((xlo, sx, ylo, sy), (xlo, sx, sy, yhi), (sx, xhi, sy, yhi), (sx, xhi, ylo, sy))
    mi = 0.0
    for pts, (a, b, c, d) in zip(q, bounds):
        if len(pts) > 2:
            mi += _apmi_cell([p[0] for p in pts], [p[1] for p in pts], a, b, c, d, False)
        else:
            mi += _information(len(pts), b - a, d - c)
    return mi


def apmi_python(x_ranks, y_ranks) -> float:
    """APMI of two rank vectors (plain Python reference, same arithmetic as ARACNe-AP).

    ``x_ranks``/``y_ranks`` are integer ranks of the same samples (1..n, 1 = largest; ARACNe-AP's
    threshold null uses 0..n-1, which this function accepts as well).
    """
    xs = [int(v) for v in x_ranks]
    ys = [int(v) for v in y_ranks]
    n = len(xs)
    return _apmi_cell(xs, ys, 0, n, 0, n, True) / n + math.log(n)


def mi_block_python(ranks: np.ndarray, reg_rows: np.ndarray) -> np.ndarray:
    """MI of each regulator row against every row of ``ranks`` (reference of :func:`mi_block_numba`).

    ``ranks`` is (genes, samples); the result is (len(reg_rows), genes), NaN where target == regulator.
    """
    out = np.full((len(reg_rows), ranks.shape[0]), np.nan)
    rows = [list(map(int, r)) for r in ranks]
    for i, r in enumerate(reg_rows):
        for g in range(ranks.shape[0]):
            if g != r:
                out[i, g] = apmi_python(rows[r], rows[g])
    return out


# --------------------------------------------------------------------------------------------
# numba kernel
# --------------------------------------------------------------------------------------------
# Two tricks make the kernel fast without changing a single count:
#
# 1. The split points depend only on n: every cell at depth d of the partition tree is one of the
#    2^d x 2^d intervals obtained by halving [0, n] d times with integer midpoints, and a rank r
#    lies in the lower half of a cell exactly when it lies in the lower interval. So each gene
#    gets, once, a bitset over the samples for each of its 4 depth-2 and 8 depth-3 intervals
#    (:func:`rank_bitsets`). The number of points of a pair in the cell (interval i of x, interval
#    j of y) is then ``popcount(bits_x[i] & bits_y[j])`` over n/64 words: 16 such counts give the
#    quadrant counts of the top cell and of the four depth-1 cells, and a depth-2 cell that splits
#    costs 4 more. For independent genes (most pairs) the tree rarely goes deeper.
# 2. Deeper cells are counted from ``ybx`` (``ybx[x_rank] = y_rank``, -1 where no sample has that x
#    rank; built only when first needed): the points of a cell with x-range (xlo, xhi] are found by
#    scanning ``ybx[xlo+1 .. xhi]`` and keeping the y ranks inside (ylo, yhi] (a cell whose lower
#    bound is 0 also holds rank 0, which only ARACNe-AP's 0-based threshold null uses). These are
#    branch-free loops; no point is ever moved.
# frame layout (int64): xlo, xhi, ylo, yhi, sx, sy, c1, c2, c3, c4, next quadrant, depth, ix, iy
_F_SIZE = 14
#: rows of a gene's bitsets: 4 depth-2 intervals, then 8 depth-3 intervals
_BIT_ROWS = 12


@intrinsic
def _popcount(typingctx, x):
    """Number of set bits of a uint64 (LLVM ``ctpop``)."""
    if x != types.uint64:
        return None

    def codegen(context, builder, signature, args):
        return builder.ctpop(args[0])

    return types.uint64(types.uint64), codegen


@njit(cache=True, nogil=True)
def interval_lut(n, depth):
    """Index of the depth-``depth`` interval of [0, n] holding each rank 0..n (midpoint halving)."""
    lut = np.empty(n + 1, np.int32)
    for r in range(n + 1):
        lo = 0
        hi = n
        idx = 0
        for _ in range(depth):
            s = (lo + hi) // 2
            if r <= s:
                idx = 2 * idx
                hi = s
            else:
                idx = 2 * idx + 1
                lo = s
        lut[r] = idx
    return lut


@njit(cache=True, nogil=True)
def _bitsets_row(ranks, g, lut2, lut3, out):
    for s in range(ranks.shape[1]):
        r = ranks[g, s]
        bit = np.uint64(1) << np.uint64(s & 63)
        w = s >> 6
        out[g, lut2[r], w] |= bit
        out[g, 4 + lut3[r], w] |= bit


@njit(cache=True, parallel=True)
def _bitsets_par(ranks, lut2, lut3, out):
    for g in numba.prange(ranks.shape[0]):
        _bitsets_row(ranks, g, lut2, lut3, out)


@njit(cache=True)
def _bitsets_ser(ranks, lut2, lut3, out):
    for g in range(ranks.shape[0]):
        _bitsets_row(ranks, g, lut2, lut3, out)


def rank_bitsets(ranks: np.ndarray) -> np.ndarray:
    """Per row of ``ranks`` (rows x samples): bitsets over the samples of its depth-2 and depth-3 intervals.

    Returns uint64 (rows, 12, ceil(n/64)); rows 0-3 are the depth-2 intervals, 4-11 the depth-3 ones.
    """
    n = ranks.shape[1]
    out = np.zeros((ranks.shape[0], _BIT_ROWS, (n + 63) // 64), np.uint64)
    fill = _bitsets_par if ranks.size >= _PARALLEL_MIN_WORK else _bitsets_ser
    fill(ranks, interval_lut(n, 2), interval_lut(n, 3), out)
    return out


@njit(cache=True, nogil=True, inline="always")
def _pair_count(bsx, i, bsy, j):
    c = np.uint64(0)
    for w in range(bsx.shape[1]):
        c += _popcount(bsx[i, w] & bsy[j, w])
    return np.int64(c)


@njit(cache=True, nogil=True, inline="always")
def _info_nb(c, wx, wy):
    if c == 0:
        return 0.0
    cf = float(c)
    return cf * math.log(cf / (float(wx) * float(wy)))


@njit(cache=True, nogil=True, inline="always")
def _count_column(ybx, xs, xe, yl, yh, sy):
    """Points with x rank in [xs, xe] and y rank in [yl, sy] (low) and (sy, yh] (high)."""
    low = 0
    high = 0
    for r in range(xs, xe + 1):
        y = ybx[r]
        low += (y >= yl) & (y <= sy)
        high += (y > sy) & (y <= yh)
    return low, high


@njit(cache=True, nogil=True)
def apmi_kernel(x, y, bsx, bsy, ws_ybx, frames, accs, hist):
    """APMI of rank vectors ``x`` and ``y`` using their interval bitsets and caller-provided scratch space.

    ``bsx``/``bsy`` are the (12, words) bitsets of ``x``/``y`` (:func:`rank_bitsets`); ``ws_ybx`` is an
    int32 array of length n + 1, ``frames`` a (64, 14) int64 array, ``accs`` a (64,) float64 array
    and ``hist`` a (20,) int64 array; all are overwritten. Ranks must be a permutation of 1..n
    (or 0..n-1).
    """
    n = x.shape[0]
    # 4x4 counts of the depth-2 cells (hist[4 + 4*i + j]), then the 2x2 depth-1 ones (hist[2*i + j])
    for i in range(4):
        for j in range(4):
            hist[4 + 4 * i + j] = _pair_count(bsx, i, bsy, j)
    for i in range(2):
        for j in range(2):
            b = 4 + 8 * i + 2 * j
            hist[2 * i + j] = hist[b] + hist[b + 1] + hist[b + 4] + hist[b + 5]
    have_ybx = False
    depth = 0
    total = 0.0
    xlo = 0
    xhi = n
    ylo = 0
    yhi = n
    d = 0
    ix = 0
    iy = 0
    first = True
    while True:
        # enter the cell (xlo, xhi] x (ylo, yhi] at tree depth d, interval indices (ix, iy)
        sx = (xlo + xhi) // 2
        sy = (ylo + yhi) // 2
        if d == 0:
            c1 = hist[0]
            c2 = hist[1]
            c3 = hist[3]
            c4 = hist[2]
        elif d == 1:
            b = 4 + 8 * ix + 2 * iy
            c1 = hist[b]
            c2 = hist[b + 1]
            c3 = hist[b + 5]
            c4 = hist[b + 4]
        elif d == 2:
            c1 = _pair_count(bsx, 4 + 2 * ix, bsy, 4 + 2 * iy)
            c2 = _pair_count(bsx, 4 + 2 * ix, bsy, 5 + 2 * iy)
            c3 = _pair_count(bsx, 5 + 2 * ix, bsy, 5 + 2 * iy)
            c4 = _pair_count(bsx, 5 + 2 * ix, bsy, 4 + 2 * iy)
        else:
            if not have_ybx:
                for r in range(n + 1):
                    ws_ybx[r] = -1
                for s in range(n):
                    ws_ybx[x[s]] = y[s]
                have_ybx = True
            xs = 0 if xlo == 0 else xlo + 1
            yl = 0 if ylo == 0 else ylo + 1
            c1, c2 = _count_column(ws_ybx, xs, sx, yl, yhi, sy)
            c4, c3 = _count_column(ws_ybx, sx + 1, min(xhi, n), yl, yhi, sy)
        m = c1 + c2 + c3 + c4
        expected = m / 4.0
        d1 = c1 - expected
        d2 = c2 - expected
        d3 = c3 - expected
        d4 = c4 - expected
        tst = (d1 * d1 + d2 * d2 + d3 * d3 + d4 * d4) / expected
        if (tst > CHI2_CUTOFF or first) and depth < _MAX_DEPTH:
            first = False
            f = frames[depth]
            f[0] = xlo
            f[1] = xhi
            f[2] = ylo
            f[3] = yhi
            f[4] = sx
            f[5] = sy
            f[6] = c1
            f[7] = c2
            f[8] = c3
            f[9] = c4
            f[10] = 0
            f[11] = d
            f[12] = ix
            f[13] = iy
            accs[depth] = 0.0
            depth += 1
        else:  # the whole cell is a leaf of its parent
            accs[depth - 1] += 0.0 + _info_nb(m, xhi - xlo, yhi - ylo)
            frames[depth - 1, 10] += 1
        # walk to the next quadrant to enter, closing finished frames on the way
        entered = False
        while depth > 0:
            top = depth - 1
            f = frames[top]
            q = f[10]
            if q == 4:
                val = accs[top]
                depth -= 1
                if depth == 0:
                    total = val
                else:
                    accs[depth - 1] += val
                    frames[depth - 1, 10] += 1
                continue
            c = f[6 + q]
            if q == 0:
                a, b, cl, ch, qx, qy = f[0], f[4], f[2], f[5], 0, 0
            elif q == 1:
                a, b, cl, ch, qx, qy = f[0], f[4], f[5], f[3], 0, 1
            elif q == 2:
                a, b, cl, ch, qx, qy = f[4], f[1], f[5], f[3], 1, 1
            else:
                a, b, cl, ch, qx, qy = f[4], f[1], f[2], f[5], 1, 0
            if c > 2:
                xlo = a
                xhi = b
                ylo = cl
                yhi = ch
                d = f[11] + 1
                ix = 2 * f[12] + qx
                iy = 2 * f[13] + qy
                entered = True
                break
            accs[top] += _info_nb(c, b - a, ch - cl)
            f[10] = q + 1
        if not entered:
            break
    return total / n + math.log(n)


@njit(cache=True, nogil=True)
def _scratch(n):
    return (
        np.empty(n + 1, np.int32),
        np.zeros((_MAX_DEPTH, _F_SIZE), np.int64),
        np.zeros(_MAX_DEPTH, np.float64),
        np.zeros(20, np.int64),
    )


@njit(cache=True)
def _all_permutations(ranks):
    # every row a permutation of 1..n or of 0..n-1 (what the kernel requires)
    n = ranks.shape[1]
    seen = np.zeros(n + 1, np.bool_)
    for g in range(ranks.shape[0]):
        seen[:] = False
        lo = ranks[g, 0]
        for s in range(n):
            r = ranks[g, s]
            if r < 0 or r > n or seen[r]:
                return False
            seen[r] = True
            lo = min(lo, r)
        if lo > 1 or (lo == 0 and seen[n]):
            return False
    return True


def check_ranks(ranks: np.ndarray) -> np.ndarray:
    """``ranks`` as a C-contiguous int32 (rows x samples) array; each row must be a permutation of 1..n (or 0..n-1)."""
    ranks = np.ascontiguousarray(ranks, dtype=np.int32)
    if ranks.ndim != 2 or ranks.shape[1] < 2:
        raise ValueError("ranks must be a (rows, samples) array with at least 2 samples")
    if not _all_permutations(ranks):
        raise ValueError("every row of ranks must be a permutation of 1..n (or 0..n-1); break ties first (rank_matrix)")
    return ranks


@njit(cache=True, nogil=True)
def _apmi_numba(x, y, bsx, bsy):
    ybx, frames, accs, hist = _scratch(x.shape[0])
    return apmi_kernel(x, y, bsx, bsy, ybx, frames, accs, hist)


@njit(cache=True, nogil=True)
def _mi_block_item(ranks, bits, reg_rows, out, item, n_blocks):
    # one (regulator, block of genes) work item; scratch space allocated once per item
    n_genes = ranks.shape[0]
    i = item // n_blocks
    g0 = (item % n_blocks) * _GENE_BLOCK
    g1 = min(g0 + _GENE_BLOCK, n_genes)
    r = reg_rows[i]
    ybx, frames, accs, hist = _scratch(ranks.shape[1])
    x = ranks[r]
    bx = bits[r]
    for g in range(g0, g1):
        if g == r:
            out[i, g] = np.nan
        else:
            out[i, g] = apmi_kernel(x, ranks[g], bx, bits[g], ybx, frames, accs, hist)


@njit(cache=True, parallel=True)
def _mi_block_par(ranks, bits, reg_rows, out, n_blocks):
    for item in numba.prange(reg_rows.shape[0] * n_blocks):
        _mi_block_item(ranks, bits, reg_rows, out, item, n_blocks)


@njit(cache=True)
def _mi_block_ser(ranks, bits, reg_rows, out, n_blocks):
    for item in range(reg_rows.shape[0] * n_blocks):
        _mi_block_item(ranks, bits, reg_rows, out, item, n_blocks)


def mi_block_numba(ranks: np.ndarray, bits: np.ndarray, reg_rows: np.ndarray) -> np.ndarray:
    """MI of each regulator row against every row of ``ranks`` (genes x samples, int32).

    ``bits`` are the rows' interval bitsets (:func:`rank_bitsets`). Returns (len(reg_rows), genes)
    float64 with NaN where the target is the regulator itself. Work is split over (regulator,
    block of genes) items run with ``numba.prange`` (serially for small blocks, where waking the
    thread pool would cost more than the work).
    """
    out = np.empty((len(reg_rows), ranks.shape[0]), np.float64)
    n_blocks = (ranks.shape[0] + _GENE_BLOCK - 1) // _GENE_BLOCK
    run = _mi_block_par if len(reg_rows) * ranks.size >= _PARALLEL_MIN_WORK * 8 else _mi_block_ser
    run(ranks, bits, np.ascontiguousarray(reg_rows, dtype=np.int64), out, n_blocks)
    return out


@njit(cache=True, parallel=True)
def _mi_pairs_par(ranks, bits, rows_a, rows_b, out):
    n_pairs = rows_a.shape[0]
    block = 256
    for item in numba.prange((n_pairs + block - 1) // block):
        k0 = item * block
        k1 = min(k0 + block, n_pairs)
        ybx, frames, accs, hist = _scratch(ranks.shape[1])
        for k in range(k0, k1):
            a = rows_a[k]
            b = rows_b[k]
            out[k] = apmi_kernel(ranks[a], ranks[b], bits[a], bits[b], ybx, frames, accs, hist)


def mi_pairs_numba(ranks: np.ndarray, rows_a: np.ndarray, rows_b: np.ndarray) -> np.ndarray:
    """MI of the listed row pairs ``(rows_a[k], rows_b[k])`` of ``ranks`` (parallel over blocks of pairs)."""
    ranks = check_ranks(ranks)
    out = np.empty(len(rows_a), np.float64)
    _mi_pairs_par(ranks, rank_bitsets(ranks), np.asarray(rows_a, dtype=np.int64), np.asarray(rows_b, dtype=np.int64), out)
    return out


def mi_pairs_python(ranks: np.ndarray, rows_a: np.ndarray, rows_b: np.ndarray) -> np.ndarray:
    """Reference of :func:`mi_pairs_numba`."""
    return np.array([apmi_python(ranks[a], ranks[b]) for a, b in zip(rows_a, rows_b)], dtype=np.float64)


def apmi_numba(x, y) -> float:
    """APMI of two rank vectors (numba kernel; checks that both are permutations)."""
    pair = check_ranks(np.vstack([np.asarray(x), np.asarray(y)]))
    bits = rank_bitsets(pair)
    return float(_apmi_numba(pair[0], pair[1], bits[0], bits[1]))


def mi_block(ranks: np.ndarray, reg_rows: np.ndarray, backend: str = "numba", bits: np.ndarray | None = None) -> np.ndarray:
    """MI of regulator rows against all rows (ranks: rows x samples permutations), "numba" or "python".

    ``bits`` (:func:`rank_bitsets` of ``ranks``) can be passed to avoid recomputing them per call.
    """
    ranks = check_ranks(ranks)
    return _mi_block(ranks, np.asarray(reg_rows), backend, bits)


def _mi_block(ranks: np.ndarray, reg_rows: np.ndarray, backend: str, bits: np.ndarray | None = None) -> np.ndarray:
    # no checks: ``ranks`` are C-contiguous int32 permutations (from rank_matrix)
    reg_rows = np.ascontiguousarray(reg_rows, dtype=np.int64)
    if backend == "numba":
        return mi_block_numba(ranks, rank_bitsets(ranks) if bits is None else bits, reg_rows)
    if backend == "python":
        return mi_block_python(ranks, reg_rows)
    raise ValueError(f"unknown backend {backend!r}; use 'numba' or 'python'")

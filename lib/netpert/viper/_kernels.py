"""numba kernels of the VIPER engine: within-cell ranks, the inverse normal, the aREA block kernel.

Each has a plain numpy/scipy counterpart in the module that uses it (``backend="python"``); the
tests hold them equal.

Ranks are carried as integer *codes* ``2 * rank`` (ranks with ties are averages, i.e. multiples of
0.5), so that ``qnorm(rank / (n + 1))`` can be read from a lookup table of ``2n + 2`` entries
instead of being evaluated for every cell and gene.
"""

from __future__ import annotations

import math

import numpy as np
from numba import prange

from netpert.jit import njit

_SQRT2 = math.sqrt(2.0)
_SQRT2PI = math.sqrt(2.0 * math.pi)


@njit(cache=True)
def _ndtri_upper(q):
    """x >= 0 with Phi(-x) = q for 0 < q <= 0.5: Abramowitz-Stegun 26.2.23 start, Halley steps."""
    t = math.sqrt(-2.0 * math.log(q))
    x = t - (2.515517 + 0.802853 * t + 0.010328 * t * t) / (1.0 + 1.432788 * t + 0.189269 * t * t + 0.001308 * t * t * t)
    for _ in range(3):
        e = 0.5 * math.erfc(x / _SQRT2) - q
        u = e * _SQRT2PI * math.exp(0.5 * x * x)
        x = x + u / (1.0 - 0.5 * x * u)
    return x


@njit(cache=True)
def ndtri_nb(p):
    """The standard normal quantile (R's ``qnorm``) for 0 < p < 1, to about 1e-15."""
    if p < 0.5:
        return -_ndtri_upper(p)
    if p == 0.5:
        return 0.0
    return _ndtri_upper(1.0 - p)  # exact subtraction for p >= 0.5


_RADIX_BITS = 11
_RADIX_SIZE = 1 << _RADIX_BITS
_RADIX_PASSES = 3  # 32-bit keys in three 11-bit digits
#: groups of equal float32 key longer than this are ordered by a merge sort, shorter by insertion
_GROUP_INSERTION_MAX = 32


@njit(cache=True)
def rank_scratch(n):
    """Scratch arrays of one row's ranking: ``(order, keys, pairs, pairs2, counts)`` (``pairs``:
    key and index packed in one 64-bit word, moved together by the radix passes)."""
    return (np.empty(n, dtype=np.int32), np.empty(n, dtype=np.uint32), np.empty(n, dtype=np.uint64),
            np.empty(n, dtype=np.uint64), np.empty((_RADIX_PASSES, _RADIX_SIZE), dtype=np.int32))


@njit(cache=True)
def _sort_keys(v, order, keys, pairs, pairs2, counts):
    """LSD radix argsort of float64 ``v`` (no NaN) by its values rounded to float32: ``order``
    and ``keys`` (the order-preserving 32-bit keys) come out sorted by key, stable.

    Key and index travel packed in one 64-bit word (one store per element and pass); three
    11-bit digits, their histograms in one pass, digits every key shares skipped, the two buffers
    used in turn. Rounding to float32 is monotone, so the float64 order differs from this one
    only inside runs of equal keys (see :func:`_rank_codes_row`)."""
    n = v.shape[0]
    top = np.uint32(1) << np.uint32(31)
    mask = np.uint64(_RADIX_SIZE - 1)
    for d in range(_RADIX_PASSES):
        for j in range(_RADIX_SIZE):
            counts[d, j] = 0
    as_f32 = keys.view(np.float32)
    for i in range(n):
        as_f32[i] = np.float32(v[i])
    for i in range(n):
        b = keys[i]
        if as_f32[i] == 0.0:  # -0.0 with +0.0 (and values that round to zero: ordered by float64 later)
            b = np.uint32(0)
        k = ~b if (b & top) else (b | top)  # order-preserving map of the float's bits
        pairs[i] = (np.uint64(k) << np.uint64(32)) | np.uint64(i)
        counts[0, k & np.uint32(_RADIX_SIZE - 1)] += 1
        counts[1, (k >> np.uint32(11)) & np.uint32(_RADIX_SIZE - 1)] += 1
        counts[2, k >> np.uint32(22)] += 1
    src, dst = pairs, pairs2
    for d in range(_RADIX_PASSES):
        single = False
        for j in range(_RADIX_SIZE):
            if counts[d, j] != 0:
                single = counts[d, j] == n
                break
        if single:
            continue
        sh = np.uint64(32 + _RADIX_BITS * d)
        total = 0
        for j in range(_RADIX_SIZE):
            c = counts[d, j]
            counts[d, j] = total
            total += c
        for i in range(n):
            x = src[i]
            dg = (x >> sh) & mask
            p = counts[d, dg]
            counts[d, dg] = p + 1
            dst[p] = x
        src, dst = dst, src
    low = np.uint64(0xFFFFFFFF)
    for i in range(n):
        x = src[i]
        order[i] = np.int32(x & low)
        keys[i] = np.uint32(x >> np.uint64(32))


@njit(cache=True)
def _order_run(v, order, i, j):
    """Order ``order[i:j]`` by the float64 values (a run of one float32 key)."""
    if j - i <= _GROUP_INSERTION_MAX:
        for a in range(i + 1, j):
            o = order[a]
            x = v[o]
            b = a - 1
            while b >= i and v[order[b]] > x:
                order[b + 1] = order[b]
                b -= 1
            order[b + 1] = o
    else:
        run = order[i:j].copy()
        vals = np.empty(j - i)
        for a in range(j - i):
            vals[a] = v[run[a]]
        idx = np.argsort(vals, kind="mergesort")
        for a in range(j - i):
            order[i + a] = run[idx[a]]


@njit(cache=True)
def _rank_codes_row(v, codes, order, keys, pairs, pairs2, counts):
    """Write ``2 * rank`` (average ranks for ties, 1-based) of float64 ``v`` (no NaN) into
    ``codes``; the sort order is left in ``order`` (ascending; within ties arbitrary). The other
    arrays are scratch from :func:`rank_scratch`.

    Radix sort on float32 keys (:func:`_sort_keys`), then one pass over the sorted keys: a key
    seen once is a rank of its own; a run of equal keys is ordered by the float64 values and its
    ties (equal float64 values) get their average rank."""
    n = v.shape[0]
    _sort_keys(v, order, keys, pairs, pairs2, counts)
    i = 0
    while i < n:
        j = i + 1
        ki = keys[i]
        while j < n and keys[j] == ki:
            j += 1
        if j == i + 1:
            codes[order[i]] = 2 * i + 2
        else:
            _order_run(v, order, i, j)
            a = i
            while a < j:
                b = a
                va = v[order[a]]
                while b + 1 < j and v[order[b + 1]] == va:
                    b += 1
                code = a + b + 2
                for k in range(a, b + 1):
                    codes[order[k]] = code
                a = b + 1
        i = j


@njit(parallel=True, cache=True)
def rank_codes_numba(block):
    """Per-row ``2 * rank`` codes (average ties) of a dense 2-D block; int64, same shape."""
    b, n = block.shape
    out = np.empty((b, n), dtype=np.int64)
    for i in prange(b):
        v = block[i].copy()
        c = np.empty(n, dtype=np.int64)
        order, keys, order2, keys2, counts = rank_scratch(n)
        _rank_codes_row(v, c, order, keys, order2, keys2, counts)
        out[i] = c
    return out


@njit(parallel=True, cache=True)
def area_block_numba(sig, cols, tpos, ptr, tgt, w2, w1, factor, q1_lut, q2_lut, m_lut, column_mode, n_chunks, out):
    """aREA NES for every row (cell) of ``sig``; see :func:`netpert.viper.area.area_block`.

    sig: (B, G) float64 signature; cols: (n,) the columns ranked (the network's genes);
    tpos: (T,) positions within ``cols`` of the regulons' targets; ptr/tgt/w2/w1: the regulons as
    CSR rows over the T targets with weights ``mor * w`` and ``(1 - |mor|) * w`` (w = likelihood
    normalised by its maximum, then by its sum); factor: ``sqrt(sum((lik / max lik)^2))``;
    q1_lut / q2_lut: qnorm of the one-tail / two-tail quantiles per rank code, built for the tail
    maximum ``m_lut``; column_mode: use each cell's own tail maximum (R's loop path) instead of
    ``m_lut`` (R's matrix path); n_chunks: work units for the threads. Writes NES into ``out`` (B, R).
    """
    b = sig.shape[0]
    n = cols.shape[0]
    t_n = tpos.shape[0]
    r_n = ptr.shape[0] - 1
    n_chunks = max(1, min(b, n_chunks))
    denom = n + 1.0
    for ch in prange(n_chunks):
        start = ch * b // n_chunks
        stop = (ch + 1) * b // n_chunks
        v = np.empty(n, dtype=np.float64)
        codes = np.empty(n, dtype=np.int64)
        order, keys, order2, keys2, counts = rank_scratch(n)
        qq1 = np.empty(t_n, dtype=np.float64)
        qq2 = np.empty(t_n, dtype=np.float64)
        for c in range(start, stop):
            for j in range(n):
                v[j] = sig[c, cols[j]]
            _rank_codes_row(v, codes, order, keys, order2, keys2, counts)
            use_lut = True
            mc = m_lut
            if column_mode:
                a1 = abs((codes[order[0]] * 0.5) / denom - 0.5) * 2.0
                a2 = abs((codes[order[n - 1]] * 0.5) / denom - 0.5) * 2.0
                mc = a1 if a1 > a2 else a2
                use_lut = mc == m_lut
            shift = (1.0 - mc) / 2.0
            for t in range(t_n):
                cd = codes[tpos[t]]
                qq2[t] = q2_lut[cd]
                if use_lut:
                    qq1[t] = q1_lut[cd]
                else:
                    qq1[t] = ndtri_nb(abs((cd * 0.5) / denom - 0.5) * 2.0 + shift)
            for r in range(r_n):
                s1 = 0.0
                s2 = 0.0
                for e in range(ptr[r], ptr[r + 1]):
                    s1 += w2[e] * qq2[tgt[e]]
                    s2 += w1[e] * qq1[tgt[e]]
                es = abs(s1)
                if s2 > 0.0:
                    es += s2
                if s1 < 0.0:
                    es = -es
                out[c, r] = es * factor[r]
    return out


@njit(parallel=True, cache=True)
def extreme_ties_numba(block, cols):
    """Per row of ``block[:, cols]``: how many entries equal the row's minimum and its maximum
    (one pass; the per-cell tail maximum of aREA depends on nothing else)."""
    b = block.shape[0]
    n = cols.shape[0]
    k_lo = np.empty(b, dtype=np.int64)
    k_hi = np.empty(b, dtype=np.int64)
    for i in prange(b):
        lo = block[i, cols[0]]
        hi = lo
        c_lo = 1
        c_hi = 1
        for j in range(1, n):
            x = block[i, cols[j]]
            if x < lo:
                lo = x
                c_lo = 1
            elif x == lo:
                c_lo += 1
            if x > hi:
                hi = x
                c_hi = 1
            elif x == hi:
                c_hi += 1
        k_lo[i] = c_lo
        k_hi[i] = c_hi
    return k_lo, k_hi

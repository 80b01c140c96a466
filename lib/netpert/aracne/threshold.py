"""MI threshold from a null model of independent rank vectors.

Two methods:

``method="fit"`` (default, correct)
    The null: ``n_vectors`` random permutations of 1..n (the same rank convention as the data)
    from ``numpy.random.default_rng(seed)``, and the APMI of all their pairs. A pair of independent
    random permutations is a uniformly random rank square, so the pairs are identically
    distributed and pairwise independent. The threshold for ``pvalue`` is read from the null's
    upper tail, fitted as an exponential tail (peaks over threshold, generalised Pareto with shape
    0): with the ``k`` largest null values above ``u`` (the (k+1)-th largest),
    ``P(MI > t) = (k/N) * exp(-(t - u)/sigma)`` for ``t >= u`` with the maximum-likelihood scale
    ``sigma = mean(top k - u)``; hence ``threshold = u + sigma * ln(k / (N * pvalue))``. For
    ``pvalue >= k/N`` the empirical null quantile is used instead (no extrapolation needed).

    Why this fit: ARACNe-AP intends to regress the top-20 null MIs on their log survival and to
    extrapolate that line to ``pvalue``, i.e. an exponential tail. Its code, however, pairs the
    top MIs with the head of the survival array (see the fixture README), so its slope is a
    constant 1.5e-6 and its threshold is essentially the mean of the top-20 null MIs whatever
    the p-value: 0.1856 for n = 150 at p = 1e-8 and also at 1e-2 or 1e-30, where the intended fit
    gives 0.270. Its null also uses 0-based ranks while the data are 1-based. The APMI null tail
    is close to exponential (for n = 150 the 1e-2..1e-6 null quantiles are evenly spaced,
    0.036-0.038 nats per decade), and a maximum-likelihood scale over ~900 tail points is far
    stabler than a least-squares line through 20 points.

    Null size and tail (documented choice, measured on independent validation nulls of 24.5M
    pairs): 3000 vectors, i.e. 4,498,500 pairs as in ARACNe-AP (n = 300: ~1 s on two cores, where
    ARACNe-AP takes ~55 s), and a tail of the top 0.02 % (k = 900). With this tail the null
    probability actually observed at the thresholds fitted for p = 1e-5 and 1e-6 was 0.9-1.0 x p
    and 0.6-1.0 x p for n = 40, 150 and 300 (the seed-to-seed s.d. of the 1e-8 threshold was
    1.5-3 %). The APMI tail gets slightly lighter than exponential far out, so the extrapolation
    errs on the conservative side; a tail of the top 0.1 % was more conservative (0.5-0.6 x p at
    1e-6 for n >= 150) and a truncated gamma tail anti-conservative (1.4-2.4 x p at 1e-6..1e-7).

``method="aracne-ap"`` (compatibility)
    ARACNe-AP's own computation, bit for bit: its null (``java.util.Random(seed)``, 3000 vectors
    of 0-based ranks, each shuffled by 10*n random swaps, all 4,498,500 pairs) and its buggy fit
    of the top 20 values (:func:`aracne_ap_fit`). Use it to reproduce the thresholds of old
    ARACNe-AP runs; it is slower (4.5M pairs).

Nulls are cached per (method, n, seed, null size) as ``.npz`` files in ``cache_dir`` (written
atomically, so concurrent jobs can share the folder); the fit itself is cheap and is redone for
each p-value.
"""

from __future__ import annotations

import logging
import math
import json
from dataclasses import dataclass, field
from pathlib import Path

import numba
import numpy as np

from netpert._io import atomic_path, json_default, reading
from netpert.aracne import timing
from netpert.aracne.mi import _scratch, apmi_kernel, apmi_python, rank_bitsets
from netpert.errors import InputError
from netpert.jit import njit

log = logging.getLogger(__name__)

#: bump when the null's definition changes (invalidates cached nulls)
NULL_VERSION = 1
#: default number of null vectors for ``method="fit"`` (as ARACNe-AP: 4,498,500 pairs)
FIT_NULL_VECTORS = 3000
#: fraction of the null kept (largest values) in a :class:`NullModel` / the cache
NULL_TOP_FRACTION = 0.01
#: fraction of the null forming the fitted tail (see the module docstring)
FIT_TAIL_FRACTION = 2e-4
#: ARACNe-AP's constants
AP_NULL_VECTORS = 3000
AP_TAIL = 20

_JAVA_MULT = 0x5DEECE66D
_JAVA_MASK = (1 << 48) - 1


# --------------------------------------------------------------------------------------------
# java.util.Random (for the ARACNe-AP compatible null)
# --------------------------------------------------------------------------------------------
@njit(cache=True)
def _java_next(state, bits):
    state[0] = (state[0] * _JAVA_MULT + 0xB) & _JAVA_MASK
    v = (state[0] >> (48 - bits)) & 0xFFFFFFFF
    if v >= 2147483648:
        v -= 4294967296
    return v


@njit(cache=True)
def _java_next_int(state, bound):
    if (bound & -bound) == bound:
        return (bound * _java_next(state, 31)) >> 31
    while True:
        bits = _java_next(state, 31)
        val = bits % bound
        if bits - val + (bound - 1) < 2147483648:
            return val


@njit(cache=True)
def aracne_ap_null_vectors(n, n_vectors, seed):
    """ARACNe-AP's null rank vectors: 0..n-1 shuffled by 10*n swaps each, ``java.util.Random(seed)``."""
    state = np.empty(1, np.int64)
    state[0] = (seed ^ _JAVA_MULT) & _JAVA_MASK
    x = np.empty((n_vectors, n), np.int32)
    for i in range(n_vectors):
        for j in range(n):
            x[i, j] = j
    for i in range(n_vectors):
        for _ in range(n * 10):
            r1 = _java_next_int(state, n)
            r2 = _java_next_int(state, n)
            t = x[i, r1]
            x[i, r1] = x[i, r2]
            x[i, r2] = t
    return x


def fit_null_vectors(n: int, n_vectors: int, seed: int) -> np.ndarray:
    """Null rank vectors of the correct method: independent random permutations of 1..n."""
    rng = np.random.default_rng(seed)
    return (np.argsort(rng.random((n_vectors, n)), axis=1) + 1).astype(np.int32)


# --------------------------------------------------------------------------------------------
# all-pairs APMI
# --------------------------------------------------------------------------------------------
@njit(cache=True, parallel=True)
def _all_pairs_numba(vectors, bits):
    k = vectors.shape[0]
    n = vectors.shape[1]
    n_pairs = k * (k - 1) // 2
    out = np.empty(n_pairs, np.float64)
    block = 1024
    n_blocks = (n_pairs + block - 1) // block
    for item in numba.prange(n_blocks):
        p0 = item * block
        p1 = min(p0 + block, n_pairs)
        # locate pair p0 = (i, j) in row-major upper-triangle order
        i = 0
        start = 0
        while start + (k - 1 - i) <= p0:
            start += k - 1 - i
            i += 1
        j = i + 1 + (p0 - start)
        ybx, frames, accs, hist = _scratch(n)
        for p in range(p0, p1):
            out[p] = apmi_kernel(vectors[i], vectors[j], bits[i], bits[j], ybx, frames, accs, hist)
            j += 1
            if j == k:
                i += 1
                j = i + 1
    return out


def all_pairs_mi(vectors: np.ndarray, backend: str = "numba") -> np.ndarray:
    """APMI of every pair (i < j) of rows of ``vectors``, in row-major upper-triangle order."""
    vectors = np.ascontiguousarray(vectors, dtype=np.int32)
    if backend == "numba":
        return _all_pairs_numba(vectors, rank_bitsets(vectors))
    if backend == "python":
        k = len(vectors)
        return np.array([apmi_python(vectors[i], vectors[j]) for i in range(k) for j in range(i + 1, k)])
    raise ValueError(f"unknown backend {backend!r}; use 'numba' or 'python'")


# --------------------------------------------------------------------------------------------
# fits
# --------------------------------------------------------------------------------------------
def aracne_ap_fit(top_desc, n_total: int, pvalue: float, tail: int = AP_TAIL) -> tuple[float, float, float]:
    """ARACNe-AP's ``fitNull`` + threshold, bug included; returns ``(threshold, beta0, beta1)``.

    ``top_desc`` are the largest null MIs in decreasing order (at least ``tail``), ``n_total`` the
    null size. ARACNe-AP sorts the null, takes the top ``tail`` MIs ``m_i`` (ascending) with
    ``s_i = ln((tail - i)/N)`` and computes ``beta1 = cov(s, y)/var(s)`` where ``y`` should be the
    MIs but is the *head* of the survival array, ``y_i = (N - i)/N``; ``beta0 = mean(m) -
    beta1*mean(s)``; ``threshold = beta1*ln(p) + beta0``. The arithmetic follows the Java
    statement order, so the result is bit-identical to ARACNe-AP's.
    """
    top_desc = np.asarray(top_desc, dtype=np.float64)
    if len(top_desc) < tail:
        raise ValueError(f"need the top {tail} null values, got {len(top_desc)}")
    N = int(n_total)
    tail_mi = [float(v) for v in top_desc[:tail][::-1]]
    logs = [math.log((N - (N - tail + i)) * 1.0 / N) for i in range(tail)]
    y_head = [(N - i) * 1.0 / N for i in range(tail)]
    sum_s = 0.0
    sum_m = 0.0
    for i in range(tail):
        sum_s += logs[i]
        sum_m += tail_mi[i]
    s_bar = sum_s / tail
    m_bar = sum_m / tail
    ss = 0.0
    sy = 0.0
    for i in range(tail):
        ss += (logs[i] - s_bar) * (logs[i] - s_bar)
        sy += (logs[i] - s_bar) * (y_head[i] - m_bar)
    beta1 = sy / ss
    beta0 = m_bar - beta1 * s_bar
    return beta1 * math.log(pvalue) + beta0, beta0, beta1


def fit_tail(
    null_desc, pvalue: float, n_total: int | None = None, k: int | None = None, grid: np.ndarray | None = None
) -> tuple[float, dict]:
    """Threshold for ``pvalue`` from a null (its largest values in decreasing order) by an exponential tail fit.

    Returns ``(threshold, params)``; see the module docstring for the model. ``n_total`` is the null
    size (default ``len(null_desc)``, i.e. the whole null), ``k`` the tail size (default
    ``max(100, FIT_TAIL_FRACTION * N)``). For ``pvalue >= k/N`` the empirical null quantile is
    returned: from ``null_desc`` when it reaches that deep, else interpolated in ``grid`` (the null's
    values at upper-tail probabilities ``0, 0.001, ..., 1``).
    """
    null_desc = np.asarray(null_desc, dtype=np.float64)
    N = int(n_total if n_total is not None else len(null_desc))
    if k is None:
        k = max(100, int(round(FIT_TAIL_FRACTION * N)))
    if len(null_desc) <= k:
        raise ValueError(f"the null holds {len(null_desc)} values; the tail fit needs more than k={k}")
    u = float(null_desc[k])
    sigma = float(np.mean(null_desc[:k] - u))
    q_u = k / N
    params = {"model": "exponential tail (POT)", "k": int(k), "u": u, "sigma": sigma, "tail_probability_at_u": q_u}
    if pvalue < q_u:
        params["used"] = "fitted tail"
        return u + sigma * math.log(q_u / pvalue), params
    pos = int(math.floor(pvalue * N))
    if pos < len(null_desc):
        params["used"] = "empirical quantile"
        return float(null_desc[pos]), params
    if grid is None or len(grid) < 2:
        raise ValueError(f"p-value {pvalue} lies beyond the stored null values and no quantile grid was given")
    params["used"] = "empirical quantile (grid)"
    return float(np.interp(pvalue, np.linspace(0.0, 1.0, len(grid)), grid)), params


def tail_probability(threshold: float, params: dict) -> float:
    """Null probability ``P(MI > threshold)`` under a fitted tail (``params`` from :func:`fit_tail`)."""
    return params["tail_probability_at_u"] * math.exp(-(threshold - params["u"]) / params["sigma"])


def bh_select(pvalues: np.ndarray, m: int, fdr: float) -> np.ndarray:
    """Indices of ``pvalues`` kept by Benjamini-Hochberg at ``fdr`` among ``m`` tests in all.

    ``pvalues`` may hold only the candidate tests (those with p <= fdr): the others can never be
    rejected, and ``m`` counts them.
    """
    pvalues = np.asarray(pvalues, dtype=np.float64)
    if not 0 < fdr < 1:
        raise InputError(f"the FDR must be in (0, 1), got {fdr}")
    if len(pvalues) > m:
        raise ValueError(f"{len(pvalues)} p-values for m={m} tests")
    # with K tests left, none above fdr*K/m can be rejected (BH's cut is at most K): drop them until none is
    # dropped, then BH on what is left with the same m (the same rejections, without sorting every candidate)
    cand = np.arange(len(pvalues))
    while len(pvalues):
        keep = pvalues <= fdr * len(pvalues) / m
        if keep.all():
            break
        cand, pvalues = cand[keep], pvalues[keep]
    if len(pvalues) == 0:
        return np.zeros(0, np.int64)
    order = np.argsort(pvalues, kind="mergesort")
    crit = fdr * np.arange(1, len(order) + 1) / m
    ok = np.flatnonzero(pvalues[order] <= crit)
    if len(ok) == 0:
        return np.zeros(0, np.int64)
    return np.sort(cand[order[: ok[-1] + 1]])


# --------------------------------------------------------------------------------------------
# null + cache
# --------------------------------------------------------------------------------------------
#: upper-tail probabilities of a null's quantile grid (``NullModel.grid``)
GRID_PROBABILITIES = 1.0 - np.linspace(0.0, 1.0, 1001)


def inverted_cdf_positions(n: int, q: np.ndarray) -> np.ndarray:
    """Positions in the sorted values of ``np.quantile(values, q, method="inverted_cdf")`` (numpy's arithmetic)."""
    index = n * np.asarray(q, dtype=np.float64) - 1
    previous = np.floor(index)
    pos = np.where(index - previous == 0, previous, previous + 1).astype(np.int64)
    return np.clip(pos, 0, n - 1)


@njit(cache=True)
def _radix_sort(values):
    # LSD radix sort of float64 by their IEEE bits made order-preserving (sign bit flipped for
    # positives, all bits for negatives), 16-bit digits: 4 passes of a histogram and a scatter
    n = values.shape[0]
    keys = np.empty(n, np.uint64)
    sign = np.uint64(1) << np.uint64(63)
    bits = values.view(np.uint64)
    for i in range(n):
        b = bits[i]
        keys[i] = ~b if b & sign else b | sign
    tmp = np.empty(n, np.uint64)
    count = np.empty(65537, np.int64)
    for shift in range(0, 64, 16):
        sh = np.uint64(shift)
        count[:] = 0
        for i in range(n):
            count[((keys[i] >> sh) & np.uint64(0xFFFF)) + np.uint64(1)] += 1
        for d in range(65536):
            count[d + 1] += count[d]
        for i in range(n):
            d = (keys[i] >> sh) & np.uint64(0xFFFF)
            tmp[count[d]] = keys[i]
            count[d] += 1
        keys, tmp = tmp, keys
    out = np.empty(n, np.uint64)
    for i in range(n):
        k = keys[i]
        out[i] = k & ~sign if k & sign else ~k
    return out.view(np.float64)


def sort_values(values: np.ndarray, backend: str = "numba") -> np.ndarray:
    """``np.sort`` of float64 values (no NaN): a numba radix sort (``numba``) or numpy's (``python``)."""
    values = np.ascontiguousarray(values, dtype=np.float64)
    if backend == "python" or len(values) < 4096:
        return np.sort(values)
    return _radix_sort(values)


def summarize_null(values: np.ndarray, n_top: int, grid: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """``(top, grid)`` of a null: its ``n_top`` largest values, decreasing, and (``grid``) its
    inverted-cdf quantiles at :data:`GRID_PROBABILITIES` (else an empty array), from one sort
    (the same values as ``np.partition`` + ``np.quantile``, which partition 1,001 times)."""
    ordered = sort_values(values)
    n = len(ordered)
    top = ordered[n - n_top :][::-1].copy()
    return top, (ordered[inverted_cdf_positions(n, GRID_PROBABILITIES)] if grid else np.zeros(0))


@dataclass
class NullModel:
    """A threshold null: its largest values (decreasing), its size and a coarse quantile grid.

    ``top`` holds the top ``NULL_TOP_FRACTION`` of the null (``method="fit"``) or its top 1000
    (``"aracne-ap"``); ``grid[i]`` is the null value with upper-tail probability ``i / 1000``
    (empty for ``"aracne-ap"``).
    """

    top: np.ndarray
    n_total: int
    grid: np.ndarray
    info: dict = field(default_factory=dict)

    def tail_params(self) -> dict:
        """The exponential tail of :func:`fit_tail` over this null (``k``, ``u``, ``sigma`` ...)."""
        _, params = fit_tail(self.top, 0.5 / self.n_total, n_total=self.n_total, grid=self.grid, k=self._tail_k())
        return params

    def _tail_k(self) -> int:
        return int(min(max(100, round(FIT_TAIL_FRACTION * self.n_total)), len(self.top) - 1))

    def threshold(self, pvalue: float) -> float:
        """The MI whose null probability ``P(null >= MI)`` is ``pvalue`` (fitted tail below ``k/N``)."""
        if not 0 < pvalue < 1:
            raise InputError(f"the p-value must be in (0, 1), got {pvalue}")
        thr, _ = fit_tail(self.top, pvalue, n_total=self.n_total, grid=self.grid, k=self._tail_k())
        return float(thr)

    def pvalues(self, mi) -> np.ndarray:
        """Null probability ``P(null >= mi)`` of each value: the fitted exponential tail above its
        anchor ``u``, the empirical ``(count + 1) / (N + 1)`` within the stored top values, the
        quantile grid below them."""
        mi = np.asarray(mi, dtype=np.float64)
        N = self.n_total
        top_asc = self.top[::-1]
        count = len(self.top) - np.searchsorted(top_asc, mi, side="left")  # stored values >= mi
        p = (count + 1.0) / (N + 1.0)
        params = self.tail_params()
        above = mi > params["u"]
        if np.any(above):
            p[above] = params["tail_probability_at_u"] * np.exp(-(mi[above] - params["u"]) / params["sigma"])
        below = count >= len(self.top)
        if np.any(below):
            if len(self.grid) >= 2:
                probs = np.linspace(0.0, 1.0, len(self.grid))  # grid[i]: value at upper-tail probability probs[i]
                p[below] = np.interp(mi[below], self.grid[::-1], probs[::-1])
                p[below] = np.maximum(p[below], len(self.top) / N)
            else:
                p[below] = 1.0
        return np.clip(p, 0.0, 1.0)

    def arrays(self, prefix: str = "") -> dict:
        """The ``.npz`` arrays of this null, keys prefixed with ``prefix`` (several nulls in one file)."""
        return {f"{prefix}top": self.top, f"{prefix}n_total": self.n_total, f"{prefix}grid": self.grid,
                f"{prefix}info": json.dumps(self.info, default=json_default)}

    @classmethod
    def from_arrays(cls, z, prefix: str = "") -> "NullModel | None":
        """The null stored under ``prefix`` in an opened ``.npz`` (None when the file has none)."""
        if f"{prefix}top" not in z.files:
            return None
        info = json.loads(str(z[f"{prefix}info"])) if f"{prefix}info" in z.files else {}
        return cls(z[f"{prefix}top"], int(z[f"{prefix}n_total"]), z[f"{prefix}grid"], info)

    def save(self, path: str | Path, **others: "NullModel") -> None:
        """Write the null to ``path`` (``.npz``: top, n_total, grid, info as JSON), atomically; each
        of ``others`` goes beside it under its name as prefix (read back with :meth:`load_named`)."""
        arrays = self.arrays()
        for name, model in others.items():
            arrays.update(model.arrays(f"{name}_"))
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, **arrays)

    @classmethod
    def load(cls, path: str | Path) -> "NullModel":
        """Read a null written by :meth:`save` (or a cached null of :func:`null_distribution`)."""
        return cls.load_named(path)[0]

    @classmethod
    def load_named(cls, path: str | Path, *names: str) -> tuple:
        """The null of ``path`` and, for each of ``names``, the null saved beside it (None if absent)."""
        path = Path(path)
        if not path.is_file():
            raise InputError(f"null distribution file '{path}' does not exist; rerun the aracne_threshold rule")
        with reading(path, "null distribution file", "rerun the aracne_threshold rule"), np.load(path, allow_pickle=False) as z:
            return (cls.from_arrays(z),) + tuple(cls.from_arrays(z, f"{n}_") for n in names)


def null_distribution(
    n_samples: int,
    seed: int = 1,
    method: str = "fit",
    n_vectors: int | None = None,
    cache_dir: str | Path | None = None,
    backend: str = "numba",
) -> NullModel:
    """The null MI distribution for ``n_samples`` samples (see the module docstring for both methods).

    Cached in ``cache_dir`` when given (a few hundred kB per null).
    """
    if method not in ("fit", "aracne-ap"):
        raise InputError(f"unknown threshold method {method!r}; use 'fit' or 'aracne-ap'")
    if backend not in ("numba", "python"):
        raise InputError(f"unknown ARACNe backend {backend!r}; use 'numba' or 'python'")
    n_samples = int(n_samples)
    if n_samples < 10:
        raise InputError(f"the MI threshold needs at least 10 samples, got {n_samples}")
    if n_vectors is None:
        n_vectors = FIT_NULL_VECTORS if method == "fit" else AP_NULL_VECTORS
    if n_vectors < 2:
        raise InputError(f"the null needs at least 2 vectors, got {n_vectors}")
    cache_file = None
    if cache_dir is not None:
        name = f"apmi_null_{method}_n{n_samples}_seed{seed}_vec{n_vectors}_v{NULL_VERSION}.npz"
        cache_file = Path(cache_dir) / name
        if cache_file.is_file():
            with np.load(cache_file) as z:
                log.info("null distribution read from cache %s", cache_file)
                return NullModel(z["top"], int(z["n_total"]), z["grid"])
    if method == "fit":
        vectors = fit_null_vectors(n_samples, n_vectors, seed)
    else:
        if n_samples > 32767:
            raise InputError("ARACNe-AP's null stores ranks as Java short; it cannot be reproduced for more than 32767 samples")
        vectors = aracne_ap_null_vectors(n_samples, n_vectors, int(seed))
    n_pairs = n_vectors * (n_vectors - 1) // 2
    log.info("computing the %s null: %d vectors of %d samples, %d pairs", method, n_vectors, n_samples, n_pairs)
    with timing.stage("MI"):
        values = all_pairs_mi(vectors, backend=backend)
    n_total = len(values)
    n_top = min(n_total, 1000 if method == "aracne-ap" else max(1000, int(math.ceil(NULL_TOP_FRACTION * n_total))))
    with timing.stage("summary"):
        top, grid = summarize_null(values, n_top, grid=method == "fit")
    model = NullModel(top, n_total, grid)
    if cache_file is not None:
        with atomic_path(cache_file) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, top=top, n_total=n_total, grid=grid)
    return model


def compute_threshold(
    n_samples: int,
    pvalue: float = 1e-8,
    seed: int = 1,
    method: str = "fit",
    cache_dir: str | Path | None = None,
    n_vectors: int | None = None,
    backend: str = "numba",
    null: NullModel | None = None,
) -> tuple[float, dict]:
    """MI threshold for ``n_samples`` samples at ``pvalue``; returns ``(threshold, info)``.

    ``null``: the :func:`null_distribution` of these arguments when the caller has it already.

    ``info`` holds: threshold, pvalue, n_samples, method, null_vectors, null_size, seed, fit
    (the fitted parameters) and, for ``method="fit"``, the null tail probability at the threshold
    implied by the fit. See the module docstring for both methods and why ``"fit"`` is the default.
    """
    if not 0 < pvalue < 1:
        raise InputError(f"the MI threshold p-value must be in (0, 1), got {pvalue}")
    if null is None:
        null = null_distribution(n_samples, seed=seed, method=method, n_vectors=n_vectors, cache_dir=cache_dir, backend=backend)
    if n_vectors is None:
        n_vectors = FIT_NULL_VECTORS if method == "fit" else AP_NULL_VECTORS
    info = {"pvalue": float(pvalue), "n_samples": int(n_samples), "method": method, "null_vectors": int(n_vectors),
            "null_size": int(null.n_total), "seed": int(seed)}
    if method == "fit":
        thr, params = fit_tail(null.top, pvalue, n_total=null.n_total, grid=null.grid)
        info["fit"] = params
        if params["used"] == "fitted tail":
            info["fit"]["tail_probability_at_threshold"] = tail_probability(thr, params)
    else:
        thr, b0, b1 = aracne_ap_fit(null.top, null.n_total, pvalue)
        info["fit"] = {"model": "ARACNe-AP fitNull (buggy, see fixtures README)", "tail": AP_TAIL, "beta0": b0, "beta1": b1}
    info["threshold"] = float(thr)
    info["null_max"] = float(null.top[0])
    log.info("MI threshold %.6g for p=%g (n=%d, method=%s, null of %d pairs)", thr, pvalue, n_samples, method, null.n_total)
    return float(thr), info

"""NaRnEA (Griffin et al. 2023, Entropy 25:542): nonparametric analytical rank-based enrichment,
as pyviper (viper-in-python 2.0.x, ``enrichment="narnea"``) computes it.

For every cell and regulon, over the ``n`` genes of the network's ranking (see
:func:`netpert.viper.area.prepare_network`):

1. ranks ``r`` of the absolute signature (average ranks for ties, 1..n) and signs ``s``;
2. target weights: ``w_d = mor * likelihood`` (directed), ``w_u = (1 - |mor|) * likelihood``
   (undirected), with a mode of regulation of exactly +-1 taken as +-0.999, as pyviper does (values between
   0.999 and 1 are kept);
3. directed and undirected enrichment ``D = sum(w_d r s)``, ``U = sum(w_u r)``, standardised by
   their analytical mean and variance under random ranks (``E[r] = (n+1)/2``,
   ``E[r^2] = (2n^2+3n+1)/6``, ``E[rs]`` and ``E[r^2 s]`` the cell's means) and their covariance;
4. the two combined: ``(D + U) / sqrt(2 + 2 cov)`` and ``(D - U) / sqrt(2 - 2 cov)``; the smaller
   one-sided p-value of the two, made two-sided (``1 - (1 - p)^2``), back to a normal score with
   the sign of the winning direction: the NES. pyviper turns the p-value into the score with
   Wichura's AS241 PPND7 approximation (about 7 digits), and so does this module, so that the
   scores agree to rounding;
5. PES (proportional enrichment score): the NES over the |NES| the regulon would reach with its
   targets at the top ranks, in likelihood order (``D`` and ``U`` of ranks ``n - dense rank of
   the likelihood + 1``), signed; in [-1, 1].

Where the two differ, deliberately: pyviper replaces exact zeros of the signature by random
values (and a mode of regulation of exactly 0 by a random +-0.001); netpert keeps both
deterministic: a zero keeps its tied rank with sign 0 (it adds nothing to ``D``), a mode of 0 is
purely undirected. On signatures without exact zeros (scale, mad, ttest, doublerank of varying
genes) the results are pyviper's.

Two backends: ``numba`` (ranks and sparse sums in one parallel kernel) and ``python`` (scipy
ranks and dense matrix products, the plain reference); the tests hold them equal.
"""

from __future__ import annotations

import math

import numpy as np
from numba import prange
from scipy.special import log_ndtr
from scipy.stats import rankdata

from netpert.jit import njit
from netpert.viper._kernels import _rank_codes_row, rank_scratch

#: pyviper's stand-in for a mode of regulation of exactly +-1 (keeps the undirected part alive)
MOR_CAP = 0.999

# Wichura (1988), algorithm AS241, PPND7: the normal quantile to about 1e-7
_A = (3.3871327179e0, 5.0434271938e1, 1.5929113202e2, 5.9109374720e1)
_B = (1.7895169469e1, 7.8757757664e1, 6.7187563600e1)
_C = (1.4234372777e0, 2.7568153900e0, 1.3067284816e0, 1.7023821103e-1)
_D = (7.3700164250e-1, 1.2021132975e-1)
_E = (6.6579051150e0, 3.0812263860e0, 4.2868294337e-1, 1.7337203997e-2)
_F = (2.4197894225e-1, 1.2258202635e-2)


def ppnd7_upper(log_p: np.ndarray) -> np.ndarray:
    """``z >= 0`` with ``P(Z > z) = exp(log_p)`` for ``exp(log_p) <= 0.5`` (AS241 PPND7)."""
    log_p = np.asarray(log_p, dtype=np.float64)
    z = np.empty_like(log_p)
    central = log_p > math.log(0.075)
    q = np.exp(log_p[central]) - 0.5
    r = 0.180625 - q * q
    z[central] = -q * (((_A[3] * r + _A[2]) * r + _A[1]) * r + _A[0]) / (((_B[2] * r + _B[1]) * r + _B[0]) * r + 1.0)
    tail = ~central
    r = np.sqrt(-log_p[tail])
    near = r <= 5.0
    rn = r[near] - 1.6
    far = r[~near] - 5.0
    zt = np.empty_like(r)
    zt[near] = (((_C[3] * rn + _C[2]) * rn + _C[1]) * rn + _C[0]) / ((_D[1] * rn + _D[0]) * rn + 1.0)
    zt[~near] = (((_E[3] * far + _E[2]) * far + _E[1]) * far + _E[0]) / ((_F[1] * far + _F[0]) * far + 1.0)
    z[tail] = zt
    return z


def combine_nes(d_nes: np.ndarray, u_nes: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """NaRnEA's NES from the standardised directed and undirected scores and their correlation."""
    pos = (d_nes + u_nes) / np.sqrt(2.0 + 2.0 * cov)
    neg = (d_nes - u_nes) / np.sqrt(2.0 - 2.0 * cov)
    log_p_pos = log_ndtr(-pos)  # upper tail of the positive combination
    log_p_neg = log_ndtr(neg)  # lower tail of the negative one
    up = log_p_pos < log_p_neg
    log_p = np.where(up, log_p_pos, log_p_neg)
    two_sided = log_p + math.log(2.0) + np.log1p(-np.exp(log_p) / 2.0)
    z = ppnd7_upper(two_sided - math.log(2.0))
    return np.where(up, z, -z)


_LOG2 = math.log(2.0)
_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)
_SQRT1_2 = math.sqrt(0.5)


@njit(cache=True)
def _log_ndtr_nb(a):
    """``log(Phi(a))`` as scipy.special.log_ndtr computes it: ``log1p(-Phi(-a))`` above 0, the
    log of erfc between -20 and 0, the asymptotic series of the Mills ratio below -20."""
    if a > 0.0:
        return math.log1p(-0.5 * math.erfc(a * _SQRT1_2))
    if a > -20.0:
        return math.log(0.5 * math.erfc(-a * _SQRT1_2))
    # log Phi(a) = -a^2/2 - log(-a) - log(2 pi)/2 + log(1 + sum_k (-1)^k (2k-1)!! / a^(2k))
    x2 = 1.0 / (a * a)
    term = 1.0
    total = 0.0
    k = 1
    while k < 100:
        term *= -(2.0 * k - 1.0) * x2
        if abs(term) < 1e-17 * (1.0 + abs(total)):
            break
        total += term
        k += 1
    return -0.5 * a * a - math.log(-a) - _HALF_LOG_2PI + math.log1p(total)


@njit(cache=True)
def _ppnd7_upper_nb(log_p):
    """Scalar :func:`ppnd7_upper`."""
    if log_p > math.log(0.075):
        q = math.exp(log_p) - 0.5
        r = 0.180625 - q * q
        return -q * (((_A[3] * r + _A[2]) * r + _A[1]) * r + _A[0]) / (((_B[2] * r + _B[1]) * r + _B[0]) * r + 1.0)
    r = math.sqrt(-log_p)
    if r <= 5.0:
        r = r - 1.6
        return (((_C[3] * r + _C[2]) * r + _C[1]) * r + _C[0]) / ((_D[1] * r + _D[0]) * r + 1.0)
    r = r - 5.0
    return (((_E[3] * r + _E[2]) * r + _E[1]) * r + _E[0]) / ((_F[1] * r + _F[0]) * r + 1.0)


@njit(cache=True, error_model="numpy")
def _combine_nb(d, u, cov):
    """Scalar :func:`combine_nes`."""
    pos = (d + u) / math.sqrt(2.0 + 2.0 * cov)
    neg = (d - u) / math.sqrt(2.0 - 2.0 * cov)
    lp_pos = _log_ndtr_nb(-pos)
    lp_neg = _log_ndtr_nb(neg)
    up = lp_pos < lp_neg
    lp = lp_pos if up else lp_neg
    two_sided = lp + _LOG2 + math.log1p(-math.exp(lp) / 2.0)
    z = _ppnd7_upper_nb(two_sided - _LOG2)
    return z if up else -z


@njit(parallel=True, cache=True, error_model="numpy")
def narnea_scores_numba(D, U, e_rs, e_r2s, sd, sd2, su, su2, sdu, max_d, max_u, n, nes_out, pes_out):
    """NES and PES from the sums of :func:`narnea_sums_numba`, element by element (the numpy
    expressions of :func:`narnea_block`'s python path, fused; one combination for the PES: the
    top score of the NES's own sign)."""
    b, n_reg = D.shape
    e_r = (n + 1) / 2.0
    e_r2 = (2.0 * n * n + 3.0 * n + 1.0) / 6.0
    for i in prange(b):
        ers = e_rs[i]
        dv_cell = e_r2 - ers * ers
        cv_cell = e_r2s[i] - ers * e_r
        for j in range(n_reg):
            d_mean = sd[j] * ers
            d_var = sd2[j] * dv_cell
            u_mean = su[j] * e_r
            u_var = su2[j] * (e_r2 - e_r * e_r)
            cov = sdu[j] * cv_cell / math.sqrt(d_var * u_var)
            d_sd = math.sqrt(d_var)
            u_sd = math.sqrt(u_var)
            nes = _combine_nb((D[i, j] - d_mean) / d_sd, (U[i, j] - u_mean) / u_sd, cov)
            top_d = max_d[j] if nes > 0 else -max_d[j]
            top = _combine_nb((top_d - d_mean) / d_sd, (max_u[j] - u_mean) / u_sd, cov)
            nes_out[i, j] = nes
            pes_out[i, j] = nes / abs(top)


def capped_mor(mor: np.ndarray) -> np.ndarray:
    """The mode of regulation with exactly +-1 replaced by +-MOR_CAP (pyviper's ``replace(1, 0.999)``);
    values strictly between MOR_CAP and 1 stay as they are, as in pyviper."""
    mor = np.asarray(mor, dtype=np.float64)
    return np.where(np.abs(mor) == 1.0, np.sign(mor) * MOR_CAP, mor)


def edge_weights(mor: np.ndarray, lik: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Directed ``mor * lik`` and undirected ``(1 - |mor|) * lik`` weights of every edge."""
    mor = capped_mor(mor)
    lik = np.asarray(lik, dtype=np.float64)
    return mor * lik, (1.0 - np.abs(mor)) * lik


def _dense_rank_desc(values: np.ndarray) -> np.ndarray:
    """Dense ranks (1 = largest) of ``values``."""
    uniq, inv = np.unique(-values, return_inverse=True)
    return inv.astype(np.float64) + 1.0


def regulon_moments(net) -> dict[str, np.ndarray]:
    """Per regulon: sums of the weights, of their squares and products, and the maximal D and U
    (targets at the top ranks in likelihood order) of the PES."""
    w_d, w_u = edge_weights(net.mor, net.lik)
    n = len(net.genes)
    n_reg = len(net.regulators)
    out = {k: np.zeros(n_reg) for k in ("sd", "sd2", "su", "su2", "sdu", "max_d", "max_u")}
    for j in range(n_reg):
        e = slice(net.ptr[j], net.ptr[j + 1])
        wd, wu = w_d[e], w_u[e]
        top = n - _dense_rank_desc(net.lik[e]) + 1.0
        a = np.abs(capped_mor(net.mor[e]))
        out["sd"][j], out["sd2"][j] = wd.sum(), (wd * wd).sum()
        out["su"][j], out["su2"][j] = wu.sum(), (wu * wu).sum()
        out["sdu"][j] = (wd * wu).sum()
        out["max_d"][j] = (a * net.lik[e] * top).sum()
        out["max_u"][j] = ((1.0 - a) * net.lik[e] * top).sum()
    return out


@njit(parallel=True, cache=True)
def narnea_sums_numba(sig, cols, tpos, ptr, tgt, w_d, w_u, d_out, u_out, e_rs, e_r2s):
    """Per cell: ranks of |signature| over ``cols`` (average ties), then for every regulon
    ``D = sum(w_d r s)`` and ``U = sum(w_u r)`` over its edges, and the cell's mean of ``r s`` and
    ``r^2 s``; see :func:`narnea_block`."""
    b = sig.shape[0]
    n = cols.shape[0]
    n_t = tpos.shape[0]
    n_reg = ptr.shape[0] - 1
    for i in prange(b):
        v = np.empty(n)
        s = np.empty(n)
        for k in range(n):
            x = sig[i, cols[k]]
            v[k] = abs(x)
            s[k] = 1.0 if x > 0 else (-1.0 if x < 0 else 0.0)
        codes = np.empty(n, dtype=np.int64)
        order, keys, order2, keys2, counts = rank_scratch(n)
        _rank_codes_row(v, codes, order, keys, order2, keys2, counts)
        mrs = 0.0
        mr2s = 0.0
        for k in range(n):
            r = 0.5 * codes[k]
            mrs += r * s[k]
            mr2s += r * r * s[k]
        e_rs[i] = mrs / n
        e_r2s[i] = mr2s / n
        rt = np.empty(n_t)
        st = np.empty(n_t)
        for t in range(n_t):
            rt[t] = 0.5 * codes[tpos[t]]
            st[t] = s[tpos[t]]
        for j in range(n_reg):
            d = 0.0
            u = 0.0
            for e in range(ptr[j], ptr[j + 1]):
                t = tgt[e]
                d += w_d[e] * rt[t] * st[t]
                u += w_u[e] * rt[t]
            d_out[i, j] = d
            u_out[i, j] = u


def _sums_python(sig_block: np.ndarray, net) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    v = sig_block[:, net.genes]
    ranks = rankdata(np.abs(v), axis=1)
    signs = np.sign(v)
    w_d, w_u = edge_weights(net.mor, net.lik)
    n_reg = len(net.regulators)
    Wd = np.zeros((len(net.targets), n_reg))
    Wu = np.zeros((len(net.targets), n_reg))
    reg_of_edge = np.repeat(np.arange(n_reg), np.diff(net.ptr))
    np.add.at(Wd, (net.tgt, reg_of_edge), w_d)
    np.add.at(Wu, (net.tgt, reg_of_edge), w_u)
    rt, st = ranks[:, net.targets], signs[:, net.targets]
    n = v.shape[1]
    return (rt * st) @ Wd, rt @ Wu, (ranks * signs).sum(axis=1) / n, (ranks * ranks * signs).sum(axis=1) / n


def narnea_block(sig_block: np.ndarray, net, backend: str = "numba", moments: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """NES and PES (cells x regulators of ``net``) of one block of signatures (cells x all genes).

    ``moments``: :func:`regulon_moments` of ``net`` (computed when None; pass it to reuse it
    over blocks).
    """
    sig_block = np.ascontiguousarray(sig_block, dtype=np.float64)
    if moments is None:
        moments = regulon_moments(net)
    b, n_reg = sig_block.shape[0], len(net.regulators)
    if backend == "numba":
        w_d, w_u = edge_weights(net.mor, net.lik)
        D, U = np.empty((b, n_reg)), np.empty((b, n_reg))
        e_rs, e_r2s = np.empty(b), np.empty(b)
        narnea_sums_numba(sig_block, net.genes, net.targets, net.ptr, net.tgt, w_d, w_u, D, U, e_rs, e_r2s)
    elif backend == "python":
        D, U, e_rs, e_r2s = _sums_python(sig_block, net)
    else:
        raise ValueError(f"unknown backend {backend!r}")
    n = len(net.genes)
    m = moments
    if backend == "numba":
        nes, pes = np.empty((b, n_reg)), np.empty((b, n_reg))
        narnea_scores_numba(D, U, e_rs, e_r2s, m["sd"], m["sd2"], m["su"], m["su2"], m["sdu"], m["max_d"], m["max_u"],
                            float(n), nes, pes)
        return nes, pes
    e_r = (n + 1) / 2.0
    e_r2 = (2.0 * n * n + 3.0 * n + 1.0) / 6.0
    d_mean = m["sd"][None, :] * e_rs[:, None]
    d_var = m["sd2"][None, :] * (e_r2 - e_rs * e_rs)[:, None]
    u_mean = m["su"][None, :] * e_r
    u_var = m["su2"][None, :] * (e_r2 - e_r * e_r)
    cov = m["sdu"][None, :] * (e_r2s - e_rs * e_r)[:, None] / np.sqrt(d_var * u_var)
    d_sd, u_sd = np.sqrt(d_var), np.sqrt(u_var)
    nes = combine_nes((D - d_mean) / d_sd, (U - u_mean) / u_sd, cov)
    u_top = (m["max_u"][None, :] - u_mean) / u_sd
    top_pos = combine_nes((m["max_d"][None, :] - d_mean) / d_sd, u_top, cov)
    top_neg = combine_nes((-m["max_d"][None, :] - d_mean) / d_sd, u_top, cov)
    pes = nes / np.abs(np.where(nes > 0, top_pos, top_neg))
    return nes, pes


def integrate(nes_list, pes_list, reg_lists) -> tuple[np.ndarray, np.ndarray, list]:
    """metaVIPER over several networks with NaRnEA, as pyviper integrates them.

    Per cell, a network's weight is the share of the regulators present in every network for
    which it gives the largest |PES|; NES are combined as ``sum(w x) / sqrt(sum(w^2))`` and PES as
    ``sum(w x) / sum(w)`` over the networks that have the regulator (0 where none weighs).
    Returns (nes, pes, union of regulators in order of first appearance).
    """
    union = list(dict.fromkeys(r for regs in reg_lists for r in regs))
    pos = {r: i for i, r in enumerate(union)}
    b = nes_list[0].shape[0]
    k = len(nes_list)
    nes_full = np.full((k, b, len(union)), np.nan)
    pes_full = np.full((k, b, len(union)), np.nan)
    for i, (nes, pes, regs) in enumerate(zip(nes_list, pes_list, reg_lists)):
        cols = [pos[r] for r in regs]
        nes_full[i][:, cols] = nes
        pes_full[i][:, cols] = pes
    common = ~np.isnan(pes_full).any(axis=0)  # (b, R): regulators of every network
    best = np.argmax(np.abs(np.nan_to_num(pes_full, nan=-np.inf)), axis=0)
    weights = np.zeros((k, b))
    n_common = common.sum(axis=1)
    for i in range(k):
        hits = ((best == i) & common).sum(axis=1)
        weights[i] = np.divide(hits, n_common, out=np.zeros(b), where=n_common > 0)
    nes_x = np.nan_to_num(nes_full)
    pes_x = np.nan_to_num(pes_full)
    w = weights[:, :, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        nes = (nes_x * w).sum(axis=0) / np.sqrt((((nes_x != 0) * w) ** 2).sum(axis=0))
        pes = (pes_x * w).sum(axis=0) / ((pes_x != 0) * w).sum(axis=0)
    return np.nan_to_num(nes), np.nan_to_num(pes), union

"""Network benchmark helpers: simulated UMI counts from known networks, scoring, baselines, nulls.

Shared by ``benchmarks/benchmark_networks.py`` and its tests. No argument parsing here.

Simulators
    * :func:`simulate_sergio` -- SERGIO v2 (PyPI ``sergio-scsim`` 1.9.3, import name ``SERGIO``): the
      regulatory network is built, parameterised and solved for its steady state with SERGIO's own
      classes (``GRN``, ``SingleInteraction``, ``mrProfile``, ``GRN.init``), cells are steady-state
      samples of SERGIO's chemical Langevin equation, and the technical noise is SERGIO's own
      (``scNoise``: outlier genes, library size, dropout, Poisson -> integer UMI counts).
      ``engine="sergio"`` runs ``SERGIO.sergio.simulate``, which samples the cells of a type from
      ONE trajectory (``nCells * scale_iter`` Euler steps of ``dt``): neighbouring samples are
      autocorrelated (relaxation time ``1/decay``), so unrelated genes look correlated (median
      Spearman |rho| 0.24 between genes of disconnected sub-networks for 100 cells at the default
      ``dt=0.01``, against 0.07 for independent cells). ``engine="chains"`` (default) applies the
      very same update (:meth:`SergioModel.step`, bit for bit SERGIO's ``_iter_ss``, held equal by
      a test) to one independent chain per cell, so cells are independent draws of the steady
      state, as real cells are.
    * :func:`netpert.aracne.simulate_network` with ``umis=...`` -- the project's planted network
      with cell types, lognormal library sizes and logistic dropout.

Scoring
    Pairs are UNORDERED: a predicted ``regulator, target`` is correct when the truth holds the
    pair in either direction. The truth is restricted to the testable pairs: both genes among
    the genes of the data the network was built from (non-constant there) and at least one of
    them a regulator of the run (ARACNe only tests regulator x gene pairs).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import anndata as ad
import numba
import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.stats import rankdata

from netpert.jit import njit

log = logging.getLogger(__name__)

#: bump when a simulator's definition changes (part of the cache key)
SIM_VERSION = 1
#: a regulon is a regulator with at least this many targets in the consensus network
REGULON_MIN_TARGETS = 10

#: SERGIO's technical-noise parameters (``scNoise._add_noise`` keywords), SERGIO's usual values
#: (outlier genes: probability 0.01, lognormal(0.8, 1) factor; dropout logistic of shape 6.5 around
#: the 85th percentile of log expression) with the library size (lognormal(6.8, 0.4) total per cell
#: before dropout) set so that ~470 genes give ~84 % zeros and a median of ~350 UMIs per cell
SERGIO_NOISE = {"prob_o": 0.01, "mean_o": 0.8, "scale_o": 1.0, "mean_l": 6.8, "scale_l": 0.4, "shape_d": 6.5, "perc_d": 85.0}


# --------------------------------------------------------------------------------------------- scoring
def unordered(a: Iterable[str], b: Iterable[str]) -> set[tuple[str, str]]:
    """The unordered pairs ``{a_i, b_i}`` (as sorted tuples), self pairs dropped."""
    return {(x, y) if x <= y else (y, x) for x, y in zip(map(str, a), map(str, b)) if x != y}


def network_pairs(net: pd.DataFrame) -> set[tuple[str, str]]:
    """The unordered pairs of a network (``regulator, target``); a->b and b->a count once."""
    if net is None or len(net) == 0:
        return set()
    return unordered(net["regulator"], net["target"])


def testable_truth(truth: pd.DataFrame, genes: Iterable[str], regulators: Iterable[str]) -> set[tuple[str, str]]:
    """Unordered truth pairs a network of ``regulators`` x ``genes`` can find (see the module docstring)."""
    genes, regs = set(map(str, genes)), set(map(str, regulators))
    pairs = unordered(truth["regulator"], truth["target"])
    return {p for p in pairs if p[0] in genes and p[1] in genes and (p[0] in regs or p[1] in regs)}


def n_candidates(n_genes: int, n_regulators: int) -> int:
    """Unordered regulator x gene pairs among ``n_genes`` genes of which ``n_regulators`` are regulators."""
    r, g = int(n_regulators), int(n_genes)
    return r * (g - 1) - r * (r - 1) // 2


def score_pairs(pred: set, truth: set, n_candidate_pairs: int | None = None) -> dict:
    """``pairs, correct, precision, recall, f1`` (and ``testable``, ``density`` = expected precision
    of random pairs) of predicted unordered pairs against testable truth pairs."""
    correct = len(pred & truth)
    precision = correct / len(pred) if pred else float("nan")
    recall = correct / len(truth) if truth else float("nan")
    f1 = 2 * precision * recall / (precision + recall) if pred and truth and (precision + recall) > 0 else (0.0 if truth else float("nan"))
    out = {"pairs": len(pred), "correct": correct, "precision": precision, "recall": recall, "f1": f1, "testable": len(truth)}
    if n_candidate_pairs is not None:
        out["density"] = len(truth) / n_candidate_pairs if n_candidate_pairs else float("nan")
    return out


def score_network(net: pd.DataFrame, truth: pd.DataFrame, genes: Sequence[str], regulators: Sequence[str]) -> dict:
    """:func:`score_pairs` of a network against the truth testable on ``genes`` x ``regulators``."""
    genes = list(map(str, genes))
    regs = [r for r in map(str, regulators) if r in set(genes)]
    return score_pairs(network_pairs(net), testable_truth(truth, genes, regs), n_candidates(len(genes), len(regs)))


def regulons(net: pd.DataFrame, min_targets: int = REGULON_MIN_TARGETS) -> int:
    """Regulators with at least ``min_targets`` targets in ``net``."""
    if net is None or len(net) == 0:
        return 0
    return int((net.groupby("regulator", observed=True).size() >= min_targets).sum())


# --------------------------------------------------------------------------------------------- baselines
def _genes_by_samples(data) -> tuple[np.ndarray, list[str]]:
    if isinstance(data, ad.AnnData):
        X = data.X.toarray() if sp.issparse(data.X) else np.asarray(data.X)
        return np.asarray(X, dtype=np.float64).T, [str(g) for g in data.var_names]
    if isinstance(data, pd.DataFrame):
        return data.to_numpy(dtype=np.float64).T, [str(g) for g in data.columns]
    raise TypeError(f"data must be AnnData (cells x genes) or a DataFrame (samples x genes), got {type(data).__name__}")


def varying_genes(data) -> list[str]:
    """Genes of ``data`` that are not constant over its samples (those ARACNe keeps)."""
    values, genes = _genes_by_samples(data)
    const = np.all(values == values[:, :1], axis=1)
    return [g for g, c in zip(genes, const) if not c]


def spearman_matrix(data, regulators: Sequence[str]) -> tuple[np.ndarray, list[str], list[str]]:
    """Spearman rho of every regulator x gene of ``data`` (average ranks for ties; constant genes 0).

    Returns ``(rho, regulators_found, genes)`` with rho of shape (regulators, genes)."""
    values, genes = _genes_by_samples(data)
    index = {g: i for i, g in enumerate(genes)}
    regs = [r for r in dict.fromkeys(map(str, regulators)) if r in index]
    ranks = rankdata(values, axis=1)
    ranks -= ranks.mean(axis=1, keepdims=True)
    norm = np.sqrt((ranks * ranks).sum(axis=1))
    z = ranks / np.where(norm > 0, norm, 1.0)[:, None]
    z[norm == 0] = 0.0
    rho = z[[index[r] for r in regs]] @ z.T
    return np.clip(rho, -1.0, 1.0), regs, genes


def spearman_top(data, regulators: Sequence[str], n: int, genes: Sequence[str] | None = None) -> pd.DataFrame:
    """The ``n`` unordered regulator x gene pairs of ``data`` with the largest Spearman |rho|.

    ``genes`` restricts the pairs to those genes (e.g. the non-constant ones ARACNe tested).
    Columns ``regulator, target, rho`` (a regulator-regulator pair appears once). Ties in |rho|
    keep the regulator-major order (stable sort)."""
    rho, regs, all_genes = spearman_matrix(data, regulators)
    keep = np.ones(len(all_genes), dtype=bool) if genes is None else np.isin(all_genes, list(map(str, genes)))
    regs_kept = [r for r in regs if keep[all_genes.index(r)]]
    pos = {g: j for j, g in enumerate(all_genes)}
    reg_pos = {r: i for i, r in enumerate(regs)}
    rows, cols, seen_reg = [], [], set()
    for r in regs_kept:
        i = reg_pos[r]
        js = np.flatnonzero(keep)
        js = js[js != pos[r]]
        # a pair of two regulators once: skip genes that are regulators already visited
        js = js[[all_genes[j] not in seen_reg for j in js]] if seen_reg else js
        rows.append(np.full(len(js), i))
        cols.append(js)
        seen_reg.add(r)
    if not rows:
        return pd.DataFrame({"regulator": [], "target": [], "rho": []})
    ri, ci = np.concatenate(rows), np.concatenate(cols)
    vals = rho[ri, ci]
    order = np.argsort(-np.abs(vals), kind="stable")[: max(0, int(n))]
    return pd.DataFrame({"regulator": [regs[i] for i in ri[order]], "target": [all_genes[j] for j in ci[order]], "rho": vals[order]})


def random_precision(truth: pd.DataFrame, genes: Sequence[str], regulators: Sequence[str]) -> float:
    """Expected precision of pairs drawn at random among the candidates: the truth density."""
    genes = list(map(str, genes))
    regs = [r for r in map(str, regulators) if r in set(genes)]
    m = n_candidates(len(genes), len(regs))
    return len(testable_truth(truth, genes, regs)) / m if m else float("nan")


# --------------------------------------------------------------------------------------------- data facts
def count_stats(adata: ad.AnnData) -> dict:
    """``zeros`` (fraction of zero entries), ``median_umis`` (per cell), ``cells``, ``genes``, ``integer``."""
    X = sp.csr_matrix(adata.X)
    n = adata.n_obs * adata.n_vars
    nz = np.count_nonzero(X.data)
    totals = np.asarray(X.sum(axis=1)).ravel()
    return {
        "cells": int(adata.n_obs),
        "genes": int(adata.n_vars),
        "zeros": 1.0 - nz / n if n else float("nan"),
        "median_umis": float(np.median(totals)) if len(totals) else float("nan"),
        "integer": bool(np.array_equal(X.data, np.round(X.data))),
    }


# --------------------------------------------------------------------------------------------- SERGIO
def hierarchical_grn(
    n_regulators: int = 30,
    n_targets: int = 440,
    n_master: int = 8,
    second_parent: float = 0.2,
    second_regulator: float = 0.15,
    k_act: tuple[float, float] = (1.0, 5.0),
    k_rep: tuple[float, float] = (-5.0, -1.0),
    p_act: float = 0.75,
    hill_n: float = 2.0,
    seed: int = 0,
) -> pd.DataFrame:
    """A hierarchical regulatory network: ``regulator, target, k, n, type``.

    Regulators ``R000..``: the first ``n_master`` are master regulators (no regulator); each other
    regulator is regulated by one earlier regulator (a second one with probability
    ``second_parent``), so chains master -> regulator -> target give the DPI indirect pairs to
    remove. Targets ``G000..``: one regulator each (every regulator gets at least one when
    possible), a second one with probability ``second_regulator``. Interaction strengths follow
    SERGIO's ``grnParam`` (activation with probability ``p_act``, ``k`` uniform in ``k_act``,
    else in ``k_rep``; Hill coefficient ``hill_n``). Acyclic by construction.
    """
    if not 1 <= n_master <= n_regulators:
        raise ValueError("need 1 <= n_master <= n_regulators")
    rng = np.random.default_rng(seed)
    w = max(3, len(str(n_regulators - 1)))
    wt = max(3, len(str(n_targets - 1)))
    regs = [f"R{i:0{w}d}" for i in range(n_regulators)]
    rows = []

    def edge(r, t, kind):
        k = rng.uniform(*k_act) if rng.random() < p_act else rng.uniform(*k_rep)
        rows.append((r, t, float(k), float(hill_n), kind))

    for i in range(n_master, n_regulators):
        parents = [int(rng.integers(0, i))]
        if i >= 2 and rng.random() < second_parent:
            other = int(rng.integers(0, i))
            if other != parents[0]:
                parents.append(other)
        for p in parents:
            edge(regs[p], regs[i], "reg-reg")
    owners = np.concatenate([rng.permutation(n_regulators), rng.integers(0, n_regulators, max(0, n_targets - n_regulators))])[:n_targets]
    for t, owner in enumerate(owners):
        name = f"G{t:0{wt}d}"
        parents = [int(owner)]
        if rng.random() < second_regulator:
            other = int(rng.integers(0, n_regulators))
            if other != parents[0]:
                parents.append(other)
        for p in parents:
            edge(regs[p], name, "reg-target")
    return pd.DataFrame(rows, columns=["regulator", "target", "k", "n", "type"])


class _GlobalSeed:
    """SERGIO draws from numpy's global RandomState: seed it for a block, then restore it."""

    def __init__(self, seed: int):
        self.seed = int(seed) % 2**32

    def __enter__(self):
        self.state = np.random.get_state()
        np.random.seed(self.seed)

    def __exit__(self, *exc):
        np.random.set_state(self.state)


def sergio_grn(truth: pd.DataFrame, n_cell_types: int = 4, decay: float = 0.8, seed: int = 0,
               levels: dict | None = None):
    """SERGIO's ``GRN`` of ``truth`` (from :func:`hierarchical_grn`), initialised: master-regulator
    production rates per cell type from ``mrProfile.build_rnd`` (each master regulator low or high
    in each type, ``levels`` = SERGIO's default ranges), half responses and steady states from
    ``GRN.init``. Seeded through numpy's global state (restored afterwards)."""
    from SERGIO.GRN import GRN, Gene, SingleInteraction
    from SERGIO.MR import mrProfile

    grn = GRN()
    for r, t, k, n in truth[["regulator", "target", "k", "n"]].itertuples(index=False):
        grn.add_interaction(SingleInteraction(reg=[Gene(name=str(r), decay=decay)], tar=Gene(name=str(t), decay=decay), k=float(k), h=None, n=float(n)))
    grn.setMRs()
    with _GlobalSeed(seed):
        mr = mrProfile(MR_names=sorted(grn.get_mrs()), n_types=int(n_cell_types))
        mr.build_rnd(**({"range_dict": levels} if levels else {}))
        grn.init(mr, update_half_resp=True)
    return grn


@dataclass
class SergioModel:
    """The arrays of an initialised SERGIO ``GRN``: what one step of its steady-state SDE needs.

    ``genes`` in SERGIO's order (``grn.attr_['genes']``); ``rates`` (genes x types) the master
    regulators' production rates (0 elsewhere); ``decay`` per gene; the interactions as arrays
    ``reg, tar, k, n, h`` grouped by ``slot`` (0 for a target's first interaction, 1 for its second,
    ...), in each target's own order so sums are taken in SERGIO's order; ``ss`` SERGIO's
    steady-state estimate (genes x types).
    """

    genes: list[str]
    is_mr: np.ndarray
    rates: np.ndarray
    decay: np.ndarray
    reg: np.ndarray
    tar: np.ndarray
    k: np.ndarray
    n: np.ndarray
    h: np.ndarray
    slot: np.ndarray
    ss: np.ndarray

    @classmethod
    def from_grn(cls, grn) -> "SergioModel":
        genes = list(grn.attr_["genes"].keys())
        pos = {g: i for i, g in enumerate(genes)}
        T = int(grn.nCellTypes_)
        G = len(genes)
        is_mr = np.zeros(G, dtype=bool)
        rates = np.zeros((G, T))
        decay = np.zeros(G)
        ss = np.zeros((G, T))
        reg, tar, k, n, h, slot = [], [], [], [], [], []
        for i, name in enumerate(genes):
            g = grn.attr_["genes"][name]
            decay[i] = g.decay_
            ss[i] = g.ss_conc_
            if g.isMR_:
                is_mr[i] = True
                rates[i] = np.asarray(g.prod_rates_, dtype=np.float64)
                continue
            for s, inter in enumerate(g.inInteractions.values()):
                if len(inter.reg_) != 1:
                    raise ValueError("cooperative interactions are not supported (nor by SERGIO 1.9.3)")
                reg.append(pos[inter.reg_[0].name_])
                tar.append(i)
                k.append(inter.k_)
                n.append(inter.n_)
                h.append(inter.h_)
                slot.append(s)
        arr = lambda v, dt=np.float64: np.asarray(v, dtype=dt)  # noqa: E731
        return cls(genes, is_mr, rates, decay, arr(reg, np.int64), arr(tar, np.int64), arr(k), arr(n), arr(h), arr(slot, np.int64), ss)

    def production(self, X: np.ndarray, types: np.ndarray) -> np.ndarray:
        """Production rates (genes x chains) at concentrations ``X``: SERGIO's ``Gene._calc_prod``."""
        P = np.zeros_like(X)
        P[self.is_mr] = self.rates[self.is_mr][:, types]
        x = X[self.reg]
        xn = np.power(x, self.n[:, None])
        hill = xn / (xn + np.power(self.h, self.n)[:, None])
        contrib = np.where((self.k > 0)[:, None], self.k[:, None] * hill, np.abs(self.k)[:, None] * (1 - hill))
        for s in range(int(self.slot.max()) + 1 if len(self.slot) else 0):
            m = self.slot == s  # at most one interaction per target in a slot: no repeated index
            P[self.tar[m]] += contrib[m]
        return P

    def step(self, X: np.ndarray, types: np.ndarray, rndP: np.ndarray, rndD: np.ndarray, dt: float = 0.01, noise_s: float = 1.0) -> np.ndarray:
        """One Euler-Maruyama step of SERGIO's chemical Langevin equation (``sergio._iter_ss``), the
        plain-numpy reference: ``X + (P - D) dt + (sqrt(P) rndP + sqrt(D) rndD) noise_s sqrt(dt)``,
        floored at 0 (genes x chains; ``rndP``, ``rndD`` standard normal draws of that shape)."""
        P = self.production(X, types)
        P[P < 0] = 0
        D = self.decay[:, None] * X
        new = X + (P - D) * dt + (np.multiply(np.sqrt(P), rndP) + np.multiply(np.sqrt(D), rndD)) * noise_s * np.sqrt(dt)
        return np.maximum(new, 0.0)

    def _csr(self):
        order = np.lexsort((self.slot, self.tar))
        ptr = np.zeros(len(self.genes) + 1, dtype=np.int64)
        np.add.at(ptr, self.tar + 1, 1)
        return np.cumsum(ptr), self.reg[order], self.k[order], self.n[order], np.power(self.h, self.n)[order]

    def chains(self, n_cells: int, steps: int = 1000, dt: float = 0.01, noise_s: float = 1.0, seed: int = 0,
               backend: str = "numba", block: int = 8) -> tuple[np.ndarray, np.ndarray]:
        """``n_cells`` independent cells per type: each a chain started at SERGIO's steady-state estimate
        and run ``steps`` steps of :meth:`step`. Returns (genes x cells clean expression, type of each cell).

        The normal draws come from ``numpy.random.default_rng(seed)`` in blocks of ``block`` steps,
        shape (block, 2, cells, genes); ``backend="numba"`` (a compiled kernel, one thread per chain)
        and ``backend="python"`` (:meth:`step`) consume the same draws and agree to rounding."""
        T = self.rates.shape[1]
        types = np.repeat(np.arange(T), int(n_cells)).astype(np.int64)
        X = np.maximum(self.ss[:, types], 0.0)
        rng = np.random.default_rng(seed)
        C, G = len(types), len(self.genes)
        if backend == "numba":
            ptr, reg, k, n, hn = self._csr()
            state = np.ascontiguousarray(X.T)
        elif backend != "python":
            raise ValueError(f"unknown backend {backend!r}; use 'numba' or 'python'")
        done = 0
        while done < int(steps):
            b = min(int(block), int(steps) - done)
            Z = rng.standard_normal((b, 2, C, G))
            if backend == "numba":
                _chains_kernel(state, types, Z, self.is_mr, self.rates, self.decay, ptr, reg, k, n, hn, float(dt), float(noise_s))
            else:
                for s in range(b):
                    X = self.step(X, types, Z[s, 0].T, Z[s, 1].T, dt, noise_s)
            done += b
        return (np.ascontiguousarray(state.T) if backend == "numba" else X), types


@njit(parallel=True, cache=True)
def _chains_kernel(state, types, Z, is_mr, rates, decay, ptr, reg, k, n, hn, dt, noise_s):  # pragma: no cover - compiled
    C, G = state.shape
    S = Z.shape[0]
    sdt = np.sqrt(dt)
    for c in numba.prange(C):
        x = state[c].copy()
        new = np.empty(G)
        t = types[c]
        for s in range(S):
            for g in range(G):
                if is_mr[g]:
                    p = rates[g, t]
                else:
                    p = 0.0
                    for e in range(ptr[g], ptr[g + 1]):
                        xr = x[reg[e]]
                        xn = xr * xr if n[e] == 2.0 else xr ** n[e]
                        hill = xn / (xn + hn[e])
                        if k[e] > 0:
                            p += k[e] * hill
                        else:
                            p += abs(k[e]) * (1 - hill)
                if p < 0:
                    p = 0.0
                d = decay[g] * x[g]
                v = x[g] + (p - d) * dt + (np.sqrt(p) * Z[s, 0, c, g] + np.sqrt(d) * Z[s, 1, c, g]) * noise_s * sdt
                new[g] = v if v > 0 else 0.0
            x, new = new, x
        state[c] = x


def sergio_noise(clean: np.ndarray, seed: int = 0, **params) -> np.ndarray:
    """SERGIO's technical noise (``SERGIO.Noise.scNoise._add_noise``) on clean genes x cells
    expression: outlier genes, library size, dropout, Poisson UMI counts (``params``: its keyword
    arguments, default :data:`SERGIO_NOISE`). Integer counts, genes x cells."""
    from SERGIO.Noise import scNoise

    kw = dict(SERGIO_NOISE, **params)
    with _GlobalSeed(seed):
        out = scNoise()._add_noise(np.array(clean, dtype=np.float64, copy=True), to_count=True, **kw)
    return np.asarray(out, dtype=np.int64)


def simulate_sergio(
    n_cell_types: int = 4,
    n_cells: int = 300,
    n_regulators: int = 30,
    n_targets: int = 440,
    n_master: int = 8,
    seed: int = 0,
    engine: str = "chains",
    steps: int = 1000,
    dt: float = 0.01,
    noise_s: float = 1.0,
    scale_iter: int = 10,
    noise: dict | None = None,
) -> tuple[ad.AnnData, pd.DataFrame]:
    """SERGIO UMI counts from a known hierarchical network (see the module docstring).

    Returns ``(adata, truth)``: cells x genes integer counts (int32 CSR), ``obs['cell_type']``
    (``type0..``), genes ordered regulators then targets; ``truth`` from :func:`hierarchical_grn`.
    ``uns['netpert']['simulated']`` records every parameter and the seconds taken.
    """
    t0 = time.perf_counter()
    truth = hierarchical_grn(n_regulators, n_targets, n_master, seed=seed)
    grn = sergio_grn(truth, n_cell_types, seed=seed + 1)
    if engine == "chains":
        model = SergioModel.from_grn(grn)
        clean, types = model.chains(n_cells, steps=steps, dt=dt, noise_s=noise_s, seed=seed + 2)
        genes = model.genes
    elif engine == "sergio":
        from SERGIO import sergio

        with _GlobalSeed(seed + 2):
            sim = sergio(grn)
            sim.simulate(nCells=int(n_cells), noise_s=noise_s, safety_iter=150, scale_iter=int(scale_iter), dt=dt)
            expr = sim.getSimExpr()
        clean, genes = expr.to_numpy(dtype=np.float64), [str(g) for g in expr.index]
        types = np.repeat(np.arange(n_cell_types), n_cells)
    else:
        raise ValueError(f"unknown SERGIO engine {engine!r}; use 'chains' or 'sergio'")
    counts = sergio_noise(clean, seed=seed + 3, **(noise or {}))
    order = sorted(range(len(genes)), key=lambda i: (not genes[i].startswith("R"), genes[i]))
    X = sp.csr_matrix(counts[order].T.astype(np.int32))
    obs = pd.DataFrame({"cell_type": pd.Categorical([f"type{t}" for t in types])}, index=[f"cell{i:05d}" for i in range(len(types))])
    adata = ad.AnnData(X=X, obs=obs, var=pd.DataFrame(index=[genes[i] for i in order]))
    seconds = time.perf_counter() - t0
    adata.uns["netpert"] = {
        "source": "SERGIO (sergio-scsim 1.9.3) simulation, netpert.aracne.benchmarking.simulate_sergio",
        "raw_counts": True,
        "simulated": {
            "simulator": "sergio", "engine": engine, "n_cell_types": n_cell_types, "n_cells": n_cells,
            "n_regulators": n_regulators, "n_targets": n_targets, "n_master": n_master, "seed": seed, "steps": steps,
            "dt": dt, "noise_s": noise_s, "scale_iter": scale_iter, "noise": dict(SERGIO_NOISE, **(noise or {})),
            "seconds": seconds, "version": SIM_VERSION,
        },
    }
    return adata, truth[["regulator", "target", "type"]].reset_index(drop=True)


# --------------------------------------------------------------------------------------------- cache
def cache_key(params: dict) -> str:
    """A short stable hash of ``params`` (JSON, sorted keys) and :data:`SIM_VERSION`."""
    text = json.dumps(dict(params, _version=SIM_VERSION), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def save_dataset(path: str | Path, adata: ad.AnnData, truth: pd.DataFrame) -> None:
    """Write a simulated data set (counts, genes, cells, cell types, truth, provenance) as one npz, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    X = sp.csr_matrix(adata.X)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez_compressed(
        tmp, data=X.data, indices=X.indices, indptr=X.indptr, shape=np.array(X.shape),
        genes=np.array(adata.var_names, dtype=str), cells=np.array(adata.obs_names, dtype=str),
        cell_type=np.array(adata.obs["cell_type"].astype(str), dtype=str),
        truth_regulator=truth["regulator"].to_numpy(dtype=str), truth_target=truth["target"].to_numpy(dtype=str),
        truth_type=(truth["type"] if "type" in truth else pd.Series([""] * len(truth))).to_numpy(dtype=str),
        uns=np.array(json.dumps(adata.uns.get("netpert", {}), default=str)),
    )
    tmp.replace(path)


def load_dataset(path: str | Path) -> tuple[ad.AnnData, pd.DataFrame]:
    """Read a data set written by :func:`save_dataset`."""
    with np.load(Path(path), allow_pickle=False) as z:
        X = sp.csr_matrix((z["data"], z["indices"], z["indptr"]), shape=tuple(z["shape"]))
        obs = pd.DataFrame({"cell_type": pd.Categorical(z["cell_type"])}, index=list(z["cells"]))
        adata = ad.AnnData(X=X, obs=obs, var=pd.DataFrame(index=list(z["genes"])))
        adata.uns["netpert"] = json.loads(str(z["uns"]))
        truth = pd.DataFrame({"regulator": z["truth_regulator"], "target": z["truth_target"], "type": z["truth_type"]})
    return adata, truth


def cached_dataset(cache_dir: str | Path | None, name: str, params: dict, make) -> tuple[ad.AnnData, pd.DataFrame, bool]:
    """``make()`` -> (adata, truth), cached as ``cache_dir/{name}-{hash(params)}.npz`` (no cache when
    ``cache_dir`` is None). Returns (adata, truth, from_cache)."""
    if cache_dir is None:
        adata, truth = make()
        return adata, truth, False
    path = Path(cache_dir) / f"{name}-{cache_key(params)}.npz"
    if path.is_file():
        adata, truth = load_dataset(path)
        return adata, truth, True
    adata, truth = make()
    save_dataset(path, adata, truth)
    return adata, truth, False


def write_h5ad(adata: ad.AnnData, path: str | Path, regulators: Sequence[str]) -> tuple[Path, Path]:
    """Write ``adata`` (integer counts as CSR in X, ``obs['cell_type']``, gene names in the var
    index) to ``path`` and the regulators, one per line, to ``regulators.txt`` beside it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    out = ad.AnnData(X=sp.csr_matrix(adata.X).astype(np.int32), obs=adata.obs[["cell_type"]].copy(), var=pd.DataFrame(index=adata.var_names.copy()))
    uns = adata.uns.get("netpert", {})
    out.uns["simulation"] = json.dumps(uns, default=str)
    tmp = path.with_name(path.name + ".tmp.h5ad")
    out.write_h5ad(tmp)
    tmp.replace(path)
    regs_path = path.with_name("regulators.txt")
    regs_path.write_text("".join(f"{r}\n" for r in regulators))
    return path, regs_path


# --------------------------------------------------------------------------------------------- nulls
def permuted_within(adata: ad.AnnData, key: str = "cell_type", seed: int = 0) -> ad.AnnData:
    """Null (i): every gene permuted independently across the cells of each ``key`` group (before
    any aggregation). Marginals per group are kept, every gene-gene relation is destroyed."""
    from netpert.metacells import permute_genes

    parts = []
    groups = adata.obs[key].astype(str)
    for i, g in enumerate(sorted(groups.unique())):
        idx = np.flatnonzero((groups == g).values)
        parts.append((idx, permute_genes(adata[idx], np.random.default_rng([int(seed), i]), depth_bins=1).X))
    X = sp.vstack([p for _, p in parts]).tocsr()
    order = np.concatenate([idx for idx, _ in parts])
    inv = np.empty_like(order)
    inv[order] = np.arange(len(order))
    out = ad.AnnData(X=X[inv], obs=adata.obs.copy(), var=adata.var.copy())
    out.uns["netpert"] = dict(adata.uns.get("netpert", {}), raw_counts=True, null="genes permuted within each cell type")
    return out


def library_null(adata: ad.AnnData, key: str = "cell_type", seed: int = 0) -> ad.AnnData:
    """Null (ii): counts Poisson(size_c * p_g) with the data's own library sizes (``size_c`` = the
    cell's total) and each group's gene fractions ``p_g``: no gene-gene relation but library size."""
    rng = np.random.default_rng([int(seed), 99])
    X = sp.csr_matrix(adata.X, dtype=np.float64)
    totals = np.asarray(X.sum(axis=1)).ravel()
    out = np.zeros(adata.shape, dtype=np.int32)
    groups = adata.obs[key].astype(str)
    for g in sorted(groups.unique()):
        idx = np.flatnonzero((groups == g).values)
        frac = np.asarray(X[idx].sum(axis=0)).ravel()
        frac = frac / frac.sum() if frac.sum() > 0 else frac
        out[idx] = rng.poisson(np.outer(totals[idx], frac))
    res = ad.AnnData(X=sp.csr_matrix(out), obs=adata.obs.copy(), var=adata.var.copy())
    res.uns["netpert"] = dict(adata.uns.get("netpert", {}), raw_counts=True, null="Poisson around per-cell library size only")
    return res


# --------------------------------------------------------------------------------------------- pipeline
def regulators_file(regulators: Sequence[str], folder: str | Path) -> Path:
    """A regulator list file (one name a line) in ``folder``, named by its content's hash."""
    text = "".join(f"{r}\n" for r in regulators)
    path = Path(folder) / f"regulators-{hashlib.sha256(text.encode()).hexdigest()[:12]}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.is_file():
        path.write_text(text)
    return path


@dataclass
class StratumResult:
    """One stratum's network and the data it was built from."""

    name: str
    data: ad.AnnData
    network: pd.DataFrame
    seconds: float
    n_cells: int
    aggregation: str


def run_networks(
    adata: ad.AnnData,
    regulators: Sequence[str],
    regulator_file: str | Path,
    bootstraps: int,
    seed: int = 1,
    stratify_kw: dict | None = None,
    aracne_kw: dict | None = None,
    min_cells: int = 30,
    min_cells_per_gene: int = 3,
) -> list[StratumResult]:
    """The project's first stage on ``adata`` (``obs['cell_type']``, counts in X): ``netpert.data.prepare``,
    ``netpert.data.stratify(**stratify_kw)``, then ``netpert.aracne.aracne(**aracne_kw)`` per stratum
    with the stratum's null data where the workflow uses it (``netpert.data.uses_null_file``)."""
    from netpert.aracne import aracne
    from netpert.data import prepare, stratify, uses_null_file

    cells = prepare(adata, "cell_type", min_cells=min_cells, min_cells_per_gene=min_cells_per_gene,
                    regulator_lists=[str(regulator_file)], source="simulated data")
    t0 = time.perf_counter()
    kept, table = stratify(cells, min_cells=min_cells, seed=seed, **(stratify_kw or {}))
    t_strat = (time.perf_counter() - t0) / max(1, len(kept))
    out = []
    regset = set(map(str, regulators))
    for st in kept:
        regs = [g for g in st.adata.var_names if g in regset]
        t1 = time.perf_counter()
        kw = dict(aracne_kw or {})
        null = getattr(st, "null", None)
        if null is not None and uses_null_file(st.adata):
            kw.setdefault("null_data", null)
        net = aracne(st.adata, regs, bootstraps=bootstraps, seed=seed, progress=False, **kw)
        row = table[table["stratum"] == st.name].iloc[0]
        out.append(StratumResult(st.name, st.adata, net, time.perf_counter() - t1 + t_strat, int(row["n_cells"]), str(row["aggregation"])))
    return out

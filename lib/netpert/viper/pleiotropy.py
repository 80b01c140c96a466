"""Pleiotropy correction, as R viper's ``shadowRegulon`` (``viper(pleiotropy=TRUE)``).

Per cell, regulators with a significant NES (two-sided p < ``regulators``, or the top
``regulators`` when it is >= 1) are compared pairwise: for regulator A and each other significant
B sharing at least ``targets`` targets, the targets of A shared with B are scored with aREA on
the signature ranked within A's targets (signed by A's NES), giving a one-sided p-value
``p(A x B)``. A pair is *pleiotropic* when one direction explains the other:

- ``adaptive`` (default): ``d = log10 p(B x A) - log10 p(A x B)``; when d > 0, A's likelihoods on
  the shared targets are divided by ``(1 + d) ^ (penalty / tests_A)`` (B's when d < 0), with
  ``tests_A`` the number of tested pairs A takes part in;
- ``absolute``: when ``p(A x B) < shadow <= p(B x A)``, A's shared likelihoods are divided by
  ``penalty ^ (1 / tests_A)`` (and conversely).

The penalised regulons are then re-scored with single-sample aREA over the whole signature, and
their NES replace the uncorrected ones. The defaults are R's ``pleiotropyArgs``: regulators 0.05,
shadow 0.05, targets 10, penalty 20, method "adaptive".

Cost: the regulon overlaps are computed once per network; the per-cell work (ranks within each
significant regulator's targets, pairwise sums, one re-scoring) is numpy per cell, a few
milliseconds each, so the correction is far slower than plain aREA on 100,000 cells (as in R).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.special import ndtri
from scipy.stats import norm, rankdata

from netpert.errors import InputError
from netpert.viper.area import Network, area_signature_vector


@dataclass
class PleiotropyArgs:
    """R viper's ``pleiotropyArgs``."""

    regulators: float = 0.05
    shadow: float = 0.05
    targets: int = 10
    penalty: float = 20.0
    method: str = "adaptive"

    @classmethod
    def from_any(cls, args) -> "PleiotropyArgs":
        if args is None:
            return cls()
        if isinstance(args, cls):
            out = args
        elif isinstance(args, dict):
            unknown = set(args) - {"regulators", "shadow", "targets", "penalty", "method"}
            if unknown:
                raise InputError(f"unknown pleiotropy argument(s) {sorted(unknown)}; use regulators, shadow, targets, penalty, method")
            out = cls(**args)
        else:
            raise InputError(f"pleiotropy_args must be a dict or PleiotropyArgs, got {type(args).__name__}")
        if out.method not in ("adaptive", "absolute"):
            raise InputError(f"pleiotropy method must be 'adaptive' or 'absolute', got {out.method!r}")
        return out


class ShadowModel:
    """Cell-independent pieces of the shadow analysis for one prepared network."""

    def __init__(self, net: Network):
        self.net = net
        self.tpos = net.targets[net.tgt]  # per edge: position within the network's genes
        n_reg = len(net.regulators)
        reg = np.repeat(np.arange(n_reg), np.diff(net.ptr))
        # A[r, g] = 1 when gene g is a target of regulator r
        self.A = sp.csc_matrix((np.ones(len(reg)), (reg, self.tpos)), shape=(n_reg, net.n_genes))
        self._cache: dict[int, tuple] = {}

    def pair_terms(self, r1: int):
        """For regulator r1: overlap indicator (regulators x r1's edges), overlap sizes and the
        per-pair factor ``sqrt(sum((lik / max lik)^2)) / sum(lik)`` over the shared targets."""
        if r1 not in self._cache:
            a, b = self.net.ptr[r1], self.net.ptr[r1 + 1]
            M = self.A[:, self.tpos[a:b]].tocsr()
            lik = self.net.lik[a:b]
            size = np.asarray(M.sum(axis=1)).ravel()
            sumlik = M @ lik
            maxlik = np.asarray(M.multiply(lik[None, :]).max(axis=1).todense()).ravel()
            with np.errstate(divide="ignore", invalid="ignore"):
                fac = np.sqrt(M @ (lik**2)) / maxlik / sumlik
            self._cache[r1] = (M, size, fac)
        return self._cache[r1]


def shadow_regulon(values: np.ndarray, nes: np.ndarray, model: ShadowModel, args: PleiotropyArgs):
    """R's ``shadowRegulon`` for one cell: ``{regulator index: penalised likelihoods}`` (None when
    nothing is penalised). ``values``: the cell's signature over the network's genes; ``nes``: its
    uncorrected NES (network regulator order)."""
    net = model.net
    pval = 2 * norm.sf(np.abs(nes))
    if args.regulators < 1:
        tfs = np.flatnonzero(pval < args.regulators)
    else:
        tfs = np.argsort(pval, kind="stable")[: int(args.regulators)]
    if len(tfs) < 2:
        return None
    k = len(tfs)
    pm = np.full((k, k), np.nan)  # pm[i, j] = p(tfs[i] x tfs[j])
    for i, r1 in enumerate(tfs):
        M, size, fac = model.pair_terms(r1)
        a, b = net.ptr[r1], net.ptr[r1 + 1]
        x = values[model.tpos[a:b]]
        s2 = rankdata(x) / (len(x) + 1) * 2 - 1
        s1 = np.abs(s2) * 2 - 1
        s1 = s1 + (1 - s1.max()) / 2
        s1 = ndtri(s1 / 2 + 0.5)
        sg = np.sign(nes[r1]) or 1.0
        s2 = ndtri(s2 / 2 + 0.5) * sg
        mor, lik = net.mor[a:b], net.lik[a:b]
        others = tfs[tfs != r1]
        Mo = M[others]
        sum1 = Mo @ (mor * lik * s2)
        sum2 = Mo @ ((1 - np.abs(mor)) * lik * s1)
        ss = np.where(sum1 < 0, -1.0, 1.0)
        val = (np.abs(sum1) + sum2 * (sum2 > 0)) * ss * fac[others]
        p = norm.sf(val)
        p[size[others] < args.targets] = np.nan
        pm[i, np.flatnonzero(tfs != r1)] = p
    # pairs (i < j) in the order of combn, tested in both directions
    ii, jj = np.triu_indices(k, 1)
    p1, p2 = pm[ii, jj], pm[jj, ii]
    ok = ~(np.isnan(p1) | np.isnan(p2))
    ii, jj, p1, p2 = ii[ok], jj[ok], p1[ok], p2[ok]
    if len(ii) == 0:
        return None
    tests = np.bincount(np.concatenate([ii, jj]), minlength=k)
    if args.method == "absolute":
        first = (p1 < args.shadow) & (p2 > args.shadow)
        second = (p1 > args.shadow) & (p2 < args.shadow)
        rows = [(ii[m], jj[m]) for m in np.flatnonzero(first)] + [(jj[m], ii[m]) for m in np.flatnonzero(second)]
        if not rows:
            return None
        factors = [args.penalty ** (1.0 / tests[a_]) for a_, _ in rows]
    else:
        with np.errstate(divide="ignore", invalid="ignore"):
            d = np.log10(p2) - np.log10(p1)
        pos, neg = np.flatnonzero(d > 0), np.flatnonzero(d < 0)
        rows = [(ii[m], jj[m]) for m in pos] + [(jj[m], ii[m]) for m in neg]
        dd = np.concatenate([d[pos], -d[neg]])
        if not rows:
            return None
        factors = [(1 + dd[m]) ** (args.penalty / tests[rows[m][0]]) for m in range(len(rows))]
    new = {}
    for (a_, b_), f in zip(rows, factors):
        r1, r2 = tfs[a_], tfs[b_]
        if r1 not in new:
            new[r1] = net.lik[net.ptr[r1]:net.ptr[r1 + 1]].copy()
        M, _, _ = model.pair_terms(r1)
        shared = M[r2].indices
        new[r1][shared] = new[r1][shared] / f
    return new


def correct_block(sig_block: np.ndarray, nes_block: np.ndarray, net: Network, args: PleiotropyArgs | dict | None = None,
                  model: ShadowModel | None = None) -> np.ndarray:
    """NES of a block of cells after the pleiotropy correction (a corrected copy of ``nes_block``)."""
    args = PleiotropyArgs.from_any(args)
    model = model or ShadowModel(net)
    out = np.array(nes_block, dtype=np.float64, copy=True)
    for c in range(sig_block.shape[0]):
        values = sig_block[c, net.genes]
        new = shadow_regulon(values, out[c], model, args)
        if not new:
            continue
        regs = np.array(sorted(new))
        regs = regs[np.diff(net.ptr)[regs] >= 5]  # R re-scores with aREA(minsize=5)
        if len(regs) == 0:
            continue
        ptr = np.concatenate(([0], np.cumsum(np.diff(net.ptr)[regs])))
        tpos = np.concatenate([model.tpos[net.ptr[r]:net.ptr[r + 1]] for r in regs])
        mor = np.concatenate([net.mor[net.ptr[r]:net.ptr[r + 1]] for r in regs])
        lik = np.concatenate([new[r] for r in regs])
        _, nes = area_signature_vector(values, ptr, tpos, mor, lik)
        out[c, regs] = nes
    return out

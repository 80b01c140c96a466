"""Consensus of bootstrap networks by a Poisson test (ARACNe-AP ``--consolidate``).

For each edge, k is the number of bootstrap networks it appears in and its MI the mean over
those networks. With R and T the numbers of distinct regulators and distinct targets seen across
all networks and E the total number of edge occurrences, the rate is ``lambda = E / (R * T)`` and
the p-value ``P(X > k)`` for ``X ~ Poisson(lambda)`` (strict inequality, as commons-math3's
``1 - cdf(k)``; computed here with ``scipy.stats.poisson.sf``, which keeps precision below 1e-16).
With Bonferroni the p-value is multiplied by ``R * T`` and capped at 1. An edge is kept when its
(corrected) p-value is ``< pvalue``. This reproduces ``fixtures/aracne/consolidated*.tsv``.

:class:`ConsensusAccumulator` streams networks (one file or chunk at a time), so the bootstrap
networks never have to be in memory together.
"""

from __future__ import annotations

import logging
from typing import Iterable

import numpy as np
import pandas as pd
from scipy.stats import poisson

log = logging.getLogger(__name__)

_COLUMNS = ["regulator", "target", "mi", "pvalue", "count"]


def empty_consensus() -> pd.DataFrame:
    """A consensus network without edges (the right columns and dtypes)."""
    return pd.DataFrame({"regulator": pd.Series([], dtype=object), "target": pd.Series([], dtype=object),
                         "mi": pd.Series([], dtype=np.float64), "pvalue": pd.Series([], dtype=np.float64),
                         "count": pd.Series([], dtype=np.int64)})


class ConsensusAccumulator:
    """Accumulate edge counts and MI sums over bootstrap networks; :meth:`result` tests them.

    Each network passed to :meth:`add` is a DataFrame with ``regulator``, ``target`` and ``mi``
    columns (other columns, such as ``bootstrap``, are ignored). Each row is one occurrence, so a
    long table holding several bootstrap networks can be added at once.
    """

    def __init__(self) -> None:
        self._reg: dict[str, int] = {}
        self._tgt: dict[str, int] = {}
        self._keys = np.zeros(0, np.int64)
        self._count = np.zeros(0, np.int64)
        self._sum = np.zeros(0, np.float64)
        self.occurrences = 0
        self.networks = 0
        self.bootstrap_ids: set = set()

    @staticmethod
    def _codes(values: pd.Series, vocab: dict[str, int]) -> np.ndarray:
        if isinstance(values.dtype, pd.CategoricalDtype) and len(values):
            # a network table's categoricals: map the categories in use, not every row's string
            codes = values.cat.codes.to_numpy()
            if codes.min() >= 0:
                used = np.unique(codes)
                names = values.cat.categories[used].astype(str)
                mapping = np.full(len(values.cat.categories), -1, np.int64)
                for name, code in sorted(zip(names, used.tolist())):  # new names in name order, as below
                    known = vocab.get(name)
                    if known is None:
                        known = vocab[name] = len(vocab)
                    mapping[code] = known
                return mapping[codes]
        cat = pd.Categorical(values.astype(str))
        cats = cat.categories
        mapping = np.empty(len(cats), np.int64)
        for i, name in enumerate(cats):
            code = vocab.get(name)
            if code is None:
                code = vocab[name] = len(vocab)
            mapping[i] = code
        return mapping[cat.codes] if len(cats) else np.zeros(0, np.int64)

    def add(self, net: pd.DataFrame) -> None:
        """Add one network (or a long table of several) to the tallies."""
        missing = {"regulator", "target", "mi"} - set(net.columns)
        if missing:
            raise ValueError(f"network table lacks columns {sorted(missing)}")
        self.networks += 1
        if "bootstrap" in net.columns:
            self.bootstrap_ids.update(pd.unique(net["bootstrap"]).tolist())
        if len(net) == 0:
            return
        r = self._codes(net["regulator"], self._reg)
        t = self._codes(net["target"], self._tgt)
        keys = (r << 32) | t
        mi = net["mi"].to_numpy(dtype=np.float64)
        self.occurrences += len(keys)
        all_keys = np.concatenate([self._keys, keys])
        uniq, inv = np.unique(all_keys, return_inverse=True)
        count = np.zeros(len(uniq), np.int64)
        np.add.at(count, inv[: len(self._keys)], self._count)
        np.add.at(count, inv[len(self._keys):], 1)
        # sums in arrival order: previous partial sum first, then the new values row by row
        total = np.zeros(len(uniq), np.float64)
        total[inv[: len(self._keys)]] = self._sum
        np.add.at(total, inv[len(self._keys):], mi)
        self._keys, self._count, self._sum = uniq, count, total

    def result(self, pvalue: float = 0.05, bonferroni: bool = True) -> pd.DataFrame:
        """The consensus network: ``regulator, target, mi, pvalue, count`` of the edges kept.

        Sorted by regulator, then by decreasing MI, then by target.
        """
        n_reg, n_tgt = len(self._reg), len(self._tgt)
        what = f"{len(self.bootstrap_ids)} bootstrap(s)" if self.bootstrap_ids else f"{self.networks} network(s)"
        if len(self._keys) == 0:
            log.warning("consensus over %s without any edge: the consensus network is empty", what)
            return empty_consensus()
        n_tests = n_reg * n_tgt
        lam = self.occurrences / n_tests
        p = poisson.sf(self._count, lam)
        if bonferroni:
            p = np.minimum(p * n_tests, 1.0)
        keep = p < pvalue
        reg_names = np.array(list(self._reg), dtype=object)
        tgt_names = np.array(list(self._tgt), dtype=object)
        keys = self._keys[keep]
        out = pd.DataFrame(
            {
                "regulator": reg_names[keys >> 32],
                "target": tgt_names[keys & 0xFFFFFFFF],
                "mi": self._sum[keep] / self._count[keep],
                "pvalue": p[keep],
                "count": self._count[keep],
            }
        )
        log.info(
            "consensus over %s: %d distinct edges, %d regulators x %d targets, lambda=%.6g, %d edges kept (p < %g%s)",
            what, len(self._keys), n_reg, n_tgt, lam, len(out), pvalue, ", Bonferroni" if bonferroni else "",
        )
        if len(out) == 0:
            log.warning("no edge passed the consensus test: the consensus network is empty")
            return empty_consensus()
        # ties of MI (frequent in small samples) by target name, so the order never depends on arrival
        out = out.sort_values(["regulator", "mi", "target"], ascending=[True, False, True], kind="mergesort").reset_index(drop=True)
        return out


def consensus(networks: Iterable[pd.DataFrame], pvalue: float = 0.05, bonferroni: bool = True) -> pd.DataFrame:
    """Consensus network of bootstrap networks (an iterable of DataFrames, or long tables).

    Returns ``regulator, target, mi, pvalue, count``: mean MI over the networks holding the edge,
    the (Bonferroni-corrected) Poisson p-value and the number of occurrences.
    """
    acc = ConsensusAccumulator()
    if isinstance(networks, pd.DataFrame):
        networks = [networks]
    for net in networks:
        acc.add(net)
    return acc.result(pvalue=pvalue, bonferroni=bonferroni)


def consensus_files(
    paths: Iterable[str],
    pvalue: float = 0.05,
    bonferroni: bool = True,
    expected_bootstraps: int | None = None,
) -> pd.DataFrame:
    """Consensus network of bootstrap tables read one file at a time (long tables or ARACNe-AP files).

    ``expected_bootstraps`` only checks: a warning is logged when the tables hold a different number
    of distinct ``bootstrap`` ids (a bootstrap without any edge leaves no row, so fewer can be normal).
    """
    from netpert.aracne.io import read_bootstraps

    acc = ConsensusAccumulator()
    n_files = 0
    for path in paths:
        acc.add(read_bootstraps(path))
        n_files += 1
    if expected_bootstraps is not None and acc.bootstrap_ids and len(acc.bootstrap_ids) != expected_bootstraps:
        log.warning("the %d bootstrap table(s) hold %d distinct bootstraps with edges, %d expected",
                    n_files, len(acc.bootstrap_ids), expected_bootstraps)
    return acc.result(pvalue=pvalue, bonferroni=bonferroni)

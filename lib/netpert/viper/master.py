"""Master regulators per stratum from VIPER activity: significant and specific.

A stratum gets master regulators only when it has its own network (``networks``: the strata
whose regulon file holds at least one regulon, each with the regulators it has a regulon for).
Its cells are tested against **all other cells** of the activity (those of strata without a
network included: they are the background, never candidates themselves):

* the regulators tested are those of the stratum's network that VIPER scored (``n_tested``);
* per regulator a two-sided Mann-Whitney U test of the stratum's NES against the other cells'
  (``scipy.stats.mannwhitneyu``), Benjamini-Hochberg-adjusted over the stratum's tested
  regulators (``padj``), and the effect sizes ``delta_nes`` (mean NES stratum - rest), ``auc``
  (U / (n_stratum x n_rest)) and ``rank_biserial`` (2 auc - 1);
* a candidate has ``padj < padj`` (the cut-off, config ``viper.mr_padj``) and its effect in the
  direction it is reported in: ``up`` when the stratum's NES is higher than the rest's (both
  rank-biserial and delta_nes > 0), ``down`` when lower (both < 0);
* candidates are ranked by specificity, ``|rank_biserial|`` (ties: ``|delta_nes|``, then the
  name), and the first ``top_k`` of each direction are reported: fewer where fewer pass, never
  padded.

With a single stratum there are no other cells: a one-sample two-sided Wilcoxon signed-rank
test of the NES against 0 is used instead (``test`` says which), ``delta_nes`` is the mean NES,
``rank_biserial`` the matched-pairs rank-biserial correlation and ``auc`` is missing.

The result is a :class:`netpert.mr_table.MasterRegulatorTable`: the reported regulators and a
summary row for **every** stratum (status, reason, regulons, candidates).
"""

from __future__ import annotations

from typing import Collection, Mapping

import numpy as np
import pandas as pd
from scipy.stats import false_discovery_control, mannwhitneyu, rankdata, wilcoxon

from netpert.errors import InputError
from netpert.mr_table import NO_NETWORK, NO_SIGNIFICANT, REPORTED, MasterRegulatorTable

DEFAULT_PADJ = 0.05  # config viper.mr_padj


def _nes_matrix(activity, groupby: str, groups):
    """(NES cells x regulators, regulator names, stratum label per cell) from an AnnData or a DataFrame."""
    try:
        import anndata as ad
    except ImportError:  # pragma: no cover
        ad = None
    if ad is not None and isinstance(activity, ad.AnnData):
        if groupby not in activity.obs.columns:
            raise InputError(f"activity has no obs column '{groupby}' (columns: {list(activity.obs.columns)})")
        X = activity.X.toarray() if hasattr(activity.X, "toarray") else np.asarray(activity.X, dtype=np.float64)
        regs = np.asarray(activity.var_names.astype(str))
        labels = activity.obs[groupby].astype(str).to_numpy()
    elif isinstance(activity, pd.DataFrame):
        nes = activity
        if groups is None:
            if groupby not in activity.columns:
                raise InputError(f"give groups= or a column '{groupby}' with the stratum of each cell")
            labels = activity[groupby].astype(str).to_numpy()
            nes = activity.drop(columns=[groupby])
        else:
            labels = np.asarray(pd.Series(groups).astype(str))
            if len(labels) != len(nes):
                raise InputError(f"groups has {len(labels)} labels for {len(nes)} cells")
        X = nes.to_numpy(np.float64)
        regs = np.asarray(nes.columns.astype(str))
    else:
        raise InputError(f"activity must be an AnnData or a DataFrame, got {type(activity).__name__}")
    X = np.asarray(X, dtype=np.float64)
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise InputError(f"activity is empty ({X.shape[0]} cells x {X.shape[1]} regulators)")
    if not np.all(np.isfinite(X)):
        raise InputError("activity has NaN or infinite NES values")
    return X, regs, labels


def _signed_rank_biserial(a: np.ndarray) -> np.ndarray:
    """Matched-pairs rank-biserial correlation of each column against 0 (zeros dropped)."""
    out = np.zeros(a.shape[1])
    for j in range(a.shape[1]):
        d = a[:, j][a[:, j] != 0]
        if len(d):
            r = rankdata(np.abs(d))
            out[j] = (r[d > 0].sum() - r[d < 0].sum()) / r.sum()
    return out


def specificity_test(inside: np.ndarray, rest: np.ndarray) -> dict[str, np.ndarray]:
    """Per column: the stratum's cells (``inside``) against the other cells (``rest``).

    Mann-Whitney U two-sided when ``rest`` has cells, else a Wilcoxon signed-rank test against 0.
    Returns arrays mean_nes, mean_nes_rest, delta_nes, auc, rank_biserial, statistic, pvalue
    (NaN p-values, e.g. all NES 0, become 1) and the name of the test.
    """
    mean = inside.mean(axis=0)
    if rest.shape[0] > 0:
        res = mannwhitneyu(inside, rest, alternative="two-sided", axis=0)
        stat = np.asarray(res.statistic, dtype=np.float64)
        auc = stat / (inside.shape[0] * rest.shape[0])
        mean_rest = rest.mean(axis=0)
        out = dict(mean_nes_rest=mean_rest, delta_nes=mean - mean_rest, auc=auc, rank_biserial=2 * auc - 1, test="mannwhitneyu")
    else:
        with np.errstate(invalid="ignore", divide="ignore"):
            res = wilcoxon(inside, axis=0, alternative="two-sided", zero_method="wilcox")
        stat = np.asarray(res.statistic, dtype=np.float64)
        out = dict(mean_nes_rest=np.full(len(mean), np.nan), delta_nes=mean, auc=np.full(len(mean), np.nan),
                   rank_biserial=_signed_rank_biserial(inside), test="wilcoxon")
    pval = np.asarray(res.pvalue, dtype=np.float64)
    return dict(mean_nes=mean, statistic=stat, pvalue=np.where(np.isnan(pval), 1.0, pval), **out)


def _ranked(candidates: np.ndarray, rbc: np.ndarray, delta: np.ndarray, names: np.ndarray) -> list[int]:
    """Indices of ``candidates`` by specificity: |rank-biserial|, then |delta NES|, then name."""
    idx = np.flatnonzero(candidates)
    return sorted(idx, key=lambda i: (-abs(rbc[i]), -abs(delta[i]), names[i]))


def master_regulators(
    activity,
    groupby: str = "stratum",
    top_k: int = 5,
    padj: float = DEFAULT_PADJ,
    networks: Mapping[str, Collection[str]] | None = None,
    groups=None,
) -> MasterRegulatorTable:
    """Significant, specific master regulators per stratum (see the module docstring).

    ``activity``: AnnData (cells x regulators, NES in X, the strata in ``obs[groupby]``) or a
    DataFrame of NES (cells x regulators) with ``groups`` (stratum label per cell; when None a
    DataFrame column ``groupby`` is used). ``networks``: stratum -> the regulators with a regulon
    in its own network; strata of the activity not in it (or with no regulon) have no network
    and get no master regulators. None: every stratum has a network with every regulator.
    ``padj``: the BH cut-off (exclusive); ``top_k``: at most this many per stratum and direction.
    """
    if int(top_k) < 1:
        raise InputError(f"top_k must be >= 1, got {top_k}")
    if not 0 < float(padj) <= 1:
        raise InputError(f"padj (viper.mr_padj) must be in (0, 1], got {padj}")
    top_k, padj = int(top_k), float(padj)
    X, regs, labels = _nes_matrix(activity, groupby, groups)
    strata = list(pd.unique(labels))
    if networks is None:
        networks = {s: list(regs) for s in strata}
    networks = {str(k): [str(r) for r in v] for k, v in networks.items()}
    absent = [s for s in networks if s not in set(strata) and networks[s]]
    strata += [s for s in networks if s not in set(strata) and not networks[s]]  # listed: no network, no cells
    if absent:
        raise InputError(
            f"strata {absent} have a network but no cells in the activity (obs '{groupby}' has {strata[:10]}): "
            "rerun the viper rule on the same cells"
        )
    col = {r: j for j, r in enumerate(regs)}
    reg_rows, strata_rows = [], []
    for s in strata:
        inside = labels == s
        n_in, n_rest = int(inside.sum()), int((~inside).sum())
        own = list(dict.fromkeys(networks.get(s, [])))
        cols = [col[r] for r in own if r in col]
        summary = dict(stratum=s, has_network=bool(own), n_cells=n_in, n_cells_rest=n_rest, n_regulons=len(own),
                       n_tested=len(cols), n_candidates_up=0, n_candidates_down=0, n_reported=0, padj_cutoff=padj,
                       test="mannwhitneyu" if n_rest else "wilcoxon")
        if not own:
            why = "no regulon in its ARACNe network" if s in networks else "no ARACNe network (stratum not kept)"
            strata_rows.append({**summary, "status": NO_NETWORK, "reason": why})
            continue
        if not cols:
            strata_rows.append({**summary, "status": NO_NETWORK,
                                "reason": f"none of its {len(own)} regulons was scored by VIPER (viper.min_targets)"})
            continue
        t = specificity_test(X[inside][:, cols], X[~inside][:, cols])
        q = false_discovery_control(t["pvalue"], method="bh")
        names = regs[cols]
        sig = q < padj
        up = sig & (t["rank_biserial"] > 0) & (t["delta_nes"] > 0)
        down = sig & (t["rank_biserial"] < 0) & (t["delta_nes"] < 0)
        summary.update(n_candidates_up=int(up.sum()), n_candidates_down=int(down.sum()), test=t["test"])
        n_reported = 0
        for direction, mask in (("up", up), ("down", down)):
            for rank, i in enumerate(_ranked(mask, t["rank_biserial"], t["delta_nes"], names)[:top_k], start=1):
                reg_rows.append(dict(stratum=s, regulator=names[i], direction=direction, rank=rank, padj=float(q[i]),
                                     **{k: float(t[k][i]) for k in ("mean_nes", "mean_nes_rest", "delta_nes", "auc",
                                                                    "rank_biserial", "statistic", "pvalue")}))
                n_reported += 1
        summary["n_reported"] = n_reported
        if n_reported:
            strata_rows.append({**summary, "status": REPORTED, "reason": ""})
        else:
            strata_rows.append({**summary, "status": NO_SIGNIFICANT,
                                "reason": f"no regulator of {len(cols)} tested has BH padj < {padj:g} with a consistent "
                                          "direction against the other cells"})
    return MasterRegulatorTable(pd.DataFrame(reg_rows, columns=None if reg_rows else ["stratum", "regulator", "direction", "rank"]),
                                pd.DataFrame(strata_rows))

"""Master regulators per stratum from VIPER activity.

For each stratum (an obs column, ``stratum`` by default), the regulators are ranked by their mean
NES over the stratum's cells and **both directions are kept**: the ``top_k`` regulators with the
largest positive mean NES (``direction="up"``) and the ``top_k`` with the most negative mean NES
(``direction="down"``); a regulator with mean NES exactly 0 is in neither. ``rank`` counts from 1
within a stratum and direction.

Each regulator also gets a real test of the stratum's NES against the other cells' NES: a
two-sided Mann-Whitney U test (``scipy.stats.mannwhitneyu``), Benjamini-Hochberg-adjusted over
all regulators of the stratum (``padj``). With a single stratum there are no other cells, so a
one-sample two-sided Wilcoxon signed-rank test of the NES against 0 is used instead; the ``test``
column says which.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import false_discovery_control, mannwhitneyu, wilcoxon

from netpert.errors import InputError

COLUMNS = ["stratum", "regulator", "mean_nes", "direction", "rank", "n_cells", "statistic", "pvalue", "padj", "test"]


def master_regulators(activity, groupby: str = "stratum", top_k: int = 5, groups=None) -> pd.DataFrame:
    """Top ``top_k`` up and ``top_k`` down regulators per stratum by mean NES, with adjusted p-values.

    ``activity``: AnnData (cells x regulators, NES in X, the strata in ``obs[groupby]``) or a
    DataFrame of NES (cells x regulators) with ``groups`` (a sequence / Series of stratum labels
    per cell; when None a DataFrame column ``groupby`` is used). Returns the columns
    ``stratum, regulator, mean_nes, direction, rank, n_cells, statistic, pvalue, padj, test``.
    """
    if int(top_k) < 1:
        raise InputError(f"top_k must be >= 1, got {top_k}")
    top_k = int(top_k)
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
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise InputError(f"activity is empty ({X.shape[0]} cells x {X.shape[1]} regulators)")
    if not np.all(np.isfinite(X)):
        raise InputError("activity has NaN or infinite NES values")
    rows = []
    strata = pd.unique(labels)
    for s in strata:
        inside = labels == s
        a, b = X[inside], X[~inside]
        mean = a.mean(axis=0)
        if b.shape[0] > 0:
            res = mannwhitneyu(a, b, alternative="two-sided", axis=0)
            test = "mannwhitneyu"
        else:
            with np.errstate(invalid="ignore", divide="ignore"):
                res = wilcoxon(a, axis=0, alternative="two-sided", zero_method="wilcox")
            test = "wilcoxon"
        stat = np.asarray(res.statistic, dtype=np.float64)
        pval = np.asarray(res.pvalue, dtype=np.float64)
        pfin = np.where(np.isnan(pval), 1.0, pval)
        padj = false_discovery_control(pfin, method="bh")
        up = [i for i in np.argsort(-mean, kind="stable") if mean[i] > 0][:top_k]
        down = [i for i in np.argsort(mean, kind="stable") if mean[i] < 0][:top_k]
        for direction, idx in (("up", up), ("down", down)):
            for rank, i in enumerate(idx, start=1):
                rows.append((s, regs[i], float(mean[i]), direction, rank, int(inside.sum()), float(stat[i]), float(pval[i]), float(padj[i]), test))
    return pd.DataFrame(rows, columns=COLUMNS)

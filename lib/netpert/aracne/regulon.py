"""Regulons from a consensus network: mode of regulation, likelihood, pruning.

Output: a table ``regulator, target, mor, likelihood`` (exactly these four columns, so that
``pyviper.Interactome(name, table)`` accepts it and R viper can rebuild a regulon list from it).

* **mor** (mode of regulation): the Spearman correlation of regulator and target over the cells
  (average ranks for ties), in [-1, 1]: sign = activation / repression, size = strength. This is
  what pyviper's ``aracne3_to_regulon`` takes as ``mor`` (ARACNe3's ``scc``) and what R viper's
  ``aracne2regulon`` derives its ``tfmode`` from.
* **likelihood**: ``MI / max MI`` within each regulon (after pruning), i.e. in (0, 1] with 1 for the
  regulon's strongest target. This is pyviper's default (``aracne3_to_regulon(...,
  normalize_MI_per_regulon=True)``). R viper's ``aracne2regulon`` divides by the maximum MI of the
  whole network instead (``likelihood="network"`` here); VIPER's aREA weights each regulon by
  ``likelihood / max(likelihood)`` of that regulon (pyviper's ``Interactome.ic_mat`` does exactly
  this), so both choices give the same activities and only the per-regulon form is comparable
  across regulons of different networks.
* **pruning**: keep the ``max_targets`` targets with the highest likelihood (ties: higher count,
  then target name), as R viper's ``pruneRegulon(regulon, cutoff=50)``; drop regulons with fewer
  than ``min_targets`` targets.
"""

from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from netpert.aracne.prepare import _as_genes_by_samples
from netpert.errors import InputError

log = logging.getLogger(__name__)

REGULON_COLUMNS = ["regulator", "target", "mor", "likelihood"]


def empty_regulons() -> pd.DataFrame:
    """A regulon table without rows (the right columns and dtypes)."""
    return pd.DataFrame({"regulator": pd.Series([], dtype=object), "target": pd.Series([], dtype=object),
                         "mor": pd.Series([], dtype=np.float64), "likelihood": pd.Series([], dtype=np.float64)})


def spearman_edges(data, regulators: Sequence[str], targets: Sequence[str]) -> np.ndarray:
    """Spearman correlation over the samples of each (regulator[k], target[k]) pair of ``data``.

    ``data`` is AnnData (cells x genes) or a DataFrame (samples x genes). Genes absent from the
    data raise :class:`InputError`; a pair involving a constant gene gets 0.
    """
    needed = list(dict.fromkeys(list(regulators) + list(targets)))
    if hasattr(data, "var_names") and hasattr(data, "obs_names"):  # AnnData: densify the needed genes only
        data = data[:, data.var_names.isin(needed)]
    elif isinstance(data, pd.DataFrame):
        data = data.loc[:, data.columns.isin(needed)]
    values, genes, _ = _as_genes_by_samples(data)
    index = {g: i for i, g in enumerate(genes)}
    absent = [g for g in needed if g not in index]
    if absent:
        raise InputError(
            f"{len(absent)} network gene(s) are not in the expression data (e.g. {', '.join(absent[:5])}); "
            "build regulons with the data the network was inferred from"
        )
    rows = np.array([index[g] for g in needed], dtype=np.int64)
    ranks = rankdata(values[rows].astype(np.float64), axis=1)  # average ranks for ties
    ranks -= ranks.mean(axis=1, keepdims=True)
    norm = np.sqrt((ranks * ranks).sum(axis=1))
    const = norm == 0
    norm[const] = 1.0
    z = ranks / norm[:, None]
    pos = {g: i for i, g in enumerate(needed)}
    ri = np.array([pos[g] for g in regulators], dtype=np.int64)
    ti = np.array([pos[g] for g in targets], dtype=np.int64)
    rho = np.einsum("ij,ij->i", z[ri], z[ti]) if len(ri) else np.zeros(0)
    n_const = int(np.sum(const[ri] | const[ti])) if len(ri) else 0
    if n_const:
        log.warning("%d edge(s) involve a gene constant over the cells: mode of regulation set to 0", n_const)
    return np.clip(rho, -1.0, 1.0)


def build_regulons(
    network: pd.DataFrame,
    data,
    max_targets: int | None = 50,
    min_targets: int = 10,
    likelihood: str = "regulon",
) -> pd.DataFrame:
    """Regulons ``regulator, target, mor, likelihood`` from a consensus network.

    Parameters
    ----------
    network
        consensus network with ``regulator, target, mi`` (and optionally ``count``).
    data
        the expression the network was inferred from (AnnData cells x genes or DataFrame samples x genes),
        for the Spearman mode of regulation.
    max_targets
        keep at most this many targets per regulator, by decreasing likelihood (None: all).
    min_targets
        drop regulons with fewer targets (after pruning).
    likelihood
        ``"regulon"`` (MI / max MI of the regulon, pyviper's default) or ``"network"``
        (MI / max MI of the network, R viper's ``aracne2regulon``).
    """
    if likelihood not in ("regulon", "network"):
        raise InputError(f"unknown likelihood normalisation {likelihood!r}; use 'regulon' or 'network'")
    if max_targets is not None and max_targets < 1:
        raise InputError(f"max_targets must be >= 1 (or None), got {max_targets}")
    if len(network) == 0:
        log.warning("the network is empty: no regulon")
        return empty_regulons()
    net = network[["regulator", "target", "mi"] + (["count"] if "count" in network.columns else [])].copy()
    net["regulator"] = net["regulator"].astype(str)
    net["target"] = net["target"].astype(str)
    if "count" not in net.columns:
        net["count"] = 0
    net = net.sort_values(["regulator", "mi", "count", "target"], ascending=[True, False, False, True], kind="mergesort")
    if max_targets is not None:
        net = net.groupby("regulator", sort=False).head(max_targets)
    sizes = net.groupby("regulator")["target"].transform("size")
    small = net.loc[sizes < min_targets, "regulator"].nunique()
    if small:
        log.info("dropping %d regulon(s) with fewer than %d targets", small, min_targets)
    net = net[sizes >= min_targets]
    if len(net) == 0:
        log.warning("no regulon has at least %d targets: the regulon table is empty", min_targets)
        return empty_regulons()
    if likelihood == "regulon":
        denom = net.groupby("regulator")["mi"].transform("max")
    else:
        denom = float(network["mi"].max())
    mor = spearman_edges(data, net["regulator"].tolist(), net["target"].tolist())
    out = pd.DataFrame(
        {
            "regulator": net["regulator"].to_numpy(),
            "target": net["target"].to_numpy(),
            "mor": mor,
            "likelihood": (net["mi"] / denom).to_numpy(dtype=np.float64),
        }
    )
    log.info("%d regulons, %d interactions (median %d targets)", out["regulator"].nunique(), len(out),
             int(out.groupby("regulator").size().median()))
    return out.reset_index(drop=True)

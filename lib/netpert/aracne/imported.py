"""Networks brought in: ARACNe-AP, ARACNe3 or regulon files turned into a stratum's regulons.

A stratum named in ``aracne.networks`` skips netpert's ARACNe and takes its network from a file
(the workflow's ``aracne_import`` rule). The format is told by the header:

* **ARACNe-AP** ``network.txt``: ``Regulator Target MI [pvalue]`` (extra columns ignored). As R
  viper's ``aracne2regulon``: the mode of regulation is the Spearman correlation of regulator and
  target over the stratum's cells, the likelihood the MI (here over the regulon's largest MI,
  netpert's and pyviper's convention; aREA's weights are the same either way), the
  ``max_targets`` strongest targets kept (:func:`netpert.aracne.regulon.build_regulons`).
* **ARACNe3** ``consolidated-net_*.tsv``: ``regulator.values target.values mi.values scc.values
  count.values log.p.values``. As pyviper's ``aracne3_to_regulon``: edges with MI > 0, per
  regulator the ``max_targets`` targets of highest ``count`` then MI, ``mor`` = ``scc``,
  ``likelihood`` = MI over the regulon's largest.
* **regulon** TSV: ``regulator target mor likelihood`` (netpert's regulon.tsv, pyviper's
  Interactome table): used as it is, pruned to ``max_targets``.

Regulons below ``min_targets`` targets are dropped as in netpert's own networks. Edges naming
genes absent from the stratum's data are dropped with a warning; when most are absent (other gene
identifiers, another species) it is an InputError, as are unknown headers and empty files.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from netpert._io import read_tsv
from netpert.aracne.pipeline import network_status
from netpert.aracne.regulon import REGULON_COLUMNS, build_regulons, empty_regulons
from netpert.errors import InputError

log = logging.getLogger(__name__)

FORMATS = {
    "aracne-ap": ("Regulator", "Target", "MI"),
    "aracne3": ("regulator.values", "target.values", "mi.values", "scc.values", "count.values", "log.p.values"),
    "regulon": tuple(REGULON_COLUMNS),
}
#: more edges than this share naming genes absent from the data is an InputError, not a warning
MAX_ABSENT_FRACTION = 0.5


def detect_format(columns, path) -> str:
    """The format whose columns the header holds; InputError naming the file and the formats."""
    cols = set(map(str, columns))
    for name, needed in FORMATS.items():
        if set(needed) <= cols:
            return name
    raise InputError(
        f"network file '{path}' has the columns {sorted(cols)[:8]}, none of the known formats: "
        + "; ".join(f"{k}: {' '.join(v)}" for k, v in FORMATS.items())
    )


def read_imported(path) -> tuple[pd.DataFrame, str]:
    """The file's table and its format."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"network file '{path}' (aracne.networks) does not exist")
    table = read_tsv(path, "network file", "expected an ARACNe-AP, ARACNe3 or regulon TSV", dtype=str)
    fmt = detect_format(table.columns, path)
    if table.empty:
        raise InputError(f"network file '{path}' ({fmt}) has a header but no edge")
    return table, fmt


def _numbers(table: pd.DataFrame, columns, path) -> pd.DataFrame:
    out = table.copy()
    for col in columns:
        values = pd.to_numeric(out[col], errors="coerce")
        bad = values.isna() & out[col].notna()
        if bad.any() or values.isna().any():
            raise InputError(f"network file '{path}': column {col} holds non-numbers (e.g. {out.loc[values.isna(), col].iloc[0]!r})")
        out[col] = values.to_numpy(np.float64)
    return out


def _drop_absent(edges: pd.DataFrame, genes: pd.Index, path) -> pd.DataFrame:
    present = edges["regulator"].isin(genes) & edges["target"].isin(genes)
    absent = int((~present).sum())
    if absent == 0:
        return edges
    missing = pd.unique(pd.concat([edges.loc[~edges["regulator"].isin(genes), "regulator"],
                                   edges.loc[~edges["target"].isin(genes), "target"]]))
    message = (f"network file '{path}': {absent} of {len(edges)} edges name genes absent from the stratum's data "
               f"(e.g. {', '.join(map(str, missing[:5]))})")
    if absent > MAX_ABSENT_FRACTION * len(edges):
        raise InputError(f"{message}: are the gene identifiers the data's (symbols vs Ensembl ids, species)?")
    log.warning("%s; they are dropped", message)
    return edges[present]


def regulons_from_file(path, data, max_targets: int | None = 50, min_targets: int = 10) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """``(network, regulons, format)`` of a network file for a stratum whose cells are ``data``
    (AnnData cells x genes or DataFrame samples x genes). ``network``: ``regulator, target, mi``
    (+ ``pvalue`` / ``count`` where the file has them; ``mi`` NaN for a regulon file)."""
    table, fmt = read_imported(path)
    genes = pd.Index(data.var_names if hasattr(data, "var_names") else data.columns).astype(str)
    if fmt == "aracne-ap":
        net = table.rename(columns={"Regulator": "regulator", "Target": "target", "MI": "mi"})
        keep = ["regulator", "target", "mi"] + [c for c in ("pvalue",) if c in net.columns]
        net = _numbers(net[keep], keep[2:], path)
        net = _drop_absent(net, genes, path)
        return net.reset_index(drop=True), build_regulons(net, data, max_targets=max_targets, min_targets=min_targets), fmt
    if fmt == "aracne3":
        cols = FORMATS["aracne3"]
        net = _numbers(table[list(cols)], cols[2:], path).rename(columns={
            "regulator.values": "regulator", "target.values": "target", "mi.values": "mi", "scc.values": "mor",
            "count.values": "count", "log.p.values": "log_p"})
        net = _drop_absent(net[net["mi"] > 0], genes, path)
        net = net.sort_values(["regulator", "count", "mi"], ascending=[True, False, False], kind="mergesort")
        if max_targets is not None:
            net = net.groupby("regulator", sort=False).head(max_targets)
        regulons = net.assign(likelihood=net["mi"] / net.groupby("regulator")["mi"].transform("max"))
    else:
        net = _numbers(table[list(REGULON_COLUMNS)], ["mor", "likelihood"], path)
        net = _drop_absent(net, genes, path)
        if ((net["mor"] < -1) | (net["mor"] > 1)).any() or (net["likelihood"] < 0).any():
            raise InputError(f"network file '{path}': mor must lie in [-1, 1] and likelihood be >= 0")
        net = net.sort_values(["regulator", "likelihood"], ascending=[True, False], kind="mergesort")
        if max_targets is not None:
            net = net.groupby("regulator", sort=False).head(max_targets)
        regulons = net.assign(mi=np.nan)
    sizes = regulons.groupby("regulator")["target"].transform("size")
    regulons = regulons[sizes >= min_targets]
    network = net[[c for c in ("regulator", "target", "mi", "count") if c in net.columns]].reset_index(drop=True)
    if regulons.empty:
        return network, empty_regulons(), fmt
    return network, regulons[REGULON_COLUMNS].reset_index(drop=True), fmt


def import_status(stratum: str, network: pd.DataFrame, regulons: pd.DataFrame, fmt: str, path, n_samples: int,
                  min_targets: int, skip_empty: bool) -> dict:
    """The stratum's network status (the layout :func:`netpert.aracne.stratum_consensus` writes),
    with the source file; no regulon is an InputError unless ``skip_empty``."""
    status = network_status(stratum, network, regulons, n_samples, min_targets, source=f"{fmt} file {Path(path).name}")
    largest = status["largest_regulon"]
    if status["regulons"] == 0:
        reason = f"the {fmt} network '{path}' has no regulon of {min_targets} targets among the data's genes (largest {largest})"
        if not skip_empty:
            raise InputError(f"{reason}: lower aracne.min_targets, or set strata.skip_empty: true to leave the stratum out")
        status.update(status="skipped", reason=reason)
    return status

"""The whole ARACNe run in one call, and the step helpers the workflow scripts use."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from netpert import seeds
from netpert._io import atomic_path, json_default, read_json
from netpert.aracne import timing
from netpert.aracne.calibration import calibrated_nulls
from netpert.aracne.consensus import ConsensusAccumulator
from netpert.aracne.bootstrap import network
from netpert.aracne.estimators import resolve_estimator
from netpert.aracne.io import read_threshold, write_threshold
from netpert.aracne.prepare import SUBSAMPLE_FRACTION, Expression, effective_samples, ensure_expression
from netpert.aracne.threshold import NullModel, compute_threshold, null_distribution
from netpert.errors import InputError

log = logging.getLogger(__name__)

#: threshold methods (``aracne.threshold_method``): the calibrated null, the rank-permutation
#: null with a fitted tail, ARACNe-AP's own computation
THRESHOLD_METHODS = ("calibrated", "fit", "aracne-ap")
#: per-network FDR of the library calls (the workflow's default, aracne.fdr in the config schema,
#: is the same: tests/test_defaults.py holds them equal). 0.15: the value at which the copula networks
#: beat Spearman's precision on SERGIO counts and ARACNe-AP's F1 on the planted fixture (README)
DEFAULT_FDR = 0.15


def bootstrap_seeds(seed: int, n: int, start: int = 0) -> list[int]:
    """Seeds of bootstraps ``start .. start+n-1`` of a run with ``seed``: :func:`netpert.seeds.bootstrap_seeds`."""
    return seeds.bootstrap_seeds(seed, n, start)


@dataclass
class Calibration:
    """How a stratum's networks are cut: at an FDR over a null distribution, or at a fixed MI threshold.

    ``threshold`` is the MI at ``pvalue`` (written in ARACNe-AP's threshold format; with ``fdr``
    it is for information only), ``fdr`` the per-network Benjamini-Hochberg rate (None: fixed
    threshold), ``null`` the null distribution the p-values come from (None for ``aracne-ap``),
    ``info`` the provenance (method, sizes, fit, and ``estimator``: the MI estimator the null was
    drawn with, which the networks must use too). ``full`` (calibrated method with resampling):
    the null of one network of all samples, for the full-data gate (:meth:`gate`). Files:
    ``threshold.txt``, ``threshold.json``, ``null.npz`` (both nulls; see :meth:`save` / :meth:`load`).
    """

    threshold: float
    fdr: float | None
    null: NullModel | None
    info: dict = field(default_factory=dict)
    full: NullModel | None = None

    def cut(self) -> dict:
        """Keyword arguments of :func:`netpert.aracne.network` for this calibration."""
        return {"threshold": self.threshold, "fdr": self.fdr, "null": self.null, "estimator": self.estimator}

    @property
    def estimator(self) -> str:
        return str(self.info.get("estimator", "apmi"))

    def gate(self, net: pd.DataFrame, data, regulators: Sequence[str] | None, seed: int, backend: str = "numba") -> pd.DataFrame:
        """``net`` (a consensus) without the edges that the network of all samples, cut by the same
        rule (``fdr`` or ``pvalue``) against the :attr:`full` null and without DPI, does not hold.

        Why: bootstraps or subsamples of one data set share its chance dependences, so a pair that
        is strong by chance in the data appears in many of its networks and the consensus test,
        which counts appearances as if networks were independent, keeps it (on data permuted gene
        by gene: 1-5 edges per stratum). The network of all samples tests each pair once on the
        data itself. Without a :attr:`full` null (``fit``, ``aracne-ap``, no resampling, null data
        given such as metacells) ``net``
        is returned as it is.
        """
        if self.full is None or len(net) == 0:
            return net
        if self.fdr is not None:
            cut = {"fdr": self.fdr, "null": self.full, "threshold": None}
        else:
            cut = {"fdr": None, "null": None, "threshold": self.full.threshold(float(self.info.get("pvalue", 1e-8)))}
        full = network(data, regulators, seed=seed, resampling=None, dpi=False, backend=backend, progress=False,
                       estimator=self.estimator, **cut)
        held = pd.MultiIndex.from_arrays([full["regulator"].astype(str), full["target"].astype(str)])
        keep = pd.MultiIndex.from_arrays([net["regulator"].astype(str), net["target"].astype(str)]).isin(held)
        log.info("full-data gate: %d of %d consensus edges are significant in the network of all samples (%d edges)",
                 int(keep.sum()), len(net), len(full))
        return net[keep].reset_index(drop=True)

    def save(self, threshold_path, info_path, null_path) -> None:
        write_threshold(self.threshold, dict(self.info, fdr=self.fdr), threshold_path, info_path)
        null = self.null if self.null is not None else NullModel(np.zeros(0), 0, np.zeros(0), {"model": "none"})
        null.save(null_path, **({"full": self.full} if self.full is not None else {}))

    @classmethod
    def load(cls, threshold_path, info_path, null_path) -> "Calibration":
        threshold = read_threshold(threshold_path)
        info_path = Path(info_path)
        if not info_path.is_file():
            raise InputError(f"threshold provenance '{info_path}' does not exist; rerun the aracne_threshold rule")
        info = read_json(info_path, "threshold provenance", "rerun the aracne_threshold rule")
        null, full = NullModel.load_named(null_path, "full")
        if null.n_total == 0:
            null = None
        fdr = info.get("fdr")
        if fdr is not None and null is None:
            raise InputError(f"{info_path} asks for FDR {fdr} but '{null_path}' holds no null distribution; rerun aracne_threshold")
        return cls(float(threshold), None if fdr is None else float(fdr), null, info, full)


def calibrate(
    data,
    regulators: Sequence[str] | None = None,
    method: str = "calibrated",
    pvalue: float = 1e-8,
    fdr: float | None = DEFAULT_FDR,
    seed: int = 1,
    resampling: str | None = "subsample",
    null_data=None,
    cache_dir: str | Path | None = None,
    subsample_fraction: float = SUBSAMPLE_FRACTION,
    backend: str = "numba",
    estimator: str = "auto",
) -> Calibration:
    """The :class:`Calibration` of the networks of ``data`` (the ``aracne_threshold`` step).

    ``method="calibrated"``: the null of :func:`netpert.aracne.calibrated_null` (``data`` permuted
    gene by gene, or ``null_data``, resampled as the networks are); ``"fit"``: the rank-permutation
    null of the sample count with its fitted tail (:func:`netpert.aracne.compute_threshold`);
    ``"aracne-ap"``: ARACNe-AP's threshold bit for bit (p-value only: ``fdr`` must be None).
    With ``fdr`` each network keeps the pairs Benjamini-Hochberg passes at that rate; without it,
    the pairs with MI at or above the null's ``pvalue`` quantile. ``estimator``: the MI estimator
    (:mod:`netpert.aracne.estimators`; ``auto`` is ``copula`` with ``calibrated`` and ``apmi``
    with ``fit`` and ``aracne-ap``, whose nulls are those of APMI on distinct ranks).
    """
    if method not in THRESHOLD_METHODS:
        raise InputError(f"unknown threshold method {method!r} (config key aracne.threshold_method); use one of {', '.join(THRESHOLD_METHODS)}")
    if not 0 < pvalue < 1:
        raise InputError(f"the MI threshold p-value must be in (0, 1) (config key aracne.pvalue), got {pvalue}")
    if fdr is not None and not 0 < fdr < 1:
        raise InputError(f"the FDR must be in (0, 1) or null (config key aracne.fdr), got {fdr}")
    if method == "aracne-ap" and fdr is not None:
        raise InputError(
            "threshold_method 'aracne-ap' reproduces ARACNe-AP's p-value threshold and has no FDR: "
            "set aracne.fdr: null (or fdr=None), or use threshold_method 'calibrated' for an FDR"
        )
    est, why = resolve_estimator(estimator, method)
    log.info("MI estimator %s: %s", est, why)
    if method == "calibrated":
        if regulators is None and not isinstance(data, Expression):
            raise InputError("the calibrated null needs the regulator names")
        # with the null of one network of all samples, for the full-data gate of the consensus (not for
        # given null data such as aggregated metacells: one fixed null set, unresampled, is one draw);
        # both drawn in one pass over the same permuted replicates
        gate = resampling is not None and null_data is None
        with timing.stage("calibration"):
            nulls = calibrated_nulls(data, regulators, (resampling, None) if gate else (resampling,), seed, null_data,
                                     subsample_fraction, backend=backend, estimator=est)
        null, full = nulls[0], (nulls[1] if gate else None)
        info = dict(null.info, method=method, pvalue=float(pvalue))
        threshold = null.threshold(pvalue)
        info["threshold"] = threshold
        info["threshold_at_fdr"] = null.threshold(fdr) if fdr is not None else None
    else:
        with timing.stage("null"):
            threshold, info, rank_null = _threshold_and_null(data, pvalue, seed, method, cache_dir, resampling, subsample_fraction, backend)
        null = full = None
        if method == "fit":
            null = rank_null  # the null the threshold came from (drawn once)
            info["threshold_at_fdr"] = null.threshold(fdr) if fdr is not None else None
    info["estimator"] = est
    info["estimator_reason"] = why
    log.info("calibration (%s): %s", method, f"FDR {fdr} per network" if fdr is not None else f"MI >= {threshold:.6g} (p = {pvalue:g})")
    info["full_data_gate"] = full is not None
    return Calibration(float(threshold), fdr, null, info, full)


def threshold_for_data(
    data,
    pvalue: float = 1e-8,
    seed: int = 1,
    method: str = "fit",
    cache_dir: str | Path | None = None,
    resampling: str | None = "bootstrap",
    subsample_fraction: float = SUBSAMPLE_FRACTION,
    backend: str = "numba",
) -> tuple[float, dict]:
    """MI threshold for the networks of ``data``: the null depends only on their sample count.

    That count is the number of samples (cells) of ``data``, or the subsample size with
    ``resampling="subsample"``. Returns ``(threshold, info)`` as
    :func:`netpert.aracne.threshold.compute_threshold`; ``info`` also records the resampling.
    """
    thr, info, _ = _threshold_and_null(data, pvalue, seed, method, cache_dir, resampling, subsample_fraction, backend)
    return thr, info


def _threshold_and_null(data, pvalue, seed, method, cache_dir, resampling, subsample_fraction, backend) -> tuple[float, dict, NullModel]:
    # threshold_for_data, and the rank-permutation null its threshold was read from
    if isinstance(data, Expression):
        n = data.n_samples
    else:
        n = data.shape[0]
    if n < 10:
        raise InputError(f"ARACNe needs at least 10 samples/cells, the data have {n}")
    n_eff = effective_samples(n, resampling, subsample_fraction)
    null = null_distribution(n_eff, seed=seed, method=method, cache_dir=cache_dir, backend=backend)
    thr, info = compute_threshold(n_eff, pvalue=pvalue, seed=seed, method=method, cache_dir=cache_dir, backend=backend, null=null)
    info["resampling"] = resampling
    info["n_cells"] = int(n)
    return thr, info, null


def aracne(
    data,
    regulators: Sequence[str],
    bootstraps: int = 100,
    pvalue: float = 1e-8,
    dpi: bool = True,
    seed: int = 1,
    consensus_pvalue: float = 0.05,
    backend: str = "numba",
    resampling: str = "subsample",
    dpi_tolerance: float = 0.0,
    bonferroni: bool = True,
    threshold: float | None = None,
    threshold_method: str = "calibrated",
    cache_dir: str | Path | None = None,
    subsample_fraction: float = SUBSAMPLE_FRACTION,
    progress: bool = True,
    fdr: float | None = DEFAULT_FDR,
    null_data=None,
    estimator: str = "auto",
) -> pd.DataFrame:
    """ARACNe consensus network of ``data`` (AnnData cells x genes or DataFrame samples x genes).

    Steps: the :func:`calibrate` step (``threshold_method``, ``fdr``, ``pvalue``, ``null_data``,
    ``estimator``; a given ``threshold`` replaces it with that fixed MI threshold), ``bootstraps``
    networks (resampling, MI, FDR or threshold, DPI) with seeds from :func:`bootstrap_seeds`, Poisson
    consensus at ``consensus_pvalue``, then the full-data gate (:meth:`Calibration.gate`, seed ``seed``). ``bootstraps=0`` returns the single network of all samples
    (ARACNe-AP ``--nobootstrap``) with ``pvalue`` NaN and ``count`` 1. The workflow runs the same
    steps (rules aracne_threshold, aracne_bootstrap, aracne_consensus) and, for the same seed and
    settings, writes the same network.

    Returns
    -------
    DataFrame ``regulator, target, mi, pvalue, count``.
    """
    if bootstraps < 0:
        raise InputError(f"bootstraps must be >= 0, got {bootstraps}")
    if backend not in ("numba", "python"):
        raise InputError(f"unknown ARACNe backend {backend!r}; use 'numba' or 'python'")
    expr = ensure_expression(data, regulators)
    mode = None if bootstraps == 0 else resampling
    if threshold is None:
        cal = calibrate(expr, None, threshold_method, pvalue, fdr, seed, mode, null_data, cache_dir, subsample_fraction, backend, estimator)
    else:
        cal = Calibration(float(threshold), None, None, {"method": "given", "estimator": resolve_estimator(estimator, "given")[0]})
    if bootstraps == 0:
        net = network(expr, None, seed=seed, resampling=None, dpi=dpi, dpi_tolerance=dpi_tolerance, backend=backend,
                      subsample_fraction=subsample_fraction, progress=progress, **cal.cut())
        out = net.assign(regulator=net["regulator"].astype(str), target=net["target"].astype(str), pvalue=np.nan, count=1)
        return out.sort_values(["regulator", "mi", "target"], ascending=[True, False, True], kind="mergesort").reset_index(drop=True)
    acc = ConsensusAccumulator()
    for s in tqdm(bootstrap_seeds(seed, bootstraps), desc="bootstraps", unit="net", disable=not progress):
        with timing.stage("networks"):
            net = network(expr, None, seed=s, resampling=resampling, dpi=dpi, dpi_tolerance=dpi_tolerance, backend=backend,
                          subsample_fraction=subsample_fraction, progress=False, **cal.cut())
        with timing.stage("consensus"):
            acc.add(net)
    with timing.stage("consensus"):
        result = acc.result(pvalue=consensus_pvalue, bonferroni=bonferroni)
    with timing.stage("gate"):
        return cal.gate(result, expr, None, seed, backend)


def stratum_consensus(
    boot_files: Sequence[str | Path],
    data,
    stratum: str,
    consensus_pvalue: float = 0.05,
    bonferroni: bool = True,
    max_targets: int = 50,
    min_targets: int = 10,
    expected_bootstraps: int | None = None,
    skip_empty: bool = False,
    calibration: Calibration | None = None,
    regulators: Sequence[str] | None = None,
    seed: int = 1,
    backend: str = "numba",
) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """The ``aracne_consensus`` step: consensus of a stratum's bootstrap files, the full-data gate
    of ``calibration`` (:meth:`Calibration.gate` on ``data`` with ``regulators`` and ``seed``, as
    :func:`aracne` does) and the regulons.

    Returns ``(network, regulons, status)``; ``status`` holds the stratum, its edge and regulon
    counts, ``status`` ("ok" or "skipped") and ``reason``. A stratum whose consensus gives no
    regulon of at least ``min_targets`` targets raises :class:`InputError` naming it, the edges
    found and what to change, unless ``skip_empty`` (then it is marked skipped and its regulon
    table is empty, so VIPER leaves it out).
    """
    from netpert.aracne.consensus import consensus_files
    from netpert.aracne.regulon import build_regulons

    net = consensus_files(list(boot_files), pvalue=consensus_pvalue, bonferroni=bonferroni, expected_bootstraps=expected_bootstraps)
    if calibration is not None:
        net = calibration.gate(net, data, regulators, seed, backend)
    regulons = build_regulons(net, data, max_targets=max_targets, min_targets=min_targets)
    n_samples = data.n_obs if hasattr(data, "n_obs") else len(data)
    status = network_status(stratum, net, regulons, n_samples, min_targets)
    largest = status["largest_regulon"]
    if status["regulons"] == 0:
        reason = (
            f"no regulon reaches {min_targets} targets: the consensus network of stratum '{stratum}' "
            f"({n_samples} samples) has {len(net)} edge{'' if len(net) == 1 else 's'}, the largest regulator "
            f"{largest} target{'' if largest == 1 else 's'}"
        )
        advice = (
            "give the stratum more cells, loosen the threshold (aracne.fdr, or aracne.pvalue with aracne.fdr: null), "
            "use aracne.estimator copula on UMI counts, aggregate the cells (strata.metacells.enabled: true), "
            "lower aracne.min_targets, or set "
            "strata.skip_empty: true to leave such strata out of VIPER"
        )
        if not skip_empty:
            raise InputError(f"{reason}. To fix: {advice}")
        log.warning("stratum skipped: %s (strata.skip_empty is true)", reason)
        status.update(status="skipped", reason=reason)
    return net, regulons, status


def network_status(stratum: str, network: pd.DataFrame, regulons: pd.DataFrame, n_samples: int, min_targets: int,
                   **extra) -> dict:
    """A stratum's network status (status.json's layout): its counts of edges and regulons,
    ``status`` "ok" and an empty ``reason`` (the caller marks a skipped stratum), and ``extra``
    fields (e.g. ``source`` of a network brought in)."""
    return {
        "stratum": stratum,
        "n_samples": int(n_samples),
        "edges": int(len(network)),
        "regulators_with_edges": int(network["regulator"].nunique()) if len(network) else 0,
        "largest_regulon": int(network.groupby("regulator", observed=True).size().max()) if len(network) else 0,
        "regulons": int(regulons["regulator"].nunique()) if len(regulons) else 0,
        "min_targets": int(min_targets),
        "status": "ok",
        "reason": "",
        **extra,
    }


def write_status(status: dict, path: str | Path) -> None:
    """Write a stratum's network status (from :func:`stratum_consensus`) as JSON, atomically."""
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(status, indent=1, default=json_default))


def read_status(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"network status '{path}' does not exist; rerun the aracne_consensus rule")
    return read_json(path, "network status", "rerun the aracne_consensus rule")


#: columns added to strata.tsv by :func:`network_summary`
SUMMARY_COLUMNS = ["edges", "regulons", "largest_regulon", "network_status", "network_reason"]


def network_summary(strata: pd.DataFrame, statuses: Sequence[dict]) -> pd.DataFrame:
    """strata.tsv with each kept stratum's network outcome; a stratum skipped for an empty network
    gets ``status`` "skipped" and the reason (``results/aracne/strata.tsv``)."""
    by = {s["stratum"]: s for s in statuses}  # the status' stratum is the slug (the workflow's wildcard)
    out = strata.copy()
    for col in SUMMARY_COLUMNS:
        out[col] = "" if col.startswith("network_") else 0
    for i, row in out.iterrows():
        st = by.get(row["slug"])
        if st is None:
            out.at[i, "network_status"] = "no network" if row["status"] != "kept" else "missing"
            continue
        out.at[i, "edges"] = st["edges"]
        out.at[i, "regulons"] = st["regulons"]
        out.at[i, "largest_regulon"] = st["largest_regulon"]
        out.at[i, "network_status"] = st["status"]
        out.at[i, "network_reason"] = st["reason"]
        if st["status"] == "skipped":
            out.at[i, "status"] = "skipped"
            out.at[i, "reason"] = "; ".join(x for x in (str(row["reason"]), st["reason"]) if x)
    return out

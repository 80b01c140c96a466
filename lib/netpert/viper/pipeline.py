"""VIPER / metaVIPER over cells in blocks: signature -> aREA or NaRnEA per network -> pleiotropy -> combination.

Memory: the cells are processed in blocks of ``block_size`` rows. Only one dense block of the
expression matrix (and its signature) exists at a time; per-gene statistics come from a first
pass over the blocks (sparse-friendly for CSR input) and, for R's matrix path, a cheap pass finds
the tail maximum over all cells (it stops at the first cell whose extreme value is unique).
In :func:`viper` the output, cells x regulators, is the only full-size array; the workflow step
:func:`run_viper` holds none: it reads the cells file by blocks and writes each block's NES and
p-values into the activity file (:mod:`netpert.viper.h5blocks`).
"""

from __future__ import annotations

import importlib
import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from netpert.errors import InputError
from netpert.viper.area import BACKENDS, area_block, best_tail_max, cell_tail_max, prepare_network
from netpert.viper.io import read_regulons, validate_regulons
from netpert.viper.meta import CHOICES, combine
from netpert.viper.narnea import integrate as integrate_narnea
from netpert.viper.narnea import narnea_block, regulon_moments
from netpert.viper.null import nes_pvalues
from netpert.viper.pleiotropy import PleiotropyArgs, ShadowModel, correct_block

_sig = importlib.import_module("netpert.viper.signature")  # module-level lookups, so tests can spy on dense_rows

log = logging.getLogger(__name__)

#: enrichment methods: R viper's aREA, or NaRnEA (pyviper's; NES and PES)
ENRICHMENTS = ("area", "narnea")


def _regulon_list(regulons):
    """``[(name, validated table)]`` from a DataFrame, a list of them or a dict name -> DataFrame."""
    if isinstance(regulons, pd.DataFrame):
        items = [("network", regulons)]
    elif isinstance(regulons, dict):
        items = list(regulons.items())
    elif isinstance(regulons, (list, tuple)):
        items = [(f"network {i + 1}", r) for i, r in enumerate(regulons)]
    else:
        raise InputError(f"regulons must be a DataFrame (regulator, target, mor, likelihood), a list or a dict of them; got {type(regulons).__name__}")
    if not items:
        raise InputError("no regulon table given")
    return [(str(name), validate_regulons(df, source=f"regulons '{name}'")) for name, df in items]


def _check_overlap(tables, genes: pd.Index) -> None:
    targets = pd.Index(pd.unique(np.concatenate([t["target"].to_numpy() for _, t in tables if len(t)] or [np.array([], dtype=object)])))
    if len(targets) == 0:
        raise InputError("the regulon tables have no edges")
    absent = targets[~targets.isin(genes)]
    if len(absent) == len(targets):
        raise InputError(
            f"none of the {len(targets)} regulon target genes is in the data (e.g. regulon targets {list(targets[:3])}, "
            f"data genes {list(genes[:3])}); check that both use the same gene identifiers"
        )
    if len(absent):
        log.warning("%d of %d regulon target genes are absent from the data (e.g. %s); their edges are ignored",
                    len(absent), len(targets), list(absent[:5]))


def viper(data, regulons, method: str = "none", eset_filter: bool = False, min_targets: int = 25, mvws=1,
          pleiotropy: bool = False, pleiotropy_args: dict | None = None, network_choice: str = "integrate",
          block_size: int = 5000, reference=None, layer: str | None = None, backend: str = "numba",
          tail: str = "auto", enrichment: str = "area") -> pd.DataFrame:
    """Protein activity (NES) of every regulator in every cell, as R viper / metaVIPER.

    Parameters
    ----------
    data
        AnnData (cells x genes; ``layer`` picks a layer) or DataFrame (samples x genes); dense or
        sparse (CSR), never densified whole.
    regulons
        A regulon table (``regulator, target, mor, likelihood``), or a list / dict of them for
        metaVIPER (one network per stratum).
    method
        Signature: ``none`` (values as given), ``scale``, ``rank``, ``mad``, ``ttest`` (against
        ``reference`` or, when None, each cell against the rest) or ``doublerank``; see
        :mod:`netpert.viper.signature`.
    eset_filter
        Rank only the genes named in the network (R's ``eset.filter``).
    min_targets
        Minimum regulon size after matching the data's genes (R's ``minsize``; 25 is R viper's and
        pyviper's default, kept for parity in this R-like API; the workflow's default, 10, is the
        schema's ``viper.min_targets``, passed by the rule to :func:`run_viper`).
    mvws
        metaVIPER weight exponent, or ``(inflection, slope)`` for R's sigmoid weights.
    pleiotropy, pleiotropy_args
        R's pleiotropy correction and its ``pleiotropyArgs`` (dict with regulators, shadow,
        targets, penalty, method).
    network_choice
        ``integrate`` (weighted average over networks) or ``auto`` (per cell the best network, as
        pyviper's ``mvws="auto"``; the chosen network per cell is in ``result.attrs["network"]``).
    block_size
        Cells per block.
    reference
        For ``method="ttest"``: boolean mask, cell names or row indices of the reference cells.
    backend
        ``numba`` or ``python`` (the plain reference implementation).
    tail
        ``auto`` follows R (global tail maximum on the matrix path, per cell on the loop path);
        ``global`` / ``column`` force one (aREA only).
    enrichment
        ``area`` (R viper's aREA) or ``narnea`` (NaRnEA as pyviper computes it, see
        :mod:`netpert.viper.narnea`: NES, and the PES in ``result.attrs["pes"]``; several networks
        are integrated by pyviper's PES-based weights; no pleiotropy correction).

    Returns
    -------
    DataFrame, cells x regulators (NES). Regulators in network order (metaVIPER: union in order of
    first appearance). ``attrs``: ``networks`` (names used), for ``auto`` ``network``, for
    NaRnEA ``pes`` (a DataFrame like the result).
    """
    _check_args(enrichment, pleiotropy, network_choice, backend, block_size)
    X, genes, cells, _ = _sig.as_matrix(data, layer)
    run = _Run(X, genes, cells, regulons, method, eset_filter, min_targets, pleiotropy, pleiotropy_args,
               int(block_size), reference, backend, tail, enrichment)
    n_cells = X.shape[0]
    out: np.ndarray | None = None
    pes_out: np.ndarray | None = None
    choice_all = np.zeros(n_cells, dtype=np.int64) if network_choice == "auto" else None
    for blk in run.blocks(network_choice, mvws):
        if out is None:
            out = np.empty((n_cells, len(blk.union)))
            if blk.pes is not None:
                pes_out = np.empty((n_cells, len(blk.union)))
        out[blk.sel] = blk.nes
        if pes_out is not None:
            pes_out[blk.sel] = blk.pes
        if choice_all is not None:
            choice_all[blk.sel] = blk.choice
    union = run.union
    result = pd.DataFrame(out, index=cells, columns=pd.Index(union, name="regulator"))
    result.attrs["networks"] = [n.name for n in run.nets]
    if pes_out is not None:
        result.attrs["pes"] = pd.DataFrame(pes_out, index=cells, columns=pd.Index(union, name="regulator"))
    if choice_all is not None:
        result.attrs["network"] = run.network_names(choice_all)
    return result


def _check_args(enrichment, pleiotropy, network_choice, backend, block_size) -> None:
    if enrichment not in ENRICHMENTS:
        raise InputError(f"unknown enrichment {enrichment!r} (viper.enrichment); use one of {', '.join(ENRICHMENTS)}")
    narnea = enrichment == "narnea"
    if narnea and pleiotropy:
        raise InputError("the pleiotropy correction is aREA's: use enrichment 'area' with viper.pleiotropy, or turn it off")
    if narnea and network_choice != "integrate":
        raise InputError(f"network_choice {network_choice!r} is aREA's; NaRnEA integrates networks by their PES (use 'integrate')")
    if backend not in BACKENDS:
        raise InputError(f"unknown backend {backend!r}; use one of {list(BACKENDS)}")
    if network_choice not in CHOICES:
        raise InputError(f"unknown network_choice {network_choice!r}; use one of {list(CHOICES)}")
    try:
        size = int(block_size)
    except (TypeError, ValueError):
        raise InputError(f"block_size must be an integer >= 1 (viper.block_size), got {block_size!r}") from None
    if size < 1:
        raise InputError(f"block_size must be >= 1, got {block_size}")


class _Block:
    """One block of cells: rows ``sel``, NES (and NaRnEA's PES, the chosen network per cell)."""

    __slots__ = ("choice", "nes", "pes", "sel", "union")

    def __init__(self, sel, nes, pes, choice, union):
        self.sel, self.nes, self.pes, self.choice, self.union = sel, nes, pes, choice, union


class _Run:
    """The fitted parts of a VIPER run (signature statistics, matched networks, tail maxima):
    :meth:`blocks` then computes the activity one block of cells at a time."""

    def __init__(self, X, genes, cells, regulons, method, eset_filter, min_targets, pleiotropy, pleiotropy_args,
                 block_size, reference, backend, tail, enrichment):
        tables = _regulon_list(regulons)
        _check_overlap(tables, genes)
        ref = _sig.resolve_reference(reference, cells)
        self.X = X
        self.narnea = enrichment == "narnea"
        self.backend = backend
        self.signature = _sig.Signature.fit(X, method, ref, block_size, backend)
        nets, errors = [], []
        for name, table in tables:
            try:
                nets.append(prepare_network(table, genes, self.signature.keep, eset_filter, min_targets, tail, name))
            except InputError as exc:
                errors.append(exc)
        if not nets:
            raise errors[0] if len(errors) == 1 else InputError("; ".join(str(e) for e in errors))
        for exc in errors:
            log.warning("network skipped: %s", exc)
        self.nets = nets
        self.pleiotropy = pleiotropy
        self.pargs = PleiotropyArgs.from_any(pleiotropy_args) if pleiotropy else None
        self.shadow = [ShadowModel(n) for n in nets] if pleiotropy else None
        self.block_rows = list(_sig.iter_blocks(X.shape[0], block_size))
        self.m_global = [None] * len(nets)
        if len(self.block_rows) > 1 and not self.narnea:
            self.m_global = _global_tail_maxima(X, self.signature, nets, self.block_rows)
        self.moments = [regulon_moments(n) for n in nets] if self.narnea else None
        self.union: list | None = None

    def network_names(self, choice: np.ndarray) -> np.ndarray:
        return np.asarray([self.nets[i].name for i in choice], dtype=object)

    def blocks(self, network_choice: str = "integrate", mvws=1):
        """:class:`_Block` per block of cells, in row order (one dense block exists at a time)."""
        nets = self.nets
        regs = [n.regulators for n in nets]
        for sel in self.block_rows:
            sig = self.signature.transform(_sig.dense_rows(self.X, sel))
            if self.narnea:
                pairs = [narnea_block(sig, net, self.backend, self.moments[k]) for k, net in enumerate(nets)]
                if len(pairs) == 1:
                    comb, pes, union = pairs[0][0], pairs[0][1], list(regs[0])
                else:
                    comb, pes, union = integrate_narnea([p[0] for p in pairs], [p[1] for p in pairs], regs)
                choice = None
            else:
                nes_list = []
                for k, net in enumerate(nets):
                    nes = area_block(sig, net, self.m_global[k], self.backend)
                    if self.pleiotropy:
                        nes = correct_block(sig, nes, net, self.pargs, self.shadow[k])
                    nes_list.append(nes)
                comb, union, choice = combine(nes_list, regs, network_choice, mvws)
                pes = None
            del sig
            self.union = union
            yield _Block(sel, comb, pes, choice, union)


def _global_tail_maxima(X, signature, nets, blocks):
    """Tail maximum over all cells for networks on R's matrix path (None for the loop path)."""
    need = [k for k, n in enumerate(nets) if n.tail == "global"]
    result = [None] * len(nets)
    if not need:
        return result
    best = {k: best_tail_max(nets[k].n_genes) for k in need}
    cur = {k: -np.inf for k in need}
    for sel in blocks:
        sig = signature.transform(_sig.dense_rows(X, sel))
        for k in need:
            cur[k] = max(cur[k], float(cell_tail_max(sig, nets[k], signature.backend).max()))
        if all(cur[k] >= best[k] for k in need):
            break
    for k in need:
        result[k] = cur[k]
    return result


# --------------------------------------------------------------------------------------------- workflow
def activity_anndata(data, regulons, **kwargs):
    """VIPER activity as an AnnData: NES in X, two-sided p-values in ``layers['pvalue']``, BH-adjusted
    (across the regulators of each cell) in ``layers['padj']``, NaRnEA's PES in ``layers['pes']``, obs copied from ``data`` (AnnData),
    the parameters in ``uns['viper']``. Keyword arguments go to :func:`viper`."""
    import anndata as ad

    nes = viper(data, regulons, **kwargs)
    p, padj = nes_pvalues(nes)
    obs = data.obs.copy() if isinstance(data, ad.AnnData) else pd.DataFrame(index=nes.index)
    out = ad.AnnData(X=nes.to_numpy(np.float64), obs=obs, var=pd.DataFrame(index=nes.columns.astype(str)))
    out.layers["pvalue"] = p.to_numpy()
    out.layers["padj"] = padj.to_numpy()
    if "pes" in nes.attrs:
        out.layers["pes"] = nes.attrs["pes"].to_numpy(np.float64)
    if "network" in nes.attrs:
        out.obs["viper_network"] = pd.Categorical(nes.attrs["network"])
    out.uns["viper"] = _uns_params(kwargs, nes.attrs.get("networks", []))
    return out


def _uns_params(kwargs: dict, networks) -> dict:
    """``uns['viper']``: the keyword arguments that h5ad can hold, and the networks used."""
    params = {k: (list(v) if isinstance(v, tuple) else v) for k, v in kwargs.items() if k not in ("reference",)}
    params = {k: v for k, v in params.items() if v is None or isinstance(v, (str, int, float, bool, list, dict))}
    params["networks"] = list(networks)
    return {k: ("None" if v is None else v) for k, v in params.items()}


def file_labels(paths: Sequence) -> list[str]:
    """Input files as ``<folder>/<file>`` (``CD14pos_Monocyte/regulon.tsv``): which files, without
    the results folder, so that the activity file is the same bytes wherever the run is."""
    return [f"{Path(p).parent.name}/{Path(p).name}" for p in paths]


def run_viper(cells_path, regulon_paths: Sequence, activity_path, signature: str = "scale", eset_filter: bool = False,
              min_targets: int = 10, mvws=1, pleiotropy: bool = False, network_choice: str = "integrate",
              block_size: int = 5000, backend: str = "numba", enrichment: str = "area") -> None:
    """The workflow's ``viper`` step: cells h5ad + regulon TSVs (one per stratum) -> activity h5ad.

    Empty regulon files are skipped with a warning; an InputError when none is left. Networks are
    named after their stratum (the regulon file's parent directory). The output is written
    atomically (a temporary file beside it, renamed at the end; nothing is left on an error).

    Bounded memory, block by block all the way to the file (``block_size`` cells, the config's
    ``viper.block_size``): a CSR or dense X is read from the file one block of rows at a time
    (:mod:`netpert.viper.h5blocks`; the ``mad`` and ``rank`` signatures, which need whole genes, and
    other layouts read X into memory), each block is densified, scored, and its NES, p-values and
    BH-adjusted p-values (per cell, across its regulators: a block holds whole cells, so nothing
    needs the other blocks) and PES are written into datasets of the final shape. The only
    quantity over all cells, R's global tail maximum (aREA), comes from a pre-pass over the blocks
    as in :func:`viper`. The file holds what :func:`activity_anndata` gives (float64 X and layers,
    the same obs / var / uns), equal to it bit for bit. Peak memory: about the input's per-gene
    statistics plus a few dense blocks of ``block_size x genes`` float64 (0.8 GB each at 5,000 x
    20,000), whatever the number of cells.
    """
    import h5py

    from netpert._io import atomic_path
    from netpert.viper.h5blocks import COLUMN_METHODS, ActivityWriter, open_cells

    _check_args(enrichment, pleiotropy, network_choice, backend, block_size)
    block_size = int(block_size)
    tables = {}
    for path in regulon_paths:
        path = Path(path)
        table = read_regulons(path)
        name = path.parent.name or path.stem
        if table.empty:
            log.warning("regulon file '%s' is empty; stratum '%s' is skipped", path, name)
            continue
        if name in tables:
            name = f"{name}:{path.stem}"
        tables[name] = table
    if not tables:
        raise InputError(f"all {len(regulon_paths)} regulon file(s) are empty ({[str(p) for p in regulon_paths][:5]}); no network to run VIPER with")
    kwargs = {"method": signature, "eset_filter": eset_filter, "min_targets": min_targets, "mvws": mvws, "pleiotropy": pleiotropy,
              "network_choice": network_choice, "block_size": block_size, "backend": backend, "enrichment": enrichment}
    with open_cells(cells_path, in_memory=signature in COLUMN_METHODS) as (X, genes, cells, obs):
        log.info("VIPER on %d cells x %d genes with %d network(s), %d cells per block (X %s): %s", X.shape[0], X.shape[1],
                 len(tables), block_size, "read by blocks" if hasattr(X, "sparse_rows") else "in memory", list(tables))
        run = _Run(X, genes, cells, tables, signature, eset_filter, min_targets, pleiotropy, None, block_size, None,
                   backend, "auto", enrichment)
        n_cells = X.shape[0]
        choice_all = np.zeros(n_cells, dtype=np.int64) if network_choice == "auto" else None
        with atomic_path(activity_path) as tmp, h5py.File(tmp, "w") as f:
            writer = None
            for blk in run.blocks(network_choice, mvws):
                nes = np.asarray(blk.nes, dtype=np.float64)
                p, padj = nes_pvalues(nes)
                layers = {"pvalue": p, "padj": padj}
                if blk.pes is not None:
                    layers["pes"] = blk.pes
                if writer is None:
                    writer = ActivityWriter(f, n_cells, len(blk.union), tuple(layers))
                writer.write(blk.sel, X=nes, **layers)
                if choice_all is not None:
                    choice_all[blk.sel] = blk.choice
                del nes, p, padj, layers, blk
            out_obs = obs.copy()
            if choice_all is not None:
                out_obs["viper_network"] = pd.Categorical(run.network_names(choice_all))
            uns = {"viper": _uns_params(kwargs, [n.name for n in run.nets])}
            uns["viper"]["regulon_files"] = file_labels(regulon_paths)
            uns["viper"]["cells"] = Path(cells_path).name
            writer.finish(out_obs, pd.DataFrame(index=pd.Index(run.union, name="regulator").astype(str)), uns)
    log.info("wrote %s (%d cells x %d regulators)", activity_path, n_cells, len(run.union))


def run_master_regulators(activity_path, tsv_path, regulon_paths: Sequence, top_k: int = 5, padj: float = 0.05,
                          groupby: str = "stratum") -> None:
    """The workflow's ``master_regulators`` step: activity h5ad + the kept strata's regulon TSVs
    -> ``master_regulators.tsv`` (:class:`netpert.mr_table.MasterRegulatorTable`, atomic).

    A stratum has a network when its regulon file (``aracne/{stratum}/regulon.tsv``: the stratum
    is the file's parent directory) holds at least one regulon; only those strata get master
    regulators, among the regulators they have a regulon for. Every other stratum of the
    activity is listed (status ``no_network``) and its cells are part of the background.
    """
    from netpert.data import read_h5ad
    from netpert.viper.master import master_regulators

    networks = {}
    for path in map(Path, regulon_paths):
        name = path.parent.name or path.stem
        if name in networks:
            raise InputError(f"two regulon files for stratum '{name}' ({path}): give one regulon.tsv per stratum")
        networks[name] = list(pd.unique(read_regulons(path)["regulator"].astype(str)))
    act = read_h5ad(activity_path)
    table = master_regulators(act, groupby=groupby, top_k=top_k, padj=padj, networks=networks)
    table.write(tsv_path)
    s = table.strata
    log.info("wrote %s: %d master regulators over %d strata (%d with a network); none in %s", tsv_path,
             len(table.regulators), len(s), int(s["has_network"].sum()),
             ", ".join(f"{r.stratum} ({r.status})" for r in table.without_regulators().itertuples()) or "no stratum")

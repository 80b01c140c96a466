"""Load, validate and stratify single-cell expression (AnnData, cells x genes).

The workflow's data contract (``results/data/cells.h5ad`` and ``results/strata/{slug}.h5ad``):
X is a non-negative counts-like float32 CSR matrix, the var index holds unique gene symbols,
``obs['cell_type']``, ``obs['tissue']`` (when a tissue key is given) and ``obs['stratum']`` (the
stratum's safe slug) are set, and ``uns['netpert']`` records where the values came from.

The strata folder (checkpoint ``stratify``) holds, per kept stratum, ``{slug}.h5ad`` (its cells,
or its metacells: library-size-normalised sums, obs ``n_merged`` and ``umis``,
``uns['netpert']['metacells']``) and ``{slug}.null.h5ad`` (the same cells with each gene permuted
across cells, aggregated exactly as the stratum: the ARACNe threshold's null data), plus
``strata.tsv`` (:data:`STRATA_COLUMNS`, one row per stratum, kept or skipped).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from netpert import seeds
from netpert._io import atomic_dir, atomic_path, read_tsv
from netpert.errors import InputError
from netpert.metacells import (  # noqa: F401  (re-exported: netpert.data.metacells and friends)
    TARGET_UMIS,
    check_params,
    mean_overlap,
    metacells,
    holds_counts,
    parse_use_metacells,
    permute_genes,
)
from netpert.regulators import regulators_in

log = logging.getLogger(__name__)

EMBEDDED = {"pbmc68k_reduced": "scanpy's bundled pbmc68k_reduced (700 PBMCs, 765 genes, 10 cell types in obs['bulk_labels'])"}
STRATA_TABLE = "strata.tsv"
NULL_SUFFIX = ".null.h5ad"


# --------------------------------------------------------------------------------------------- loading
def load_embedded(name: str) -> ad.AnnData:
    """An embedded data set, as counts-like values. Only ``pbmc68k_reduced`` exists.

    scanpy ships it log1p-normalised (``.raw.X``); ``expm1`` gives back the normalised,
    per-cell-scaled values, which are counts-like but NOT raw counts: ``uns['netpert']`` says so.
    """
    if name not in EMBEDDED:
        raise InputError(f"unknown embedded data set 'embedded:{name}'; available: " + ", ".join(f"embedded:{k}" for k in EMBEDDED))
    import scanpy as sc

    src = sc.datasets.pbmc68k_reduced()
    raw = src.raw.to_adata()
    X = raw.X.toarray() if sp.issparse(raw.X) else np.asarray(raw.X)
    X = np.expm1(X.astype(np.float64)).astype(np.float32)
    out = ad.AnnData(X=sp.csr_matrix(X), obs=src.obs.copy(), var=pd.DataFrame(index=raw.var_names.copy()))
    out.uns["netpert"] = {
        "source": f"embedded:{name}",
        "description": EMBEDDED[name],
        "values": "normalised values (expm1 of the log1p-normalised .raw.X), not raw counts",
        "raw_counts": False,
    }
    return out


def read_h5ad(path: str | Path) -> ad.AnnData:
    """Read an ``.h5ad`` file, turning every failure into an :class:`InputError` naming the file."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"input file '{path}' does not exist; set config key 'input' to an .h5ad file or embedded:pbmc68k_reduced")
    if path.is_dir():
        raise InputError(f"input '{path}' is a folder, not an .h5ad file")
    try:
        return ad.read_h5ad(path)
    except Exception as exc:  # anndata/h5py raise many types for corrupt files
        raise InputError(
            f"input file '{path}' could not be read as h5ad ({type(exc).__name__}: {exc}); "
            "check it is a complete AnnData .h5ad file (e.g. re-export it with adata.write_h5ad)"
        ) from exc


def load_input(
    source: str,
    counts_layer: str | None = None,
    gene_symbols: str | None = None,
) -> ad.AnnData:
    """Load ``source`` (an .h5ad path or ``embedded:NAME``) as counts-like AnnData.

    ``counts_layer`` takes the values from ``layers[counts_layer]`` instead of X;
    ``gene_symbols`` takes gene names from that var column instead of the var index.
    """
    if source.startswith("embedded:"):
        adata = load_embedded(source.split(":", 1)[1])
    else:
        adata = read_h5ad(source)
        if counts_layer:
            if counts_layer not in adata.layers:
                raise InputError(
                    f"layer '{counts_layer}' (config key data.counts_layer) is not in '{source}'; layers present: "
                    f"{', '.join(adata.layers.keys()) or 'none'}. Leave data.counts_layer empty to use X."
                )
            adata = ad.AnnData(X=adata.layers[counts_layer], obs=adata.obs, var=adata.var, uns=adata.uns)
        raw_like = _looks_integer(adata.X)
        adata.uns["netpert"] = {
            "source": str(source),
            "description": f"user file {source}",
            "values": f"{'raw counts' if raw_like else 'non-integer counts-like values'} from "
            + (f"layers['{counts_layer}']" if counts_layer else "X"),
            "raw_counts": bool(raw_like),
        }
    if gene_symbols:
        if gene_symbols not in adata.var.columns:
            raise InputError(
                f"var column '{gene_symbols}' (config key data.gene_symbols) is not in the data; var columns present: "
                f"{', '.join(map(str, adata.var.columns)) or 'none'}"
            )
        adata.var_names = adata.var[gene_symbols].astype(str).values
    return adata


def _looks_integer(X) -> bool:
    vals = X.data if sp.issparse(X) else np.asarray(X).ravel()
    vals = vals[: 1_000_000]
    return bool(vals.size == 0 or np.all(np.isfinite(vals)) and np.allclose(vals, np.round(vals)))


# --------------------------------------------------------------------------------------------- validation
def validate(
    adata: ad.AnnData,
    cell_type_key: str,
    tissue_key: str | None = None,
    min_cells: int = 20,
    source: str = "input",
) -> None:
    """Check the data can go through the workflow; raise :class:`InputError` saying what to fix."""
    for key, what in ((cell_type_key, "data.cell_type_key"), (tissue_key, "data.tissue_key")):
        if key is not None and key not in adata.obs.columns:
            raise InputError(
                f"obs column '{key}' (config key {what}) is not in {source}; obs columns present: "
                f"{', '.join(map(str, adata.obs.columns)) or 'none'}"
            )
    if adata.n_obs < min_cells:
        raise InputError(
            f"{source} has {adata.n_obs} cells, fewer than the minimum of {min_cells} (config key data.min_cells); "
            "give a larger data set or lower data.min_cells"
        )
    if adata.n_vars == 0:
        raise InputError(f"{source} has no genes")
    names = pd.Index(adata.var_names)
    if names.has_duplicates:
        dups = names[names.duplicated()].unique()
        raise InputError(
            f"{source} has {len(dups)} duplicate gene names (e.g. {', '.join(map(str, dups[:5]))}); make them unique "
            "(adata.var_names_make_unique()) or choose a var column of unique ids with data.gene_symbols"
        )
    vals = adata.X.data if sp.issparse(adata.X) else np.asarray(adata.X)
    if not np.issubdtype(np.asarray(vals).dtype, np.number):
        raise InputError(f"{source}: expression values are not numeric ({np.asarray(vals).dtype})")
    n_nan = int(np.isnan(vals).sum())
    if n_nan:
        raise InputError(f"{source} holds {n_nan} NaN values; counts must be finite and non-negative (impute or drop them first)")
    n_inf = int(np.isinf(vals).sum())
    if n_inf:
        raise InputError(f"{source} holds {n_inf} infinite values; counts must be finite and non-negative")
    n_neg = int((vals < 0).sum())
    if n_neg:
        raise InputError(
            f"{source} holds {n_neg} negative values (min {float(np.min(vals)):.3g}): this looks like scaled or centred data, "
            "not counts. Give raw counts (X, or a layer via data.counts_layer)"
        )
    if vals.size and float(np.max(vals)) < 30 and not _looks_integer(adata.X) and not str(
        adata.uns.get("netpert", {}).get("source", "")
    ).startswith("embedded:"):
        raise InputError(
            f"{source} looks log-transformed (all values < 30 and not integers, max {float(np.max(vals)):.3g}), not counts. "
            "Give raw counts (X, or a layer via data.counts_layer), or undo the log (np.expm1) before running netpert"
        )


def _as_csr32(X) -> sp.csr_matrix:
    if sp.issparse(X):
        return sp.csr_matrix(X, dtype=np.float32)
    return sp.csr_matrix(np.asarray(X, dtype=np.float32))


def prepare(
    adata: ad.AnnData,
    cell_type_key: str,
    tissue_key: str | None = None,
    min_cells: int = 20,
    min_cells_per_gene: int = 3,
    regulator_lists: Sequence[str] = ("tfs", "cotfs"),
    species: str = "human",
    source: str = "input",
) -> ad.AnnData:
    """Validate, filter genes, and return the workflow's ``cells.h5ad`` AnnData."""
    validate(adata, cell_type_key, tissue_key, min_cells=min_cells, source=source)
    X = _as_csr32(adata.X)
    n_expressing = np.asarray((X > 0).sum(axis=0)).ravel()
    keep = n_expressing >= min_cells_per_gene
    if not keep.any():
        raise InputError(
            f"no gene of {source} is expressed in at least {min_cells_per_gene} cells (config key data.min_cells_per_gene)"
        )
    obs = pd.DataFrame(index=adata.obs_names.astype(str))
    for col in adata.obs.columns:
        obs[col] = adata.obs[col].values
    labels = adata.obs[cell_type_key]
    if labels.isna().any():
        log.warning("%d cells have no %s label; they are kept in cells.h5ad but belong to no stratum", int(labels.isna().sum()), cell_type_key)
    obs["cell_type"] = labels.astype("string").fillna("").values
    if tissue_key:
        obs["tissue"] = adata.obs[tissue_key].astype("string").fillna("").values
    out = ad.AnnData(X=X[:, keep], obs=obs, var=pd.DataFrame(index=pd.Index(adata.var_names[keep].astype(str))))
    out.obs["stratum"] = stratum_names(out.obs, tissue_key is not None).map(slug_map(stratum_names(out.obs, tissue_key is not None)))
    regs = regulators_in(out.var_names, regulator_lists, species)
    prov = dict(adata.uns.get("netpert", {}))
    prov.update(
        {
            "cell_type_key": cell_type_key,
            "tissue_key": tissue_key or "",
            "n_cells": int(out.n_obs),
            "n_genes_in": int(adata.n_vars),
            "n_genes": int(out.n_vars),
            "min_cells_per_gene": int(min_cells_per_gene),
            "regulator_lists": list(regulator_lists),
            "n_regulators_in_data": len(regs),
        }
    )
    out.uns["netpert"] = prov
    log.info(
        "%d cells x %d genes kept (%d genes expressed in < %d cells dropped); %d regulators of %s in the data",
        out.n_obs, out.n_vars, int((~keep).sum()), min_cells_per_gene, len(regs), "+".join(regulator_lists),
    )
    return out


# --------------------------------------------------------------------------------------------- strata
def stratum_names(obs: pd.DataFrame, with_tissue: bool) -> pd.Series:
    """The stratum of each cell: its cell type, or ``tissue | cell type``."""
    ct = obs["cell_type"].astype(str)
    if with_tissue and "tissue" in obs.columns:
        return obs["tissue"].astype(str) + " | " + ct
    return ct


def slugify(name: str) -> str:
    """A file-name-safe form of a stratum name: "CD4+/CD25 T Reg" -> "CD4pos_CD25_T_Reg"."""
    s = str(name).replace("+", "pos").replace("-", "neg") if re.search(r"[A-Za-z0-9][+-](\W|$)", str(name)) else str(name)
    s = re.sub(r"[^A-Za-z0-9]+", "_", s).strip("_")
    return s or "stratum"


def slug_map(names: Sequence[str] | pd.Series) -> dict[str, str]:
    """Unique slugs for unique names (sorted, so the mapping does not depend on cell order)."""
    out: dict[str, str] = {}
    used: set[str] = set()
    for name in sorted(set(map(str, names))):
        base = slugify(name)
        slug, i = base, 2
        while slug.lower() in used:  # case-insensitive file systems
            slug, i = f"{base}_{i}", i + 1
        used.add(slug.lower())
        out[name] = slug
    return out


@dataclass
class Stratum:
    """A kept stratum: its samples (cells or metacells) and its null data (``null``: the same cells
    with every gene permuted across cells, aggregated exactly as ``adata``)."""

    name: str
    slug: str
    adata: ad.AnnData
    null: ad.AnnData | None = None


STRATA_COLUMNS = [
    "stratum", "slug", "cell_type", "tissue", "n_cells", "n_output", "status", "reason",
    "aggregation", "n_metacells", "mean_overlap", "median_umis",
]


def stratum_file(slug: str) -> str:
    """File name of a stratum's samples in the strata folder."""
    return f"{slug}.h5ad"


def null_file(slug: str) -> str:
    """File name of a stratum's null data (genes permuted, then aggregated as the stratum)."""
    return f"{slug}{NULL_SUFFIX}"


def uses_null_file(adata: ad.AnnData) -> bool:
    """Whether a stratum's networks are calibrated on its null file (``{slug}.null.h5ad``) rather
    than on its own values permuted afresh in every null replicate: metacells only (permuting an
    aggregate would undo what the aggregation did to it). Strata of cells are permuted afresh: one
    fixed permutation, only resampled, repeats its chance dependences."""
    return "metacells" in adata.uns.get("netpert", {})


def _totals(adata: ad.AnnData) -> np.ndarray:
    return np.asarray(adata.X.sum(axis=1), dtype=np.float64).ravel()


def stratify(
    adata: ad.AnnData,
    min_cells: int = 30,
    max_cells: int | None = None,
    use_metacells: bool | str = False,
    metacell_method: str = "representative",
    metacell_k: int = 5,
    metacell_max_k: int = 30,
    metacell_max_cells: int = 250,
    target_umis: float = TARGET_UMIS,
    n_pcs: int = 30,
    seed: int = 0,
) -> tuple[list[Stratum], pd.DataFrame]:
    """Split ``adata`` (from :func:`prepare`) into strata; return the kept ones and the table of all.

    A stratum is kept with at least ``min_cells`` cells; ``max_cells`` subsamples larger ones.
    ``use_metacells`` (``True``, ``False``; strings accepted) replaces each kept stratum by its
    metacells (:func:`netpert.metacells.metacells`); off by default: on UMI counts, networks from
    the cells themselves with the copula estimator measured better (README).
    Every kept stratum also gets its null data (:func:`netpert.metacells.permute_genes` of its
    cells after subsampling, then aggregated exactly as the stratum when metacells are on).

    Random streams come from :mod:`netpert.seeds` per stratum name (``strata``, ``permutation``,
    ``metacells``, and ``metacells`` + ``"null"`` for the null), so a stratum's output depends
    neither on the other strata nor on the order they are processed in.
    """
    choice = parse_use_metacells(use_metacells)
    method = str(metacell_method).strip().lower()
    if choice:  # check the parameters before any work
        check_params(method, metacell_k, metacell_max_k, metacell_max_cells, target_umis, n_pcs)
    aggregate = bool(choice)
    log.info("metacells %s (strata.metacells.enabled is %s); %s", "on" if aggregate else "off", str(choice).lower(), holds_counts(adata)[1])
    mc_kw = dict(
        method=method, k=metacell_k, max_k=metacell_max_k, max_cells=metacell_max_cells, target_umis=target_umis, n_pcs=n_pcs
    )

    with_tissue = bool(adata.uns.get("netpert", {}).get("tissue_key"))
    names = stratum_names(adata.obs, with_tissue)
    slugs = slug_map(names)
    rows, kept = [], []
    for name in sorted(slugs):
        idx = np.flatnonzero((names == name).values)
        row = {
            "stratum": name,
            "slug": slugs[name],
            "cell_type": adata.obs["cell_type"].iloc[idx[0]],
            "tissue": adata.obs["tissue"].iloc[idx[0]] if with_tissue else "",
            "n_cells": len(idx),
            "aggregation": "none",
            "n_metacells": 0,
            "mean_overlap": np.nan,
            "median_umis": np.nan,
        }
        if name == "" or (with_tissue and name.endswith(" | ")):
            row.update(status="skipped", reason="cells without a cell-type label", n_output=0)
        elif len(idx) < min_cells:
            row.update(status="skipped", reason=f"{len(idx)} cells < strata.min_cells={min_cells}", n_output=0)
        else:
            if max_cells and len(idx) > max_cells:
                idx = np.sort(seeds.rng(seed, "strata", name).choice(idx, size=max_cells, replace=False))
            sub = adata[idx].copy()
            null = permute_genes(sub, seeds.rng(seed, "permutation", name))
            reason = f"subsampled to {max_cells}" if max_cells and row["n_cells"] > max_cells else ""
            if aggregate:
                sub = metacells(sub, seed=seeds.rng(seed, "metacells", name), name=name, **mc_kw)
                null = metacells(null, seed=seeds.rng(seed, "metacells", name, "null"), name=f"{name} (null)", **mc_kw)
                info = sub.uns["netpert"]["metacells"]
                if method == "knn":
                    what = f"{sub.n_obs} metacells of k={metacell_k} neighbours (knn)"
                else:
                    what = (
                        f"{sub.n_obs} representative metacells (median {info['median_n_merged']:g} cells, "
                        f"target {float(target_umis):g} UMIs)"
                    )
                reason = (reason + "; " if reason else "") + what
                row.update(aggregation=method, n_metacells=int(sub.n_obs), mean_overlap=round(info["mean_overlap"], 4))
            for part, is_null in ((sub, False), (null, True)):
                part.uns["netpert"] = dict(part.uns.get("netpert", {}), stratum=name, slug=slugs[name], is_null=is_null)
            kept.append(Stratum(name, slugs[name], sub, null))
            row.update(status="kept", reason=reason, n_output=sub.n_obs, median_umis=float(np.median(_totals(sub))))
        rows.append(row)
    table = pd.DataFrame(rows, columns=STRATA_COLUMNS)
    if not kept:
        sizes = ", ".join(f"{r['stratum']}: {r['n_cells']}" for r in rows)
        raise InputError(
            f"no stratum has at least {min_cells} cells (config key strata.min_cells); sizes seen: {sizes}. "
            "Lower strata.min_cells or give more cells"
        )
    return kept, table


def write_strata(strata: list[Stratum], table: pd.DataFrame, outdir: str | Path) -> None:
    """Write ``{slug}.h5ad`` and ``{slug}.null.h5ad`` per kept stratum and ``strata.tsv`` into
    ``outdir``, atomically as a whole (the folder appears complete or not at all)."""
    missing = [s.slug for s in strata if s.null is None]
    if missing:
        raise ValueError(f"strata without null data: {', '.join(missing)} (build them with stratify())")
    with atomic_dir(outdir) as tmp:
        for s in strata:
            s.adata.write_h5ad(tmp / stratum_file(s.slug), compression="gzip")
            s.null.write_h5ad(tmp / null_file(s.slug), compression="gzip")
        table.to_csv(tmp / STRATA_TABLE, sep="\t", index=False, na_rep="")


def read_strata_table(path: str | Path) -> pd.DataFrame:
    """``strata.tsv``: text columns as strings, the numeric ones as numbers (empty: NaN)."""
    table = read_tsv(path, "strata table", "rerun the stratify checkpoint", keep_default_na=False, dtype={"stratum": str, "slug": str})
    for col in ("mean_overlap", "median_umis"):
        if col in table.columns:
            table[col] = pd.to_numeric(table[col], errors="coerce").astype(float)
    return table


def write_h5ad(adata: ad.AnnData, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        adata.write_h5ad(tmp, compression="gzip")


def prepare_data(
    source: str,
    out: str | Path,
    cell_type_key: str,
    tissue_key: str | None = None,
    counts_layer: str | None = None,
    gene_symbols: str | None = None,
    min_cells: int = 20,
    min_cells_per_gene: int = 3,
    regulator_lists: Sequence[str] = ("tfs", "cotfs"),
    species: str = "human",
) -> ad.AnnData:
    """Rule ``prepare_data``: load, validate, filter and write ``cells.h5ad`` (nothing is written on error)."""
    adata = load_input(source, counts_layer=counts_layer, gene_symbols=gene_symbols)
    adata = prepare(
        adata, cell_type_key, tissue_key, min_cells=min_cells, min_cells_per_gene=min_cells_per_gene,
        regulator_lists=regulator_lists, species=species, source=f"'{source}'",
    )
    write_h5ad(adata, out)
    return adata

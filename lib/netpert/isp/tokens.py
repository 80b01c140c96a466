"""ISP inputs: one stratum's cells as rank-value encodings and the perturbations to run.

* :func:`tokenize_stratum` (rule ``isp_tokenize``): a stratum's cells -> Geneformer encodings
  + the perturbation plan, in one parquet file (:func:`write_tokens` / :func:`read_tokens`);
* :func:`master_regulator_targets`: the genes to perturb, from the master-regulator table.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from netpert._io import atomic_path, json_default
from netpert.errors import InputError
from netpert.isp.perturb import PerturbationSpec, check_kind, expand, make_specs

log = logging.getLogger(__name__)

TOKENS_META_KEY = b"netpert"


@dataclass
class TokenFile:
    """A tokenized stratum: cells, their encodings, the perturbations to run, and facts."""

    cell_ids: list[str]
    input_ids: list[np.ndarray]
    specs: list[PerturbationSpec]
    meta: dict

    @property
    def shift_fraction(self) -> float:
        return float(self.meta.get("shift_fraction", 0.25))


def write_tokens(path, cell_ids, input_ids, specs: Sequence[PerturbationSpec], meta: Mapping, extra: Mapping | None = None) -> None:
    """The parquet file of ``isp_tokenize``: columns cell_id, input_ids (list<int32>), length
    (+ ``extra`` columns); the plan and facts as JSON in the schema metadata (``netpert``)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = {
        "cell_id": pa.array([str(c) for c in cell_ids], type=pa.string()),
        "input_ids": pa.array([np.asarray(x, dtype=np.int32) for x in input_ids], type=pa.list_(pa.int32())),
        "length": pa.array([len(x) for x in input_ids], type=pa.int32()),
    }
    for k, v in (extra or {}).items():
        columns[k] = pa.array(list(v))
    table = pa.table(columns)
    full = {**meta, "perturbations": [s.to_dict() for s in specs]}
    table = table.replace_schema_metadata({TOKENS_META_KEY: json.dumps(full, default=json_default).encode()})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def read_tokens(path) -> TokenFile:
    """Read a file written by :func:`write_tokens`."""
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.is_file():
        raise InputError(f"token file not found: {path} (run the isp_tokenize rule first)")
    table = pq.read_table(path)
    missing = {"cell_id", "input_ids"} - set(table.column_names)
    if missing:
        raise InputError(f"{path} lacks the column(s) {', '.join(sorted(missing))}: rerun the isp_tokenize rule")
    raw = (table.schema.metadata or {}).get(TOKENS_META_KEY)
    if raw is None:
        raise InputError(f"{path} has no perturbation plan in its metadata: rerun the isp_tokenize rule")
    meta = json.loads(raw)
    specs = [PerturbationSpec.from_dict(d) for d in meta.pop("perturbations", [])]
    cell_ids = [str(c) for c in table.column("cell_id").to_pylist()]
    input_ids = [np.asarray(x, dtype=np.int64) for x in table.column("input_ids").to_pylist()]
    return TokenFile(cell_ids, input_ids, specs, meta)


def stratum_of(adata, path=None) -> str:
    """The stratum slug of a stratum file: its single ``obs['stratum']`` value, else the file stem."""
    if "stratum" in adata.obs.columns:
        values = pd.unique(adata.obs["stratum"].astype(str))
        if len(values) == 1:
            return str(values[0])
    if path is not None:
        return Path(path).name.removesuffix(".h5ad")
    raise InputError("cannot tell the stratum: obs['stratum'] is missing or not unique and no file name was given")


def _mr_lookup(path, stratum: str, top_k: int, cell_type: str | None) -> tuple[list[str], str | None]:
    """(targets, why none) of ``stratum`` in ``master_regulators.tsv`` (the stratum's cell type
    when the slug is not listed)."""
    from netpert.mr_table import STATUS_LABELS, read_master_regulators

    path = Path(path)
    if not path.is_file():
        raise InputError(f"master-regulator table not found: {path} (run the master_regulators rule, or set isp.targets.source: list)")
    table = read_master_regulators(path)
    key = stratum if stratum in table else cell_type if cell_type is not None and cell_type in table else None
    if key is None:
        raise InputError(
            f"{path} does not list stratum '{stratum}' (strata there: {', '.join(list(table.strata['stratum'])[:10])}): "
            "rerun the master_regulators rule on the same strata"
        )
    targets = table.targets(key, top_k)
    if targets:
        return targets, None
    row = table.status(key)
    return [], f"{STATUS_LABELS.get(row['status'], row['status'])}: {row['reason']}".rstrip(": ")


def master_regulator_targets(path, stratum: str, top_k: int = 5, cell_type: str | None = None) -> list[str]:
    """The ``top_k`` master regulators of ``stratum`` from ``master_regulators.tsv``, best first
    (rank 1 up, rank 1 down, rank 2 up, ...). ``[]`` when the table lists the stratum without
    master regulators (no network of its own, or no significant regulator); an InputError when
    the table is missing or does not list the stratum (nor ``cell_type``)."""
    return _mr_lookup(path, stratum, top_k, cell_type)[0]


def tokenize_stratum(
    adata,
    bundle,
    out_path,
    *,
    targets_source: str = "master_regulators",
    targets_path=None,
    genes: Sequence[str] = (),
    top_k: int = 5,
    perturbation: str = "delete",
    shift_fraction: float = 0.25,
    pairs: bool = False,
    anchor: str | None = None,
    cells_per_stratum: int | None = 20,
    seed: int = 0,
    max_len: int = 2048,
    gene_id_column: str | None = None,
    stratum: str | None = None,
    source: str | None = None,
) -> dict:
    """Rule ``isp_tokenize``: sample up to ``cells_per_stratum`` cells of one stratum, encode
    them for ``bundle`` (a ModelBundle or its folder), choose the targets (the stratum's top
    ``top_k`` master regulators from ``targets_path``, or ``genes``), and write the token file
    with the perturbation plan. Returns the file's metadata. A stratum the master-regulator table
    lists without master regulators gets an empty plan (its cells are embedded, nothing is
    perturbed) and ``meta["no_targets"]`` says why; ``None`` otherwise.
    """
    from netpert.isp.model import as_bundle
    from netpert.isp.tokenizer import tokenize_for_model

    bundle = as_bundle(bundle)
    check_kind(perturbation)
    source = source or "the stratum"
    if adata.n_obs == 0:
        raise InputError(f"{source} is empty (0 cells): nothing to tokenize; drop the stratum or lower the stratification minimum")
    stratum = stratum or stratum_of(adata)
    n_total = int(adata.n_obs)
    if cells_per_stratum is not None and n_total > int(cells_per_stratum):
        rng = np.random.default_rng(int(seed))
        keep = np.sort(rng.choice(n_total, size=int(cells_per_stratum), replace=False))
        adata = adata[keep].copy()
    no_targets = None
    if targets_source == "master_regulators":
        if targets_path is None:
            raise InputError("isp.targets.source is master_regulators but no master-regulator table was given")
        cell_type = str(adata.obs["cell_type"].iloc[0]) if "cell_type" in adata.obs.columns else None
        targets, no_targets = _mr_lookup(targets_path, stratum, top_k, cell_type)
        if no_targets:
            log.warning("stratum %s has no master regulator (%s): its cells are tokenised with no perturbation", stratum, no_targets)
    elif targets_source == "list":
        targets = [str(g) for g in genes]
        if not targets:
            raise InputError("isp.targets.source is 'list' but isp.targets.genes is empty: list the genes to perturb")
    else:
        raise InputError(f"unknown isp.targets.source '{targets_source}'; use master_regulators or list")
    # a stratum without master regulators: no perturbation (its cells are still embedded)
    specs = make_specs(targets, bundle.token_dictionary, perturbation, pairs, anchor, bundle.gene_mapping) if targets else []
    tok = tokenize_for_model(adata, bundle, gene_id_column=gene_id_column, max_len=max_len, source=source)
    meta = {
        "stratum": stratum,
        "n_cells_in_stratum": n_total,
        "n_cells": len(tok),
        "cells_per_stratum": cells_per_stratum,
        "seed": int(seed),
        "targets_source": targets_source,
        "targets": targets,
        "no_targets": no_targets,
        "perturbation": perturbation,
        "shift_fraction": float(shift_fraction),
        "pairs": bool(pairs),
        "anchor": anchor if pairs else None,
        "max_len": int(min(int(max_len), bundle.max_len)),
        "special_tokens": tok.info["special_tokens"],
        "tokenizer": tok.info,
        "model": bundle.describe(),
    }
    # how many cells each target can be perturbed in (delete/inhibit/activate need it expressed)
    exp = expand(tok.input_ids, specs, shift_fraction, meta["max_len"], *special_ends(tok.info["special_tokens"]))
    meta["applicable"] = {s.label: int(len(tok) - exp.skipped[s.label]) for s in specs}
    write_tokens(out_path, tok.cell_ids, tok.input_ids, specs, meta)
    return meta


def special_ends(special: bool) -> tuple[int, int]:
    return (1, 1) if special else (0, 0)

"""Geneformer's rank-value encoding of cells.

For each cell: counts / cell total x 10,000 / the gene's median (the model's gene-median
dictionary: Geneformer's non-zero median of the normalised counts over its pretraining corpus;
computed from the data by :func:`compute_gene_medians` when the model has none); the genes of
the vocabulary that are expressed (non-zero) are ranked by that value, highest first, and the
ranking is truncated to the model's input size (2,048 for the 30M series; the 95M+ series
adds ``<cls>`` in front and ``<eos>`` at the end within 4,096). Ties keep the order of the
genes in ``var`` (a stable sort). Gene ids come from ``var`` (index or a column): symbols or
Ensembl ids; ids not in the token dictionary are looked up in the model's symbol -> Ensembl
mapping (Helical's ``ensembl_mapping_dict``). Data genes that map to the same vocabulary gene
are summed (as Geneformer's tokenizer does). Unknown genes are counted and reported.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
import scipy.sparse as sp

from netpert.errors import InputError

log = logging.getLogger(__name__)

TARGET_SUM = 10_000.0


@dataclass
class GeneMatch:
    """Data genes matched to the vocabulary."""

    keys: list  # vocabulary key (gene id in the token dictionary) per data gene, None when unknown
    token_ids: np.ndarray  # int64 token id per data gene, -1 when unknown or without a median
    unknown: list[str]  # data genes not in the vocabulary
    no_median: list[str] = field(default_factory=list)  # in the vocabulary but without a gene median

    @property
    def n_known(self) -> int:
        """Data genes in the vocabulary (with or without a median)."""
        return len(self.keys) - len(self.unknown)

    @property
    def n_unknown(self) -> int:
        return len(self.unknown)


@dataclass
class Tokenized:
    """Rank-value encodings of cells: one int32 array of token ids per cell."""

    cell_ids: list[str]
    input_ids: list[np.ndarray]
    info: dict = field(default_factory=dict)

    @property
    def lengths(self) -> np.ndarray:
        return np.array([len(x) for x in self.input_ids], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.cell_ids)


def gene_ids_of(adata, gene_id_column: str | None = None) -> list[str]:
    """Gene ids of ``adata``: its var index, or ``var[gene_id_column]``."""
    if gene_id_column in (None, "", "index"):
        return [str(g) for g in adata.var_names]
    if gene_id_column not in adata.var.columns:
        raise InputError(
            f"gene id column '{gene_id_column}' is not in var (columns: {', '.join(map(str, adata.var.columns)) or 'none'}); "
            "leave it unset to use the var index"
        )
    return [str(g) for g in adata.var[gene_id_column].astype(str)]


def match_genes(
    gene_ids: Sequence[str],
    token_dictionary: Mapping[str, int],
    gene_mapping: Mapping[str, str] | None = None,
    special: Sequence[int] = (),
    gene_medians: Mapping[str, float] | None = None,
) -> GeneMatch:
    """Vocabulary key and token id of each data gene.

    A gene is known when its id is a (non-special) key of ``token_dictionary``, or maps to one
    through ``gene_mapping`` (symbol -> Ensembl id). With ``gene_medians`` given, a gene without
    a median is left out too (``no_median``; Geneformer's vocabulary is the median dictionary's
    genes, and a gene the data never expresses gets no median from the data).
    """
    special = {int(s) for s in special}
    keys, ids, unknown, no_median = [], np.full(len(gene_ids), -1, dtype=np.int64), [], []
    for i, gene in enumerate(gene_ids):
        key = None
        for cand in (gene, gene_mapping.get(gene) if gene_mapping else None):
            if cand is not None and cand in token_dictionary and int(token_dictionary[cand]) not in special:
                key = cand
                break
        keys.append(key)
        if key is None:
            unknown.append(str(gene))
        elif gene_medians is not None and key not in gene_medians:
            no_median.append(str(gene))
        else:
            ids[i] = int(token_dictionary[key])
    return GeneMatch(keys=keys, token_ids=ids, unknown=unknown, no_median=no_median)


def _csr64(X) -> sp.csr_matrix:
    X = sp.csr_matrix(X, dtype=np.float64) if not sp.isspmatrix_csr(X) else X.astype(np.float64)
    X = X.copy()
    X.sum_duplicates()
    X.sort_indices()
    if X.nnz and X.data.min() < 0:
        raise InputError("expression values must be non-negative counts (found negative values in X)")
    return X


def normalise_counts(X, target_sum: float = TARGET_SUM) -> sp.csr_matrix:
    """counts / cell total x ``target_sum`` (CSR float64; the total is over all genes; empty cells stay 0)."""
    X = _csr64(X)
    totals = np.asarray(X.sum(axis=1)).ravel()
    scale = np.divide(target_sum, totals, out=np.zeros_like(totals), where=totals > 0)
    return sp.csr_matrix(sp.diags(scale) @ X)


def _collapse(X: sp.csr_matrix, token_ids: np.ndarray) -> tuple[sp.csr_matrix, np.ndarray]:
    """Columns of known genes summed per token id: (cells x unique tokens, the tokens in first-seen order)."""
    known = np.flatnonzero(token_ids >= 0)
    tokens, first = np.unique(token_ids[known], return_index=True)
    order = np.argsort(first, kind="stable")  # first-seen (var) order
    tokens = tokens[order]
    col_of = {int(t): j for j, t in enumerate(tokens)}
    cols = np.array([col_of[int(t)] for t in token_ids[known]], dtype=np.int64)
    M = sp.csr_matrix((np.ones(len(known)), (known, cols)), shape=(X.shape[1], len(tokens)))
    out = sp.csr_matrix(X @ M)
    out.sort_indices()
    return out, tokens


def compute_gene_medians(
    adata,
    gene_id_column: str | None = None,
    token_dictionary: Mapping[str, int] | None = None,
    gene_mapping: Mapping[str, str] | None = None,
    target_sum: float = TARGET_SUM,
) -> dict[str, float]:
    """Geneformer's normalisation factors from the data: each gene's median over the cells that
    express it of counts / cell total x 10,000.

    Keys are the vocabulary's gene ids when ``token_dictionary`` is given (data genes mapping to
    the same one are summed first), else the data's gene ids. Genes expressed in no cell get no
    median (they never enter an encoding).
    """
    genes = gene_ids_of(adata, gene_id_column)
    X = normalise_counts(adata.X, target_sum)
    if token_dictionary is not None:
        match = match_genes(genes, token_dictionary, gene_mapping, special=_special_ids(token_dictionary))
        X, tokens = _collapse(X, match.token_ids)
        inv = {int(v): k for k, v in token_dictionary.items()}
        names = [inv[int(t)] for t in tokens]
    else:
        names = genes
    Xc = sp.csc_matrix(X)
    Xc.sort_indices()
    medians = {}
    for j, name in enumerate(names):
        vals = Xc.data[Xc.indptr[j] : Xc.indptr[j + 1]]
        vals = vals[vals > 0]
        if vals.size:
            medians[str(name)] = float(np.median(vals))
    return medians


def _special_ids(token_dictionary: Mapping[str, int]) -> list[int]:
    return [int(v) for k, v in token_dictionary.items() if k.startswith("<") and k.endswith(">")]


def rank_value_encode(
    X,
    token_ids: np.ndarray,
    medians: np.ndarray,
    max_genes: int,
    cls_id: int | None = None,
    eos_id: int | None = None,
) -> list[np.ndarray]:
    """Token ids of each row of ``X`` (cells x columns, already normalised) ranked by X / medians.

    ``token_ids`` / ``medians``: per column. Non-zero entries only, highest first (ties in
    column order), at most ``max_genes``, wrapped in ``cls_id`` / ``eos_id`` when given.
    """
    X = sp.csr_matrix(X)
    X.sort_indices()
    token_ids = np.asarray(token_ids, dtype=np.int64)
    medians = np.asarray(medians, dtype=np.float64)
    if np.any(medians <= 0):
        raise InputError("gene medians must be positive")
    out = []
    for i in range(X.shape[0]):
        s, e = X.indptr[i], X.indptr[i + 1]
        vals, cols = X.data[s:e], X.indices[s:e]
        keep = vals > 0
        vals, cols = vals[keep] / medians[cols[keep]], cols[keep]
        order = np.argsort(-vals, kind="stable")[: int(max_genes)]
        ids = token_ids[cols[order]]
        parts = ([np.array([cls_id])] if cls_id is not None else []) + [ids] + ([np.array([eos_id])] if eos_id is not None else [])
        out.append(np.concatenate(parts).astype(np.int32) if ids.size else np.zeros(0, dtype=np.int32))
    return out


def tokenize(
    adata,
    token_dictionary: Mapping[str, int],
    gene_medians: Mapping[str, float] | None = None,
    *,
    gene_id_column: str | None = None,
    gene_mapping: Mapping[str, str] | None = None,
    max_len: int = 2048,
    special_tokens: bool | None = None,
    target_sum: float = TARGET_SUM,
    source: str = "the data",
) -> Tokenized:
    """Rank-value encode every cell of ``adata`` (cells x genes, counts-like ``X``).

    ``max_len`` counts the special tokens: with ``special_tokens`` (default: when the
    dictionary has ``<cls>`` and ``<eos>``) each cell is ``<cls>`` + up to ``max_len - 2``
    genes + ``<eos>``. Without ``gene_medians`` the medians are computed from ``adata`` (and
    ``info['gene_medians']`` says so). Raises :class:`InputError` when no gene is in the
    vocabulary or a cell is left with no token (naming the cells).
    """
    if adata.n_obs == 0:
        raise InputError(f"{source} holds no cells: nothing to tokenize")
    if int(max_len) < 1:
        raise InputError(f"max_len must be >= 1, got {max_len}")
    genes = gene_ids_of(adata, gene_id_column)
    cls_id, eos_id = token_dictionary.get("<cls>"), token_dictionary.get("<eos>")
    if special_tokens is None:
        special_tokens = cls_id is not None and eos_id is not None
    if special_tokens and (cls_id is None or eos_id is None):
        raise InputError("special tokens requested but the token dictionary has no <cls> / <eos>")
    n_special = 2 if special_tokens else 0
    max_genes = int(max_len) - n_special
    if max_genes < 1:
        raise InputError(f"max_len {max_len} leaves no room for genes next to <cls> and <eos>")
    medians_source = "model"
    if gene_medians is None:
        gene_medians = compute_gene_medians(adata, gene_id_column, token_dictionary, gene_mapping, target_sum)
        medians_source = f"computed from {source} ({adata.n_obs} cells)"
    match = match_genes(genes, token_dictionary, gene_mapping, special=_special_ids(token_dictionary), gene_medians=gene_medians)
    if not (match.token_ids >= 0).any():
        raise InputError(
            f"none of the {len(genes)} genes of {source} is in the model's vocabulary (first ids: "
            f"{', '.join(genes[:5])}); use gene ids the model knows (Ensembl ids, or symbols with the model's "
            "ensembl_mapping_dict) or set the gene id column"
        )
    X = normalise_counts(adata.X, target_sum)
    Xk, tokens = _collapse(X, match.token_ids)
    inv = {int(v): k for k, v in token_dictionary.items()}
    med = np.array([gene_medians[inv[int(t)]] for t in tokens], dtype=np.float64)
    encoded = rank_value_encode(Xk, tokens, med, max_genes, cls_id if special_tokens else None, eos_id if special_tokens else None)
    cell_ids = [str(c) for c in adata.obs_names]
    empty = [c for c, ids in zip(cell_ids, encoded) if ids.size == 0]
    if empty:
        raise InputError(
            f"{len(empty)} cell(s) of {source} have no expressed gene in the model's vocabulary and get no token: "
            f"{', '.join(empty[:10])}{' ...' if len(empty) > 10 else ''}; filter them out (e.g. min genes per cell) first"
        )
    lengths = np.array([len(x) for x in encoded])
    truncated = int(sum(int(Xk[i].nnz) > max_genes for i in range(Xk.shape[0])))
    info = {
        "n_cells": int(adata.n_obs),
        "n_genes": len(genes),
        "n_genes_in_vocabulary": match.n_known,
        "n_genes_unknown": match.n_unknown,
        "unknown_examples": match.unknown[:20],
        "n_genes_without_median": len(match.no_median),
        "n_vocabulary_genes_used": int(len(tokens)),
        "gene_medians": medians_source,
        "max_len": int(max_len),
        "special_tokens": bool(special_tokens),
        "n_cells_truncated": truncated,
        "length_min": int(lengths.min()),
        "length_median": float(np.median(lengths)),
        "length_max": int(lengths.max()),
        "target_sum": float(target_sum),
    }
    if match.n_unknown:
        log.info(
            "%d of %d genes of %s are not in the model's vocabulary (e.g. %s)",
            match.n_unknown,
            len(genes),
            source,
            ", ".join(match.unknown[:5]),
        )
    return Tokenized(cell_ids=cell_ids, input_ids=encoded, info=info)


def tokenize_for_model(adata, bundle, gene_id_column: str | None = None, max_len: int | None = None, source: str = "the data") -> Tokenized:
    """:func:`tokenize` with a :class:`~netpert.isp.model.ModelBundle`'s dictionaries and input size
    (``max_len`` capped at the model's positions)."""
    cap = bundle.max_len if max_len is None else min(int(max_len), bundle.max_len)
    return tokenize(
        adata,
        bundle.token_dictionary,
        bundle.gene_medians,
        gene_id_column=gene_id_column,
        gene_mapping=bundle.gene_mapping,
        max_len=cap,
        source=source,
    )

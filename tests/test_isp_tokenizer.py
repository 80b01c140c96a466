"""Geneformer's rank-value encoding (netpert.isp.tokenizer) against hand-worked examples."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from netpert.errors import InputError
from netpert.isp.tokenizer import compute_gene_medians, match_genes, normalise_counts, rank_value_encode, tokenize

TOKENS = {"<pad>": 0, "<mask>": 1, "A": 2, "B": 3, "C": 4}
MEDIANS = {"A": 1000.0, "B": 500.0, "C": 2000.0}


def cells(rows, genes=("A", "B", "C", "D"), names=None):
    X = sp.csr_matrix(np.asarray(rows, dtype=np.float32))
    names = names or [f"cell{i}" for i in range(len(rows))]
    return ad.AnnData(X, obs=pd.DataFrame(index=names), var=pd.DataFrame(index=list(genes)))


# Worked by hand (D is not in the vocabulary but counts in the cell total):
#  cell0 A1 B2 C4 D3 (total 10): A 1000/1000=1, B 2000/500=4, C 4000/2000=2 -> B C A
#  cell1 A5 C1 D4    (total 10): A 5000/1000=5, C 1000/2000=0.5          -> A C
#  cell2 A3 B3       (total 6) : A 5000/1000=5, B 5000/500=10            -> B A
#  cell3 A4 B2 D4    (total 10): A 4000/1000=4, B 2000/500=4 (a tie)     -> A B (var order)
HAND = [[1, 2, 4, 3], [5, 0, 1, 4], [3, 3, 0, 0], [4, 2, 0, 4]]
EXPECTED = [[3, 4, 2], [2, 4], [3, 2], [2, 3]]


def test_rank_value_encoding_hand_worked():
    tok = tokenize(cells(HAND), TOKENS, MEDIANS, max_len=2048)
    assert [list(x) for x in tok.input_ids] == EXPECTED
    assert all(x.dtype == np.int32 for x in tok.input_ids)
    assert tok.cell_ids == ["cell0", "cell1", "cell2", "cell3"]
    assert tok.info["n_genes_unknown"] == 1 and tok.info["unknown_examples"] == ["D"]
    assert tok.info["gene_medians"] == "model"


def test_truncation_to_the_input_size():
    tok = tokenize(cells(HAND), TOKENS, MEDIANS, max_len=2)
    assert [list(x) for x in tok.input_ids] == [e[:2] for e in EXPECTED]
    assert tok.info["n_cells_truncated"] == 1


def test_special_tokens_wrap_the_genes_within_the_input_size():
    tokens = {"<pad>": 0, "<mask>": 1, "<cls>": 2, "<eos>": 3, "A": 4, "B": 5, "C": 6}
    tok = tokenize(cells(HAND), tokens, MEDIANS, max_len=4)
    # cell0 ranks B C A -> <cls> B C <eos> (2 genes fit next to the 2 specials)
    assert list(tok.input_ids[0]) == [2, 5, 6, 3]
    assert list(tok.input_ids[1]) == [2, 4, 6, 3]
    assert tok.info["special_tokens"] is True


def test_normalisation_and_kernel_match_a_direct_computation():
    rng = np.random.default_rng(3)
    X = rng.poisson(2.0, size=(7, 9)).astype(float)
    X[2] = 0
    X[2, 4] = 3
    norm = normalise_counts(X).toarray()
    totals = X.sum(1, keepdims=True)
    np.testing.assert_allclose(norm, X / totals * 1e4)
    med = rng.uniform(0.5, 5, size=9)
    ids = np.arange(10, 19)
    out = rank_value_encode(sp.csr_matrix(norm), ids, med, max_genes=5)
    for i in range(7):
        v = norm[i] / med
        nz = np.flatnonzero(v)
        order = nz[np.argsort(-v[nz], kind="stable")][:5]
        assert list(out[i]) == list(ids[order])


def test_medians_are_nonzero_medians_of_normalised_counts():
    med = compute_gene_medians(cells(HAND))
    # normalised A: 1000, 5000, 5000, 4000 -> 4500; B: 2000, 5000, 2000 -> 2000;
    # C: 4000, 1000 -> 2500; D: 3000, 4000, 4000 -> 4000
    assert med == pytest.approx({"A": 4500.0, "B": 2000.0, "C": 2500.0, "D": 4000.0})
    # without model medians the tokenizer computes them from the data and says so
    tok = tokenize(cells(HAND), TOKENS, None)
    assert "computed from" in tok.info["gene_medians"]
    # cell0: A 1000/4500, B 2000/2000=1, C 4000/2500=1.6 -> C B A
    assert list(tok.input_ids[0]) == [4, 3, 2]


def test_gene_id_column_and_ensembl_mapping_sum_duplicates():
    tokens = {"<pad>": 0, "<mask>": 1, "ENSG1": 2, "ENSG2": 3}
    medians = {"ENSG1": 1000.0, "ENSG2": 1000.0}
    mapping = {"A": "ENSG1", "A2": "ENSG1", "B": "ENSG2"}
    data = cells([[1, 1, 3, 5]], genes=("A", "A2", "B", "X"))
    data.var["symbol"] = ["A", "A2", "B", "X"]
    data.var_names = ["g1", "g2", "g3", "g4"]
    # A and A2 both map to ENSG1 and are summed: ENSG1 2000, ENSG2 3000 -> ENSG2 first
    tok = tokenize(data, tokens, medians, gene_id_column="symbol", gene_mapping=mapping)
    assert list(tok.input_ids[0]) == [3, 2]
    assert tok.info["n_genes_unknown"] == 1
    match = match_genes(["A", "B", "X"], tokens, mapping)
    assert list(match.token_ids) == [2, 3, -1] and match.unknown == ["X"]
    with pytest.raises(InputError, match="gene id column 'nope'"):
        tokenize(data, tokens, medians, gene_id_column="nope")


def test_a_cell_without_tokens_is_an_input_error_naming_it():
    data = cells([[1, 0, 0, 0], [0, 0, 0, 7], [0, 0, 0, 0]], names=["ok", "only_unknown", "empty"])
    with pytest.raises(InputError, match="only_unknown, empty"):
        tokenize(data, TOKENS, MEDIANS)


def test_no_known_gene_and_no_cells_are_input_errors():
    with pytest.raises(InputError, match="none of the 2 genes"):
        tokenize(cells([[1, 2]], genes=("X", "Y")), TOKENS, MEDIANS)
    with pytest.raises(InputError, match="holds no cells"):
        tokenize(cells(np.zeros((0, 4))), TOKENS, MEDIANS)
    with pytest.raises(InputError, match="non-negative"):
        tokenize(cells([[1, -2, 0, 0]]), TOKENS, MEDIANS)

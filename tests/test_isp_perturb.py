"""Perturbations of rank-value encodings (netpert.isp.perturb)."""

from __future__ import annotations

import numpy as np
import pytest

from netpert.errors import InputError
from netpert.isp.perturb import PerturbationSpec, expand, make_specs, perturb_tokens

CELL = np.array([10, 11, 12, 13, 14, 15, 16, 17], dtype=np.int32)  # ranks 0..7


def test_delete():
    assert list(perturb_tokens(CELL, [13], "delete")) == [10, 11, 12, 14, 15, 16, 17]
    assert list(perturb_tokens(CELL, [13, 10], "delete")) == [11, 12, 14, 15, 16, 17]
    assert perturb_tokens(CELL, [99], "delete") is None  # not expressed: skipped
    assert perturb_tokens(CELL, [13, 99], "delete") is None
    assert perturb_tokens(CELL, [13], "delete").dtype == CELL.dtype


def test_overexpress_moves_or_inserts_at_the_front():
    assert list(perturb_tokens(CELL, [15], "overexpress")) == [15, 10, 11, 12, 13, 14, 16, 17]
    # absent: inserted, and the encoding truncated to the input size
    assert list(perturb_tokens(CELL, [99], "overexpress", max_len=8)) == [99, 10, 11, 12, 13, 14, 15, 16]
    assert list(perturb_tokens(CELL, [99], "overexpress", max_len=20)) == [99, *CELL]
    # a pair: anchor first
    assert list(perturb_tokens(CELL, [16, 12], "overexpress")) == [16, 12, 10, 11, 13, 14, 15, 17]


def test_inhibit_and_activate_move_by_a_fraction_of_the_genes():
    # 8 genes x 0.25 = 2 positions
    assert list(perturb_tokens(CELL, [11], "inhibit", shift_fraction=0.25)) == [10, 12, 13, 11, 14, 15, 16, 17]
    assert list(perturb_tokens(CELL, [14], "activate", shift_fraction=0.25)) == [10, 11, 14, 12, 13, 15, 16, 17]
    # clipped at the ends; at least one position
    assert list(perturb_tokens(CELL, [16], "inhibit", shift_fraction=0.5)) == [10, 11, 12, 13, 14, 15, 17, 16]
    assert list(perturb_tokens(CELL, [11], "activate", shift_fraction=0.01)) == [11, 10, 12, 13, 14, 15, 16, 17]
    assert perturb_tokens(CELL, [99], "inhibit") is None
    assert perturb_tokens(CELL, [99], "activate") is None
    with pytest.raises(InputError, match="shift_fraction"):
        perturb_tokens(CELL, [11], "inhibit", shift_fraction=0)


def test_special_tokens_stay_in_place():
    cell = np.array([2, 10, 11, 12, 3])  # <cls> ... <eos>
    assert list(perturb_tokens(cell, [12], "overexpress", max_len=5, n_prefix=1, n_suffix=1)) == [2, 12, 10, 11, 3]
    assert list(perturb_tokens(cell, [99], "overexpress", max_len=5, n_prefix=1, n_suffix=1)) == [2, 99, 10, 11, 3]
    assert list(perturb_tokens(cell, [10], "delete", n_prefix=1, n_suffix=1)) == [2, 11, 12, 3]
    assert list(perturb_tokens(cell, [10], "inhibit", shift_fraction=1.0, n_prefix=1, n_suffix=1)) == [2, 11, 12, 10, 3]
    assert perturb_tokens(cell, [2], "delete", n_prefix=1, n_suffix=1) is None  # <cls> is not a gene


def test_specs_pairs_and_unknown_targets():
    tokens = {"<pad>": 0, "<mask>": 1, "A": 10, "B": 11, "C": 12}
    specs = make_specs(["A", "B", "C"], tokens, "delete")
    assert [s.label for s in specs] == ["delete:A", "delete:B", "delete:C"]
    specs = make_specs(["A", "B", "C"], tokens, "delete", pairs=True, anchor="B")
    assert [s.label for s in specs] == ["delete:A", "delete:B", "delete:C", "delete:B+A", "delete:B+C"]
    assert specs[-1].token_ids == (11, 12)
    assert PerturbationSpec.from_dict(specs[-1].to_dict()) == specs[-1]
    # symbols through the Ensembl mapping
    ens = {"<pad>": 0, "ENSG1": 5}
    assert make_specs(["A"], ens, gene_mapping={"A": "ENSG1"})[0].token_ids == (5,)
    with pytest.raises(InputError, match="2 target gene.*not in the model's vocabulary: X, Y"):
        make_specs(["A", "X", "Y"], tokens)
    with pytest.raises(InputError, match="<pad>"):
        make_specs(["<pad>"], tokens)
    with pytest.raises(InputError, match="unknown perturbation 'knockout'"):
        make_specs(["A"], tokens, "knockout")
    with pytest.raises(InputError, match="no target genes"):
        make_specs([], tokens)


def test_expand_counts_skips():
    tokens = {"<pad>": 0, "A": 10, "B": 11, "Z": 99}
    specs = make_specs(["A", "Z"], tokens, "delete")
    cells = [CELL, np.array([11, 12])]
    exp = expand(cells, specs)
    # A is expressed in cell 0 only, Z nowhere
    assert list(exp.cell_index) == [0] and list(exp.spec_index) == [0]
    assert exp.skipped == {"delete:A": 1, "delete:Z": 2}
    over = expand(cells, make_specs(["Z"], tokens, "overexpress"), max_len=8)
    assert len(over) == 2 and over.skipped == {"overexpress:Z": 0}

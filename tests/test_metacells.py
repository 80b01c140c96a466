"""netpert.metacells: representative and kNN metacells, the auto switch, the per-stratum null data."""

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from netpert import InputError
from netpert.data import (
    STRATA_COLUMNS,
    prepare,
    read_strata_table,
    stratify,
    write_strata,
)
from netpert.metacells import mean_overlap, metacells, holds_counts, parse_use_metacells, permute_genes

REGS = ["SPI1", "CEBPB", "STAT1", "IRF8", "TCF7", "GATA3"]


def sparse_counts(n_cells=300, n_genes=60, rate=0.4, n_types=1, seed=0) -> ad.AnnData:
    """Sparse UMI-like counts (~70 % zeros) with a cell-specific depth and two cell states."""
    rng = np.random.default_rng(seed)
    depth = rng.gamma(4.0, 0.25, size=(n_cells, 1))
    state = rng.integers(0, 2, size=n_cells)
    mu = np.full((n_cells, n_genes), rate) * depth
    mu[state == 1, : n_genes // 3] *= 4.0
    X = rng.poisson(mu).astype(np.float32)
    genes = REGS + [f"G{i:03d}" for i in range(n_genes - len(REGS))]
    obs = pd.DataFrame({"celltype": [f"type {i % n_types}" for i in range(n_cells)]}, index=[f"c{i}" for i in range(n_cells)])
    return ad.AnnData(X=sp.csr_matrix(X), obs=obs, var=pd.DataFrame(index=genes))


def totals(a):
    return np.asarray(a.X.sum(axis=1)).ravel()


@pytest.fixture(scope="module")
def counts():
    return sparse_counts()


# ------------------------------------------------------------------------------------------- metacells
def test_representative_overlaps_less_than_knn(counts):
    depth = float(np.mean(totals(counts)))
    rep = metacells(counts, "representative", target_umis=5 * depth, max_cells=40, seed=1)
    k = int(np.median(rep.obs["n_merged"])) - 1
    knn = metacells(counts, "knn", k=k, max_cells=40, seed=1)
    r, n = rep.uns["netpert"]["metacells"], knn.uns["netpert"]["metacells"]
    assert r["n_metacells"] == n["n_metacells"] == 40
    assert r["mean_overlap"] < n["mean_overlap"]
    assert r["mean_overlap"] < 0.25 and r["cells_used"] > n["cells_used"]


def test_normalised_totals_equal_and_target_reached(counts):
    target = 12 * float(np.mean(totals(counts)))
    rep = metacells(counts, target_umis=target, max_k=20, max_cells=50, seed=0)
    info = rep.uns["netpert"]["metacells"]
    assert rep.X.dtype == np.float32 and rep.n_obs == 50
    np.testing.assert_allclose(totals(rep), np.median(rep.obs["umis"]), rtol=1e-5)
    assert info["normalised_total"] == pytest.approx(np.median(rep.obs["umis"]))
    capped = rep.obs["n_merged"] == 21  # the centre + max_k neighbours
    assert (rep.obs.loc[~capped, "umis"] >= target).all()
    assert info["fraction_reaching_target"] == pytest.approx(np.mean(rep.obs["umis"] >= target))
    assert (rep.obs["n_merged"] >= 2).all()  # one cell never holds 12 cells' worth of UMIs
    for key in ("method", "max_cells", "target_umis", "n_cells", "n_metacells", "mean_overlap"):
        assert key in info


def test_metacell_obs_and_provenance(counts):
    rep = metacells(counts, max_cells=30, target_umis=50, seed=3)
    assert {"n_merged", "umis", "celltype"} <= set(rep.obs.columns)
    assert all(name.startswith("meta_") for name in rep.obs_names)
    assert rep.uns["netpert"]["metacells"]["method"] == "representative"


def test_mean_overlap_definition():
    members = [np.array([0, 1, 2]), np.array([2, 3]), np.array([4, 5])]
    # metacell 0: 1 of 3 cells shared; 1: 1 of 2; 2: none
    assert mean_overlap(members, 6) == pytest.approx((1 / 3 + 1 / 2 + 0) / 3)


def test_metacells_deterministic(counts):
    a = metacells(counts, max_cells=30, target_umis=100, seed=5)
    b = metacells(counts, max_cells=30, target_umis=100, seed=5)
    c = metacells(counts, max_cells=30, target_umis=100, seed=6)
    assert list(a.obs_names) == list(b.obs_names)
    np.testing.assert_array_equal(a.X.toarray(), b.X.toarray())
    assert list(a.obs_names) != list(c.obs_names)


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"target_umis": 0}, "target_umis is 0"),
        ({"target_umis": -5}, "target_umis"),
        ({"method": "supercells"}, "strata.metacells.method"),
        ({"max_cells": 0}, "strata.metacells.max_cells"),
        ({"method": "knn", "k": 40}, "too few for knn metacells"),
    ],
)
def test_bad_parameters(kw, message):
    small = sparse_counts(n_cells=20)
    with pytest.raises(InputError, match=message):
        metacells(small, **kw)


# ------------------------------------------------------------------------------------------- counts or not
def test_holds_counts(counts):
    on, why = holds_counts(counts)
    assert on and "integer counts" in why
    from netpert.aracne import simulate_network

    cont, _ = simulate_network(n_cells=50, n_regulators=3, n_targets=10, counts=False)
    assert holds_counts(cont)[0] is False
    # the embedded data's kind: expm1 of log-normalised values (non-integer) -> no
    normed = counts.copy()
    normed.X = sp.csr_matrix(np.expm1(np.log1p(counts.X.toarray() / totals(counts)[:, None] * 1e4)).astype(np.float32))
    off, why = holds_counts(normed)
    assert not off and "non-integer" in why
    dense = ad.AnnData(X=np.random.default_rng(0).poisson(5.0, size=(40, 30)).astype(np.float32))
    off, why = holds_counts(dense)
    assert not off and "dense, not sparse UMI counts" in why


def test_parse_use_metacells():
    # auto (the old default) is refused with the reason: the cells themselves measured better
    with pytest.raises(InputError, match="auto is gone.*copula.*use false"):
        parse_use_metacells("AUTO")
    assert parse_use_metacells(None) is False
    assert parse_use_metacells(True) is True and parse_use_metacells("true") is True
    assert parse_use_metacells(False) is False and parse_use_metacells("False") is False
    with pytest.raises(InputError, match="strata.metacells.enabled"):
        parse_use_metacells("sometimes")


# ------------------------------------------------------------------------------------------- null data
def test_permute_genes_keeps_marginals_and_breaks_dependence():
    rng = np.random.default_rng(0)
    base = rng.poisson(3.0, size=400)
    X = np.stack([base, base + rng.poisson(0.5, size=400), rng.poisson(1.0, size=400)], axis=1).astype(np.float32)
    X[rng.random(400) < 0.5, :2] = 0  # shared dropout: A and B stay correlated, and mostly zero
    a = ad.AnnData(X=sp.csr_matrix(X), var=pd.DataFrame(index=["A", "B", "C"]))
    p = permute_genes(a, 1, depth_bins=1)
    P = p.X.toarray()
    for j in range(3):
        np.testing.assert_array_equal(np.sort(P[:, j]), np.sort(X[:, j]))
    assert np.corrcoef(X[:, 0], X[:, 1])[0, 1] > 0.5
    assert abs(np.corrcoef(P[:, 0], P[:, 1])[0, 1]) < 0.15
    np.testing.assert_array_equal(P, permute_genes(a, 1, depth_bins=1).X.toarray())
    assert not np.array_equal(P, permute_genes(a, 2, depth_bins=1).X.toarray())
    # dense input too
    dense = permute_genes(ad.AnnData(X=X), np.random.default_rng(1))
    np.testing.assert_array_equal(np.sort(dense.X.toarray(), axis=0), np.sort(X, axis=0))


def test_permute_genes_within_depth_bins_keeps_each_genes_relation_to_depth():
    rng = np.random.default_rng(3)
    size = np.exp(rng.normal(0, 0.7, 600))
    X = rng.poisson(size[:, None] * rng.uniform(0.5, 3, 40)[None, :]).astype(np.float32)  # genes tied by depth only
    a = ad.AnnData(X=sp.csr_matrix(X))
    totals = X.sum(axis=1)
    P = permute_genes(a, 1).X.toarray()  # default: within 10 depth bins
    F = permute_genes(a, 1, depth_bins=1).X.toarray()
    for j in range(40):
        np.testing.assert_array_equal(np.sort(P[:, j]), np.sort(X[:, j]))
    r = lambda M: np.mean([np.corrcoef(M[:, j], totals)[0, 1] for j in range(40)])
    assert r(P) > 0.7 * r(X) and abs(r(F)) < 0.1


# ------------------------------------------------------------------------------------------- stratify
def test_stratify_metacells_with_null(tmp_path):
    a = sparse_counts(n_cells=240, n_types=2)
    cells = prepare(a, "celltype", min_cells_per_gene=1)
    # the default leaves the cells as they are, counts or not
    assert set(stratify(cells, min_cells=30, seed=4)[1]["aggregation"]) == {"none"}
    kept, table = stratify(cells, min_cells=30, use_metacells=True, metacell_max_cells=30, target_umis=60, seed=4)
    assert list(table.columns) == STRATA_COLUMNS
    assert set(table["aggregation"]) == {"representative"}
    assert (table["n_metacells"] == 30).all() and table["mean_overlap"].between(0, 1).all()
    for s in kept:
        assert s.adata.n_obs == 30 and s.null.n_obs == 30
        assert s.null.uns["netpert"]["metacells"]["method"] == "representative"
        np.testing.assert_allclose(totals(s.null), totals(s.null)[0], rtol=1e-5)
        assert not np.array_equal(s.adata.X.toarray(), s.null.X.toarray())
    np.testing.assert_allclose(table["median_umis"], [np.median(totals(s.adata)) for s in kept], rtol=1e-5)
    write_strata(kept, table, tmp_path / "strata")
    names = sorted(p.name for p in (tmp_path / "strata").iterdir())
    assert names == sorted([f"{s.slug}.h5ad" for s in kept] + [f"{s.slug}.null.h5ad" for s in kept] + ["strata.tsv"])
    back = read_strata_table(tmp_path / "strata" / "strata.tsv")
    assert list(back.columns) == STRATA_COLUMNS and back["mean_overlap"].dtype == float
    from netpert.report.aggregate import read_strata

    assert set(read_strata(tmp_path / "strata")["status"]) == {"kept"}


def test_stratify_not_aggregated_and_order_independent(tmp_path):
    a = sparse_counts(n_cells=240, n_types=2)
    cells = prepare(a, "celltype", min_cells_per_gene=1)
    kept, table = stratify(cells, min_cells=30, max_cells=50, use_metacells="false", seed=2)
    assert set(table["aggregation"]) == {"none"} and (table["n_metacells"] == 0).all()
    assert table["mean_overlap"].isna().all()
    s = kept[0]
    assert s.null.n_obs == s.adata.n_obs == 50 and list(s.null.obs_names) == list(s.adata.obs_names)
    np.testing.assert_array_equal(np.sort(s.null.X.toarray(), axis=0), np.sort(s.adata.X.toarray(), axis=0))
    # a stratum's output does not depend on the other strata
    only = cells[cells.obs["cell_type"] == s.name].copy()
    kept1, _ = stratify(only, min_cells=30, max_cells=50, use_metacells=False, seed=2)
    assert list(kept1[0].adata.obs_names) == list(s.adata.obs_names)
    np.testing.assert_array_equal(kept1[0].null.X.toarray(), s.null.X.toarray())
    write_strata(kept, table, tmp_path / "strata")
    back = read_strata_table(tmp_path / "strata" / "strata.tsv")
    assert back["mean_overlap"].isna().all()


def test_stratify_bad_metacell_config_writes_nothing(tmp_path):
    cells = prepare(sparse_counts(n_cells=120), "celltype", min_cells_per_gene=1)
    with pytest.raises(InputError, match="target_umis"):
        stratify(cells, min_cells=30, use_metacells=True, target_umis=0)
    with pytest.raises(InputError, match="too few for knn metacells"):
        stratify(cells, min_cells=10, max_cells=10, use_metacells=True, metacell_method="knn", metacell_k=12)
    assert not (tmp_path / "strata").exists()


def test_neighbourhood_is_the_shortest_prefix_reaching_the_target():
    from netpert.metacells import _representative_sets

    nbr = np.array([[0, 1, 2, 3], [1, 0, 2, 3], [2, 3, 1, 0], [3, 2, 1, 0]])
    cell_totals = np.array([4.0, 4.0, 1.0, 1.0])
    centres, members = _representative_sets(nbr, cell_totals, 5.0, 2, np.random.default_rng(0))
    sizes = {int(c): len(m) for c, m in zip(centres, members)}
    # cell 0: 4 < 5, 4+4 >= 5 -> 2 cells; cell 2: 1, 2, 6 -> 3 cells; cell 3 likewise; cell 1: 2 cells
    expected = {0: 2, 1: 2, 2: 3, 3: 3}
    assert all(sizes[c] == expected[c] for c in sizes)
    # two picks: the second shares nothing with the first where that is possible ({0,1} vs {2,3,1} shares 1)
    assert len(centres) == 2 and mean_overlap(members, 4) <= 0.5

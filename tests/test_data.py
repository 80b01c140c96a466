"""netpert.data and netpert.regulators: loading, validation (every bad input), strata, metacells."""

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from netpert import InputError
from netpert.data import (
    load_input,
    prepare,
    prepare_data,
    read_strata_table,
    slug_map,
    slugify,
    stratify,
    write_strata,
)
from netpert.regulators import load_regulators, regulators_in

REGS = ["SPI1", "CEBPB", "STAT1", "IRF8", "TCF7", "GATA3"]


def make_counts(n_cells=120, n_genes=40, n_types=3, seed=0, genes=None) -> ad.AnnData:
    rng = np.random.default_rng(seed)
    X = rng.poisson(2.0, size=(n_cells, n_genes)).astype(np.float32)
    genes = genes or (REGS + [f"G{i:03d}" for i in range(n_genes - len(REGS))])
    obs = pd.DataFrame(
        {"celltype": [f"type {i % n_types}+" for i in range(n_cells)], "tissue": ["lung", "lung", "gut", "gut"] * (n_cells // 4) + ["lung"] * (n_cells % 4)},
        index=[f"c{i}" for i in range(n_cells)],
    )
    return ad.AnnData(X=sp.csr_matrix(X), obs=obs, var=pd.DataFrame(index=genes))


@pytest.fixture
def h5ad(tmp_path):
    def write(adata, name="in.h5ad"):
        path = tmp_path / name
        adata.write_h5ad(path)
        return str(path)

    return write


def run_prepare(tmp_path, source, **kw):
    out = tmp_path / "out" / "cells.h5ad"
    kw.setdefault("cell_type_key", "celltype")
    try:
        return prepare_data(source, out, **kw)
    finally:
        pass


def assert_nothing_written(tmp_path):
    out = tmp_path / "out"
    assert not out.exists() or not any(out.iterdir()), f"partial output left: {list(out.iterdir())}"


# ------------------------------------------------------------------------------------------- good path
def test_embedded_dataset_is_counts_like_and_labelled():
    a = load_input("embedded:pbmc68k_reduced")
    assert a.shape == (700, 765)
    assert "bulk_labels" in a.obs
    assert a.X.min() >= 0
    assert a.uns["netpert"]["raw_counts"] is False
    assert "not raw counts" in a.uns["netpert"]["values"]
    # expm1 of raw.X: the log1p of the values gives scanpy's raw.X back
    import scanpy as sc

    raw = sc.datasets.pbmc68k_reduced().raw.X
    np.testing.assert_allclose(np.log1p(a.X[:5].toarray()), raw[:5].toarray(), rtol=1e-5, atol=1e-5)


def test_prepare_writes_contract(tmp_path, h5ad):
    src = h5ad(make_counts())
    out = run_prepare(tmp_path, src, tissue_key="tissue", min_cells_per_gene=1)
    saved = ad.read_h5ad(tmp_path / "out" / "cells.h5ad")
    assert saved.shape == out.shape == (120, 40)
    assert sp.issparse(saved.X) and saved.X.dtype == np.float32
    assert {"cell_type", "tissue", "stratum"} <= set(saved.obs.columns)
    assert saved.uns["netpert"]["raw_counts"] is True
    assert saved.obs["stratum"].iloc[0] == slugify("gut | type 0+") or saved.obs["stratum"].iloc[0] == slugify("lung | type 0+")


def test_gene_filter_min_cells(tmp_path, h5ad):
    a = make_counts()
    X = a.X.toarray()
    X[:, -1] = 0
    X[:2, -2] = 0
    X[2:, -2] = 0
    X[0, -2] = 5  # expressed in one cell
    a.X = sp.csr_matrix(X)
    out = run_prepare(tmp_path, h5ad(a), min_cells_per_gene=2)
    assert out.n_vars == 38


def test_counts_layer_and_gene_symbols(tmp_path, h5ad):
    a = make_counts()
    a.layers["counts"] = a.X.copy()
    a.X = sp.csr_matrix(np.log1p(a.X.toarray()))
    a.var["symbol"] = a.var_names
    a.var_names = [f"ENSG{i:05d}" for i in range(a.n_vars)]
    out = run_prepare(tmp_path, h5ad(a), counts_layer="counts", gene_symbols="symbol")
    assert "SPI1" in out.var_names
    assert float(out.X.max()) > 5


def test_regulators_packaged_lists():
    tfs = load_regulators(["tfs"])
    assert len(tfs) == 1784 and "SPI1" in tfs  # 1785 lines, FOXO6 listed twice
    both = load_regulators(["tfs", "cotfs"])
    assert len(both) >= len(tfs)
    assert len(load_regulators(["tfs"], species="mouse")) == 1046
    assert regulators_in(["X1", "SPI1", "GATA3"], ["tfs"]) == ["SPI1", "GATA3"]


def test_regulators_from_file(tmp_path):
    f = tmp_path / "mine.txt"
    f.write_text("# my regulators\nFOO\n\nBAR\nFOO\n")
    assert load_regulators([str(f)]) == ["FOO", "BAR"]


def test_regulator_list_errors(tmp_path):
    with pytest.raises(InputError, match="neither a packaged list"):
        load_regulators(["nope"])
    with pytest.raises(InputError, match="unknown species"):
        load_regulators(["tfs"], species="fish")
    with pytest.raises(InputError, match="none of the .* regulators"):
        regulators_in(["G1", "G2"], ["tfs"])


# ------------------------------------------------------------------------------------------- bad input
def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        run_prepare(tmp_path, str(tmp_path / "nope.h5ad"))
    assert_nothing_written(tmp_path)


def test_corrupt_file(tmp_path):
    bad = tmp_path / "bad.h5ad"
    bad.write_bytes(b"this is not an hdf5 file" * 10)
    with pytest.raises(InputError, match="could not be read as h5ad"):
        run_prepare(tmp_path, str(bad))
    assert_nothing_written(tmp_path)


def test_obs_key_absent_lists_keys(tmp_path, h5ad):
    with pytest.raises(InputError, match=r"'cell_ontology'.*obs columns present: celltype, tissue"):
        run_prepare(tmp_path, h5ad(make_counts()), cell_type_key="cell_ontology")
    assert_nothing_written(tmp_path)


def test_tissue_key_absent(tmp_path, h5ad):
    with pytest.raises(InputError, match="data.tissue_key"):
        run_prepare(tmp_path, h5ad(make_counts()), tissue_key="organ")
    assert_nothing_written(tmp_path)


@pytest.mark.parametrize(
    "value, message",
    [(-1.0, "negative values"), (np.nan, "NaN values"), (np.inf, "infinite values")],
)
def test_bad_values(tmp_path, h5ad, value, message):
    a = make_counts()
    X = a.X.toarray()
    X[3, 4] = value
    a.X = X
    with pytest.raises(InputError, match=message):
        run_prepare(tmp_path, h5ad(a))
    assert_nothing_written(tmp_path)


def test_log_transformed_is_not_counts(tmp_path, h5ad):
    a = make_counts()
    a.X = sp.csr_matrix(np.log1p(a.X.toarray()))
    with pytest.raises(InputError, match="looks log-transformed"):
        run_prepare(tmp_path, h5ad(a))
    assert_nothing_written(tmp_path)


def test_duplicate_genes(tmp_path, h5ad):
    genes = REGS + [f"G{i:03d}" for i in range(34)]
    genes[-1] = genes[-2]
    with pytest.raises(InputError, match="duplicate gene names"):
        run_prepare(tmp_path, h5ad(make_counts(genes=genes)))
    assert_nothing_written(tmp_path)


def test_too_few_cells(tmp_path, h5ad):
    with pytest.raises(InputError, match="fewer than the minimum of 50"):
        run_prepare(tmp_path, h5ad(make_counts(n_cells=30)), min_cells=50)
    assert_nothing_written(tmp_path)


def test_no_regulator_among_genes(tmp_path, h5ad):
    genes = [f"G{i:03d}" for i in range(40)]
    with pytest.raises(InputError, match=r"none of the .* regulators of the list\(s\) \[tfs\]"):
        run_prepare(tmp_path, h5ad(make_counts(genes=genes)), regulator_lists=["tfs"])
    assert_nothing_written(tmp_path)


def test_missing_counts_layer(tmp_path, h5ad):
    with pytest.raises(InputError, match="layer 'counts'"):
        run_prepare(tmp_path, h5ad(make_counts()), counts_layer="counts")
    assert_nothing_written(tmp_path)


def test_unknown_embedded():
    with pytest.raises(InputError, match="unknown embedded data set"):
        load_input("embedded:pbmc3k")


# ------------------------------------------------------------------------------------------- strata
def test_slugs_are_safe_and_unique():
    assert slugify("CD4+/CD25 T Reg") == "CD4pos_CD25_T_Reg"
    assert slugify("CD4+/CD45RA+/CD25- Naive T") == "CD4pos_CD45RApos_CD25neg_Naive_T"
    assert slugify("B cell") == "B_cell"
    m = slug_map(["T cell", "T-cell", "t cell", "T/cell"])
    assert len(set(s.lower() for s in m.values())) == 4
    assert all(s.replace("_", "").isalnum() for s in m.values())


def test_stratify_keeps_and_skips(tmp_path, h5ad):
    a = make_counts(n_cells=150, n_types=3)
    a.obs.loc[a.obs_names[:20], "celltype"] = "rare one"
    cells = prepare(a, "celltype", min_cells_per_gene=1)
    kept, table = stratify(cells, min_cells=30)
    assert set(table["status"]) == {"kept", "skipped"}
    rare = table.set_index("stratum").loc["rare one"]
    assert rare["status"] == "skipped" and "20 cells < strata.min_cells=30" in rare["reason"]
    assert len(kept) == 3 and all(s.adata.n_obs >= 30 for s in kept)
    write_strata(kept, table, tmp_path / "strata")
    back = read_strata_table(tmp_path / "strata" / "strata.tsv")
    assert list(back.columns) == [
        "stratum", "slug", "cell_type", "tissue", "n_cells", "n_output", "status", "reason",
        "aggregation", "n_metacells", "mean_overlap", "median_umis",
    ]
    assert set(back["aggregation"]) == {"none"}  # Poisson(2) counts are dense: auto keeps cells
    for s in kept:
        got = ad.read_h5ad(tmp_path / "strata" / f"{s.slug}.h5ad")
        assert (got.obs["stratum"] == s.slug).all()
        null = ad.read_h5ad(tmp_path / "strata" / f"{s.slug}.null.h5ad")
        assert null.shape == got.shape and null.uns["netpert"]["is_null"]


def test_stratify_by_tissue_and_subsample():
    a = make_counts(n_cells=240, n_types=2)
    cells = prepare(a, "celltype", tissue_key="tissue", min_cells_per_gene=1)
    kept, table = stratify(cells, min_cells=30, max_cells=40, seed=3)
    assert len(kept) == 4  # 2 tissues x 2 types, 60 cells each
    assert all(s.adata.n_obs == 40 for s in kept)
    assert all(" | " in name for name in table["stratum"])
    kept2, _ = stratify(cells, min_cells=30, max_cells=40, seed=3)
    assert [list(s.adata.obs_names) for s in kept] == [list(s.adata.obs_names) for s in kept2]


def test_no_stratum_large_enough():
    cells = prepare(make_counts(n_cells=60, n_types=3), "celltype", min_cells_per_gene=1)
    with pytest.raises(InputError, match="no stratum has at least 30 cells.*sizes seen"):
        stratify(cells, min_cells=30)


def test_metacells_sum_neighbours():
    cells = prepare(make_counts(n_cells=90, n_types=1), "celltype", min_cells_per_gene=1)
    kept, table = stratify(
        cells, min_cells=30, use_metacells=True, metacell_method="knn", metacell_k=5, metacell_max_cells=25
    )
    meta = kept[0].adata
    assert meta.n_obs == 25 and (meta.obs["n_merged"] == 6).all()
    # each metacell is its seed cell plus 5 others: its summed total (obs umis) is the sum of 6 cells' totals
    totals = np.asarray(cells.X.sum(axis=1)).ravel()
    seed_names = [n.removeprefix("meta_") for n in meta.obs_names]
    seed_totals = totals[[cells.obs_names.get_loc(n) for n in seed_names]]
    meta_totals = meta.obs["umis"].to_numpy()
    assert np.all(meta_totals > seed_totals)
    assert np.all(meta_totals <= np.sort(totals)[-6:].sum() + 1e-3)
    # then scaled for library size: every metacell holds the median summed total
    np.testing.assert_allclose(np.asarray(meta.X.sum(axis=1)).ravel(), np.median(meta_totals), rtol=1e-5)
    assert "25 metacells of k=5" in table.loc[0, "reason"]
    assert table.loc[0, "aggregation"] == "knn" and table.loc[0, "n_metacells"] == 25

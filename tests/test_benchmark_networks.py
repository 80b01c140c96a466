"""The network benchmark: scoring, baselines, simulators (project + SERGIO) and a smoke run of the script."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from scipy.stats import spearmanr

from netpert.aracne import benchmarking as B
from netpert.aracne.simulate import simulate_network
from script_utils import load_benchmark


def _script():
    return load_benchmark("benchmark_networks")


# --------------------------------------------------------------------------------------------- scoring
def test_scoring_unordered_either_direction():
    truth = pd.DataFrame({"regulator": ["R1", "R1", "R2", "R1"], "target": ["G1", "R2", "G2", "GX"]})
    genes = ["R1", "R2", "G1", "G2", "G3"]  # GX is not in the data: its pair is not testable
    net = pd.DataFrame({"regulator": ["R1", "R2", "R2", "G1", "R1"], "target": ["G1", "R1", "G3", "R1", "R2"]})
    # pairs: {R1,G1} (also predicted as G1->R1), {R1,R2} (predicted both ways), {R2,G3} (false)
    assert B.network_pairs(net) == {("G1", "R1"), ("R1", "R2"), ("G3", "R2")}
    tt = B.testable_truth(truth, genes, ["R1", "R2"])
    assert tt == {("G1", "R1"), ("R1", "R2"), ("G2", "R2")}
    sc = B.score_network(net, truth, genes, ["R1", "R2"])
    assert (sc["pairs"], sc["correct"], sc["testable"]) == (3, 2, 3)
    assert sc["precision"] == pytest.approx(2 / 3) and sc["recall"] == pytest.approx(2 / 3) and sc["f1"] == pytest.approx(2 / 3)
    # candidates: 2 regulators x 4 other genes, the R1-R2 pair once = 7
    assert B.n_candidates(5, 2) == 7 and sc["density"] == pytest.approx(3 / 7)
    # a reversed truth edge still counts; a truth pair between two non-regulators is not testable
    truth2 = pd.DataFrame({"regulator": ["G1", "G2"], "target": ["R1", "G3"]})
    assert B.testable_truth(truth2, genes, ["R1"]) == {("G1", "R1")}
    empty = B.score_network(net.iloc[:0], truth, genes, ["R1", "R2"])
    assert empty["pairs"] == 0 and np.isnan(empty["precision"]) and empty["recall"] == 0 and empty["f1"] == 0


def test_regulon_count():
    net = pd.DataFrame({"regulator": ["A"] * 10 + ["B"] * 9, "target": [f"G{i}" for i in range(19)]})
    assert B.regulons(net) == 1 and B.regulons(net, min_targets=9) == 2 and B.regulons(net.iloc[:0]) == 0


# --------------------------------------------------------------------------------------------- baselines
def test_spearman_baseline_matches_scipy_and_ranks_top_pairs():
    rng = np.random.default_rng(0)
    n = 200
    r1, r2 = rng.standard_normal(n), rng.standard_normal(n)
    cols = {"R1": r1, "R2": 0.9 * r1 + 0.3 * rng.standard_normal(n), "G1": np.exp(r2), "G2": -r1 + 0.2 * rng.standard_normal(n),
            "G3": rng.standard_normal(n), "G4": np.zeros(n), "G5": rng.poisson(1.0, n).astype(float)}
    cols["R3"] = r2
    df = pd.DataFrame(cols)
    rho, regs, genes = B.spearman_matrix(df, ["R1", "R2", "R3", "NOPE"])
    assert regs == ["R1", "R2", "R3"]
    with np.errstate(invalid="ignore", divide="ignore"):  # G4 is constant: scipy gives NaN there
        ref = spearmanr(df.to_numpy()).statistic
    for i, r in enumerate(regs):
        for j, g in enumerate(genes):
            if g == "G4":
                assert rho[i, j] == 0.0  # constant gene
            else:
                assert rho[i, j] == pytest.approx(ref[genes.index(r), j], abs=1e-12)
    top = B.spearman_top(df, ["R1", "R2", "R3"], 3, genes=B.varying_genes(df))
    assert set(B.network_pairs(top)) == {("R1", "R2"), ("G2", "R1"), ("G1", "R3")}
    allpairs = B.spearman_top(df, ["R1", "R2", "R3"], 10_000, genes=B.varying_genes(df))
    # every regulator x gene pair once: 3 regulators x 6 varying genes - 3 regulator pairs counted twice
    assert len(allpairs) == B.n_candidates(7, 3) == len(B.network_pairs(allpairs))
    assert "G4" not in set(allpairs["target"])
    truth = pd.DataFrame({"regulator": ["R1", "R3", "R1"], "target": ["G2", "G1", "R2"]})
    assert B.random_precision(truth, B.varying_genes(df), ["R1", "R2", "R3"]) == pytest.approx(3 / B.n_candidates(7, 3))


# --------------------------------------------------------------------------------------------- project simulator
def test_simulator_umi_counts():
    # the benchmark's UMI settings (~0.75 expected UMIs per gene and cell), at 160 genes
    kw = dict(n_cells=400, n_regulators=10, n_targets=120, n_noise=30, seed=3, n_cell_types=4, umis=120.0, gene_sd=1.5,
              dropout_midpoint=1.0)
    a, truth = simulate_network(**kw)
    b, truth_b = simulate_network(**kw)
    st = B.count_stats(a)
    assert st["integer"] and sp.issparse(a.X) and a.X.dtype == np.float32
    assert st["zeros"] >= 0.8, st
    assert 40 <= st["median_umis"] <= 150
    totals = np.asarray(a.X.sum(axis=1)).ravel()
    assert np.std(np.log1p(totals)) > 0.3  # lognormal library sizes
    flat, _ = simulate_network(**dict(kw, size_sd=0.0))
    assert np.std(np.log1p(np.asarray(flat.X.sum(axis=1)).ravel())) < np.std(np.log1p(totals))
    assert list(a.obs["cell_type"].cat.categories) == ["type0", "type1", "type2", "type3"]
    assert (a.obs["cell_type"].value_counts() == 100).all()
    assert (a.X != b.X).nnz == 0 and truth.equals(truth_b)  # deterministic
    c, _ = simulate_network(**dict(kw, seed=4))
    assert (a.X != c.X).nnz > 0
    # the options draw from their own stream: the planted network is the one of the same seed
    plain, truth_plain = simulate_network(400, 10, 120, seed=3, n_noise=30)
    assert truth.equals(truth_plain) and list(a.var_names) == list(plain.var_names)
    assert "cell_type" not in plain.obs and "umis" not in plain.uns["netpert"]["simulated"]
    # dropout adds zeros
    nodrop, _ = simulate_network(**dict(kw, dropout_midpoint=None))
    assert B.count_stats(nodrop)["zeros"] < st["zeros"]


# --------------------------------------------------------------------------------------------- SERGIO
def test_hierarchical_grn():
    g = B.hierarchical_grn(12, 50, 3, seed=1)
    regs = {f"R{i:03d}" for i in range(12)}
    assert set(g["regulator"]) <= regs
    assert set(g.loc[g["type"] == "reg-reg", "target"]) == regs - {"R000", "R001", "R002"}  # all non-masters regulated
    # regulator -> regulator edges go from earlier to later regulators: acyclic
    rr = g[g["type"] == "reg-reg"]
    assert (rr["regulator"] < rr["target"]).all()
    assert g.loc[g["type"] == "reg-target", "target"].nunique() == 50
    assert not g.duplicated(["regulator", "target"]).any()


def test_sergio_step_is_sergio_and_numba_equals_python():
    pytest.importorskip("SERGIO", reason="sergio-scsim (the bench extra) is not installed")
    from SERGIO import sergio

    truth = B.hierarchical_grn(8, 30, 3, seed=0)
    grn = B.sergio_grn(truth, 3, seed=1)
    model = B.SergioModel.from_grn(grn)
    state = np.random.get_state()
    np.random.seed(5)
    sim = sergio(grn)
    sim.simulate(nCells=2, noise_s=1, safety_iter=5, scale_iter=2, dt=0.01)
    np.random.set_state(state)
    theirs = np.array([[grn.attr_["genes"][g].sim_conc_[ct] for ct in range(3)] for g in model.genes])
    rs = np.random.RandomState(5)
    X, types, ours = np.maximum(model.ss, 0), np.arange(3), []
    ours.append(X)
    for _ in range(theirs.shape[2] - 1):
        P = rs.normal(size=X.shape)
        D = rs.normal(size=X.shape)
        X = model.step(X, types, P, D)
        ours.append(X)
    # SERGIO's own trajectory: numpy's SIMD pow/exp can differ in the last bit between CPUs and numpy
    # builds (1 ulp at 3 of 1,140 values on an AMD EPYC with AVX-512), so the bar is a few ulps, not equality
    np.testing.assert_allclose(np.stack(ours, axis=2), theirs, rtol=1e-14, atol=0)
    a, ta = model.chains(4, steps=25, seed=2, backend="python")
    b, tb = model.chains(4, steps=25, seed=2, backend="numba")
    np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    assert (ta == tb).all() and a.shape == (len(model.genes), 12)


def test_simulate_sergio_tiny():
    pytest.importorskip("SERGIO", reason="sergio-scsim (the bench extra) is not installed")
    kw = dict(n_cell_types=2, n_cells=60, n_regulators=6, n_targets=40, n_master=2, seed=0, steps=80)
    a, truth = B.simulate_sergio(**kw)
    b, _ = B.simulate_sergio(**kw)
    st = B.count_stats(a)
    assert st["integer"] and a.X.dtype == np.int32 and (a.X != b.X).nnz == 0
    assert st["cells"] == 120 and st["genes"] == 46 and st["zeros"] > 0.5
    assert list(a.var_names[:6]) == [f"R{i:03d}" for i in range(6)]
    assert set(a.obs["cell_type"]) == {"type0", "type1"}
    assert set(truth["regulator"]) <= set(a.var_names[:6]) and len(truth) >= 40
    totals = np.asarray(a.X.sum(axis=1)).ravel()
    assert np.std(np.log1p(totals)) > 0.2  # SERGIO's lognormal library size


# --------------------------------------------------------------------------------------------- nulls, io
def _toy_counts(seed=0):
    rng = np.random.default_rng(seed)
    X = rng.poisson(rng.gamma(1.0, 1.0, (60, 25))).astype(np.int32)
    obs = pd.DataFrame({"cell_type": pd.Categorical(["a"] * 30 + ["b"] * 30)}, index=[f"c{i}" for i in range(60)])
    return ad.AnnData(X=sp.csr_matrix(X), obs=obs, var=pd.DataFrame(index=[f"G{i}" for i in range(25)]))


def test_nulls():
    data = _toy_counts()
    perm = B.permuted_within(data, seed=1)
    X, P = data.X.toarray(), perm.X.toarray()
    for grp in ("a", "b"):
        m = (data.obs["cell_type"] == grp).values
        np.testing.assert_array_equal(np.sort(X[m], axis=0), np.sort(P[m], axis=0))  # marginals within the cell type
    assert not np.array_equal(X, P)
    lib = B.library_null(data, seed=1).X.toarray()
    assert lib.dtype == np.int32 and lib.shape == X.shape
    assert np.corrcoef(lib.sum(axis=1), X.sum(axis=1))[0, 1] > 0.5  # follows each cell's library size


def test_cache_and_h5ad(tmp_path):
    data = _toy_counts()
    truth = pd.DataFrame({"regulator": ["G0"], "target": ["G1"], "type": ["x"]})
    calls = []

    def make():
        calls.append(1)
        return data, truth

    a, t, hit = B.cached_dataset(tmp_path, "toy", {"n": 1}, make)
    a2, t2, hit2 = B.cached_dataset(tmp_path, "toy", {"n": 1}, make)
    assert (hit, hit2, len(calls)) == (False, True, 1)
    assert (a2.X != data.X).nnz == 0 and list(a2.var_names) == list(data.var_names) and t2.equals(truth)
    assert list(a2.obs["cell_type"]) == list(data.obs["cell_type"])
    h5, regs = B.write_h5ad(data, tmp_path / "sim" / "sergio.h5ad", ["G0", "G3"])
    back = ad.read_h5ad(h5)
    assert sp.issparse(back.X) and back.X.dtype == np.int32 and list(back.obs["cell_type"]) == list(data.obs["cell_type"])
    assert regs == tmp_path / "sim" / "regulators.txt" and regs.read_text() == "G0\nG3\n"


# --------------------------------------------------------------------------------------------- the script
def test_script_smoke(tmp_path, capsys):
    pytest.importorskip("SERGIO", reason="sergio-scsim (the bench extra) is not installed")
    mod = _script()
    out = tmp_path / "bench.csv"
    rc = mod.main([
        "--quick", "--sections", "sergio,simulator,nulls", "--variants", "default,apmi", "--cells", "80",
        "--cell-types", "1", "--regulators", "6", "--targets", "40", "--steps", "60", "--bootstraps", "2",
        "--cache-dir", str(tmp_path / "cache"), "--out", str(out), "--write-h5ad", str(tmp_path / "h5" / "sergio.h5ad"),
    ])
    assert rc == 0
    text = capsys.readouterr().out
    assert "CPU:" in text and "spearman_precision" in text and "null permuted" in text and "null library-size" in text
    df = pd.read_csv(out)
    assert set(df["section"]) >= {"data", "sergio", "simulator", "nulls", "summary", "run"}
    sec = df[df["section"] == "sergio"]
    assert set(sec["variant"]) == {"default", "apmi"} and set(sec["stratum"]) == {"type0"}
    assert {"pairs", "correct", "precision", "recall", "f1", "seconds", "spearman_precision", "random_precision"} <= set(sec["metric"])
    zeros = df[(df["section"] == "data") & (df["metric"] == "zeros")]["value"]
    assert len(zeros) == 2 and (zeros > 0.5).all()
    assert (tmp_path / "h5" / "sergio.h5ad").is_file() and (tmp_path / "h5" / "regulators.txt").read_text().startswith("R000\n")
    assert list((tmp_path / "cache").glob("sergio-*.npz"))  # cached

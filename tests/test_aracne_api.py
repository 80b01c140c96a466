"""netpert.aracne: public API, input errors, determinism, resampling, regulons, I/O, workflow scripts, benchmark."""

import json
import logging
import runpy
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import anndata as ad
import numba
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import netpert.aracne as A
from netpert import InputError
from netpert.aracne.prepare import resample_indices, subsample_size

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def planted():
    data, truth = A.simulate_network(n_cells=200, n_regulators=12, n_targets=120, seed=4)
    regs = [g for g in data.var_names if g.startswith("TF")]
    return data, truth, regs


@pytest.fixture(scope="module")
def null_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("null_cache")


@pytest.fixture(scope="module")
def planted_consensus(planted, null_cache):
    data, truth, regs = planted
    net = A.aracne(data, regs, bootstraps=8, pvalue=1e-6, seed=1, cache_dir=null_cache, progress=False)
    return net


# ----------------------------------------------------------------------------------- input errors


def test_too_few_samples():
    df = pd.DataFrame(np.random.default_rng(0).normal(size=(9, 5)), columns=list("ABCDE"))
    with pytest.raises(InputError, match="at least 10 samples"):
        A.mutual_information(df, ["A"])
    with pytest.raises(InputError, match="at least 10"):
        A.threshold_for_data(df)


def test_no_regulator_in_data_names_them():
    df = pd.DataFrame(np.random.default_rng(0).normal(size=(20, 5)), columns=list("ABCDE"))
    with pytest.raises(InputError, match=r"none of the 2 requested regulators \(TP53, MYC\)"):
        A.mutual_information(df, ["TP53", "MYC"])
    with pytest.raises(InputError, match="no regulator given"):
        A.mutual_information(df, [])


def test_nan_in_data():
    df = pd.DataFrame(np.random.default_rng(0).normal(size=(20, 5)), columns=list("ABCDE"))
    df.iloc[3, 2] = np.nan
    with pytest.raises(InputError, match="NaN.*1 genes.*C"):
        A.mutual_information(df, ["A"])
    X = sp.csr_matrix(np.abs(df.fillna(0).to_numpy()))
    X.data[0] = np.nan
    with pytest.raises(InputError, match="NaN"):
        A.mutual_information(ad.AnnData(X=X, var=pd.DataFrame(index=list("ABCDE"))), ["A"])


def test_constant_genes_dropped_with_warning(caplog):
    rng = np.random.default_rng(0)
    df = pd.DataFrame(rng.normal(size=(20, 5)), columns=list("ABCDE"))
    df["C"] = 1.0
    df["E"] = 0.0
    with caplog.at_level(logging.WARNING, logger="netpert.aracne"):
        mi = A.mutual_information(df, ["A", "C"], progress=False)
    assert "dropping 2 constant gene(s) of 5" in caplog.text and "C" in caplog.text
    assert set(mi["target"].astype(str)) == {"B", "D"} and set(mi["regulator"].astype(str)) == {"A"}
    df["A"] = 2.0
    with pytest.raises(InputError, match="none of the 2 requested regulators"):
        A.mutual_information(df, ["A", "C"])


def test_other_bad_inputs():
    df = pd.DataFrame(np.random.default_rng(0).normal(size=(20, 3)), columns=["A", "A", "B"])
    with pytest.raises(InputError, match="not unique"):
        A.mutual_information(df, ["A"])
    with pytest.raises(InputError, match="AnnData .* or a pandas DataFrame"):
        A.mutual_information(np.zeros((20, 3)), ["A"])
    ok = pd.DataFrame(np.random.default_rng(0).normal(size=(20, 3)), columns=["A", "B", "C"])
    with pytest.raises(InputError, match="backend"):
        A.mutual_information(ok, ["A"], backend="cuda")
    with pytest.raises(InputError, match="resampling"):
        A.network(ok, ["A"], threshold=0.1, resampling="jackknife", progress=False)
    with pytest.raises(InputError, match="threshold method"):
        A.compute_threshold(20, method="exact")
    with pytest.raises(InputError, match=r"p-value must be in \(0, 1\)"):
        A.compute_threshold(20, pvalue=0.0)


# ------------------------------------------------------------------------------------ the API


def test_mutual_information_long_format_anndata_equals_dataframe(planted):
    data, truth, regs = planted
    mi = A.mutual_information(data[:, :40], regs[:3], progress=False)
    assert list(mi.columns) == ["regulator", "target", "mi"]
    assert len(mi) == 3 * 39 and not (mi["regulator"].astype(str) == mi["target"].astype(str)).any()
    df = pd.DataFrame(data.X[:, :40], index=data.obs_names, columns=data.var_names[:40])
    pd.testing.assert_frame_equal(A.mutual_information(df, regs[:3], progress=False), mi)
    sparse = ad.AnnData(X=sp.csr_matrix(data.X[:, :40]), var=pd.DataFrame(index=data.var_names[:40]))
    pd.testing.assert_frame_equal(A.mutual_information(sparse, regs[:3], progress=False), mi)
    kept = A.mutual_information(df, regs[:3], threshold=0.2, progress=False, chunk_size=1)
    assert len(kept) == (mi["mi"] >= 0.2).sum() and kept["mi"].min() >= 0.2


def test_network_is_deterministic_and_thread_independent(planted):
    data, truth, regs = planted
    expr = A.prepare_expression(data, regs)
    a = A.network(expr, None, threshold=0.15, seed=5, progress=False)
    b = A.network(expr, None, threshold=0.15, seed=5, progress=False)
    pd.testing.assert_frame_equal(a, b)
    old = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        c = A.network(expr, None, threshold=0.15, seed=5, progress=False)
    finally:
        numba.set_num_threads(old)
    pd.testing.assert_frame_equal(a, c)
    d = A.network(expr, None, threshold=0.15, seed=6, progress=False)
    assert set(zip(a.regulator, a.target)) != set(zip(d.regulator, d.target))
    py = A.network(expr, None, threshold=0.15, seed=5, backend="python", progress=False)
    pd.testing.assert_frame_equal(a, py)


def test_bootstrap_versus_subsample(planted, null_cache):
    data, truth, regs = planted
    n = data.n_obs
    rng = np.random.default_rng(0)
    boot = resample_indices(n, rng, "bootstrap")
    sub = resample_indices(n, rng, "subsample")
    assert len(boot) == n and len(np.unique(boot)) < n  # with replacement: duplicates
    assert len(sub) == subsample_size(n) == round(n * (1 - np.exp(-1))) and len(np.unique(sub)) == len(sub)
    thr_b, info_b = A.threshold_for_data(data, 1e-6, resampling="bootstrap", cache_dir=null_cache)
    thr_s, info_s = A.threshold_for_data(data, 1e-6, resampling="subsample", cache_dir=null_cache)
    assert info_b["n_samples"] == n and info_s["n_samples"] == subsample_size(n) and info_s["n_cells"] == n
    assert thr_s > thr_b  # fewer samples: a higher MI is needed for the same p-value
    nb = A.bootstrap_networks(data, regs, thr_b, seeds=[1, 2], resampling="bootstrap", progress=False)
    ns = A.bootstrap_networks(data, regs, thr_s, seeds=[1, 2], resampling="subsample", progress=False)
    assert list(nb.columns) == ["bootstrap", "regulator", "target", "mi"] and set(nb["bootstrap"]) == {1, 2}
    assert set(ns["bootstrap"]) == {1, 2}
    # a network of drawn-with-replacement samples is denser: duplicated samples inflate APMI (as in
    # ARACNe-AP, where the consensus removes the extra edges); subsampling keeps the null calibrated
    tr = set(zip(truth.regulator, truth.target)) | set(zip(truth.target, truth.regulator))
    full = A.network(data, regs, thr_b, resampling=None, progress=False)

    def precision(net):
        pred = set(zip(net.regulator.astype(str), net.target.astype(str)))
        return len(pred & tr) / len(pred)

    assert precision(ns[ns.bootstrap == 1]) > 0.95 and precision(full) > 0.95
    assert (nb["bootstrap"] == 1).sum() > len(full) > (ns["bootstrap"] == 1).sum() * 0.4
    recall = len(set(zip(nb.regulator.astype(str), nb.target.astype(str))) & set(zip(truth.regulator, truth.target))) / len(truth)
    assert recall > 0.9


def test_aracne_consensus_on_planted_network(planted, planted_consensus, null_cache):
    data, truth, regs = planted
    net = planted_consensus
    assert list(net.columns) == ["regulator", "target", "mi", "pvalue", "count"]
    assert (net["pvalue"] < 0.05).all() and net["count"].between(1, 8).all()
    pred = set(zip(net.regulator, net.target))
    undirected = set(zip(truth.regulator, truth.target)) | set(zip(truth.target, truth.regulator))
    precision = len(pred & undirected) / len(pred)
    recall = len(pred & set(zip(truth.regulator, truth.target))) / len(truth)
    assert precision > 0.9 and recall > 0.6, (precision, recall)
    single = A.aracne(data, regs, bootstraps=0, pvalue=1e-6, cache_dir=null_cache, progress=False)
    assert single["count"].eq(1).all() and single["pvalue"].isna().all() and len(single) > 0


def test_regulons_format_and_mode_of_regulation(planted, planted_consensus, tmp_path):
    data, truth, regs = planted
    reg = A.build_regulons(planted_consensus, data, max_targets=5, min_targets=3)
    assert list(reg.columns) == ["regulator", "target", "mor", "likelihood"]
    sizes = reg.groupby("regulator").size()
    assert sizes.max() <= 5 and sizes.min() >= 3
    assert reg["mor"].between(-1, 1).all() and reg["likelihood"].between(0, 1, inclusive="right").all()
    assert (reg.groupby("regulator")["likelihood"].max() == 1.0).all()
    # the kept targets are each regulon's strongest
    top = planted_consensus.sort_values("mi", ascending=False).groupby("regulator").head(5)
    for r, grp in reg.groupby("regulator"):
        assert set(grp["target"]) == set(top.loc[top["regulator"] == r, "target"])
    # the sign of the mode of regulation is the planted one
    full = A.build_regulons(planted_consensus, data, max_targets=None, min_targets=1)
    m = full.merge(truth, on=["regulator", "target"])
    assert len(m) > 50 and (np.sign(m["mor"]) == m["sign"]).mean() > 0.95
    assert (m.loc[m.relation == "neg_linear", "mor"] < -0.3).all()  # -0.45 for a target with two regulators
    # the file is what pyviper's Interactome and R viper read: exactly these 4 columns
    A.write_table(reg, tmp_path / "regulon.tsv")
    back = pd.read_csv(tmp_path / "regulon.tsv", sep="\t")
    assert list(back.columns) == ["regulator", "target", "mor", "likelihood"]
    pd.testing.assert_frame_equal(A.read_table(tmp_path / "regulon.tsv"), reg)
    net_norm = A.build_regulons(planted_consensus, data, max_targets=None, min_targets=1, likelihood="network")
    assert net_norm["likelihood"].max() == 1.0 and (net_norm.groupby("regulator")["likelihood"].max() < 1).any()
    assert len(A.build_regulons(planted_consensus, data, min_targets=10_000)) == 0


def test_write_read_round_trip(tmp_path, planted_consensus):
    path = tmp_path / "network.tsv"
    A.write_network(planted_consensus, path)
    header = path.read_text().splitlines()[0].split("\t")
    assert header == ["Regulator", "Target", "MI", "pvalue", "count"]
    back = A.read_network(path)
    pd.testing.assert_frame_equal(back, planted_consensus)  # exact doubles
    bare = planted_consensus[["regulator", "target", "mi"]].copy()
    bare.loc[0, "mi"] = 0.1 + 0.2  # a float whose short form differs from its exact value
    A.write_network(bare, path)
    assert A.read_network(path)["mi"].iloc[0] == 0.1 + 0.2
    A.write_network(A.consensus([]), path)
    assert path.read_text().strip() == "Regulator\tTarget\tMI\tpvalue\tcount" and len(A.read_network(path)) == 0
    with pytest.raises(InputError, match="does not exist"):
        A.read_network(tmp_path / "missing.tsv")
    (tmp_path / "bad.tsv").write_text("a\tb\n1\t2\n")
    with pytest.raises(InputError, match="lacks the column"):
        A.read_network(tmp_path / "bad.tsv")
    A.write_threshold(0.1 + 0.2, {"threshold": 0.30000000000000004}, tmp_path / "t.txt", tmp_path / "t.json")
    assert (tmp_path / "t.txt").read_text() == "0.30000000000000004"
    assert A.read_threshold(tmp_path / "t.txt") == 0.1 + 0.2


def test_simulate_network_is_deterministic():
    a, ta = A.simulate_network(50, 5, 30, seed=1, counts=True)
    b, tb = A.simulate_network(50, 5, 30, seed=1, counts=True)
    assert sp.issparse(a.X) and (a.X != b.X).nnz == 0
    pd.testing.assert_frame_equal(ta, tb)
    assert set(ta["regulator"]) <= set(a.var_names) and set(ta["target"]) <= set(a.var_names)
    assert set(ta["sign"]) <= {-1, 1} and set(ta["type"]) <= {"tf-tf", "tf-target"}
    df, _ = A.simulate_network(50, 5, 30, seed=1, return_type="dataframe")
    assert df.shape == (50, 5 + 30 + 7)


# ----------------------------------------------------------------------------------- scripts


def fake_snakemake(tmp_path, rule, input, output, params, threads=1):
    log = tmp_path / f"{rule}.log"
    return SimpleNamespace(
        input=SimpleNamespace(**input), output=SimpleNamespace(**output), params=SimpleNamespace(**params),
        threads=threads, log=[str(log)], rule=rule,
    ), log


def run_script(name, sm):
    runpy.run_path(str(ROOT / "scripts" / name), init_globals={"snakemake": sm}, run_name="__main__")


def test_workflow_scripts(tmp_path):
    data, truth = A.simulate_network(n_cells=150, n_regulators=6, n_targets=40, seed=9, counts=True)
    h5ad = tmp_path / "stratum.h5ad"
    data.write_h5ad(h5ad)
    regs_file = tmp_path / "regs.txt"
    regs_file.write_text("\n".join(g for g in data.var_names if g.startswith("TF")) + "\n")
    cal_files = {"threshold": str(tmp_path / "threshold.txt"), "info": str(tmp_path / "threshold.json"), "null": str(tmp_path / "null.npz")}
    common = {"regulators": [str(regs_file)], "species": "human", "seed": 1, "resampling": "subsample", "backend": "numba"}

    sm, log = fake_snakemake(
        tmp_path, "aracne_threshold", {"h5ad": str(h5ad), "null": str(tmp_path / "absent.null.h5ad")}, cal_files,
        dict(common, pvalue=1e-4, fdr=0.05, method="calibrated", estimator="auto", cache_dir=str(tmp_path / "cache")),
    )
    run_script("aracne_threshold.py", sm)
    thr = float((tmp_path / "threshold.txt").read_text())
    info = json.loads((tmp_path / "threshold.json").read_text())
    assert info["threshold"] == thr and info["n_samples"] == 150 and info["method"] == "calibrated" and info["fdr"] == 0.05
    assert info["resampling"] == "subsample" and info["null_size"] >= 100_000
    assert A.NullModel.load(tmp_path / "null.npz").n_total == info["null_size"]
    assert info["estimator"] == "copula" and info["full_data_gate"] is True
    sub_null, full_null = A.NullModel.load_named(tmp_path / "null.npz", "full")
    assert full_null is not None and full_null.info["resampling"] == "none" and sub_null.info["resampling"] == "subsample"
    cal = A.Calibration.load(cal_files["threshold"], cal_files["info"], cal_files["null"])
    assert cal.estimator == "copula" and cal.full is not None
    assert "rule aracne_threshold finished" in log.read_text()

    boots = []
    for chunk, (first, count) in enumerate([(0, 5), (5, 5)]):
        out = tmp_path / f"boot_{chunk}.tsv"
        sm, log = fake_snakemake(
            tmp_path, "aracne_bootstrap", {"h5ad": str(h5ad), **cal_files}, {"tsv": str(out)},
            dict(common, bootstraps=[first, count], dpi=True, dpi_tolerance=0.0), threads=2,
        )
        run_script("aracne_bootstrap.py", sm)
        table = pd.read_csv(out, sep="\t")
        assert list(table.columns) == ["bootstrap", "regulator", "target", "mi"]
        assert set(table["bootstrap"]) <= set(A.bootstrap_seeds(1, count, first)) and len(table) > 0
        boots.append(str(out))

    consensus_params = dict(common, consensus_pvalue=0.05, bonferroni=True, max_targets=50, min_targets=2, n_bootstraps=10,
                            skip_empty=False, stratum="S1")
    outs = {"network": str(tmp_path / "network.tsv"), "regulon": str(tmp_path / "regulon.tsv"), "status": str(tmp_path / "status.json")}
    sm, log = fake_snakemake(tmp_path, "aracne_consensus", {"boots": boots, "h5ad": str(h5ad), **cal_files}, outs, consensus_params)
    run_script("aracne_consensus.py", sm)
    net = A.read_network(tmp_path / "network.tsv")
    reg = pd.read_csv(tmp_path / "regulon.tsv", sep="\t")
    assert len(net) > 0 and list(reg.columns) == ["regulator", "target", "mor", "likelihood"] and len(reg) > 0
    status = A.read_status(tmp_path / "status.json")
    assert status["status"] == "ok" and status["edges"] == len(net) and status["regulons"] == reg["regulator"].nunique()

    # a stratum without regulons fails with an InputError naming it, and writes nothing ...
    empty = tmp_path / "boot_empty.tsv"
    empty.write_text("bootstrap\tregulator\ttarget\tmi\n")
    outs0 = {k: str(tmp_path / f"{k}0.out") for k in ("network", "regulon", "status")}
    sm, log = fake_snakemake(tmp_path, "aracne_consensus", {"boots": [str(empty)], "h5ad": str(h5ad), **cal_files}, outs0, consensus_params)
    with pytest.raises(InputError, match=r"stratum 'S1' \(150 samples\) has 0 edges.*metacells.*skip_empty"):
        run_script("aracne_consensus.py", sm)
    assert not any(Path(f).exists() for f in outs0.values())
    # ... or, with strata.skip_empty, is marked skipped with header-only tables
    sm, log = fake_snakemake(tmp_path, "aracne_consensus", {"boots": [str(empty)], "h5ad": str(h5ad), **cal_files}, outs0,
                             dict(consensus_params, skip_empty=True))
    run_script("aracne_consensus.py", sm)
    assert Path(outs0["network"]).read_text().strip() == "Regulator\tTarget\tMI\tpvalue\tcount"
    assert Path(outs0["regulon"]).read_text().strip() == "regulator\ttarget\tmor\tlikelihood"
    st = A.read_status(outs0["status"])
    assert st["status"] == "skipped" and "no regulon reaches 2 targets" in st["reason"]
    strata = pd.DataFrame({"stratum": ["A", "B"], "slug": ["S1", "S2"], "status": ["kept", "skipped"], "reason": ["", "few cells"]})
    summary = A.network_summary(strata, [st])
    assert list(summary["status"]) == ["skipped", "skipped"] and "no regulon" in summary.loc[0, "reason"]
    assert list(summary["network_status"]) == ["skipped", "no network"]


def test_benchmark_quick(tmp_path):
    out = tmp_path / "bench.csv"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "benchmark_aracne.py"), "--quick", "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = pd.read_csv(out)
    assert list(table.columns) == ["name", "size", "seconds", "ratio", "agreement"]
    assert len(table) >= 5 and (table["seconds"].dropna() > 0).all() and table["seconds"].notna().sum() >= 5
    assert "speedup" in proc.stdout


def test_benchmark_quick_scale(tmp_path):
    """The scale section: fresh processes per step, peak RSS, the goal line and the fitted growth law."""
    out = tmp_path / "scale.csv"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "benchmark_aracne.py"), "--quick", "--sections", "scale",
                           "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = pd.read_csv(out)
    assert table["name"].str.startswith("scale calibration").sum() == 4
    assert table["name"].str.startswith("scale one network").sum() == 4
    assert table["name"].str.contains("peak RSS").all() and (table["seconds"] > 0).all()
    assert "growth law (one network): time ~ R^" in proc.stdout and "goal: one network of" in proc.stdout
    assert "CPU:" in proc.stdout and "vector flags" in proc.stdout

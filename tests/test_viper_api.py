"""netpert.viper: blocks and memory, input errors, master regulators, workflow scripts, benchmark."""

import importlib
import logging
import runpy
import subprocess
import sys
import tracemalloc
from pathlib import Path
from types import SimpleNamespace

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import netpert.viper as V
from netpert import InputError

ROOT = Path(__file__).resolve().parents[1]
S = importlib.import_module("netpert.viper.signature")


def _net(genes, n_regs=6, size=(20, 40), seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for r in range(n_regs):
        tg = rng.choice(len(genes), size=int(rng.integers(*size)), replace=False)
        rows.append(pd.DataFrame({"regulator": f"R{r}", "target": np.asarray(genes)[tg], "mor": rng.uniform(-1, 1, len(tg)),
                                  "likelihood": rng.uniform(0.1, 1, len(tg))}))
    return pd.concat(rows, ignore_index=True)


def _counts(n_cells, n_genes, density=0.1, seed=0):
    rng = np.random.default_rng(seed)
    X = sp.random(n_cells, n_genes, density=density, format="csr", random_state=seed, dtype=np.float32,
                  data_rvs=lambda k: rng.integers(1, 6, size=k).astype(np.float32))
    a = ad.AnnData(X, obs=pd.DataFrame(index=[f"c{i}" for i in range(n_cells)]), var=pd.DataFrame(index=[f"g{j}" for j in range(n_genes)]))
    return a


# --------------------------------------------------------------------------------------------- blocks
def test_blocks_give_identical_results_and_global_tail_prepass():
    a = _counts(90, 120, density=0.8, seed=1)
    X = a.X.toarray()
    # the first 60 cells have ties at both extremes; a cell of the last block has a unique maximum,
    # so the global tail maximum (R's matrix path) is only found by the pre-pass over all blocks
    X[:60] = np.minimum(X[:60], 2.0)
    X[:60, :3] = 2.0
    X[85, 7] = 50.0
    a.X = sp.csr_matrix(X)
    net = _net(a.var_names, seed=1)
    for method in ("none", "scale", "ttest", "rank", "mad", "doublerank"):
        one = V.viper(a, net, method=method, min_targets=10, block_size=1000, tail="global" if method == "none" else "auto")
        many = V.viper(a, net, method=method, min_targets=10, block_size=7, tail="global" if method == "none" else "auto")
        if method == "none":  # no floating-point statistics involved: bit-identical
            np.testing.assert_array_equal(one.to_numpy(), many.to_numpy())
        else:
            np.testing.assert_allclose(one.to_numpy(), many.to_numpy(), rtol=0, atol=1e-10)
    first = V.viper(a[:60], net, min_targets=10, tail="global")
    assert np.abs(first.to_numpy() - V.viper(a, net, min_targets=10, tail="global").iloc[:60].to_numpy()).max() > 1e-6


def test_memory_stays_proportional_to_the_block(monkeypatch):
    n_cells, n_genes, block = 40000, 400, 500
    a = _counts(n_cells, n_genes, density=0.05, seed=2)
    net = _net(a.var_names, n_regs=8, seed=2)
    dense_bytes = n_cells * n_genes * 8
    rows_seen = []
    original = S.dense_rows

    def spy(X, rows):
        out = original(X, rows)
        rows_seen.append(out.shape[0])
        return out

    monkeypatch.setattr(S, "dense_rows", spy)
    V.viper(a[:50], net, method="scale", min_targets=10, block_size=block)  # JIT warm-up outside the trace
    rows_seen.clear()
    tracemalloc.start()
    try:
        out = V.viper(a, net, method="scale", min_targets=10, block_size=block, backend="python")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert out.shape == (n_cells, 8)
    # the matrix is read block by block, never whole
    assert max(rows_seen) <= block
    assert sum(rows_seen) <= 2 * n_cells  # main pass (+ at most one tail pre-pass)
    assert sum(rows_seen) >= n_cells
    # peak traced memory: a few dense blocks (500 x 400 x 8 B = 1.6 MB each; the plain reference's
    # ranks and quantiles take ~7 of them) plus the output (40000 x 8 x 8 B), not the 128 MB matrix
    block_bytes = block * n_genes * 8
    assert peak < 12 * block_bytes + out.size * 8, f"peak {peak / 1e6:.1f} MB vs block {block_bytes / 1e6:.1f} MB"
    assert peak < dense_bytes / 5, f"peak {peak / 1e6:.1f} MB vs dense matrix {dense_bytes / 1e6:.1f} MB"


# --------------------------------------------------------------------------------------------- input errors
@pytest.fixture()
def toy():
    rng = np.random.default_rng(3)
    genes = [f"g{j}" for j in range(80)]
    expr = pd.DataFrame(rng.normal(size=(12, 80)), index=[f"c{i}" for i in range(12)], columns=genes)
    return expr, _net(genes, n_regs=3, size=(15, 25), seed=3)


def test_regulon_errors(toy, tmp_path):
    expr, net = toy
    with pytest.raises(InputError, match=r"lacks the column\(s\) \['likelihood'\]"):
        V.viper(expr, net.drop(columns="likelihood"), min_targets=5)
    bad = net.copy()
    bad.loc[0, "mor"] = 1.5
    with pytest.raises(InputError, match=r"mor\) outside \[-1, 1\]"):
        V.viper(expr, bad, min_targets=5)
    bad = net.copy()
    bad.loc[0, "likelihood"] = 1.2
    with pytest.raises(InputError, match=r"likelihood outside \[0, 1\]"):
        V.viper(expr, bad, min_targets=5)
    bad = net.copy()
    bad.loc[1, "likelihood"] = np.nan
    with pytest.raises(InputError, match="likelihood outside"):
        V.viper(expr, bad, min_targets=5)
    path = tmp_path / "reg.tsv"
    net.drop(columns="mor").to_csv(path, sep="\t", index=False)
    with pytest.raises(InputError, match=r"reg.tsv.*lacks the column\(s\) \['mor'\]"):
        V.read_regulons(path)
    with pytest.raises(InputError, match="does not exist"):
        V.read_regulons(tmp_path / "missing.tsv")


def test_size_overlap_and_data_errors(toy, caplog):
    expr, net = toy
    sizes = net.groupby("regulator").size()
    with pytest.raises(InputError, match=rf"min_targets=100.*min {sizes.min()}.*max {sizes.max()}"):
        V.viper(expr, net, min_targets=100)
    renamed = net.assign(target="X" + net["target"])
    with pytest.raises(InputError, match="none of the .* regulon target genes is in the data"):
        V.viper(expr, renamed, min_targets=5)
    partial = pd.concat([net, pd.DataFrame({"regulator": "R0", "target": ["ABSENT1", "ABSENT2"], "mor": 1.0, "likelihood": 1.0})])
    with caplog.at_level(logging.WARNING, logger="netpert.viper"):
        V.viper(expr, partial, min_targets=5)
    assert "2 of" in caplog.text and "absent from the data" in caplog.text
    nan = expr.copy()
    nan.iloc[2, 5] = np.nan
    with pytest.raises(InputError, match="1 NaN"):
        V.viper(nan, net, min_targets=5)
    with pytest.raises(InputError, match="1 NaN"):
        V.viper(nan, net, method="scale", min_targets=5)
    dup = expr.copy()
    dup.columns = ["g0"] + list(expr.columns[1:-1]) + ["g0"]
    with pytest.raises(InputError, match="unique"):
        V.viper(dup, net, min_targets=5)
    with pytest.raises(InputError, match="unknown signature method"):
        V.viper(expr, net, method="zscore", min_targets=5)
    with pytest.raises(InputError, match="network_choice"):
        V.viper(expr, net, network_choice="best", min_targets=5)


# --------------------------------------------------------------------------------------------- master regulators
def _activity(seed=0):
    rng = np.random.default_rng(seed)
    regs = [f"R{i}" for i in range(8)]
    groups = np.repeat(["A", "B", "C"], [30, 30, 30])
    nes = rng.normal(scale=0.3, size=(90, 8))
    nes[groups == "A", 0] += 3.0   # A: R0 up, R1 down, R2 mildly up
    nes[groups == "A", 1] -= 2.5
    nes[groups == "A", 2] += 1.0
    nes[groups == "B", 3] += 2.0   # B: R3 up, R4 down
    nes[groups == "B", 4] -= 2.0
    nes[groups == "C", 5] -= 1.5   # C: R5 down
    obs = pd.DataFrame({"stratum": groups}, index=[f"c{i}" for i in range(90)])
    return ad.AnnData(nes, obs=obs, var=pd.DataFrame(index=regs))


def test_master_regulators_known_answer():
    from netpert.mr_table import FILE_COLUMNS, REPORTED

    act = _activity()
    mr = V.master_regulators(act, top_k=2)
    assert set(mr.to_frame().columns) == set(FILE_COLUMNS)
    assert (mr.strata["status"] == REPORTED).all() and (mr.strata["n_cells"] == 30).all()
    assert (mr.strata["test"] == "mannwhitneyu").all()
    a = mr.of("A").set_index(["direction", "rank"])
    assert a.loc[("up", 1), "regulator"] == "R0" and a.loc[("up", 2), "regulator"] == "R2"
    assert a.loc[("down", 1), "regulator"] == "R1"
    assert a.loc[("up", 1), "padj"] < 1e-6 and a.loc[("down", 1), "padj"] < 1e-6
    b = mr.of("B").set_index(["direction", "rank"])
    assert b.loc[("up", 1), "regulator"] == "R3" and b.loc[("down", 1), "regulator"] == "R4"
    c = mr.of("C").set_index(["direction", "rank"])
    assert c.loc[("down", 1), "regulator"] == "R5"
    # the direction is the effect against the other cells, every reported one significant
    r = mr.regulators
    assert (r.loc[r.direction == "up", "delta_nes"] > 0).all() and (r.loc[r.direction == "down", "delta_nes"] < 0).all()
    assert (r["padj"] < 0.05).all()
    # a regulator with no difference between strata is not significant, so never reported
    full = V.master_regulators(act, top_k=8)
    assert "R7" not in set(full.of("A")["regulator"])
    # one stratum: no other cells, a Wilcoxon signed-rank test against 0
    one = V.master_regulators(act[act.obs.stratum == "A"], top_k=1)
    assert list(one.of("A")["regulator"]) == ["R0", "R1"] and (one.strata["test"] == "wilcoxon").all()
    df = V.master_regulators(pd.DataFrame(act.X, columns=act.var_names), groups=act.obs["stratum"].to_numpy(), top_k=2)
    pd.testing.assert_frame_equal(df.regulators, mr.regulators)
    pd.testing.assert_frame_equal(df.strata, mr.strata)
    with pytest.raises(InputError, match="obs column"):
        V.master_regulators(act, groupby="cell_type")


# --------------------------------------------------------------------------------------------- scripts
def fake_snakemake(tmp_path, rule, input, output, params, threads=1):
    log = tmp_path / f"{rule}.log"
    return SimpleNamespace(input=SimpleNamespace(**input), output=SimpleNamespace(**output), params=SimpleNamespace(**params),
                           threads=threads, log=[str(log)], rule=rule), log


def run_script(name, sm):
    runpy.run_path(str(ROOT / "scripts" / name), init_globals={"snakemake": sm}, run_name="__main__")


def test_workflow_scripts(tmp_path):
    a = _counts(60, 150, density=0.4, seed=5)
    a.obs["stratum"] = np.repeat(["s1", "s2"], 30)
    a.obs["cell_type"] = np.repeat(["T", "B"], 30)
    cells = tmp_path / "cells.h5ad"
    a.write_h5ad(cells)
    paths = []
    for k, name in enumerate(["s1", "s2", "s3"]):
        d = tmp_path / "aracne" / name
        d.mkdir(parents=True)
        p = d / "regulon.tsv"
        if name == "s3":
            pd.DataFrame(columns=V.REGULON_COLUMNS).to_csv(p, sep="\t", index=False)  # header only: skipped
        else:
            _net(a.var_names, n_regs=4, seed=10 + k).to_csv(p, sep="\t", index=False)
        paths.append(str(p))
    out = tmp_path / "viper" / "activity.h5ad"
    params = dict(signature="scale", eset_filter=False, min_targets=10, mvws=1, pleiotropy=False, network_choice="integrate", block_size=25,
                  enrichment="area")
    sm, log = fake_snakemake(tmp_path, "viper", {"cells": str(cells), "regulons": paths}, {"activity": str(out)}, params)
    run_script("viper.py", sm)
    act = ad.read_h5ad(out)
    assert act.shape == (60, 4) and list(act.obs["stratum"]) == list(a.obs["stratum"])
    expected = V.viper(a, {"s1": V.read_regulons(paths[0]), "s2": V.read_regulons(paths[1])}, method="scale", min_targets=10)
    np.testing.assert_allclose(act.X, expected.to_numpy(), atol=1e-12)
    p, padj = V.nes_pvalues(expected)
    np.testing.assert_allclose(act.layers["pvalue"], p.to_numpy())
    np.testing.assert_allclose(act.layers["padj"], padj.to_numpy())
    assert act.uns["viper"]["method"] == "scale" and list(act.uns["viper"]["networks"]) == ["s1", "s2"]
    assert "is empty" in log.read_text() and "pes" not in act.layers
    nar = tmp_path / "viper" / "narnea.h5ad"
    sm, _ = fake_snakemake(tmp_path, "viper", {"cells": str(cells), "regulons": paths}, {"activity": str(nar)}, {**params, "enrichment": "narnea"})
    run_script("viper.py", sm)
    act_n = ad.read_h5ad(nar)
    assert act_n.layers["pes"].shape == act_n.shape and act_n.uns["viper"]["enrichment"] == "narnea"

    tsv = tmp_path / "viper" / "master_regulators.tsv"
    sm, _ = fake_snakemake(tmp_path, "master_regulators", {"activity": str(out), "regulons": paths}, {"tsv": str(tsv)},
                           {"top_k": 2, "padj": 0.05, "groupby": "stratum"})
    run_script("master_regulators.py", sm)
    from netpert.mr_table import read_master_regulators

    mr = read_master_regulators(tsv)
    st = mr.strata.set_index("stratum")
    assert set(st.index) == {"s1", "s2", "s3"} and st.loc["s3", "status"] == "no_network"  # s3: empty regulon file
    assert st.loc["s3", "n_cells"] == 0
    assert set(mr.regulators["direction"]) <= {"up", "down"} and (mr.regulators["rank"] <= 2).all()
    own = {s: set(V.read_regulons(p)["regulator"]) for s, p in zip(("s1", "s2"), paths)}
    assert all(r.regulator in own[r.stratum] for r in mr.regulators.itertuples())  # only the stratum's own regulons

    # only empty regulon files: an InputError, no output left behind
    out2 = tmp_path / "viper" / "activity2.h5ad"
    sm, log = fake_snakemake(tmp_path, "viper", {"cells": str(cells), "regulons": [paths[2]]}, {"activity": str(out2)}, params)
    with pytest.raises(InputError, match="empty"):
        run_script("viper.py", sm)
    assert not out2.exists()
    assert "input error" in log.read_text()


def test_benchmark_quick(tmp_path):
    out = tmp_path / "bench.csv"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "benchmark_viper.py"), "--quick", "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    table = pd.read_csv(out)
    assert list(table.columns) == ["name", "size", "seconds", "ratio", "agreement"]
    assert {"netpert area", "netpert area python", "pyviper", "decoupler", "scaling numba"} <= set(table["name"])
    mine = table[table.name.str.startswith(("netpert", "scaling"))]
    assert (mine["agreement"] < 1e-9).all() and (mine["seconds"] > 0).all()
    assert "netpert area" in proc.stdout

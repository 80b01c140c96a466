"""The workflow's viper step writes its activity h5ad block by block (netpert.viper.run_viper,
netpert.viper.h5blocks): the file equals today's in-memory result bit for bit, and a failure leaves
no output behind."""

import importlib
from pathlib import Path

import anndata as ad
import netpert.viper as V
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from netpert import InputError
from netpert.viper import h5blocks

S = importlib.import_module("netpert.viper.signature")
N_CELLS = 53


def _net(genes, n_regs, seed):
    rng = np.random.default_rng(seed)
    rows = []
    for r in range(n_regs):
        tg = rng.choice(len(genes), size=int(rng.integers(15, 30)), replace=False)
        rows.append(pd.DataFrame({"regulator": f"R{r + seed}", "target": np.asarray(genes)[tg], "mor": rng.uniform(-1, 1, len(tg)),
                                  "likelihood": rng.uniform(0.1, 1, len(tg))}))
    return pd.concat(rows, ignore_index=True)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("viper_blocks")
    rng = np.random.default_rng(3)
    X = sp.random(N_CELLS, 120, density=0.3, format="csr", random_state=3, dtype=np.float32,
                  data_rvs=lambda k: rng.integers(1, 9, size=k).astype(np.float32))
    obs = pd.DataFrame({"stratum": np.where(np.arange(N_CELLS) % 3, "s1", "s2"), "depth": rng.uniform(size=N_CELLS)},
                       index=[f"cell{i}" for i in range(N_CELLS)])
    a = ad.AnnData(X, obs=obs, var=pd.DataFrame(index=[f"g{j}" for j in range(120)]))
    a.write_h5ad(tmp / "cells.h5ad")
    dense = a.copy()
    dense.X = a.X.toarray()
    dense.write_h5ad(tmp / "dense.h5ad")
    regulons = []
    for k, name in enumerate(["s1", "s2"]):  # overlapping regulators: R1..R5 and R2..R6
        (tmp / name).mkdir()
        path = tmp / name / "regulon.tsv"
        _net(a.var_names, 5, seed=1 + k).to_csv(path, sep="\t", index=False)
        regulons.append(str(path))
    return tmp, regulons


def _today(cells, regulon_paths, out, **kw):
    """The viper step before block-wise writing: read everything, activity_anndata, write_h5ad."""
    adata = ad.read_h5ad(cells)
    tables = {Path(p).parent.name: V.read_regulons(p) for p in regulon_paths}
    kwargs = {"method": kw.pop("signature", "scale"), "eset_filter": False, "min_targets": 10, "mvws": 1, "pleiotropy": False,
              "network_choice": "integrate", "block_size": 5000, "backend": "numba", "enrichment": "area"}
    kwargs.update(kw)
    act = V.activity_anndata(adata, tables, **kwargs)
    act.uns["viper"]["regulon_files"] = [f"{Path(p).parent.name}/{Path(p).name}" for p in regulon_paths]  # no results path
    act.uns["viper"]["cells"] = Path(cells).name
    act.write_h5ad(out)
    return ad.read_h5ad(out)


def _assert_same_file(got: ad.AnnData, ref: ad.AnnData):
    assert got.shape == ref.shape
    assert got.X.dtype == ref.X.dtype == np.float64
    np.testing.assert_array_equal(got.X, ref.X)  # bit for bit (NaN where NaN)
    assert sorted(got.layers) == sorted(ref.layers)
    for name in ref.layers:
        assert got.layers[name].dtype == ref.layers[name].dtype
        np.testing.assert_array_equal(got.layers[name], ref.layers[name])
    pd.testing.assert_frame_equal(got.obs, ref.obs)
    pd.testing.assert_frame_equal(got.var, ref.var)
    assert got.uns.keys() == ref.uns.keys()
    for key, value in ref.uns["viper"].items():
        np.testing.assert_array_equal(got.uns["viper"][key], value)
    assert list(got.uns["viper"]) == list(ref.uns["viper"])
    assert not got.obsm and not got.varm and not got.obsp and not got.varp


CASES = [
    ("area", "integrate", 1),
    ("area", "auto", 1),
    ("narnea", "integrate", 1),
]


@pytest.mark.parametrize("enrichment,choice,mvws", CASES)
@pytest.mark.parametrize("block_size", [7, 20, N_CELLS, 1000])  # 7 and 20 do not divide 53
def test_block_file_equals_todays_metaviper(files, tmp_path, monkeypatch, enrichment, choice, mvws, block_size):
    tmp, regulons = files
    kw = {"network_choice": choice, "mvws": mvws, "block_size": block_size, "enrichment": enrichment}
    out = tmp_path / "activity.h5ad"
    seen = []
    dense_rows = S.dense_rows

    def spy(X, rows):
        blk = dense_rows(X, rows)
        seen.append((type(X), blk.shape[0]))
        return blk

    monkeypatch.setattr(S, "dense_rows", spy)
    V.run_viper(tmp / "cells.h5ad", regulons, out, signature="scale", **kw)
    monkeypatch.undo()
    assert seen and all(t is h5blocks.H5Rows and n <= block_size for t, n in seen)  # X read from the file by blocks
    ref = _today(tmp / "cells.h5ad", regulons, tmp_path / "today.h5ad", signature="scale", **kw)
    got = ad.read_h5ad(out)
    _assert_same_file(got, ref)
    assert got.n_vars == 6 and ("pes" in got.layers) == (enrichment == "narnea")
    assert ("viper_network" in got.obs) == (choice == "auto")


@pytest.mark.parametrize("enrichment", ["area", "narnea"])
@pytest.mark.parametrize("signature,cells", [("scale", "dense.h5ad"), ("rank", "cells.h5ad"), ("none", "cells.h5ad"),
                                             ("doublerank", "cells.h5ad")])
def test_block_file_one_network_signatures_and_dense_input(files, tmp_path, enrichment, signature, cells):
    tmp, regulons = files
    out = tmp_path / "activity.h5ad"
    V.run_viper(tmp / cells, regulons[:1], out, signature=signature, block_size=11, enrichment=enrichment)
    ref = _today(tmp / cells, regulons[:1], tmp_path / "today.h5ad", signature=signature, block_size=11, enrichment=enrichment)
    _assert_same_file(ad.read_h5ad(out), ref)


def test_reads_blocks_not_the_whole_matrix(files, monkeypatch):
    """A CSR X is read through H5Rows (never the whole matrix) unless the signature needs whole genes."""
    tmp, _ = files
    with h5blocks.open_cells(tmp / "cells.h5ad") as (X, genes, cells, obs):
        assert isinstance(X, h5blocks.H5Rows) and X.sparse_rows and X.shape == (N_CELLS, 120)
        full = ad.read_h5ad(tmp / "cells.h5ad").X
        np.testing.assert_array_equal(X[5:17].toarray(), full[5:17].toarray())
        np.testing.assert_array_equal(X[np.array([40, 3, 9])].toarray(), full[[40, 3, 9]].toarray())
        assert list(obs.columns) == ["stratum", "depth"] and genes[0] == "g0" and cells[-1] == f"cell{N_CELLS - 1}"
    with h5blocks.open_cells(tmp / "cells.h5ad", in_memory=True) as (X, *_):
        assert sp.issparse(X)
    with h5blocks.open_cells(tmp / "dense.h5ad") as (X, *_):
        assert isinstance(X, h5blocks.H5Rows) and not X.sparse_rows


def test_failure_midway_leaves_no_output(files, tmp_path, monkeypatch):
    tmp, regulons = files
    out = tmp_path / "viper" / "activity.h5ad"
    calls = []
    original = h5blocks.ActivityWriter.write

    def failing(self, sel, **arrays):
        calls.append(sel)
        if len(calls) == 2:
            raise RuntimeError("disk full")
        return original(self, sel, **arrays)

    monkeypatch.setattr(h5blocks.ActivityWriter, "write", failing)
    with pytest.raises(RuntimeError, match="disk full"):
        V.run_viper(tmp / "cells.h5ad", regulons, out, block_size=10)
    assert len(calls) == 2 and not out.exists() and list(out.parent.iterdir()) == []
    # an earlier output stays as it was
    out.write_text("earlier")
    with pytest.raises(RuntimeError, match="disk full"):
        calls.clear()
        V.run_viper(tmp / "cells.h5ad", regulons, out, block_size=10)
    assert out.read_text() == "earlier" and [p.name for p in out.parent.iterdir()] == ["activity.h5ad"]


def test_bad_input_is_an_input_error(files, tmp_path):
    tmp, regulons = files
    out = tmp_path / "activity.h5ad"
    with pytest.raises(InputError, match="does not exist"):
        V.run_viper(tmp_path / "missing.h5ad", regulons, out)
    bad = tmp_path / "bad.h5ad"
    bad.write_text("not hdf5")
    with pytest.raises(InputError, match="could not be read as h5ad"):
        V.run_viper(bad, regulons, out)
    with pytest.raises(InputError, match="block_size"):
        V.run_viper(tmp / "cells.h5ad", regulons, out, block_size=0)
    nan = ad.read_h5ad(tmp / "cells.h5ad")
    nan.X.data[5] = np.nan
    nan.write_h5ad(tmp_path / "nan.h5ad")
    with pytest.raises(InputError, match="NaN"):
        V.run_viper(tmp_path / "nan.h5ad", regulons, out, block_size=10)
    assert not out.exists()


def test_memory_benchmark_quick(tmp_path):
    """benchmarks/benchmark_viper_memory.py runs (tiny sizes): CPU line, one row per mode, equal files."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "rows.csv"
    proc = subprocess.run([sys.executable, str(root / "benchmarks" / "benchmark_viper_memory.py"), "--cells", "400", "--genes", "300",
                           "--regulons", "20", "--targets", "15", "--block-size", "150", "--today", "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "# CPU:" in proc.stdout and "avx2=" in proc.stdout
    rows = pd.read_csv(out)
    assert list(rows["mode"]) == ["blocks", "today"] and (rows["peak_gib"] > 0).all() and (rows["seconds"] > 0).all()
    assert bool(rows["equal_to_blocks"].iloc[1]) is True

"""ISP sharding (isp.cells_per_job, netpert.isp.shards): a stratum's screen run in shards of cells and
joined equals the unsplit run.

What equality holds (measured here, 2-core AMD EPYC, torch 2.13 CPU, onnxruntime):
- always: cells, perturbations, labels, cell indices, genes compared, skipped counts, metadata;
- bit for bit, embeddings, effects and every metric but the timing columns, wherever each batch
  holds the same sequences split and unsplit: batches of one sequence for every method; baseline
  (input_order) when every cell fills whole batches; onnx_int8 with its own batching (``cell``:
  one cell per batch) always;
- otherwise (a shard's batches hold other sequences than the unsplit run's): float32 methods to
  the last bits (a sequence's embedding depends on the padded shape of its batch: measured max
  |diff| 4.8e-7 on embeddings, 9e-9 on cosines and cell shifts), far inside the consistency bar
  each method must meet against baseline (mean cosine 0.999, spearman 0.95). (Dynamic int8 with
  cells packed together, ``cell_grouped``, would move by its per-batch quantisation scales:
  measured 1 - cosine(split, unsplit) up to 2.7e-5 before one cell per batch became its default.)
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from netpert.errors import InputError
from netpert.isp.evaluate import evaluate_run
from netpert.isp.records import METRICS_COLUMNS, SHARD_KEYS, PerfRecord, read_perf, read_result, write_perf
from netpert.isp.runner import infer_stratum
from netpert.isp.shards import merge_perfs, merge_shards, n_shards, planned_shards, shard_bounds, shard_share, token_cells
from netpert.isp.tokens import read_tokens, tokenize_stratum
from test_isp_runner import stratum_cells

#: metrics.tsv columns that are timings (they differ from run to run, split or not)
TIMING = ("wall_s", "wall_min_s", "wall_max_s", "perturbations_per_s", "cells_per_s", "speedup", "speedup_min",
          "speedup_max", "peak_rss_mb", "cpu_percent", "other_load_cores", "gpu_peak_mem_mb")
#: arrays that are the same split or not, whatever the batches
EXACT_ALWAYS = ("cell_ids", "perturbation", "cell_index", "kind", "targets", "n_genes_compared", "skipped_labels",
                "skipped_counts")
METHODS = ("baseline", "batched", "onnx", "onnx_int8")
N_CELLS = 9
GENES = ["G0", "G1", "G2", "G5", "G7"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A model folder, its ONNX export and int8 model, and token files of 9 cells (delete: cells
    differ in how many targets apply; overexpress: every target applies, 6 sequences per cell)."""
    from netpert.isp.export import export_onnx
    from netpert.isp.model import write_model
    from netpert.isp.quantize import quantize_onnx, token_batches

    d = tmp_path_factory.mktemp("shards")
    bundle = write_model(stratum_cells(20, seed=1), d / "model", spec="random-init:tiny", seed=0)
    tokens = {}
    for kind in ("delete", "overexpress"):
        tokens[kind] = d / f"{kind}.parquet"
        tokenize_stratum(stratum_cells(N_CELLS, seed=3), d / "model", tokens[kind], targets_source="list", genes=GENES,
                         perturbation=kind, cells_per_stratum=N_CELLS, stratum="T_cell")
    export_onnx(bundle.model, d / "model.onnx", layer=-2, opset=18, atol=1e-4)
    calibration, evaluation, _ = token_batches([tokens["delete"]], n_calibration=8, seed=0)
    quantize_onnx(d / "model.onnx", d / "model.int8.onnx", calibration, evaluation, candidates=["dynamic-qint8"])
    return {"dir": d, "model": d / "model", "tokens": tokens,
            "artifacts": {"onnx": [str(d / "model.onnx")], "onnx_int8": [str(d / "model.int8.onnx")]}}


def run(setup, method, kind, folder, cells_per_job=None, batch_size=None):
    """The records of one method over the stratum: unsplit, or every shard then the merge. Returns
    (npz, perf.json, shard perf records)."""
    tok = setup["tokens"][kind]
    kw = dict(method=method, device="cpu", threads=1, repeats=1, batch_size=batch_size,
              artifacts=setup["artifacts"].get(method))
    base = setup["dir"] / folder / method
    npz, perf = base / "T_cell.npz", base / "T_cell.perf.json"
    if cells_per_job is None:
        infer_stratum(tok, setup["model"], npz, perf, **kw)
        return npz, perf, []
    parts = [(base / "T_cell" / f"shard_{k}.npz", base / "T_cell" / f"shard_{k}.perf.json")
             for k in range(n_shards(N_CELLS, cells_per_job))]
    for k, (a, b) in enumerate(parts):
        infer_stratum(tok, setup["model"], a, b, cells_per_job=cells_per_job, shard=k, **kw)
    merge_shards(tok, [a for a, _ in parts], [b for _, b in parts], npz, perf)
    return npz, perf, [read_perf(b) for _, b in parts]


def compare(unsplit, split, exact: bool, method: str):
    """Hold a split run's npz to the unsplit one's (bit for bit where ``exact``)."""
    u, s = read_result(unsplit), read_result(split)
    meta_u, meta_s = dict(u.pop("metadata")), dict(s.pop("metadata"))
    assert meta_s.pop("shards")["n_shards"] > 1
    assert meta_s == meta_u
    for name in u:
        assert u[name].dtype == s[name].dtype and u[name].shape == s[name].shape, name
        if exact or name in EXACT_ALWAYS:
            np.testing.assert_array_equal(s[name], u[name], err_msg=f"{method} {name}")
    if exact:
        return
    emb_u = np.concatenate([u["original"], u["perturbed"]])
    emb_s = np.concatenate([s["original"], s["perturbed"]])
    assert method != "onnx_int8", "one cell per batch: onnx_int8's shards are exact"
    # float32: the last bits move with the batch's padded shape
    np.testing.assert_allclose(emb_s, emb_u, atol=1e-5, rtol=0, err_msg=method)
    for name in ("cosine", "cell_shift"):
        np.testing.assert_allclose(s[name], u[name], atol=1e-7, rtol=0, err_msg=f"{method} {name}")
    np.testing.assert_allclose(s["top_cosines"], u["top_cosines"], atol=1e-5, rtol=0, err_msg=method)


def compare_metrics(setup, folder_u, folder_s, exact: bool):
    tables = {}
    for folder in (folder_u, folder_s):
        base = setup["dir"] / folder
        npz = [base / m / "T_cell.npz" for m in METHODS]
        perf = [base / m / "T_cell.perf.json" for m in METHODS]
        tables[folder] = evaluate_run(npz, perf, base / "metrics.tsv").set_index(["method", "stratum"])
    u, s = tables[folder_u], tables[folder_s]
    assert list(u.columns) == list(s.columns) and list(u.index) == list(s.index)
    rest = [c for c in u.columns if c not in TIMING]
    assert set(METRICS_COLUMNS) - set(TIMING) - {"method", "stratum"} <= set(rest)
    for col in ("n_cells", "n_perturbations", "repeats"):
        assert (s[col] == u[col]).all(), col
    if exact:
        pd.testing.assert_frame_equal(s[rest], u[rest], check_exact=True)
        return
    numeric = [c for c in rest if pd.api.types.is_float_dtype(u[c])]
    pd.testing.assert_frame_equal(s[rest].drop(columns=numeric), u[rest].drop(columns=numeric), check_exact=True)
    assert (s["passes_bar"] == u["passes_bar"]).all()
    # every method's figures against baseline move with baseline's and its own last float32 bits
    # (measured 3.6e-7 relative at most); onnx_int8's embeddings are the same bits split or not
    pd.testing.assert_frame_equal(s[numeric], u[numeric], check_exact=False, rtol=1e-6, atol=1e-7)


# --------------------------------------------------------------------------- the plan


def test_shards_of_a_stratum():
    assert [n_shards(n, 4) for n in (1, 4, 5, 8, 9)] == [1, 1, 2, 2, 3]
    assert [shard_bounds(9, 4, k) for k in range(3)] == [(0, 4), (4, 8), (8, 9)]
    # the token file holds min(stratum cells, isp.cells_per_stratum) cells
    assert planned_shards(40, 3, 2) == 2 and planned_shards(2, 20, 2) == 1 and planned_shards(45, None, 10) == 5
    assert token_cells(40, 3) == 3 and token_cells(2, 20) == 2 and token_cells(45, None) == 45
    # a shard's share of its stratum's screen (the workflow sizes its time request by it): its cells
    assert [shard_share(40, 3, 2, k) for k in range(2)] == [2 / 3, 1 / 3]
    assert [shard_share(45, None, 10, k) for k in range(5)] == [10 / 45] * 4 + [5 / 45]
    assert shard_share(1, None, 5, 0) == 1.0
    with pytest.raises(InputError, match="shard 3 does not exist: 9 cells make 3 shard"):
        shard_bounds(9, 4, 3)
    for bad in (0, -1, 2.5, True, "4"):
        with pytest.raises(InputError, match="isp.cells_per_job must be a positive integer"):
            n_shards(9, bad)


# --------------------------------------------------------------------------- split == unsplit


@pytest.mark.parametrize("method", METHODS)
def test_split_equals_unsplit_bit_for_bit_in_batches_of_one(setup, method):
    """Batches of one sequence are the same split or not: every array, every metric but timings, bit for bit."""
    unsplit = run(setup, method, "delete", "one_u", batch_size=1)
    split = run(setup, method, "delete", "one_s", cells_per_job=2, batch_size=1)
    compare(unsplit[0], split[0], exact=True, method=method)
    shards = split[2]
    assert [p.shard["n_cells"] for p in shards] == [2, 2, 2, 2, 1]
    assert all(sorted(p.shard) == sorted(SHARD_KEYS) and p.shard["cells_in_stratum"] == N_CELLS for p in shards)
    merged, alone = read_perf(split[1]), read_perf(unsplit[1])
    for key in ("n_cells", "n_perturbations", "n_sequences", "n_skipped", "skipped", "n_batches", "padding_fraction",
                "mean_length", "max_length", "batching", "batch_size", "device", "status", "note", "trained"):
        assert getattr(merged, key) == pytest.approx(getattr(alone, key)), key
    # the stratum's time is the shards' summed, its memory the largest shard's
    assert merged.wall_s == pytest.approx(sum(p.wall_s for p in shards))
    assert merged.cpu_time_s == pytest.approx(sum(p.cpu_time_s for p in shards))
    assert merged.peak_rss_mb == max(p.peak_rss_mb for p in shards)
    assert merged.process_peak_rss_mb == max(p.process_peak_rss_mb for p in shards)
    assert merged.perturbations_per_s == pytest.approx(merged.n_perturbations / merged.wall_s)
    assert merged.shard is None and [s["index"] for s in merged.shards] == list(range(5))


def test_split_metrics_equal_unsplit_bit_for_bit_in_batches_of_one(setup):
    for method in METHODS:
        if not (setup["dir"] / "one_s" / method / "T_cell.npz").exists():
            run(setup, method, "delete", "one_u", batch_size=1)
            run(setup, method, "delete", "one_s", cells_per_job=2, batch_size=1)
    compare_metrics(setup, "one_u", "one_s", exact=True)
    # the report's figures over all strata: the shards' time summed, the largest shard's memory
    table = pd.read_csv(setup["dir"] / "one_s" / "metrics.tsv", sep="\t").set_index(["method", "stratum"])
    for method in METHODS:
        shards = [json.loads(p.read_text()) for p in sorted((setup["dir"] / "one_s" / method / "T_cell").glob("*.perf.json"))]
        assert table.loc[(method, "all"), "wall_s"] == pytest.approx(sum(p["wall_s"] for p in shards))
        assert table.loc[(method, "all"), "peak_rss_mb"] == pytest.approx(max(p["process_peak_rss_mb"] for p in shards))


def test_batches_kept_whole_stay_bit_for_bit(setup):
    """Overexpression applies to every cell: 6 sequences per cell. Batches of 6 in input order
    (baseline) and whole cells per batch (onnx_int8) are the same in shards of 4 cells."""
    for method in ("baseline", "onnx_int8"):
        unsplit = run(setup, method, "overexpress", "kept_u", batch_size=6)
        split = run(setup, method, "overexpress", "kept_s", cells_per_job=4, batch_size=6)
        compare(unsplit[0], split[0], exact=True, method=method)


def test_split_with_the_methods_batches_is_within_their_tolerance(setup):
    """The methods' own batch sizes: a shard's batches hold other sequences (baseline's batches of
    10 cross cell borders, length-sorted batches mix the stratum's cells), but for onnx_int8's
    (one cell per batch, at the batch size quantize_onnx tuned), which are the same bits."""
    for method in METHODS:
        unsplit = run(setup, method, "delete", "own_u")
        split = run(setup, method, "delete", "own_s", cells_per_job=2)
        compare(unsplit[0], split[0], exact=method == "onnx_int8", method=method)
        if method == "onnx_int8":
            assert read_perf(unsplit[1]).batching == "cell" and read_perf(unsplit[1]).backend["tuning"]["source"]
    compare_metrics(setup, "own_u", "own_s", exact=False)


# --------------------------------------------------------------------------- checks


def test_merge_checks_its_shards(setup, monkeypatch):
    tok = setup["tokens"]["delete"]
    d = setup["dir"] / "checks"
    parts = [(d / f"shard_{k}.npz", d / f"shard_{k}.perf.json") for k in range(3)]
    for k, (a, b) in enumerate(parts):
        infer_stratum(tok, setup["model"], a, b, method="batched", device="cpu", repeats=1, cells_per_job=4, shard=k)
    npz, perf = [a for a, _ in parts], [b for _, b in parts]
    out = (d / "m.npz", d / "m.perf.json")
    with pytest.raises(InputError, match=r"cover cells \[\(0, 4\), \(4, 8\)\], but .* holds 9 cells"):
        merge_shards(tok, npz[:2], perf[:2], *out)
    with pytest.raises(InputError, match="cover cells"):
        merge_shards(tok, npz[:1] + npz[:1] + npz[2:], perf[:1] + perf[:1] + perf[2:], *out)
    with pytest.raises(InputError, match="not the shard its perf.json describes"):
        merge_shards(tok, [npz[1], npz[0], npz[2]], perf, *out)
    with pytest.raises(InputError, match="shard 3 does not exist"):
        infer_stratum(tok, setup["model"], d / "x.npz", d / "x.perf.json", method="batched", cells_per_job=4, shard=3)
    with pytest.raises(InputError, match="needs both cells_per_job and shard"):
        infer_stratum(tok, setup["model"], d / "x.npz", d / "x.perf.json", method="batched", shard=1)
    assert not out[0].exists() and not out[1].exists()
    # the shards in any order are joined in shard order
    merged = merge_shards(tok, npz[::-1], perf[::-1], *out)
    assert merged.n_cells == N_CELLS and list(read_result(out[0])["cell_ids"]) == read_tokens(tok).cell_ids
    # isp_evaluate reads a stratum's records, never a shard's
    with pytest.raises(InputError, match="is one shard of batched / T_cell"):
        evaluate_run(npz[:1], perf[:1], d / "metrics.tsv")
    # a shard that could not run where it landed: the stratum is "not run", saying which shard and why
    import netpert.isp.methods as methods

    monkeypatch.setattr(methods, "cuda_available", lambda: False)
    trt = [(d / f"trt_{k}.npz", d / f"trt_{k}.perf.json") for k in range(3)]
    for k, (a, b) in enumerate(trt):
        infer_stratum(tok, setup["model"], a, b, method="tensorrt", device="cuda", cells_per_job=4, shard=k)
    merged = merge_shards(tok, [a for a, _ in trt], [b for _, b in trt], d / "t.npz", d / "t.perf.json")
    assert merged.status == "not run" and merged.reason == "no CUDA device in this job"
    assert read_result(d / "t.npz")["metadata"]["status"] == "not run"
    mixed = read_perf(perf[1])
    merged = merge_perfs([read_perf(trt[0][1]), mixed, read_perf(trt[2][1])])
    assert merged.status == "not run" and merged.reason == "shard(s) 0, 2 of 3 not run: no CUDA device in this job"


def test_merged_perf_sums_times_and_keeps_the_largest_memory(tmp_path):
    def shard(k, wall, rss, cpu, **kw):
        info = {"index": k, "n_shards": 2, "first_cell": 2 * k, "n_cells": 2, "cells_in_stratum": 4, "cells_per_job": 2}
        return PerfRecord(method="onnx", stratum="B", n_cells=2, n_perturbations=6, n_sequences=8, wall_s=wall,
                          wall_with_warmup_s=wall + 1, cpu_time_s=2 * wall, cpu_percent=200.0, peak_rss_mb=rss,
                          process_peak_rss_mb=rss + 10, repeats=2, wall_repeats_s=[wall, wall + 1], cpu_repeats_s=[1.0, 2.0],
                          padding_fraction=0.5, mean_length=10.0, max_length=12 + k, n_batches=2, skipped={"delete:A": k},
                          machine={"cpu": cpu}, shard=info, **kw)

    merged = merge_perfs([shard(0, 2.0, 500.0, "cpu A"), shard(1, 3.0, 700.0, "cpu B", other_load_cores=0.5)])
    assert (merged.wall_s, merged.wall_with_warmup_s, merged.cpu_time_s) == (5.0, 7.0, 10.0)
    assert merged.wall_repeats_s == [5.0, 7.0] and merged.cpu_repeats_s == [2.0, 4.0] and merged.repeats == 2
    assert (merged.peak_rss_mb, merged.process_peak_rss_mb, merged.other_load_cores) == (700.0, 710.0, 0.5)
    assert merged.perturbations_per_s == pytest.approx(12 / 5) and merged.cpu_percent == pytest.approx(200.0)
    assert (merged.n_cells, merged.n_sequences, merged.n_batches, merged.max_length) == (4, 16, 4, 13)
    assert merged.padding_fraction == pytest.approx(0.5) and merged.mean_length == pytest.approx(10.0)
    assert merged.skipped == {"delete:A": 1} and "shards ran on 2 different CPUs (cpu A | cpu B)" in merged.note
    assert [s["peak_rss_mb"] for s in merged.shards] == [500.0, 700.0]
    write_perf(tmp_path / "m.perf.json", merged)
    assert read_perf(tmp_path / "m.perf.json") == merged
    with pytest.raises(ValueError, match="different numbers of repeats"):
        merge_perfs([shard(0, 2.0, 1.0, "a"), PerfRecord(**{**shard(1, 2.0, 1.0, "a").as_dict(), "repeats": 1,
                                                             "wall_repeats_s": [2.0], "cpu_repeats_s": [1.0]})])
    with pytest.raises(ValueError, match="'shard' has the keys"):
        PerfRecord(method="onnx", stratum="B", shard={"index": 0})

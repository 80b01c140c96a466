"""ISP methods, batching and the screen (netpert.isp.backends, netpert.isp.runner, netpert.isp.profiling)."""

from __future__ import annotations

import dataclasses
import json

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from netpert.errors import InputError
from netpert.isp.backends import DEFAULT_BATCHING, make_backend, resolve_device
from netpert.isp.backends.base import pad_batch
from netpert.isp.backends.torch_fast import amp_plan, cpu_bf16_support
from netpert.isp.methods import plan_methods, run_check
from netpert.isp.model import UNTRAINED_NOTE, build_model, write_model
from netpert.isp.perturb import make_specs
from netpert.isp.profiling import Profiler, throughput
from netpert.isp.records import read_perf, read_result
from netpert.isp.runner import infer_stratum, make_batches, run_isp
from netpert.isp.tokenizer import tokenize_for_model
from netpert.isp.tokens import read_tokens, tokenize_stratum

GENES = [f"G{i}" for i in range(40)]


def stratum_cells(n_cells=8, seed=0, stratum="T_cell"):
    rng = np.random.default_rng(seed)
    X = rng.poisson(rng.gamma(1.0, 2.0, size=len(GENES)), size=(n_cells, len(GENES))).astype(np.float32)
    X[:, :4] += rng.integers(1, 5, size=(n_cells, 4))  # G0..G3 expressed everywhere
    obs = pd.DataFrame({"cell_type": "T cell", "stratum": stratum}, index=[f"{stratum}_{i}" for i in range(n_cells)])
    return ad.AnnData(sp.csr_matrix(X), obs=obs, var=pd.DataFrame(index=GENES))


@pytest.fixture(scope="module")
def bundle():
    return build_model(stratum_cells(20, seed=1), "random-init:tiny", seed=0)


@pytest.fixture(scope="module")
def tokens(bundle):
    return tokenize_for_model(stratum_cells(), bundle)


def cos(a, b):
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


# --------------------------------------------------------------------------- batching


def test_make_batches_strategies():
    lengths = [5, 9, 4, 9, 3, 7, 8]
    groups = [0, 0, 0, 1, 1, 2, 2]
    assert [list(b) for b in make_batches(lengths, groups, "input_order", 3)] == [[0, 1, 2], [3, 4, 5], [6]]
    assert [list(b) for b in make_batches(lengths, groups, "length_sorted", 3)] == [[1, 3, 6], [5, 0, 2], [4]]
    # whole cells, longest cells first: cell 0 (max 9), cell 1 (9), cell 2 (8)
    assert [list(b) for b in make_batches(lengths, groups, "cell_grouped", 4)] == [[0, 1, 2], [3, 4, 5, 6]]
    # a cell larger than a batch gets batches of its own
    assert [list(b) for b in make_batches(lengths, groups, "cell_grouped", 2)] == [[0, 1], [2], [3, 4], [5, 6]]
    every = np.sort(np.concatenate(make_batches(lengths, groups, "cell_grouped", 3)))
    assert list(every) == list(range(7))
    # one cell per batch, longest cells first; a cell larger than a batch in near-equal parts
    assert [list(b) for b in make_batches(lengths, groups, "cell", 8)] == [[0, 1, 2], [3, 4], [5, 6]]
    assert [list(b) for b in make_batches(lengths, groups, "cell", 2)] == [[0, 1], [2], [3, 4], [5, 6]]
    big = make_batches([5] * 7, [0] * 7, "cell", 4)
    assert [len(b) for b in big] == [4, 3] and list(np.concatenate(big)) == list(range(7))
    with pytest.raises(InputError, match="unknown batching 'random'"):
        make_batches(lengths, groups, "random", 3)
    with pytest.raises(InputError, match="batch_size must be >= 1"):
        make_batches(lengths, groups, "input_order", 0)


def test_pad_batch():
    ids, mask = pad_batch([np.array([5, 6, 7]), np.array([8])], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]] and mask.tolist() == [[1, 1, 1], [1, 0, 0]]


# --------------------------------------------------------------------------- methods


def test_methods_agree_with_baseline(bundle, tokens):
    ids, mask = pad_batch(tokens.input_ids)
    outs = {m: make_backend(m, bundle, layer=-2, device="cpu").embed(ids, mask, return_tokens=True) for m in ("baseline", "batched", "amp")}
    base = outs["baseline"]
    assert base.cell.dtype == np.float32 and base.cell.shape == (len(tokens), 32)
    assert base.tokens.shape == (len(tokens), ids.shape[1], 32)
    # baseline = the model's hidden_states[-2] mean over real tokens, computed directly
    import torch

    with torch.no_grad():
        hs = bundle.model(input_ids=torch.as_tensor(ids), attention_mask=torch.as_tensor(mask), output_hidden_states=True).hidden_states
    direct = (hs[-2].numpy() * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
    np.testing.assert_allclose(base.cell, direct, rtol=1e-5, atol=1e-6)
    assert cos(outs["batched"].cell, base.cell).min() > 0.9999
    real = mask.astype(bool)
    assert cos(outs["batched"].tokens[real], base.tokens[real]).min() > 0.9999
    assert cos(outs["amp"].cell, base.cell).min() > 0.99  # bf16: looser
    # batched alone, in other batches (length-sorted, unpadded) still agrees
    fast = make_backend("batched", bundle, layer=-2, device="cpu")
    for i, seq in enumerate(tokens.input_ids[:3]):
        one = fast.embed(*pad_batch([seq]))
        assert cos(one.cell[0], base.cell[i]) > 0.9999


def test_layers_and_descriptions(bundle, tokens):
    ids, mask = pad_batch(tokens.input_ids[:2])
    last = make_backend("batched", bundle, layer=-1, device="cpu")
    assert last.describe()["layer"] == 2 and last.describe()["module"].startswith("BertModel: embeddings + 2")
    base_last = make_backend("baseline", bundle, layer=-1, device="cpu")
    np.testing.assert_allclose(last.embed(ids, mask).cell, base_last.embed(ids, mask).cell, rtol=1e-4, atol=1e-5)
    d = make_backend("amp", bundle, device="cpu").describe()
    assert d["amp_dtype"] == "bfloat16" and isinstance(d["amp_effective"], bool) and "bf16" in d["amp_note"]
    assert amp_plan("cuda")["amp_dtype"] == "float16"
    ok, why = cpu_bf16_support()
    assert isinstance(ok, bool) and why
    with pytest.raises(InputError, match="layer 5 .isp.layer. does not exist"):
        make_backend("batched", bundle, layer=5, device="cpu")


def test_plan_from_config_alone(bundle, tmp_path):
    # auto / cpu leave the CUDA-only methods out, cuda plans them on any machine (no probe)
    plan = plan_methods("auto", "auto")
    assert plan.methods[:3] == ("baseline", "batched", "amp") and "tensorrt" in plan.not_planned and not plan.explicit
    assert not plan.wants_gpu and "isp.device: cuda" in plan.not_planned["tensorrt"]
    cuda = plan_methods("auto", "cuda")
    assert "tensorrt" in cuda.methods and cuda.wants_gpu and not cuda.not_planned
    assert cuda.artifact_rules()["model.plan"] == "build_tensorrt"
    listed = plan_methods(["batched", "tensorrt", "batched"], "cpu")
    assert listed.methods == ("batched",) and "CUDA" in listed.not_planned["tensorrt"] and listed.explicit
    with pytest.raises(InputError, match="unknown ISP method 'fast'"):
        plan_methods(["fast"], "cpu")
    with pytest.raises(InputError, match="unknown ISP method 'fast'"):
        make_backend("fast", bundle)
    with pytest.raises(InputError, match="unknown device 'tpu'"):
        plan_methods("auto", "tpu")
    with pytest.raises(InputError, match="unknown device 'tpu'"):
        make_backend("batched", bundle, device="tpu")
    with pytest.raises(InputError, match="'auto' or a list"):
        plan_methods("all", "cpu")
    with pytest.raises(InputError, match="empty list"):
        plan_methods([], "cpu")
    assert resolve_device("cpu") == "cpu" and resolve_device("auto") in ("cpu", "cuda")
    with pytest.raises(ValueError, match="needs its artifact"):
        make_backend("onnx", bundle, device="cpu")
    with pytest.raises(InputError, match="artifact for method onnx not found"):
        make_backend("onnx", bundle, device="cpu", artifacts=[tmp_path / "model.onnx"])
    assert DEFAULT_BATCHING["onnx_int8"] == "cell" and DEFAULT_BATCHING["baseline"] == "input_order"


def test_run_check_where_the_job_runs(monkeypatch):
    import netpert.isp.methods as methods

    monkeypatch.setattr(methods, "cuda_available", lambda: False)
    # tensorrt planned for a GPU job that landed on a CPU-only machine: not run, and why
    device, reason, note = run_check("tensorrt", "cuda")
    assert device == "cpu" and reason == "no CUDA device in this job" and "ran on the CPU" in note
    device, reason, note = run_check("batched", "cuda")
    assert device == "cpu" and reason is None and "no CUDA device" in note
    assert run_check("batched", "auto") == ("cpu", None, "")
    # amp chosen by auto where it cannot gain is not run; listed by name it runs
    monkeypatch.setitem(methods.REGISTRY, "amp", dataclasses.replace(methods.REGISTRY["amp"], gain=lambda d: (False, "no bf16 units")))
    assert "cannot be faster" in run_check("amp", "auto", explicit=False)[1]
    assert run_check("amp", "auto", explicit=True)[1] is None
    monkeypatch.setattr(methods, "cuda_available", lambda: True)
    assert run_check("batched", "auto")[0] == "cuda" and run_check("batched", "cpu")[0] == "cpu"


def test_not_run_records(model_dir, tmp_path, monkeypatch):
    import netpert.isp.methods as methods
    from netpert.isp.evaluate import evaluate_run

    monkeypatch.setattr(methods, "cuda_available", lambda: False)
    tok = tmp_path / "T_cell.parquet"
    tokenize_stratum(stratum_cells(), model_dir, tok, targets_source="list", genes=["G0", "G2"])
    paths = {}
    for method in ("baseline", "tensorrt"):
        paths[method] = (tmp_path / method / "T_cell.npz", tmp_path / method / "T_cell.perf.json")
        infer_stratum(tok, model_dir, *paths[method], method=method, device="cuda", threads=1)
    perf = read_perf(paths["tensorrt"][1])
    assert perf.status == "not run" and perf.reason == "no CUDA device in this job" and not perf.ran
    assert read_result(paths["tensorrt"][0])["metadata"]["status"] == "not run"
    base = read_perf(paths["baseline"][1])
    assert base.ran and base.device == "cpu" and "ran on the CPU" in base.note
    table = evaluate_run([p[0] for p in paths.values()], [p[1] for p in paths.values()], tmp_path / "metrics.tsv",
                         not_planned={"onnx": "left out for the test"})
    rows = table.set_index(["method", "stratum"])
    assert rows.loc[("tensorrt", "all"), "status"] == "not run" and rows.loc[("tensorrt", "T_cell"), "reason"] == "no CUDA device in this job"
    assert rows.loc[("onnx", "all"), "reason"] == "left out for the test" and rows.loc[("baseline", "all"), "status"] == "ok"
    assert rows.loc[("baseline", "all"), "speedup"] == pytest.approx(1.0)
    with pytest.raises(InputError, match="not a netpert perf record"):
        bad = tmp_path / "bad.perf.json"
        bad.write_text(json.dumps({"method": "x", "stratum": "y", "wall_time_s": 1}))
        read_perf(bad)
    # a record written before process_peak_rss_mb had its name still reads, under the new name
    old = tmp_path / "old.perf.json"
    old.write_text(json.dumps({"method": "x", "stratum": "y", "ru_maxrss_mb": 812.5}))
    assert read_perf(old).process_peak_rss_mb == 812.5


def test_bad_batches(bundle):
    fast = make_backend("batched", bundle, device="cpu")
    with pytest.raises(ValueError, match="same shape"):
        fast.embed(np.ones((2, 3)), np.ones((2, 4)))
    with pytest.raises(ValueError, match="all 0"):
        fast.embed(np.ones((2, 3)), np.array([[1, 1, 1], [0, 0, 0]]))
    with pytest.raises(InputError, match="exceeds the model's 256 positions"):
        fast.embed(np.ones((1, 300)), np.ones((1, 300)))


# --------------------------------------------------------------------------- the screen


def test_screen_shifts_match_a_direct_computation(bundle, tokens):
    specs = make_specs(["G0", "G1", "G39"], bundle.token_dictionary, "delete", pairs=True)
    backend = make_backend("batched", bundle, device="cpu")
    res = run_isp(backend, tokens.input_ids, tokens.cell_ids, specs, id_to_gene=bundle.id_to_gene(),
                  special_ids=bundle.special_ids, batch_size=5, batching="length_sorted", top_n=3)
    tok = bundle.token_dictionary
    # direct: embed each cell and each perturbed cell alone, compare genes by id
    for row in res.table.itertuples():
        cell = np.asarray(tokens.input_ids[row.cell_index], dtype=np.int64)
        targets = [tok[g] for g in row.targets.split("+")]
        pert = cell[~np.isin(cell, targets)]
        o = backend.embed(*pad_batch([cell]), return_tokens=True)
        p = backend.embed(*pad_batch([pert]), return_tokens=True)
        assert cos(o.cell[0], p.cell[0]) == pytest.approx(row.cosine, abs=1e-5)
        np.testing.assert_allclose(res.original[row.cell_index], o.cell[0], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(res.perturbed[row.Index], p.cell[0], rtol=1e-4, atol=1e-5)
        keep = ~np.isin(cell, targets)
        gene_cos = cos(o.tokens[0, keep], p.tokens[0])  # the remaining genes keep their order
        assert row.cell_shift == pytest.approx(gene_cos.mean(), abs=1e-5)
        assert row.n_genes_compared == keep.sum()
        worst = np.argsort(gene_cos, kind="stable")[:3]
        inv = bundle.id_to_gene()
        assert list(res.top_genes[row.Index]) == [inv[int(cell[keep][k])] for k in worst]
        np.testing.assert_allclose(res.top_cosines[row.Index], gene_cos[worst], atol=1e-5)
    # G39 is rarely expressed: skipped cells are counted, not run
    n_expr = sum(int(tok["G39"] in c) for c in tokens.input_ids)
    assert res.skipped["delete:G39"] == len(tokens) - n_expr
    assert (res.table["perturbation"] == "delete:G0+G1").sum() == len(tokens)
    assert res.stats["n_sequences"] == len(tokens) + len(res.table)


@pytest.mark.parametrize("batching", ["input_order", "cell_grouped", "cell"])
def test_batching_does_not_change_the_results(bundle, tokens, batching):
    specs = make_specs(["G2", "G3"], bundle.token_dictionary, "overexpress")
    backend = make_backend("batched", bundle, device="cpu")
    kw = dict(id_to_gene=bundle.id_to_gene(), special_ids=bundle.special_ids, max_len=bundle.max_len)
    ref = run_isp(backend, tokens.input_ids, tokens.cell_ids, specs, batch_size=1, batching="input_order", **kw)
    res = run_isp(backend, tokens.input_ids, tokens.cell_ids, specs, batch_size=7, batching=batching, **kw)
    np.testing.assert_allclose(res.table["cosine"], ref.table["cosine"], atol=1e-5)
    np.testing.assert_allclose(res.table["cell_shift"], ref.table["cell_shift"], atol=1e-5)
    assert cos(res.perturbed, ref.perturbed).min() > 0.9999


def test_profiler_measures():
    with Profiler(interval=0.01, gpu=False) as prof:
        x = np.ones((300, 300))
        for _ in range(30):
            x = x @ x / 300
    s = prof.summary()
    assert s["wall_s"] > 0 and s["peak_rss_mb"] > 10 and s["process_peak_rss_mb"] >= s["peak_rss_mb"] * 0.5
    assert s["cpu_time_s"] >= 0 and s["gpu"] is None
    assert throughput(10, 5, 15, 2.0) == {"perturbations_per_s": 5.0, "cells_per_s": 2.5, "sequences_per_s": 7.5}


# --------------------------------------------------------------------------- workflow functions


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("isp") / "model"
    write_model(stratum_cells(20, seed=1), out, spec="random-init:tiny", seed=0)
    return out


def test_tokenize_and_infer_end_to_end(model_dir, tmp_path):
    from netpert.mr_table import MasterRegulatorTable

    mrs = tmp_path / "master_regulators.tsv"
    MasterRegulatorTable.build(
        pd.DataFrame({"stratum": ["T_cell", "T_cell", "T_cell", "B_cell"], "regulator": ["G3", "G1", "G2", "G5"],
                      "direction": ["down", "up", "up", "up"], "rank": [1, 1, 2, 1]}),
        pd.DataFrame({"stratum": ["T_cell", "B_cell"], "status": ["reported", "reported"]}),
    ).write(mrs)
    tok_path = tmp_path / "tokens" / "T_cell.parquet"
    meta = tokenize_stratum(stratum_cells(12), model_dir, tok_path, targets_path=mrs, top_k=2, cells_per_stratum=6, seed=1)
    assert meta["targets"] == ["G1", "G3"] and meta["n_cells"] == 6 and meta["n_cells_in_stratum"] == 12
    frame = pd.read_parquet(tok_path)
    assert list(frame.columns) == ["cell_id", "input_ids", "length"] and len(frame) == 6
    assert (frame["length"] == frame["input_ids"].map(len)).all()
    tf = read_tokens(tok_path)
    assert [s.label for s in tf.specs] == ["delete:G1", "delete:G3"]
    outs = {}
    for method in ("baseline", "batched"):
        npz, perf = tmp_path / method / "T_cell.npz", tmp_path / method / "T_cell.perf.json"
        infer_stratum(tok_path, model_dir, npz, perf, method=method, layer=-2, device="cpu", threads=1)
        outs[method] = read_result(npz)
        p = json.loads(perf.read_text())
        assert p["n_cells"] == 6 and p["n_perturbations"] == 12 and p["n_sequences"] == 18
        assert p["note"] == UNTRAINED_NOTE and p["trained"] is False
        assert p["perturbations_per_s"] > 0 and p["peak_rss_mb"] > 0 and p["batching"] == DEFAULT_BATCHING[method]
        assert p["backend"]["method"] == method
        assert outs[method]["metadata"]["note"] == UNTRAINED_NOTE
    # repeats: every repeat timed, the median kept, the results those of one screen
    npz1, perf1 = tmp_path / "r1" / "T_cell.npz", tmp_path / "r1" / "T_cell.perf.json"
    infer_stratum(tok_path, model_dir, npz1, perf1, method="batched", layer=-2, device="cpu", threads=1, repeats=1)
    p1, p3 = json.loads(perf1.read_text()), json.loads((tmp_path / "batched" / "T_cell.perf.json").read_text())
    assert p1["repeats"] == 1 and len(p1["wall_repeats_s"]) == 1 and p3["repeats"] == 3
    assert len(p3["wall_repeats_s"]) == len(p3["cpu_repeats_s"]) == 3
    assert p3["wall_s"] == pytest.approx(float(np.median(p3["wall_repeats_s"])))
    assert p3["perturbations_per_s"] == pytest.approx(12 / p3["wall_s"])
    assert p3["other_load_cores"] is None or p3["other_load_cores"] >= 0
    np.testing.assert_array_equal(read_result(npz1)["perturbed"], outs["batched"]["perturbed"])
    with pytest.raises(InputError, match="isp.repeats must be at least 1"):
        infer_stratum(tok_path, model_dir, npz1, perf1, method="batched", device="cpu", repeats=0)
    a, b = outs["baseline"], outs["batched"]
    assert a["original"].shape == (6, 32) and a["perturbed"].shape == (12, 32)
    assert list(a["perturbation"][:2]) == ["delete:G1", "delete:G3"]
    assert cos(a["perturbed"], b["perturbed"]).min() > 0.9999
    np.testing.assert_allclose(a["cell_shift"], b["cell_shift"], atol=1e-5)
    # pairs and a list of genes
    meta = tokenize_stratum(stratum_cells(4), model_dir, tmp_path / "list.parquet", targets_source="list",
                            genes=["G0", "G2"], pairs=True, perturbation="inhibit", shift_fraction=0.5)
    assert meta["applicable"] == {"inhibit:G0": 4, "inhibit:G2": 4, "inhibit:G0+G2": 4}


def test_workflow_input_errors(model_dir, tmp_path):
    from netpert.mr_table import MasterRegulatorTable

    mrs = tmp_path / "mr.tsv"
    MasterRegulatorTable.build(pd.DataFrame({"stratum": ["T_cell"], "regulator": ["NOPE1"], "direction": ["up"], "rank": [1]}),
                               pd.DataFrame({"stratum": ["T_cell"], "status": ["reported"]})).write(mrs)
    with pytest.raises(InputError, match="not in the model's vocabulary: NOPE1"):
        tokenize_stratum(stratum_cells(), model_dir, tmp_path / "t.parquet", targets_path=mrs)
    with pytest.raises(InputError, match="does not list stratum 'B_cell'"):
        tokenize_stratum(stratum_cells(stratum="B_cell"), model_dir, tmp_path / "t.parquet", targets_path=mrs)
    old = tmp_path / "old_mr.tsv"  # the layout before effect sizes and per-stratum summaries
    pd.DataFrame({"stratum": ["T_cell"], "regulator": ["G1"], "rank": [1]}).to_csv(old, sep="\t", index=False)
    with pytest.raises(InputError, match="rerun the master_regulators rule"):
        tokenize_stratum(stratum_cells(), model_dir, tmp_path / "t.parquet", targets_path=old)
    with pytest.raises(InputError, match="is empty"):
        tokenize_stratum(stratum_cells()[:0], model_dir, tmp_path / "t.parquet", targets_source="list", genes=["G0"])
    with pytest.raises(InputError, match="isp.targets.genes is empty"):
        tokenize_stratum(stratum_cells(), model_dir, tmp_path / "t.parquet", targets_source="list")
    with pytest.raises(InputError, match="unknown perturbation"):
        tokenize_stratum(stratum_cells(), model_dir, tmp_path / "t.parquet", targets_source="list", genes=["G0"], perturbation="ko")
    assert not (tmp_path / "t.parquet").exists()
    tok = tmp_path / "ok.parquet"
    tokenize_stratum(stratum_cells(), model_dir, tok, targets_source="list", genes=["G0"])
    with pytest.raises(InputError, match="unknown ISP method 'turbo'"):
        infer_stratum(tok, model_dir, tmp_path / "x.npz", tmp_path / "x.json", method="turbo")
    with pytest.raises(InputError, match="unknown device 'gpu'"):
        infer_stratum(tok, model_dir, tmp_path / "x.npz", tmp_path / "x.json", method="batched", device="gpu")
    with pytest.raises(InputError, match="missing token_dictionary.json"):
        broken = tmp_path / "broken"
        broken.mkdir()
        for f in ("config.json", "model.safetensors", "netpert_model.json"):
            (broken / f).write_bytes((model_dir / f).read_bytes())
        infer_stratum(tok, broken, tmp_path / "x.npz", tmp_path / "x.json", method="batched", device="cpu")
    with pytest.raises(InputError, match="token file not found"):
        infer_stratum(tmp_path / "none.parquet", model_dir, tmp_path / "x.npz", tmp_path / "x.json", method="batched")
    assert not (tmp_path / "x.npz").exists() and not (tmp_path / "x.json").exists()


def test_benchmark_quick(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "isp.csv"
    proc = subprocess.run([sys.executable, str(root / "benchmarks" / "benchmark_isp.py"), "--quick", "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = pd.read_csv(out)
    assert {"name", "size", "seconds", "ratio", "agreement"} <= set(rows.columns)
    assert {"baseline", "batched", "onnx", "onnx_int8"} <= set(rows["name"])
    base = rows.set_index("name").loc["baseline"]
    assert base["ratio"] == pytest.approx(1.0) and (rows["seconds"] > 0).all()
    assert (rows["agreement"] > 0.999).all()
    assert (rows["gops"] > 0).all() and rows.set_index("name").loc["onnx_int8", "pct_int8_peak"] > 0
    assert {"ratio_min", "ratio_max", "seconds_min", "seconds_max", "meets_bar", "effect_spearman"} <= set(rows.columns)
    # the CPU it ran on: flags, the int8 kernel, the clock and where it comes from, the peaks
    for text in ("# SIMD flags:", "# ONNX Runtime int8 kernel", "# clock:", "# peak int8", "# int8 candidates", "# kept ",
                 "# tuned:", "# work per screen"):
        assert text in proc.stdout, text


def test_int8_batch_size_and_threads_as_quantize_onnx_tuned_them(model_dir, tmp_path):
    """isp.batch_size.onnx_int8 'auto': the batch size (and threads, where fewer were faster) that
    quantize_onnx measured fastest, read from the int8 file; a file without them gets the fallback."""
    pytest.importorskip("onnxruntime")
    import onnx

    from netpert.isp.export import export_onnx, sample_batches
    from netpert.isp.methods import AUTO, REGISTRY
    from netpert.isp.model import as_bundle
    from netpert.isp.quantize import TUNED_KEY, quantize_onnx, read_tuning
    from netpert.isp.runner import resolve_settings

    bundle = as_bundle(model_dir)
    export_onnx(bundle.model, tmp_path / "model.onnx", layer=-2)
    batches = sample_batches(bundle.model.config.vocab_size, [(4, 24)] * 2, seed=0)
    int8 = tmp_path / "model.int8.onnx"
    report = quantize_onnx(tmp_path / "model.onnx", int8, batches, candidates=["dynamic-qint8-perchannel"], drift=False,
                           threads=2, tune_batch_sizes=(2, 8), timing_rounds=1, bar={"spearman": -1.0})
    tuned = read_tuning(int8)
    assert REGISTRY["onnx_int8"].batch_size == AUTO
    s = resolve_settings("onnx_int8", threads=2, artifacts=int8)
    assert (s["batching"], s["batch_size"]) == ("cell", report["tuning"]["batch_size"]) == ("cell", tuned["batch_size"])
    assert s["threads"] == (2 if tuned["threads"] == 2 else 1) and s["tuning"]["source"] == "model.int8.onnx (quantize_onnx)"

    def retuned(values, name):
        proto = onnx.load(str(int8))
        for p in proto.metadata_props:
            if p.key == TUNED_KEY:
                p.value = json.dumps(values)
        path = tmp_path / name / "model.int8.onnx"
        path.parent.mkdir()
        onnx.save(proto, str(path))
        return path

    one = retuned({**tuned, "batch_size": 3, "threads": 1, "threads_tried": [1, 2, 4]}, "one")
    assert {k: resolve_settings("onnx_int8", threads=4, artifacts=one)[k] for k in ("batch_size", "threads")} == {"batch_size": 3, "threads": 1}
    # the most threads tried was fastest: the job keeps its own (more may be faster still)
    most = retuned({**tuned, "batch_size": 3, "threads": 2, "threads_tried": [1, 2]}, "most")
    assert resolve_settings("onnx_int8", threads=4, artifacts=most)["threads"] == 4
    assert resolve_settings("onnx_int8", threads=1, artifacts=one)["threads"] == 1
    # an explicit number, another batching, a file without tuning
    assert resolve_settings("onnx_int8", None, 5, 2, int8)["batch_size"] == 5
    other = resolve_settings("onnx_int8", "cell_grouped", None, 2, int8)
    assert other["batch_size"] == REGISTRY["onnx_int8"].fallback_batch_size and "tuned for batching cell" in other["tuning"]["reason"]
    plain = tmp_path / "plain.int8.onnx"
    quantize_onnx(tmp_path / "model.onnx", plain, batches, candidates=["dynamic-qint8"], drift=False, tune=False,
                  timing_rounds=1, bar={"spearman": -1.0})
    assert read_tuning(plain) is None
    fallback = resolve_settings("onnx_int8", threads=2, artifacts=plain)
    assert fallback["batch_size"] == 16 and fallback["threads"] == 2 and fallback["tuning"]["reason"] == "no tuning recorded in the artifact"
    assert resolve_settings("batched", threads=2) == {"batching": "length_sorted", "batch_size": 32, "threads": 2, "tuning": None}
    with pytest.raises(InputError, match="must be a positive integer or 'auto'"):
        resolve_settings("onnx_int8", None, "many", 2, int8)
    with pytest.raises(InputError, match="batch_size must be >= 1"):
        resolve_settings("batched", None, 0)
    with pytest.raises(InputError, match="unknown batching"):
        resolve_settings("batched", "random")
    # the job: the tuned batch size and the tuning in perf.json
    tok = tmp_path / "T.parquet"
    tokenize_stratum(stratum_cells(), model_dir, tok, targets_source="list", genes=["G0", "G1"])
    npz, perf = tmp_path / "i8.npz", tmp_path / "i8.perf.json"
    infer_stratum(tok, model_dir, npz, perf, method="onnx_int8", device="cpu", threads=2, repeats=1, artifacts=[str(one)])
    p = json.loads(perf.read_text())
    assert (p["batching"], p["batch_size"], p["threads"]) == ("cell", 3, 1)
    assert p["backend"]["tuning"]["batch_size"] == 3 and p["backend"]["tuning"]["source"].startswith("model.int8.onnx")
    assert read_result(npz)["metadata"]["batch_size"] == 3

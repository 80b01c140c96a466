"""ISP fast methods on CPU: ONNX export + check, the onnx backend, int8 quantisation and its batch drift."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("onnxruntime")

from netpert.errors import InputError  # noqa: E402
from netpert.isp.backends.base import check_batch, pad_batch, resolve_layer  # noqa: E402
from netpert.isp.backends.onnx import OnnxBackend, available, resolve_providers  # noqa: E402
from netpert.isp.export import ExportCheckError, export_onnx, reference_embed, sample_batches  # noqa: E402
from netpert.isp.metrics import cosine_rows  # noqa: E402
from netpert.isp.quantize import (  # noqa: E402
    QUANT_RECIPES,
    QuantizationError,
    _choose,
    as_fast,
    composition_drift,
    int8_kernel,
    quantize_onnx,
    read_tuning,
    screen_groups,
    synthetic_screens,
    token_batches,
    uniform_batches,
    unpad_batches,
    weight_matmul_nodes,
)

VOCAB = 200
ATOL = 1e-4


def tiny_model(seed: int = 0, layers: int = 2, init: float = 0.3):
    """A tiny Geneformer-shaped BertForMaskedLM (relu, absolute positions, pad id 0).

    ``init`` 0.3 (BERT's default is 0.02) gives cells distinct embeddings (mean cosine
    between cells ~0.85) and heterogeneous activations, so that int8 errors and batch
    drift are visible at this size.
    """
    torch.manual_seed(seed)
    config = transformers.BertConfig(
        vocab_size=VOCAB,
        hidden_size=64,
        num_hidden_layers=layers,
        num_attention_heads=4,
        intermediate_size=128,
        max_position_embeddings=128,
        hidden_act="relu",
        pad_token_id=0,
        initializer_range=init,
    )
    return transformers.BertForMaskedLM(config).eval()


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.fixture(scope="module")
def exported(model, tmp_path_factory):
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    report = export_onnx(model, path, layer=-2, opset=17, atol=ATOL)
    return path, report


@pytest.fixture(scope="module")
def quantized(exported, tmp_path_factory):
    path, _ = exported
    out = tmp_path_factory.mktemp("int8")
    calibration = sample_batches(VOCAB, [(8, 64)] * 4, seed=1)
    evaluation = sample_batches(VOCAB, [(8, 64)] * 3, seed=2)
    candidates = ["dynamic-qint8", "dynamic-quint8", "dynamic-qint8-perchannel", "dynamic-qint8-perchannel-reduced",
                  "static-qdq", "static-qdq-percentile"]
    report = quantize_onnx(path, out / "model.int8.onnx", calibration, evaluation, candidates=candidates, keep_dir=out,
                           threads=2, tune_batch_sizes=(2, 4, 8))
    return out / "model.int8.onnx", report, out


def padded_batch(batch, length, seed):
    return sample_batches(VOCAB, [(batch, length)], seed=seed)[0]


# --------------------------------------------------------------------------- export


def test_export_matches_pytorch_on_other_shapes_with_padding(model, exported):
    path, report = exported
    assert report["passed"] and report["exporter"] in ("dynamo", "torchscript")
    assert report["opset"] >= 17
    assert report["max_abs_diff"] <= ATOL
    # the check ran on other batch sizes and lengths than the traced (2, 16) example, with padded cells
    shapes = {(c["batch"], c["length"]) for c in report["checks"]}
    assert len(shapes) >= 3 and (2, 16) not in shapes
    assert sum(c["n_padded_cells"] for c in report["checks"]) > 0
    # and independently here, on yet another shape
    ids, mask = padded_batch(5, 40, seed=11)
    assert (mask == 0).any()
    ref_cell, ref_tokens = reference_embed(model, ids, mask, layer=-2)
    out = OnnxBackend(path, threads=1).embed(ids, mask, return_tokens=True)
    assert np.abs(out.cell - ref_cell).max() <= ATOL
    real = mask.astype(bool)
    assert np.abs(out.tokens - ref_tokens)[real].max() <= ATOL


def test_export_graph_is_single_file_dynamic_and_cut_at_the_layer(exported):
    path, report = exported
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.onnx"]  # no .data file, no temp leftovers
    proto = onnx.load(str(path), load_external_data=False)
    assert not [t.name for t in proto.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    assert [o.name for o in proto.graph.output] == ["cell", "tokens"]
    for inp in proto.graph.input:
        dims = inp.type.tensor_type.shape.dim
        assert len(dims) == 2 and all(d.dim_param and not d.dim_value for d in dims), inp
    # layer -2 of a 2-layer model = hidden_states[1]: one encoder layer, one Softmax
    assert report["n_layers_exported"] == 1
    assert sum(n.op_type == "Softmax" for n in proto.graph.node) == 1
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["netpert.layer"] == "-2" and meta["netpert.precision"] == "fp32"


@pytest.mark.parametrize("layer, n_softmax", [(-1, 3), (0, 0), (2, 2)])
def test_export_other_layers_torchscript(tmp_path, layer, n_softmax):
    model = tiny_model(seed=1, layers=3)
    path = tmp_path / "m.onnx"
    report = export_onnx(model, path, layer=layer, exporter="torchscript", opset=18, check_shapes=((3, 21),))
    assert report["exporter"] == "torchscript" and report["opset"] == 18
    proto = onnx.load(str(path))
    assert sum(n.op_type == "Softmax" for n in proto.graph.node) == n_softmax
    ids, mask = padded_batch(4, 30, seed=5)
    ref_cell, _ = reference_embed(model, ids, mask, layer=layer)
    assert np.abs(OnnxBackend(path).embed(ids, mask).cell - ref_cell).max() <= ATOL


def test_export_failure_reports_the_difference_and_leaves_no_file(model, tmp_path):
    path = tmp_path / "model.onnx"
    with pytest.raises(ExportCheckError, match=r"max \|difference\| = [0-9.e+-]+ > atol 0") as err:
        export_onnx(model, path, exporter="torchscript", atol=0.0)
    assert err.value.report["max_abs_diff"] > 0
    assert list(tmp_path.iterdir()) == []


def test_export_input_errors(model, tmp_path):
    with pytest.raises(InputError, match="opset"):
        export_onnx(model, tmp_path / "a.onnx", opset=16)
    with pytest.raises(InputError, match="layer 3 .isp.layer. does not exist"):
        export_onnx(model, tmp_path / "a.onnx", layer=3)
    with pytest.raises(InputError, match="exporter"):
        export_onnx(model, tmp_path / "a.onnx", exporter="tf2onnx")
    with pytest.raises(InputError, match="BertModel or BertForMaskedLM"):
        export_onnx(torch.nn.Linear(2, 2), tmp_path / "a.onnx")
    assert list(tmp_path.iterdir()) == []


def test_resolve_layer():
    assert [resolve_layer(x, 6) for x in (-1, -2, -7, 0, 6)] == [6, 5, 0, 0, 6]
    for bad in (7, -8):
        with pytest.raises(InputError):
            resolve_layer(bad, 6)


# --------------------------------------------------------------------------- onnx backend


def test_onnx_backend_equals_torch_and_describes_itself(model, exported):
    path, _ = exported
    backend = OnnxBackend(path, threads=1, providers="auto", name="onnx")
    ids, mask = padded_batch(3, 25, seed=3)
    out = backend.embed(ids, mask)
    assert out.tokens is None and out.cell.shape == (3, 64) and out.cell.dtype == np.float32
    with_tokens = backend.embed(ids, mask, return_tokens=True)
    assert with_tokens.tokens.shape == (3, 25, 64)
    np.testing.assert_array_equal(with_tokens.cell, out.cell)
    ref_cell, _ = reference_embed(model, ids, mask, layer=-2)
    assert np.abs(out.cell - ref_cell).max() <= ATOL
    info = backend.describe()
    assert info["providers"] == ["CPUExecutionProvider"] and info["device"] == "cpu"
    assert info["threads"] == 1 and info["graph_optimization_level"] == "ORT_ENABLE_ALL"
    assert info["cpu_memory_arena"] is False
    assert info["file_size_bytes"] == path.stat().st_size and info["precision"] == "fp32"
    assert backend.layer == info["layer"] == 1 and info["layer_requested"] == -2  # hidden_states[1] of 2 layers
    json.dumps(info)


def test_onnx_backend_input_errors(exported, tmp_path):
    path, _ = exported
    backend = OnnxBackend(path)
    with pytest.raises(ValueError, match="same shape"):
        backend.embed(np.ones((2, 5)), np.ones((2, 4)))
    with pytest.raises(ValueError, match="at least one real token"):
        backend.embed(np.ones((2, 5)), np.array([[1] * 5, [0] * 5]))
    with pytest.raises(InputError, match="exceeds the model's 128 positions"):
        backend.embed(np.ones((1, 129)), np.ones((1, 129)))
    with pytest.raises(InputError, match="not found"):
        OnnxBackend(tmp_path / "missing.onnx")
    with pytest.raises(InputError, match="not available"):
        OnnxBackend(path, providers=["no-such-provider"])
    with pytest.raises(InputError, match="threads"):
        OnnxBackend(path, threads=0)


def test_resolve_providers_pure():
    gpu = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert resolve_providers("auto", gpu, cuda_device=True) == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert resolve_providers("auto", gpu, cuda_device=False) == ["CPUExecutionProvider"]
    assert resolve_providers("auto", ["CPUExecutionProvider"], cuda_device=True) == ["CPUExecutionProvider"]
    assert resolve_providers(["tensorrt", "cuda"], gpu) == gpu
    assert resolve_providers("cpu", gpu) == ["CPUExecutionProvider"]
    with pytest.raises(InputError, match="onnxruntime-gpu"):
        resolve_providers("cuda", ["CPUExecutionProvider"])


def test_available_onnx():
    ok, reason = available()
    assert ok and "onnxruntime" in reason and "CPUExecutionProvider" in reason


def test_check_batch_casts_to_int64():
    ids, mask = check_batch(np.array([[3, 4, 0]], dtype=np.int32), np.array([[1, 1, 0]], dtype=np.int32))
    assert ids.dtype == mask.dtype == np.int64


# --------------------------------------------------------------------------- int8


def test_quantized_model_meets_the_bar(model, quantized):
    path, report, _ = quantized
    assert report["preprocess"]["symbolic_shape_inference"]  # ORT's full pre-processing ran
    chosen = report["chosen"]
    entry = report["candidates"][chosen]
    assert entry["passed"] and entry["mean_cosine"] >= 0.999 and entry["min_cosine"] >= 0.99
    assert report["evaluation_held_out"]
    assert report["recommended_batching"] == ("cell" if chosen.startswith("dynamic") else "any")
    for name, c in report["candidates"].items():
        assert "error" not in c, (name, c.get("error"))
        rho = c["screen"]["shift_spearman"]
        assert c["passed"] == (c["mean_cosine"] >= 0.999 and c["min_cosine"] >= 0.99 and rho >= 0.95)
        assert c["passed"] == (not c["failed"])
        # every candidate timed in every round, on the same screens as fp32
        assert len(c["seconds_rounds"]) == 3 and c["seconds"] == pytest.approx(np.median(c["seconds_rounds"]))
        assert c["speed_vs_fp32"] == pytest.approx(report["fp32"]["seconds"] / c["seconds"])
    # kept: the fastest candidate meeting the bar (select="speed"; of those within 3% of the
    # fastest median, the most accurate), and the report says so
    assert report["select_used"] == "speed" and report["speed_tolerance"] == 0.03
    passing = {k: v["seconds"] for k, v in report["candidates"].items() if v["passed"]}
    tied = [k for k, t in passing.items() if t <= 1.03 * min(passing.values())]
    assert chosen in tied and entry["mean_cosine"] == max(report["candidates"][k]["mean_cosine"] for k in tied)
    assert report["why"].startswith(f"{chosen}: the fastest of the {len(passing)} candidates meeting the bar" if len(tied) == 1
                                    else f"{chosen}: of the {len(passing)} candidates meeting the bar, {len(tied)} were as fast")
    assert report["screens"]["n_perturbations"] == 3 * report["screens"]["n_cells"] > 0
    assert report["machine"]["int8_kernel"] == int8_kernel()
    # tuned: every thread count up to 2 x every batch size giving distinct batches, fastest kept in the file
    tuning = report["tuning"]
    assert tuning["threads_tried"] == [1, 2] and tuning["batching"] == "cell"
    # 4 items per screen: batch sizes 4 and 8 make the same batches (8, the larger, is timed and may be kept)
    assert {(g["threads"], g["batch_size"]) for g in tuning["grid"]} == {(1, 2), (1, 8), (2, 2), (2, 8)}
    assert tuning["batch_sizes_same_batches"] == {"4": 8}
    fastest = min(g["seconds"] for g in tuning["grid"])
    tied = [(g["batch_size"], g["threads"]) for g in tuning["grid"] if g["seconds"] <= 1.03 * fastest]
    assert (tuning["batch_size"], tuning["threads"]) == max(tied)
    assert read_tuning(path) == {k: tuning[k] for k in ("batching", "batch_size", "threads", "threads_tried", "cpu")}
    # the kept file, against PyTorch fp32, on cells it was not calibrated or scored on
    backend = OnnxBackend(path, name="onnx_int8")
    info = backend.describe()
    assert info["precision"] == "int8" and info["quantization"] == chosen
    assert info["providers"] == ["CPUExecutionProvider"] and info["provider_note"].startswith("int8 model")
    ids, mask = padded_batch(8, 50, seed=21)
    cos = cosine_rows(backend.embed(ids, mask).cell, reference_embed(model, ids, mask, layer=-2)[0])
    assert cos.mean() >= 0.999 and cos.min() >= 0.99
    assert path.stat().st_size < report["fp32"]["file_size_bytes"]


def test_static_quantisation_keeps_the_residual_stream_in_float(exported, quantized):
    _, report, keep = quantized
    proto = onnx.load(str(keep / "static-qdq.onnx"))
    producers = {o: n.op_type for n in proto.graph.node for o in n.output}
    consumers = {}
    for n in proto.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n.op_type)
    # every activation DequantizeLinear feeds MatMuls only (weights in the MatMul B slot), never the residual Add
    for n in proto.graph.node:
        if n.op_type == "DequantizeLinear" and n.input[0] in producers:
            assert set(consumers[n.output[0]]) == {"MatMul"}, consumers[n.output[0]]
    # only the weight MatMuls (6 per layer: Q, K, V, O, FFN x2) are quantised; the attention itself
    # (Q.K^T, softmax, P.V) is fused into one float MultiHeadAttention per layer before quantising
    matmuls = [n for n in proto.graph.node if n.op_type == "MatMul"]
    quantised = [n for n in matmuls if all(producers.get(i) == "DequantizeLinear" for i in n.input)]
    n_fused = sum(n.op_type == "MultiHeadAttention" for n in proto.graph.node)
    assert report["attention_fused"] == n_fused == 1
    assert len(matmuls) == 6 and len(quantised) == 6
    assert len(weight_matmul_nodes(exported[0])) == 6


def test_batch_composition_drift_measured_and_fixed(quantized):
    _, report, _ = quantized
    fp32 = report["fp32"]["drift"]
    dynamic = report["candidates"]["dynamic-qint8"]["drift"]
    static = report["candidates"]["static-qdq"]["drift"]
    # dynamic activation scales: the same cell moves with its batch, far above fp32's rounding floor
    assert dynamic["spread_max"] > 1e-6 > 1e-10 > fp32["spread_max"]
    # fix 1, static calibration: scales fixed, composition no longer matters (fp32-like spread)
    assert static["spread_max"] < 1e-10
    assert static["shift_error_grouped_mean"] == pytest.approx(static["shift_error_mixed_mean"], rel=1e-6, abs=1e-12)
    # fix 2, cell_grouped batching: original and perturbations share scales, the shift error drops
    assert dynamic["shift_error_grouped_mean"] < dynamic["shift_error_mixed_mean"]


def test_composition_drift_of_fp32_is_rounding_only(exported):
    path, _ = exported
    cells = unpad_batches(sample_batches(VOCAB, [(8, 40)] * 2, seed=9))
    drift = composition_drift(OnnxBackend(path), cells, n_probes=4, n_perturb=2, n_compositions=2, batch_size=4)
    assert drift["spread_max"] < 1e-10 and drift["shift_error_mixed_max"] < 1e-7
    assert drift["reference_shift_mean"] > 0
    with pytest.raises(InputError, match="at least 2 cells"):
        composition_drift(OnnxBackend(path), [np.arange(1, 3)], n_perturb=3)


def test_quantize_fails_clearly_when_nothing_passes(exported, tmp_path):
    path, _ = exported
    batches = sample_batches(VOCAB, [(4, 32)] * 2, seed=4)
    dst = tmp_path / "model.int8.onnx"
    with pytest.raises(QuantizationError, match="no int8 candidate meets the consistency bar") as err:
        quantize_onnx(path, dst, batches, candidates=["dynamic-qint8"], bar={"mean_cosine": 0.9999999999}, drift=False)
    assert isinstance(err.value, InputError)
    assert "dynamic-qint8: mean 0.99" in str(err.value)
    assert not dst.exists() and list(tmp_path.iterdir()) == []
    with pytest.raises(InputError, match="unknown int8 candidate"):
        quantize_onnx(path, dst, batches, candidates=["int4-magic"])
    with pytest.raises(InputError, match="not found"):
        quantize_onnx(tmp_path / "nope.onnx", dst, batches)


def test_selection_takes_the_fastest_candidate_meeting_the_bar():
    cands = {
        "fast-but-off": {"passed": False, "seconds": 0.5, "mean_cosine": 0.99},
        "slow": {"passed": True, "seconds": 2.0, "mean_cosine": 0.99999, "min_cosine": 0.9999},
        "fast": {"passed": True, "seconds": 1.0, "mean_cosine": 0.9995, "min_cosine": 0.999},
    }
    assert _choose(cands, "speed") == "fast"
    assert _choose(cands, "accuracy") == "slow"
    assert _choose({"x": {"passed": False}}, "speed") is None
    # within the tolerance of the fastest (timing noise): the most accurate of those
    cands["near"] = {"passed": True, "seconds": 1.02, "mean_cosine": 0.9999, "min_cosine": 0.999}
    assert _choose(cands, "speed") == "near" and _choose(cands, "speed", tolerance=0.01) == "fast"
    assert as_fast(cands) == ["fast", "near"]


def test_reduced_range_recipe_keeps_weights_within_7_bits(exported, quantized):
    """7-bit weights: a u8 x s8 pair sum (2 x 255 x 64) stays within int16, so AVX2's vpmaddubsw cannot saturate."""
    from onnx import numpy_helper

    _, _, keep = quantized
    weights = {}
    for name in ("dynamic-qint8-perchannel", "dynamic-qint8-perchannel-reduced"):
        proto = onnx.load(str(keep / f"{name}.onnx"))
        ints = [numpy_helper.to_array(t) for t in proto.graph.initializer if t.data_type == onnx.TensorProto.INT8]
        assert ints, name
        weights[name] = max(int(np.abs(w.astype(np.int32)).max()) for w in ints)
    assert weights["dynamic-qint8-perchannel"] == 127
    assert weights["dynamic-qint8-perchannel-reduced"] <= 64
    assert 2 * 255 * weights["dynamic-qint8-perchannel-reduced"] <= 32767


def test_int8_kernel_follows_the_cpu_flags():
    assert int8_kernel({"avx2", "avx512f", "avx512bw", "avx512_vnni"}).startswith("u8s8 AVX-512 VNNI")
    assert int8_kernel({"avx2", "avx_vnni"}).startswith("u8s8 AVX-VNNI")
    assert "saturate" in int8_kernel({"avx2", "avx512f", "avx512bw"})
    assert "saturate" in int8_kernel({"avx2", "fma"}) and int8_kernel({"avx2"}).startswith("u8s8 AVX2")
    assert int8_kernel(set()).startswith("u8s8 SSE")


def test_screens_from_token_files_and_synthetic(tmp_path):
    from netpert.isp.perturb import PerturbationSpec
    from netpert.isp.tokens import write_tokens

    rng = np.random.default_rng(0)
    cells = [rng.permutation(np.arange(1, 60))[: rng.integers(10, 40)] for _ in range(12)]
    cells[0] = np.concatenate([[7], cells[0][cells[0] != 7]])  # token 7 first in one cell
    specs = [PerturbationSpec(("G7",), (7,), "delete"), PerturbationSpec(("G9",), (9,), "overexpress")]
    path = tmp_path / "t.parquet"
    write_tokens(path, [f"c{i}" for i in range(12)], cells, specs, {"stratum": "s", "max_len": 64, "special_tokens": False})
    screens, info = screen_groups([path], n_calibration=4, n_evaluation=6, n_cells=5, seed=0)
    _, ev, _ = token_batches([path], n_calibration=4, n_evaluation=6, seed=0)
    held_out = [tuple(c) for c in unpad_batches(ev)]
    assert len(screens) == info["n_cells"] == 5
    for screen in screens:
        original = screen[0]
        assert tuple(original) in held_out[:5]
        # overexpress applies everywhere (G9 first), delete only where token 7 is expressed
        assert len(screen) == 1 + 1 + int(7 in original)
        assert any(s[0] == 9 for s in screen[1:])
    assert info["n_perturbations"] == sum(len(s) - 1 for s in screens)
    bare = tmp_path / "bare.parquet"
    write_tokens(bare, ["a", "b"], cells[:2], [], {"stratum": "s"})
    assert screen_groups([bare])[0] is None
    synth = synthetic_screens(cells, n_cells=3, n_perturb=2, seed=1)
    assert len(synth) == 3 and all(len(s) == 3 and all(len(p) == len(s[0]) - 1 for p in s[1:]) for s in synth)


def test_recipes_cover_the_config_defaults():
    for name in ("dynamic-qint8", "dynamic-quint8", "dynamic-qint8-perchannel", "dynamic-qint8-perchannel-reduced", "static-qdq"):
        assert name in QUANT_RECIPES
    assert QUANT_RECIPES["dynamic-qint8-perchannel-reduced"].reduce_range


# --------------------------------------------------------------------------- helpers


def test_pad_unpad_and_uniform_batches():
    cells = [np.array([5, 6, 7]), np.array([8]), np.array([9, 10])]
    ids, mask = pad_batch(cells)
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0], [9, 10, 0]] and mask.sum(1).tolist() == [3, 1, 2]
    back = unpad_batches([(ids, mask)])
    assert [c.tolist() for c in back] == [c.tolist() for c in cells]
    batches = [pad_batch(cells[:2]), pad_batch(cells[2:] + cells[:1])]
    uniform = uniform_batches(batches, batch_size=2)
    assert {b[0].shape for b in uniform} == {(2, 3)}
    with pytest.raises(ValueError):
        pad_batch([np.array([], dtype=int)])


def test_cosine_rows():
    a = np.array([[1.0, 0.0], [1.0, 1.0]])
    np.testing.assert_allclose(cosine_rows(a, np.array([[2.0, 0.0], [-1.0, -1.0]])), [1.0, -1.0])


def test_token_batches(tmp_path):
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(0)
    lengths = rng.integers(3, 20, size=30)
    frame = pd.DataFrame(
        {
            "cell_id": [f"c{i}" for i in range(30)],
            "input_ids": [rng.integers(1, VOCAB, size=n).astype(np.int32) for n in lengths],
            "length": lengths,
        }
    )
    path = tmp_path / "tokens.parquet"
    frame.to_parquet(path)
    cal, ev, info = token_batches([path], n_calibration=10, batch_size=4, seed=0)
    assert info["n_calibration_cells"] == 10 and info["n_evaluation_cells"] == 10 and info["evaluation_held_out"]
    assert [len(b[0]) for b in cal] == [4, 4, 2]
    cal_cells = {tuple(c) for c in unpad_batches(cal)}
    ev_cells = {tuple(c) for c in unpad_batches(ev)}
    assert not cal_cells & ev_cells
    cal, ev, info = token_batches(path, n_calibration=64)
    assert info["n_calibration_cells"] == 15 and info["n_evaluation_cells"] == 15
    bad = tmp_path / "bad.parquet"
    pd.DataFrame({"cell_id": ["a"]}).to_parquet(bad)
    with pytest.raises(InputError, match="no input_ids column"):
        token_batches([bad])


def test_attention_fusion_is_exact_and_leaves_the_file_standard(exported):
    """The exported file holds no contrib op (TensorRT reads it); ORT runs it fused, to 1e-5."""
    from netpert.isp.fusion import fuse_attention

    path, _report = exported
    proto = onnx.load(str(path))
    assert not any(n.domain == "com.microsoft" for n in proto.graph.node)
    heads = {p.key: p.value for p in proto.metadata_props}["netpert.num_heads"]
    n = fuse_attention(proto, int(heads))
    assert n >= 1 and sum(x.op_type == "MultiHeadAttention" for x in proto.graph.node) == n
    assert not any(x.op_type == "Softmax" for x in proto.graph.node)
    assert fuse_attention(proto, int(heads)) == 0  # already fused
    fused = OnnxBackend(path, name="onnx")
    assert fused.describe()["attention_fused_layers"] == n
    import onnxruntime as ort

    plain = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for b, length in ((3, 20), (5, 33)):
        ids, mask = padded_batch(b, length, seed=b)
        ref_cell, ref_tokens = plain.run(["cell", "tokens"], {"input_ids": ids, "attention_mask": mask})
        out = fused.embed(ids, mask, return_tokens=True)
        np.testing.assert_allclose(out.cell, ref_cell, atol=1e-5)
        np.testing.assert_allclose(out.tokens, ref_tokens, atol=1e-5)

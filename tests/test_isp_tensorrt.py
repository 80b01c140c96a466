"""ISP method tensorrt: availability reasons, profile shapes and builder settings (pure), and the
engine build + run against ONNX Runtime where a CUDA device and tensorrt exist (skipped elsewhere)."""

from __future__ import annotations

import numpy as np
import pytest

from netpert.errors import InputError
from netpert.isp.backends import tensorrt as trt_backend
from netpert.isp.backends.tensorrt import (
    availability,
    available,
    builder_settings,
    check_batch_shape,
    layers_to_pin,
    profile_shapes,
)

OK, REASON = available()
needs_device = pytest.mark.skipif(not OK, reason=f"TensorRT engine tests need the device: {REASON}")


def test_availability_reasons_pure():
    assert availability(False, None) == (False, "not run: no CUDA device")
    assert availability(False, "10.3.0") == (False, "not run: no CUDA device")
    assert availability(True, None) == (False, "not run: tensorrt not installed")
    ok, why = availability(True, "10.3.0", "NVIDIA H100")
    assert ok and why == "tensorrt 10.3.0 on NVIDIA H100"


def test_available_here_matches_the_machine():
    torch = pytest.importorskip("torch")
    ok, reason = available()
    if not torch.cuda.is_available():
        assert (ok, reason) == (False, "not run: no CUDA device")
    else:
        try:
            import tensorrt  # noqa: F401
        except ImportError:
            assert (ok, reason) == (False, "not run: tensorrt not installed")
        else:
            assert ok and reason.startswith("tensorrt ")


def test_build_and_backend_refuse_without_device(tmp_path):
    if OK:
        pytest.skip("a device is present: the refusal path does not apply")
    with pytest.raises(RuntimeError, match="not run: "):
        trt_backend.build_engine(tmp_path / "m.onnx", tmp_path / "m.plan")
    with pytest.raises(RuntimeError, match="not run: "):
        trt_backend.TensorRTBackend(tmp_path / "m.plan")
    assert list(tmp_path.iterdir()) == []


def test_build_rule_records_not_built_without_device(tmp_path):
    """build_tensorrt is planned from the config alone: on a machine without a device its job
    leaves an empty plan and a "not built" report, and the engine's loader says so."""
    import json

    if OK:
        pytest.skip("a device is present: the engine is built")
    report = trt_backend.build_or_record(tmp_path / "m.onnx", tmp_path / "m.plan", tmp_path / "m.plan.json")
    assert report["status"] == "not built" and report["reason"] in ("no CUDA device", "tensorrt not installed")
    assert (tmp_path / "m.plan").stat().st_size == 0
    assert json.loads((tmp_path / "m.plan.json").read_text())["status"] == "not built"


def test_profile_shapes_defaults_and_overrides():
    prof = profile_shapes(max_batch=64, max_len=2048)
    assert set(prof) == {"input_ids", "attention_mask"}
    assert prof["input_ids"] == ((1, 1), (64, 1024), (64, 2048)) == prof["attention_mask"]
    prof = profile_shapes(max_batch=8, max_len=512, opt_batch=4, opt_len=300, min_batch=2, min_len=16)
    assert prof["input_ids"] == ((2, 16), (4, 300), (8, 512))
    assert profile_shapes(max_batch=1, max_len=1)["input_ids"] == ((1, 1), (1, 1), (1, 1))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"max_batch": 0}, "max_batch must be >= 1"),
        ({"max_len": 4096, "model_max_len": 2048}, "exceeds the model's 2048 positions"),
        ({"opt_batch": 128}, "opt"),
        ({"opt_len": 4000}, "opt"),
        ({"min_len": 4000}, "min"),
    ],
)
def test_profile_shapes_input_errors(kwargs, message):
    args = {"max_batch": 64, "max_len": 2048, **kwargs}
    with pytest.raises(InputError, match=message):
        profile_shapes(**args)


def test_check_batch_shape_against_profile():
    prof = profile_shapes(max_batch=16, max_len=256)
    check_batch_shape((16, 256), prof)
    check_batch_shape((1, 1), prof)
    with pytest.raises(InputError, match=r"outside the TensorRT engine's profile \(batch 1..16, length 1..256\)"):
        check_batch_shape((17, 10), prof)
    with pytest.raises(InputError, match="rebuild the plan"):
        check_batch_shape((4, 257), prof)


def test_builder_settings_pure():
    s = builder_settings(fp16=True, platform_fast_fp16=True, workspace_gb=2)
    assert s["flags"] == ["FP16", "PREFER_PRECISION_CONSTRAINTS"] and s["precision"] == "fp16"
    assert s["fp32_layer_types"] == ["NORMALIZATION", "REDUCE"] and s["workspace_bytes"] == 2 << 30
    s = builder_settings(fp16=True, platform_fast_fp16=False)
    assert s["flags"] == [] and s["precision"] == "fp32" and s["fp32_layer_types"] == [] and s["notes"]
    s = builder_settings(fp16=False)
    assert s["flags"] == [] and s["precision"] == "fp32" and not s["notes"]
    s = builder_settings(fp16=True, fp32_layer_types=())
    assert s["flags"] == ["FP16"]
    with pytest.raises(InputError, match="workspace"):
        builder_settings(workspace_gb=0)


def test_layers_to_pin_pure():
    types = ["CONSTANT", "GATHER", "NORMALIZATION", "MATRIX_MULTIPLY", "LayerType.REDUCE", "SOFTMAX", "REDUCE"]
    assert layers_to_pin(types, ["NORMALIZATION", "REDUCE"]) == [2, 4, 6]
    assert layers_to_pin(types, []) == []


# --------------------------------------------------------------------------- on the device


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from netpert.isp.export import export_onnx, write_report

    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=200,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        max_position_embeddings=128,
        hidden_act="relu",
        pad_token_id=0,
    )
    model = transformers.BertForMaskedLM(config).eval()
    tmp = tmp_path_factory.mktemp("trt")
    export_onnx(model, tmp / "model.onnx", layer=-2)
    report = trt_backend.build_engine(tmp / "model.onnx", tmp / "model.plan", max_batch=8, max_len=128, fp16=True)
    write_report(report, tmp / "model.plan.json")  # as the build_tensorrt rule does
    return model, tmp, report


@pytest.mark.gpu
@needs_device
def test_engine_matches_pytorch_within_the_bar(engine):
    from netpert.isp.export import reference_embed, sample_batches
    from netpert.isp.metrics import cosine_rows

    model, tmp, report = engine
    assert (tmp / "model.plan").stat().st_size == report["file_size_bytes"] > 0
    backend = trt_backend.TensorRTBackend(tmp / "model.plan")
    assert backend.device == "cuda" and backend.profile["input_ids"][2] == (8, 128)
    for ids, mask in sample_batches(200, [(1, 7), (5, 64), (8, 128)], seed=3):
        out = backend.embed(ids, mask, return_tokens=True)
        ref_cell, ref_tokens = reference_embed(model, ids, mask, layer=-2)
        cos = cosine_rows(out.cell, ref_cell)
        assert cos.mean() >= 0.999 and cos.min() >= 0.99
        assert out.tokens.shape == ref_tokens.shape
    with pytest.raises(InputError, match="outside the TensorRT engine's profile"):
        backend.embed(np.ones((9, 4), dtype=np.int64), np.ones((9, 4), dtype=np.int64))
    info = backend.describe()
    assert info["precision"] == report["settings"]["precision"] and info["device"] == "cuda"
    assert backend.layer == report["hidden_states_index"] == 1

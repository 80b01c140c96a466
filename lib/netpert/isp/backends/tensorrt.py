"""ISP method ``tensorrt``: a TensorRT engine built from the exported ``.onnx`` encoder.

:func:`build_engine` parses the ONNX file (:func:`netpert.isp.export.export_onnx`) with
TensorRT's ONNX parser, builds an engine with one optimisation profile over batch size and
sequence length (min / opt / max, :func:`profile_shapes`), FP16 where the GPU has fast FP16
(LayerNorm and the pooling sums kept in FP32, :func:`builder_settings`), and serialises it to
``model.plan``. :class:`TensorRTBackend` deserialises the plan, sets the input shapes of each
batch, binds torch CUDA tensors and runs ``execute_async_v3``.

Only where a CUDA device and the ``tensorrt`` package (10.x) exist: :func:`available` says why
not otherwise. The shape and configuration logic is pure Python (tested everywhere); the
builder and runtime calls need the device.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

from netpert._io import atomic_path
from netpert.errors import InputError
from netpert.isp.backends.base import Backend, EmbedOutput

INPUT_NAMES = ("input_ids", "attention_mask")
OUTPUT_NAMES = ("cell", "tokens")
#: TensorRT layer types kept in FP32 inside an FP16 engine: LayerNorm (its variance overflows
#: FP16 after attention) and the reductions (the pooling sum over up to 2048 tokens)
DEFAULT_FP32_LAYER_TYPES = ("NORMALIZATION", "REDUCE")


# --------------------------------------------------------------------------- availability


def availability(cuda_device: bool, tensorrt_version: str | None, device_name: str | None = None) -> tuple[bool, str]:
    """The ``(ok, reason)`` answer of :func:`available` for the given facts (pure)."""
    if not cuda_device:
        return False, "not run: no CUDA device"
    if tensorrt_version is None:
        return False, "not run: tensorrt not installed"
    return True, f"tensorrt {tensorrt_version} on {device_name or 'CUDA device'}"


def _cuda_device() -> tuple[bool, str | None]:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a hard dependency
        return False, None
    if not torch.cuda.is_available():
        return False, None
    return True, torch.cuda.get_device_name(0)


def _tensorrt_version() -> str | None:
    try:
        import tensorrt
    except ImportError:
        return None
    return str(tensorrt.__version__)


def available() -> tuple[bool, str]:
    """Whether the ``tensorrt`` method can run here: ``(True, what)`` or ``(False, "not run: ...")``."""
    cuda, name = _cuda_device()
    return availability(cuda, _tensorrt_version() if cuda else None, name)


# --------------------------------------------------------------------------- pure configuration


def profile_shapes(
    max_batch: int = 64,
    max_len: int = 2048,
    opt_batch: int | None = None,
    opt_len: int | None = None,
    min_batch: int = 1,
    min_len: int = 1,
    model_max_len: int | None = None,
) -> dict[str, tuple[tuple[int, int], tuple[int, int], tuple[int, int]]]:
    """The optimisation profile ``{input name: (min, opt, max) shapes}`` of both inputs.

    ``opt`` defaults to ``(max_batch, max_len // 2)``: the runner fills batches to
    ``max_batch`` and, sorting by length, most batches are shorter than the longest cell.
    ``model_max_len`` (the model's position table) bounds ``max_len``.
    """
    values = {"max_batch": max_batch, "max_len": max_len, "min_batch": min_batch, "min_len": min_len}
    for key, value in values.items():
        if int(value) < 1:
            raise InputError(f"TensorRT profile: {key} must be >= 1, got {value}")
    max_batch, max_len, min_batch, min_len = (int(max_batch), int(max_len), int(min_batch), int(min_len))
    if model_max_len is not None and max_len > int(model_max_len):
        raise InputError(
            f"TensorRT profile: max_len {max_len} exceeds the model's {model_max_len} positions; "
            f"set isp.max_len <= {model_max_len}"
        )
    if min_batch > max_batch or min_len > max_len:
        raise InputError(f"TensorRT profile: min ({min_batch}, {min_len}) exceeds max ({max_batch}, {max_len})")
    opt_batch = max_batch if opt_batch is None else int(opt_batch)
    opt_len = max(min_len, max_len // 2) if opt_len is None else int(opt_len)
    if not (min_batch <= opt_batch <= max_batch and min_len <= opt_len <= max_len):
        raise InputError(
            f"TensorRT profile: opt ({opt_batch}, {opt_len}) must lie between min ({min_batch}, {min_len}) "
            f"and max ({max_batch}, {max_len})"
        )
    shapes = ((min_batch, min_len), (opt_batch, opt_len), (max_batch, max_len))
    return {name: shapes for name in INPUT_NAMES}


def check_batch_shape(shape, profile: dict) -> None:
    """Raise :class:`InputError` when a (batch, length) input lies outside the engine's profile."""
    batch, length = (int(x) for x in shape)
    (lo_b, lo_l), _, (hi_b, hi_l) = profile["input_ids"]
    if not (lo_b <= batch <= hi_b and lo_l <= length <= hi_l):
        raise InputError(
            f"batch of shape ({batch}, {length}) is outside the TensorRT engine's profile "
            f"(batch {lo_b}..{hi_b}, length {lo_l}..{hi_l}): lower isp.batch_size.tensorrt / isp.max_len "
            "or rebuild the plan with larger max_batch / max_len"
        )


def builder_settings(
    fp16: bool = True,
    platform_fast_fp16: bool = True,
    workspace_gb: float = 4.0,
    fp32_layer_types=DEFAULT_FP32_LAYER_TYPES,
) -> dict:
    """What the builder config gets: flags, workspace, layer types pinned to FP32 (pure).

    FP16 is used only where asked and the GPU has fast FP16; then ``fp32_layer_types`` are
    pinned to FP32 with ``PREFER_PRECISION_CONSTRAINTS`` (TensorRT may still pick FP16 for a
    layer without an FP32 kernel, and says so in its log, instead of failing the build).
    """
    if workspace_gb <= 0:
        raise InputError(f"TensorRT workspace must be > 0 GB, got {workspace_gb}")
    use_fp16 = bool(fp16 and platform_fast_fp16)
    flags = []
    pinned: list[str] = []
    notes = []
    if fp16 and not platform_fast_fp16:
        notes.append("FP16 asked for but this GPU has no fast FP16: building FP32")
    if use_fp16:
        flags.append("FP16")
        pinned = [str(t).upper() for t in fp32_layer_types]
        if pinned:
            flags.append("PREFER_PRECISION_CONSTRAINTS")
    return {
        "flags": flags,
        "precision": "fp16" if use_fp16 else "fp32",
        "workspace_bytes": int(workspace_gb * (1 << 30)),
        "fp32_layer_types": pinned,
        "notes": notes,
    }


def layers_to_pin(layer_types, pinned_types) -> list[int]:
    """Indices of the network layers whose type name (``LayerType`` member name) is pinned to FP32."""
    pinned = {str(t).upper() for t in pinned_types}
    return [i for i, t in enumerate(layer_types) if str(t).upper().rsplit(".", 1)[-1] in pinned]


# --------------------------------------------------------------------------- device: build


def _logger(trt):
    return trt.Logger(trt.Logger.WARNING)


def build_engine(
    onnx_path,
    plan_path,
    max_batch: int = 64,
    max_len: int = 2048,
    fp16: bool = True,
    opt_batch: int | None = None,
    opt_len: int | None = None,
    workspace_gb: float = 4.0,
) -> dict:
    """Build and serialise a TensorRT engine of the ONNX encoder; returns a report dict.

    Needs a CUDA device and ``tensorrt``; raises :class:`RuntimeError` with
    :func:`available`'s reason otherwise, and with the parser's errors when parsing fails.
    The plan is written atomically (no file on failure).
    """
    ok, reason = available()
    if not ok:
        raise RuntimeError(f"cannot build a TensorRT engine here ({reason})")
    import onnx
    import tensorrt as trt

    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise InputError(f"ONNX model not found: {onnx_path} (run export_onnx first)")
    meta = {p.key: p.value for p in onnx.load(str(onnx_path), load_external_data=False).metadata_props}
    model_max_len = int(meta["netpert.max_len"]) if "netpert.max_len" in meta else None
    profile = profile_shapes(max_batch, max_len, opt_batch, opt_len, model_max_len=model_max_len)

    logger = _logger(trt)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise RuntimeError(f"TensorRT could not parse {onnx_path}: {errors}")
    settings = builder_settings(fp16=fp16, platform_fast_fp16=builder.platform_has_fast_fp16, workspace_gb=workspace_gb)
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, settings["workspace_bytes"])
    for flag in settings["flags"]:
        config.set_flag(getattr(trt.BuilderFlag, flag))
    layers = [network.get_layer(i) for i in range(network.num_layers)]
    floating = (trt.float32, trt.float16)
    pinned = [
        i
        for i in layers_to_pin([layer.type.name for layer in layers], settings["fp32_layer_types"])
        if all(layers[i].get_output(k).dtype in floating for k in range(layers[i].num_outputs))
    ]
    for i in pinned:
        layers[i].precision = trt.float32
        for k in range(layers[i].num_outputs):
            layers[i].set_output_type(k, trt.float32)
    opt_profile = builder.create_optimization_profile()
    for name, (lo, opt, hi) in profile.items():
        opt_profile.set_shape(name, lo, opt, hi)
    config.add_optimization_profile(opt_profile)

    t0 = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError("TensorRT engine build failed (see the TensorRT messages in the log)")
    with atomic_path(plan_path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(memoryview(serialized))
    return {
        "onnx": Path(onnx_path).name,
        "plan": Path(plan_path).name,
        "tensorrt": trt.__version__,
        "device": available()[1],
        "profile": {k: [list(s) for s in v] for k, v in profile.items()},
        "settings": settings,
        "n_layers_network": len(layers),
        "n_layers_pinned_fp32": len(pinned),
        "build_seconds": round(time.perf_counter() - t0, 2),
        "file_size_bytes": os.path.getsize(plan_path),
        "layer": int(meta["netpert.layer"]) if "netpert.layer" in meta else None,
        "hidden_states_index": int(meta["netpert.hidden_states_index"]) if "netpert.hidden_states_index" in meta else None,
    }


def build_or_record(onnx_path, plan_path, report_path, **settings) -> dict:
    """Rule ``build_tensorrt``: the engine where this job has a CUDA device and TensorRT, else an
    empty ``model.plan`` and a report with ``status`` "not built" and the reason (the workflow
    plans the rule from the config alone; the tensorrt jobs then write "not run" records)."""
    from netpert.isp.export import write_report

    ok, reason = available()
    if ok:
        report = {"status": "built", **build_engine(onnx_path, plan_path, **settings)}
    else:
        reason = reason.removeprefix("not run: ")
        with atomic_path(plan_path) as tmp:
            Path(tmp).write_bytes(b"")
        report = {"status": "not built", "reason": reason, "onnx": Path(onnx_path).name, "plan": Path(plan_path).name}
    write_report(report, report_path)
    return report


# --------------------------------------------------------------------------- device: run


def _torch_dtype(trt, dtype):
    import torch

    table = {
        trt.float32: torch.float32,
        trt.float16: torch.float16,
        trt.int32: torch.int32,
        trt.int64: torch.int64,
        trt.bool: torch.bool,
    }
    if dtype not in table:
        raise RuntimeError(f"unsupported TensorRT tensor type {dtype}")
    return table[dtype]


class TensorRTBackend(Backend):
    """Embed batches with a serialised TensorRT engine (``model.plan``) on a CUDA device."""

    def __init__(self, plan_path, name: str = "tensorrt", device_index: int = 0):
        ok, reason = available()
        if not ok:
            raise RuntimeError(f"the tensorrt method cannot run here ({reason})")
        import tensorrt as trt
        import torch

        self.path = Path(plan_path)
        if not self.path.is_file():
            raise InputError(f"TensorRT plan not found: {self.path} (run the build_tensorrt rule first)")
        if self.path.stat().st_size == 0:
            raise InputError(
                f"{self.path} is empty: the build_tensorrt job ran where it could not build an engine "
                f"(see {self.path.name}.json); rerun it on a machine with a CUDA device and TensorRT"
            )
        self.name = name
        self.device = "cuda"
        self._trt = trt
        self._torch_device = torch.device("cuda", device_index)
        torch.cuda.set_device(self._torch_device)
        self._logger = _logger(trt)
        self._runtime = trt.Runtime(self._logger)
        self.engine = self._runtime.deserialize_cuda_engine(self.path.read_bytes())
        if self.engine is None:
            raise RuntimeError(f"TensorRT could not deserialise {self.path} (built with another TensorRT or GPU?)")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if sorted(self.inputs) != sorted(INPUT_NAMES) or not set(OUTPUT_NAMES) <= set(self.outputs):
            raise InputError(f"{self.path} is not a netpert ISP encoder engine (inputs {self.inputs}, outputs {self.outputs})")
        self.dtypes = {n: _torch_dtype(trt, self.engine.get_tensor_dtype(n)) for n in names}
        self.profile = {
            n: tuple(tuple(int(x) for x in s) for s in self.engine.get_tensor_profile_shape(n, 0)) for n in self.inputs
        }
        self._stream = torch.cuda.Stream(device=self._torch_device)
        sidecar = Path(str(self.path) + ".json")  # the build_tensorrt rule's report
        self.build_report = json.loads(sidecar.read_text()) if sidecar.is_file() else {}

    @property
    def layer(self) -> int | None:
        """The ``hidden_states`` index the engine was built for (from the build report; None without it)."""
        value = self.build_report.get("hidden_states_index")
        return int(value) if value is not None else None

    def embed(self, input_ids: np.ndarray, attention_mask: np.ndarray, return_tokens: bool = False) -> EmbedOutput:
        import torch

        from netpert.isp.backends.base import check_batch

        ids, mask = check_batch(input_ids, attention_mask)
        check_batch_shape(ids.shape, self.profile)
        tensors = {}
        with torch.cuda.stream(self._stream):
            for name, array in (("input_ids", ids), ("attention_mask", mask)):
                t = torch.from_numpy(array).to(self._torch_device, non_blocking=False).to(self.dtypes[name])
                tensors[name] = t.contiguous()
                if not self.context.set_input_shape(name, tuple(array.shape)):
                    raise RuntimeError(f"TensorRT rejected input shape {array.shape} for {name}")
                self.context.set_tensor_address(name, tensors[name].data_ptr())
            for name in self.outputs:
                shape = tuple(int(x) for x in self.context.get_tensor_shape(name))
                tensors[name] = torch.empty(shape, dtype=self.dtypes[name], device=self._torch_device)
                self.context.set_tensor_address(name, tensors[name].data_ptr())
            if not self.context.execute_async_v3(self._stream.cuda_stream):
                raise RuntimeError("TensorRT execute_async_v3 failed")
        self._stream.synchronize()
        cell = tensors["cell"].float().cpu().numpy()
        tokens = tensors["tokens"].float().cpu().numpy() if return_tokens else None
        return EmbedOutput(cell=cell, tokens=tokens)

    def describe(self) -> dict:
        build = {k: self.build_report.get(k) for k in ("settings", "tensorrt", "build_seconds", "layer")}
        return {
            "method": self.name,
            "precision": (build.get("settings") or {}).get("precision", "unknown"),
            "layer": self.layer,
            "build": build,
            "device": self.device,
            "runtime": f"tensorrt {self._trt.__version__}",
            "plan_path": str(self.path),
            "file_size_bytes": os.path.getsize(self.path),
            "profile": {k: [list(s) for s in v] for k, v in self.profile.items()},
            "io_dtypes": {k: str(v).replace("torch.", "") for k, v in self.dtypes.items()},
            "gpu": available()[1],
        }

    def close(self) -> None:
        self.context = None
        self.engine = None

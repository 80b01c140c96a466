"""ISP inference methods: one interface (:class:`~netpert.isp.backends.base.Backend`), a registry.

=============  ================================================================  ===============
method         what runs                                                         batching
=============  ================================================================  ===============
baseline       Helical's forward: full BertForMaskedLM, hidden states, fp32       input_order, 10
batched        the encoder up to the pooled layer, inference_mode, fp32           length_sorted, 32
amp            ``batched`` + autocast (fp16 on CUDA, bf16 on CPU)                 length_sorted, 32
onnx           ONNX Runtime on the exported encoder (netpert.isp.export)          length_sorted, 32
onnx_int8      ONNX Runtime, dynamically quantised int8 encoder                   cell_grouped, 32
tensorrt       TensorRT FP16 engine (CUDA only)                                   length_sorted, 64
=============  ================================================================  ===============

The ONNX / TensorRT modules are imported lazily, so this registry works without them.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Mapping

from netpert.errors import InputError
from netpert.isp.backends.base import Backend, EmbedOutput

METHODS = ("baseline", "batched", "amp", "onnx", "onnx_int8", "tensorrt")
DEVICES = ("auto", "cpu", "cuda")
#: batching strategy of each method (see netpert.isp.runner.make_batches)
DEFAULT_BATCHING = {
    "baseline": "input_order",
    "batched": "length_sorted",
    "amp": "length_sorted",
    "onnx": "length_sorted",
    # dynamic int8 quantisation scales activations per batch: keep a cell's original and its
    # perturbations in one batch so they are quantised alike
    "onnx_int8": "cell_grouped",
    "tensorrt": "length_sorted",
}
#: batch size of each method. The CPU methods were timed on pbmc68k cells (~250 tokens, gf-6L,
#: 2 threads) at batch 4-32: ONNX Runtime (fused attention) runs fastest at 8 (fp32 161 vs 87
#: sequences/s at 32; int8 304 vs 161), bf16 autocast at 16, fp32 PyTorch alike at 4-32
#: (attention scores of small batches stay in cache). GPUs want larger batches.
DEFAULT_BATCH_SIZE = {"baseline": 10, "batched": 32, "amp": 16, "onnx": 8, "onnx_int8": 8, "tensorrt": 64}
#: artifact file each artifact-based method needs (the workflow's names)
ARTIFACT_NAMES = {"onnx": "model.onnx", "onnx_int8": "model.int8.onnx", "tensorrt": "model.plan"}


def cuda_available() -> bool:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return False
    return bool(torch.cuda.is_available())


def resolve_device(device: str = "auto") -> str:
    """``"auto"`` -> ``"cuda"`` when a CUDA device is visible, else ``"cpu"``; checks the others."""
    if device not in DEVICES:
        raise InputError(f"unknown device '{device}' (isp.device); use one of {', '.join(DEVICES)}")
    if device == "auto":
        return "cuda" if cuda_available() else "cpu"
    if device == "cuda" and not cuda_available():
        raise InputError("isp.device is 'cuda' but no CUDA device is visible to PyTorch here; use 'auto' or 'cpu'")
    return device


def check_method(method: str) -> str:
    if method not in METHODS:
        raise InputError(f"unknown ISP method '{method}'; use one of {', '.join(METHODS)}")
    return method


def method_available(method: str, device: str) -> tuple[bool, str]:
    """Whether ``method`` can run on ``device`` here, and why not."""
    check_method(method)
    if method in ("baseline", "batched", "amp"):
        return True, ""
    if method in ("onnx", "onnx_int8"):
        try:
            mod = importlib.import_module("netpert.isp.backends.onnx")
        except ImportError as exc:
            return False, f"netpert.isp.backends.onnx cannot be imported ({exc})"
        return mod.available()
    # tensorrt
    if device != "cuda":
        return False, "TensorRT needs a CUDA device (isp.device resolved to cpu)"
    try:
        mod = importlib.import_module("netpert.isp.backends.tensorrt")
    except ImportError as exc:
        return False, f"netpert.isp.backends.tensorrt cannot be imported ({exc})"
    return mod.available()


def resolve_methods(spec="auto", device: str = "cpu") -> tuple[list[str], dict[str, str]]:
    """The methods to run and the ones skipped with their reason.

    ``spec``: ``"auto"`` (every method available here) or a list of method names; a listed
    method that cannot run here is skipped with its reason, an unknown one is an InputError.
    """
    device = resolve_device(device) if device == "auto" else device
    if device not in ("cpu", "cuda"):
        raise InputError(f"unknown device '{device}'; use cpu or cuda")
    if isinstance(spec, str):
        if spec != "auto":
            raise InputError(f"isp.methods must be 'auto' or a list of methods ({', '.join(METHODS)}), got '{spec}'")
        wanted = list(METHODS)
    else:
        wanted = [str(m) for m in spec]
        if not wanted:
            raise InputError("isp.methods is an empty list: give 'auto' or at least one method")
        for m in wanted:
            check_method(m)
        wanted = list(dict.fromkeys(wanted))
    methods, skipped = [], {}
    for m in wanted:
        ok, why = method_available(m, device)
        if ok:
            methods.append(m)
        else:
            skipped[m] = why
    return methods, skipped


def _artifact(method: str, artifacts) -> Path:
    """The artifact file of ``method`` from ``artifacts`` (a path, a list of paths, or a dict)."""
    if artifacts is None or (not isinstance(artifacts, (str, Path, Mapping)) and len(artifacts) == 0):
        raise InputError(
            f"method {method} needs its artifact ({ARTIFACT_NAMES[method]}, from the "
            f"{'build_tensorrt' if method == 'tensorrt' else 'export_onnx / quantize_onnx'} rule) but none was given"
        )
    if isinstance(artifacts, Mapping):
        if method not in artifacts:
            raise InputError(f"no artifact for method {method} among {sorted(artifacts)}")
        path = Path(artifacts[method])
    elif isinstance(artifacts, (str, Path)):
        path = Path(artifacts)
    else:
        paths = [Path(p) for p in artifacts]
        named = [p for p in paths if p.name == ARTIFACT_NAMES[method]]
        path = named[0] if named else paths[0]
    if not path.is_file():
        raise InputError(f"artifact for method {method} not found: {path}")
    return path


def make_backend(
    method: str,
    bundle_dir_or_bundle,
    *,
    layer: int = -2,
    threads: int = 1,
    device: str = "auto",
    artifacts=None,
) -> Backend:
    """A ready :class:`Backend` for ``method``.

    ``bundle_dir_or_bundle``: a :class:`~netpert.isp.model.ModelBundle` or its saved folder
    (``results/isp/model``); ``artifacts``: the ONNX / TensorRT file (a path, a list, or a
    dict method -> path) for the artifact-based methods, whose baked-in layer must be ``layer``.
    """
    check_method(method)
    device = resolve_device(device)
    ok, why = method_available(method, device)
    if not ok:
        raise InputError(f"method {method} cannot run here: {why}")
    from netpert.isp.model import as_bundle

    bundle = as_bundle(bundle_dir_or_bundle)
    if method == "baseline":
        from netpert.isp.backends.torch_eager import BaselineBackend

        return BaselineBackend(bundle.model, layer=layer, device=device, threads=threads)
    if method in ("batched", "amp"):
        from netpert.isp.backends.torch_fast import FastBackend

        return FastBackend(bundle.model, layer=layer, device=device, threads=threads, amp=method == "amp")
    from netpert.isp.export import resolve_layer

    index = resolve_layer(layer, bundle.n_layers)
    path = _artifact(method, artifacts)
    if method in ("onnx", "onnx_int8"):
        from netpert.isp.backends.onnx import OnnxBackend

        providers = "auto" if device == "cuda" else ["CPUExecutionProvider"]
        backend = OnnxBackend(path, threads=threads, providers=providers, name=method)
    else:
        from netpert.isp.backends.tensorrt import TensorRTBackend

        backend = TensorRTBackend(path, name=method)
    baked = getattr(backend, "layer", None)
    if baked is not None and int(baked) != index:
        raise InputError(
            f"{path} was exported for hidden_states[{baked}] but this run pools layer {layer} (= hidden_states[{index}]): "
            "re-export it with the same isp.layer"
        )
    return backend


__all__ = [
    "ARTIFACT_NAMES",
    "Backend",
    "DEFAULT_BATCHING",
    "DEFAULT_BATCH_SIZE",
    "EmbedOutput",
    "METHODS",
    "make_backend",
    "method_available",
    "resolve_device",
    "resolve_methods",
]

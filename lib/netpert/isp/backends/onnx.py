"""ISP methods ``onnx`` and ``onnx_int8``: the exported encoder run by ONNX Runtime.

The ``.onnx`` file comes from :func:`netpert.isp.export.export_onnx` (fp32) or
:func:`netpert.isp.export.quantize_onnx` (int8). Its graph already holds only the layers up
to the chosen one and returns the pooled cell embedding ``cell`` (B, H) and that layer's
token states ``tokens`` (B, L, H); the layer is fixed at export time (stored in the file's
metadata as ``netpert.layer``).

Sessions use full graph optimisation (``ORT_ENABLE_ALL``) and ``intra_op_num_threads =
threads``. ``providers="auto"`` takes the CUDA execution provider when onnxruntime-gpu is
installed and a CUDA device answers, else the CPU provider (and always CPU for an int8 file:
ONNX Runtime's int8 kernels are CPU kernels); ``describe()`` reports the
providers the session really uses (ONNX Runtime silently falls back to CPU when a GPU
provider cannot start).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from netpert.errors import InputError
from netpert.isp.backends.base import Backend, EmbedOutput, check_batch

#: short names accepted in ``providers`` (besides ONNX Runtime's full names)
PROVIDER_ALIASES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "trt": "TensorrtExecutionProvider",
}
GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")


def available() -> tuple[bool, str]:
    """Whether the ``onnx`` methods can run here: ``(True, providers)`` or ``(False, reason)``."""
    try:
        import onnxruntime as ort
    except ImportError as exc:  # pragma: no cover - onnxruntime is a hard dependency
        return False, f"not run: onnxruntime not installed ({exc})"
    return True, "onnxruntime " + ort.__version__ + " (" + ", ".join(ort.get_available_providers()) + ")"


def _cuda_device_present() -> bool:
    """True when a CUDA device answers (asked through torch, the package's own GPU probe)."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a hard dependency
        return False
    return bool(torch.cuda.is_available())


def resolve_providers(providers="auto", available_providers=None, cuda_device: bool | None = None) -> list[str]:
    """The execution providers to ask ONNX Runtime for, best first, always ending with CPU.

    ``providers``: ``"auto"`` (CUDA when onnxruntime-gpu offers it and a device is present,
    else CPU; the TensorRT execution provider is not chosen automatically since the
    ``tensorrt`` method builds its own engine), a name or a list of names (``"cpu"``,
    ``"cuda"``, ``"tensorrt"`` or ONNX Runtime's full provider names).
    ``available_providers`` / ``cuda_device`` default to what this machine offers.
    """
    if available_providers is None:
        import onnxruntime as ort

        available_providers = ort.get_available_providers()
    if providers == "auto":
        if cuda_device is None:
            cuda_device = _cuda_device_present()
        chosen = ["CUDAExecutionProvider"] if cuda_device and "CUDAExecutionProvider" in available_providers else []
    else:
        names = [providers] if isinstance(providers, str) else list(providers)
        chosen = []
        for name in names:
            full = PROVIDER_ALIASES.get(str(name).lower(), name)
            if full not in available_providers:
                raise InputError(
                    f"ONNX Runtime execution provider {name!r} is not available here "
                    f"(available: {', '.join(available_providers)}); use providers='auto' or install onnxruntime-gpu"
                )
            chosen.append(full)
    if "CPUExecutionProvider" not in chosen:
        chosen.append("CPUExecutionProvider")
    return chosen


def session_options(threads: int = 1, memory_arena: bool = False):
    """ONNX Runtime session options of the ``onnx`` methods: ORT_ENABLE_ALL, ``threads`` intra-op threads.

    ``memory_arena=False`` (default) turns ONNX Runtime's CPU memory arena off: with the arena a
    session keeps the peak of every batch shape it has seen (13.7 GB after one 32 x 2048 batch of
    gf-6L, against a 6.6 GB peak without it), which matters on shared nodes.
    """
    import onnxruntime as ort

    if int(threads) < 1:
        raise InputError(f"threads must be >= 1, got {threads}")
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.enable_cpu_mem_arena = bool(memory_arena)
    so.intra_op_num_threads = int(threads)
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    return so


def _file_precision(path) -> str | None:
    """``netpert.precision`` of an exported file's metadata (None for foreign files)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return next((p.value for p in model.metadata_props if p.key == "netpert.precision"), None)


class OnnxBackend(Backend):
    """Embed batches with an exported ``.onnx`` encoder in ONNX Runtime.

    Parameters
    ----------
    onnx_path
        The file written by :func:`netpert.isp.export.export_onnx` / ``quantize_onnx``.
    threads
        ``intra_op_num_threads`` (the rule's ``threads``).
    providers
        ``"auto"`` or explicit execution providers (see :func:`resolve_providers`).
    name
        Method name: ``"onnx"`` for the fp32 file, ``"onnx_int8"`` for the quantised one.
    memory_arena
        Keep ONNX Runtime's CPU memory arena (see :func:`session_options`).
    """

    def __init__(self, onnx_path, threads: int = 1, providers="auto", name: str = "onnx", memory_arena: bool = False):
        import onnxruntime as ort

        self.path = Path(onnx_path)
        if not self.path.is_file():
            raise InputError(f"ONNX model not found: {self.path} (run the export_onnx / quantize_onnx rule first)")
        self.name = name
        self.threads = int(threads)
        self.memory_arena = bool(memory_arena)
        self.provider_note = None
        if providers == "auto" and _file_precision(self.path) == "int8":
            # ONNX Runtime's int8 kernels (DynamicQuantizeMatMul, QDQ fusions) are CPU (MLAS) kernels:
            # on the CUDA provider they fall back node by node, with copies both ways
            providers = "cpu"
            self.provider_note = "int8 model: CPU provider (ORT's int8 kernels are CPU kernels)"
        self.requested_providers = resolve_providers(providers)
        model, self.attention_fused = self._fused_model()
        self.session = ort.InferenceSession(
            model,
            sess_options=session_options(self.threads, memory_arena),
            providers=self.requested_providers,
            # ORT's SkipLayerNormalization fusion made the CPU encoder slower here (fp32 97 -> 116,
            # int8 111 -> 156 sequences/s with it disabled; gf-6L, batch 32, 2 threads)
            disabled_optimizers=["SkipLayerNormFusion"] if self.requested_providers == ["CPUExecutionProvider"] else None,
        )
        self.providers = list(self.session.get_providers())
        self.device = "cuda" if any(p in GPU_PROVIDERS for p in self.providers) else "cpu"
        inputs = {i.name for i in self.session.get_inputs()}
        outputs = {o.name for o in self.session.get_outputs()}
        if inputs != {"input_ids", "attention_mask"} or not {"cell", "tokens"} <= outputs:
            raise InputError(
                f"{self.path} is not a netpert ISP encoder export (inputs {sorted(inputs)}, outputs {sorted(outputs)}; "
                "expected inputs input_ids, attention_mask and outputs cell, tokens): re-run export_onnx"
            )
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)

    def _fused_model(self):
        """The model to load: in memory with fused attention (netpert.isp.fusion) where ONNX
        Runtime runs it (CPU, CUDA; TensorRT does not know the op), else the file as it is."""
        if "TensorrtExecutionProvider" in self.requested_providers:
            return str(self.path), 0
        import onnx

        from netpert.isp.fusion import fuse_attention, is_fused

        proto = onnx.load(str(self.path))
        if is_fused(proto):
            return str(self.path), sum(n.op_type == "MultiHeadAttention" for n in proto.graph.node)
        heads = {p.key: p.value for p in proto.metadata_props}.get("netpert.num_heads")
        n = fuse_attention(proto, int(heads)) if heads else 0
        return (proto.SerializeToString(), n) if n else (str(self.path), 0)

    @property
    def layer(self) -> int | None:
        """The ``hidden_states`` index (0 .. n_layers) baked into the file at export time (None for foreign files)."""
        value = self.metadata.get("netpert.hidden_states_index")
        return int(value) if value is not None else None

    def embed(self, input_ids: np.ndarray, attention_mask: np.ndarray, return_tokens: bool = False) -> EmbedOutput:
        ids, mask = check_batch(input_ids, attention_mask)
        max_len = self.metadata.get("netpert.max_len")
        if max_len is not None and ids.shape[1] > int(max_len):
            raise InputError(
                f"batch length {ids.shape[1]} exceeds the model's {max_len} positions: truncate cells to isp.max_len"
            )
        feeds = {"input_ids": ids, "attention_mask": mask}
        if return_tokens:
            cell, tokens = self.session.run(["cell", "tokens"], feeds)
            return EmbedOutput(cell=np.asarray(cell, dtype=np.float32), tokens=np.asarray(tokens, dtype=np.float32))
        (cell,) = self.session.run(["cell"], feeds)
        return EmbedOutput(cell=np.asarray(cell, dtype=np.float32))

    def describe(self) -> dict:
        import onnxruntime as ort

        return {
            "method": self.name,
            "device": self.device,
            "runtime": f"onnxruntime {ort.__version__}",
            "providers": self.providers,
            "requested_providers": self.requested_providers,
            "provider_note": self.provider_note,
            "graph_optimization_level": "ORT_ENABLE_ALL",
            "threads": self.threads,
            "cpu_memory_arena": self.memory_arena,
            "attention_fused_layers": self.attention_fused,
            "onnx_file": self.path.name,  # the name only: results are the same bytes in any folder
            "file_size_bytes": os.path.getsize(self.path),
            "precision": self.metadata.get("netpert.precision", "unknown"),
            "quantization": self.metadata.get("netpert.quantization", "none"),
            "layer": self.layer,
            "layer_requested": int(self.metadata["netpert.layer"]) if "netpert.layer" in self.metadata else None,
            "exporter": self.metadata.get("netpert.exporter"),
        }

    def close(self) -> None:
        self.session = None

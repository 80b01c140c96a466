"""``batched`` and ``amp``: the Geneformer encoder alone, stopped at the pooled layer.

Against ``baseline`` (Helical's forward) these drop what the embedding does not need:

* the masked-LM head (a hidden x 25,426 projection of every token) is never run: the module
  is a ``BertModel`` holding only the embeddings and the encoder layers up to the chosen
  ``hidden_states`` index (layers after it are not run, no pooler);
* ``torch.inference_mode`` instead of ``no_grad``;
* the runner feeds length-sorted, larger batches (little padding; an unpadded batch lets
  SDPA run without a mask).

``amp`` adds autocast: fp16 on CUDA, bf16 on CPU. A CPU without native bf16 units
(``avx512_bf16`` / ``amx_bf16``) gains nothing from bf16 (it is emulated): the backend still
runs it, and :meth:`FastBackend.describe` says so (``amp_effective: false`` + a note).
"""

from __future__ import annotations

import copy
import functools
import os
from pathlib import Path

import numpy as np

from netpert.isp.backends.base import Backend, EmbedOutput, check_batch, resolve_layer
from netpert.isp.backends.torch_eager import masked_mean


@functools.lru_cache(maxsize=1)
def cpu_bf16_support() -> tuple[bool, str]:
    """Whether this CPU has native bf16 arithmetic, and how that was found out."""
    flags: set[str] = set()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="ignore").splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    native = sorted(flags & {"avx512_bf16", "amx_bf16"})
    if flags:
        if native:
            return True, f"CPU flags {', '.join(native)}"
        return False, "no avx512_bf16 / amx_bf16 in the CPU flags: bf16 is emulated and gives no speedup here"
    try:  # non-Linux: ask oneDNN
        import torch

        ok = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        return ok, f"oneDNN reports bf16 {'supported' if ok else 'unsupported'}"
    except Exception:  # pragma: no cover - depends on the platform
        return False, "could not detect bf16 support on this CPU"


def amp_plan(device: str) -> dict:
    """The autocast dtype of ``amp`` on ``device`` and whether it can be expected to help."""
    if device == "cuda":
        return {"amp_dtype": "float16", "amp_effective": True, "amp_note": "fp16 autocast on CUDA"}
    ok, why = cpu_bf16_support()
    note = f"bf16 autocast on CPU ({why})"
    return {"amp_dtype": "bfloat16", "amp_effective": ok, "amp_note": note}


def truncated_encoder(model, index: int):
    """A ``BertModel`` sharing ``model``'s embeddings and first ``index`` layers (no pooler)."""
    import torch
    from transformers import BertModel

    bert = getattr(model, "bert", model)
    config = copy.deepcopy(bert.config)
    config.num_hidden_layers = int(index)
    with torch.device("meta"):
        encoder = BertModel(config, add_pooling_layer=False)
    encoder.embeddings = bert.embeddings
    encoder.encoder.layer = torch.nn.ModuleList(list(bert.encoder.layer[: int(index)]))
    return encoder.eval()


class FastBackend(Backend):
    """The truncated encoder under ``inference_mode`` (``amp=True``: with autocast)."""

    name = "batched"

    def __init__(
        self,
        model,
        layer: int = -2,
        device: str = "cpu",
        threads: int | None = None,
        amp: bool = False,
        name: str | None = None,
    ):
        import torch

        if threads:
            torch.set_num_threads(int(threads))
        self.name = name or ("amp" if amp else "batched")
        self.device = device
        self.threads = int(threads) if threads else torch.get_num_threads()
        self.layer_arg = int(layer)
        self.layer = resolve_layer(layer, int(model.config.num_hidden_layers))
        self.max_len = int(model.config.max_position_embeddings)
        self.encoder = truncated_encoder(model, self.layer).to(device)
        self.amp = bool(amp)
        self.plan = amp_plan(device) if self.amp else {}
        self._dtype = getattr(torch, self.plan["amp_dtype"]) if self.amp else None

    def embed(self, input_ids: np.ndarray, attention_mask: np.ndarray, return_tokens: bool = False) -> EmbedOutput:
        import torch

        ids, mask = check_batch(input_ids, attention_mask, self.max_len)
        ids_t = torch.from_numpy(ids).to(self.device)
        mask_t = torch.from_numpy(mask).to(self.device)
        with torch.inference_mode():
            if self.amp:
                with torch.autocast(device_type=self.device, dtype=self._dtype):
                    hidden = self.encoder(input_ids=ids_t, attention_mask=mask_t).last_hidden_state
            else:
                hidden = self.encoder(input_ids=ids_t, attention_mask=mask_t).last_hidden_state
            cell = masked_mean(hidden, mask_t)
            tokens = hidden.float().cpu().numpy() if return_tokens else None
            cell = cell.cpu().numpy()
        return EmbedOutput(cell=cell.astype(np.float32, copy=False), tokens=tokens)

    def describe(self) -> dict:
        import torch

        out = {
            "method": self.name,
            "device": self.device,
            "runtime": f"torch {torch.__version__}",
            "module": f"BertModel: embeddings + {self.layer} encoder layer(s), no masked-LM head, no pooler",
            "attn_implementation": getattr(self.encoder.config, "_attn_implementation", None),
            "precision": (self.plan["amp_dtype"] + " autocast") if self.amp else "fp32",
            "grad_mode": "inference_mode",
            "layer": self.layer,
            "threads": self.threads,
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        }
        out.update(self.plan)
        if os.environ.get("OMP_NUM_THREADS"):
            out["omp_num_threads"] = os.environ["OMP_NUM_THREADS"]
        return out

    def close(self) -> None:
        self.encoder = None

"""``baseline``: what Helical 3.x does to embed cells with Geneformer, in plain PyTorch.

Helical loads ``BertForMaskedLM.from_pretrained(..., output_hidden_states=True)``, puts it in
eval mode and, per batch (in input order, padded to the batch's longest cell), runs the whole
model - the masked-LM head over the full vocabulary included - under ``torch.no_grad()``,
takes ``hidden_states[emb_layer]`` and averages it over the non-padding tokens. transformers
picks SDPA attention; the weights stay fp32. This backend does exactly that (the layer being
the run's configured one, so every method pools the same layer), so speedups over it are
speedups over running Geneformer through Helical.
"""

from __future__ import annotations

import numpy as np

from netpert.isp.backends.base import Backend, EmbedOutput, check_batch, resolve_layer


def masked_mean(hidden, mask):
    """Mean of ``hidden`` (B, L, H) over the positions where ``mask`` (B, L) is 1, in fp32."""
    h = hidden.float()
    w = mask.to(h.dtype).unsqueeze(-1)
    return (h * w).sum(dim=1) / w.sum(dim=1).clamp(min=1.0)


class BaselineBackend(Backend):
    """Helical's Geneformer forward: full ``BertForMaskedLM`` with ``output_hidden_states``.

    Parameters
    ----------
    model
        A ``transformers.BertForMaskedLM`` (``ModelBundle.model``).
    layer
        ``hidden_states`` index pooled (-2 = second-to-last, as Geneformer).
    device
        ``"cpu"`` or ``"cuda"``.
    threads
        ``torch.set_num_threads`` (CPU).
    """

    name = "baseline"

    def __init__(self, model, layer: int = -2, device: str = "cpu", threads: int | None = None, name: str = "baseline"):
        import torch

        if threads:
            torch.set_num_threads(int(threads))
        self.name = name
        self.device = device
        self.threads = int(threads) if threads else torch.get_num_threads()
        self.model = model.to(device).eval()
        self.layer_arg = int(layer)
        self.layer = resolve_layer(layer, int(model.config.num_hidden_layers))
        self.max_len = int(model.config.max_position_embeddings)

    def embed(self, input_ids: np.ndarray, attention_mask: np.ndarray, return_tokens: bool = False) -> EmbedOutput:
        import torch

        ids, mask = check_batch(input_ids, attention_mask, self.max_len)
        ids_t = torch.from_numpy(ids).to(self.device)
        mask_t = torch.from_numpy(mask).to(self.device)
        with torch.no_grad():
            out = self.model(input_ids=ids_t, attention_mask=mask_t, output_hidden_states=True)
            hidden = out.hidden_states[self.layer]
            cell = masked_mean(hidden, mask_t)
        tokens = hidden.float().cpu().numpy() if return_tokens else None
        return EmbedOutput(cell=cell.cpu().numpy().astype(np.float32, copy=False), tokens=tokens)

    def describe(self) -> dict:
        import torch

        return {
            "method": self.name,
            "device": self.device,
            "runtime": f"torch {torch.__version__}",
            "module": "BertForMaskedLM (masked-LM head included, as Helical runs it)",
            "attn_implementation": getattr(self.model.config, "_attn_implementation", None),
            "precision": "fp32",
            "grad_mode": "no_grad",
            "layer": self.layer,
            "threads": self.threads,
        }

    def close(self) -> None:
        self.model = None

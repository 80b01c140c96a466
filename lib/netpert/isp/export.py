"""ONNX export of the ISP model, and its check against PyTorch (int8: :mod:`netpert.isp.quantize`).

* :func:`export_onnx` writes the Geneformer encoder, cut after the chosen hidden layer, as
  one self-contained ``.onnx`` file with inputs ``input_ids`` / ``attention_mask`` (int64,
  dynamic batch and length) and outputs ``cell`` (B, H: mean over the real tokens) and
  ``tokens`` (B, L, H), then checks ONNX Runtime against PyTorch on batches of other sizes
  and lengths with padding; it fails, leaving no file, when they differ by more than ``atol``.

Layers are counted as in ``hidden_states`` (0 = embedding output, n_layers = last layer,
negative from the end; -2, Geneformer's choice, is the second-to-last layer).
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from netpert._io import atomic_path, json_default
from netpert.errors import InputError
from netpert.isp.backends.base import resolve_layer

log = logging.getLogger(__name__)

INPUT_NAMES = ("input_ids", "attention_mask")
OUTPUT_NAMES = ("cell", "tokens")
#: additive attention bias of padding keys: exp() of it is exactly 0 in fp32, and it stays
#: finite in fp16 (a TensorRT FP16 engine), unlike finfo(float32).min
MASK_VALUE = -30000.0
#: (batch, length) of the batches the export is checked on: other sizes than the traced
#: example (2, 16), the first row of each full, the others padded to random lengths
DEFAULT_CHECK_SHAPES = ((1, 7), (3, 23), (6, 61))
EXPORTERS = ("auto", "dynamo", "torchscript")


class ExportCheckError(RuntimeError):
    """ONNX Runtime and PyTorch disagree by more than ``atol`` on a check batch."""

    def __init__(self, message: str, report: dict):
        super().__init__(message)
        self.report = report


# --------------------------------------------------------------------------- the model


def encoder_of(model):
    """The ``BertModel`` of a ``BertForMaskedLM`` (its ``.bert``) or the ``BertModel`` itself."""
    bert = getattr(model, "bert", model)
    if not (hasattr(bert, "embeddings") and hasattr(bert, "encoder") and hasattr(bert.encoder, "layer")):
        raise InputError(
            f"expected a transformers BertModel or BertForMaskedLM (Geneformer), got {type(model).__name__}"
        )
    return bert


def _layer_encoder_class():
    import torch

    class LayerEncoder(torch.nn.Module):
        """Embeddings + the first ``n_layers`` BERT layers + mean pooling over real tokens.

        The attention bias is built here from ``attention_mask`` (0 for real keys,
        :data:`MASK_VALUE` for padding) instead of by transformers' mask helpers, whose
        SDPA / vmap paths do not trace cleanly; it is the same arithmetic as the model's own
        mask (softmax weight exactly 0 on padding keys).
        """

        def __init__(self, bert, n_layers: int):
            super().__init__()
            self.embeddings = bert.embeddings
            self.layers = torch.nn.ModuleList(list(bert.encoder.layer[:n_layers]))

        def forward(self, input_ids, attention_mask):
            # explicit absolute positions and token types (the model's defaults, arange and 0):
            # slicing the model's position buffer leaves Min(max_len, length) shapes that ORT's
            # symbolic shape inference (quantisation pre-processing) cannot follow
            positions = torch.arange(input_ids.shape[1], device=input_ids.device).unsqueeze(0)
            hidden = self.embeddings(
                input_ids=input_ids, position_ids=positions, token_type_ids=torch.zeros_like(input_ids)
            )
            keep = attention_mask[:, None, None, :] > 0
            bias = torch.where(keep, 0.0, MASK_VALUE).to(hidden.dtype)
            for layer in self.layers:
                hidden = layer(hidden, bias)
            weights = attention_mask.to(hidden.dtype).unsqueeze(-1)
            cell = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)
            return cell, hidden

    return LayerEncoder


def encoder_macs(config, lengths, layers: int | None = None, mlm_head: bool = False) -> dict:
    """Multiply-adds of BERT (Geneformer) forwards over sequences of ``lengths`` tokens, counted
    from the architecture (``config``: hidden H, intermediate I, vocabulary V).

    Per sequence of L tokens and layer: the Q, K, V and output projections 4·L·H², the
    feed-forward 2·L·H·I (``linear``: the weight matrices, int8 in ``onnx_int8``) and the
    attention scores Q·Kᵀ and their weighting of V, 2·L²·H (``attention``: activations times
    activations, float in every method); ``layers`` layers (default all); with ``mlm_head`` the
    masked-LM head too (L·H² + L·H·V, what Helical's forward computes). Embedding lookups,
    layer norms, softmax and pooling are not multiply-adds and are left out. Returns the sums
    over ``lengths`` (a length or a sequence of them): ``linear``, ``attention``, ``head``, ``total``.
    """
    H, inter, V = int(config.hidden_size), int(config.intermediate_size), int(config.vocab_size)
    n = int(config.num_hidden_layers if layers is None else layers)
    L = np.atleast_1d(np.asarray(lengths, dtype=np.float64))
    out = {
        "linear": float(n * L.sum() * (4 * H * H + 2 * H * inter)),
        "attention": float(n * 2 * (L**2).sum() * H),
        "head": float(L.sum() * (H * H + H * V)) if mlm_head else 0.0,
    }
    out["total"] = out["linear"] + out["attention"] + out["head"]
    return out


def layer_encoder(model, layer: int = -2):
    """A torch module ``(input_ids, attention_mask) -> (cell, tokens)`` of ``layer`` (a copy, eval mode)."""
    bert = encoder_of(model)
    index = resolve_layer(layer, bert.config.num_hidden_layers)
    module = _layer_encoder_class()(copy.deepcopy(bert), index)
    return module.eval()


def reference_embed(model, input_ids, attention_mask, layer: int = -2) -> tuple[np.ndarray, np.ndarray]:
    """PyTorch reference: ``hidden_states[layer]`` of the full model and its mean over real tokens.

    This is the ``baseline`` method's arithmetic (the model's own forward with
    ``output_hidden_states=True``), used to check the export. Returns ``(cell, tokens)``.
    """
    import torch

    bert = encoder_of(model)
    index = resolve_layer(layer, bert.config.num_hidden_layers)
    ids = torch.as_tensor(np.asarray(input_ids, dtype=np.int64))
    mask = torch.as_tensor(np.asarray(attention_mask, dtype=np.int64))
    was_training = bert.training
    bert.eval()
    try:
        with torch.inference_mode():
            hidden = bert(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states[index]
            weights = mask.to(hidden.dtype).unsqueeze(-1)
            cell = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)
    finally:
        bert.train(was_training)
    return cell.numpy().astype(np.float32), hidden.numpy().astype(np.float32)


def sample_batches(vocab_size: int, shapes=DEFAULT_CHECK_SHAPES, seed: int = 0, max_len: int | None = None):
    """Random padded batches ``[(input_ids, attention_mask), ...]`` of the given (batch, length) shapes.

    Row 0 of each batch is full length, the others have random lengths in [1, length] and
    are padded on the right with the pad id 0; token ids are drawn from 1..vocab_size-1.
    """
    rng = np.random.default_rng(seed)
    batches = []
    for batch, length in shapes:
        length = min(int(length), int(max_len)) if max_len else int(length)
        lengths = rng.integers(1, length + 1, size=int(batch))
        lengths[0] = length
        ids = rng.integers(1, vocab_size, size=(int(batch), length)).astype(np.int64)
        mask = (np.arange(length)[None, :] < lengths[:, None]).astype(np.int64)
        batches.append((ids * mask, mask))
    return batches


# --------------------------------------------------------------------------- export


@contextlib.contextmanager
def _quiet_exporter():
    """Keep the dynamo exporter's progress prints and warnings out of the rule's log."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch.export", "torch._export", "onnxscript")]
    levels = [lg.level for lg in loggers]
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels):
                lg.setLevel(level)


def _export_dynamo(module, args, path: Path, opset: int, max_len: int) -> None:
    import torch

    batch = torch.export.Dim("batch")
    length = torch.export.Dim("length", max=max_len)
    dims = {0: batch, 1: length}
    with _quiet_exporter():
        torch.onnx.export(
            module,
            args,
            str(path),
            dynamo=True,
            external_data=False,
            input_names=list(INPUT_NAMES),
            output_names=list(OUTPUT_NAMES),
            opset_version=opset,
            dynamic_shapes={"input_ids": dims, "attention_mask": dims},
            optimize=True,
        )


def _export_torchscript(module, args, path: Path, opset: int, max_len: int) -> None:
    import torch

    axes = {"input_ids": {0: "batch", 1: "length"}, "attention_mask": {0: "batch", 1: "length"}}
    axes.update({"cell": {0: "batch"}, "tokens": {0: "batch", 1: "length"}})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            args,
            str(path),
            dynamo=False,
            input_names=list(INPUT_NAMES),
            output_names=list(OUTPUT_NAMES),
            opset_version=opset,
            dynamic_axes=axes,
            do_constant_folding=True,
        )


def write_single_file(src: Path, dst: Path, metadata: dict) -> None:
    """Load an export (with any external ``.data`` file folded back in) and save it as one file."""
    import onnx

    model = onnx.load(str(src), load_external_data=True)
    for node in model.graph.node:  # the dynamo exporter's per-node stack traces: bulk, no function
        del node.metadata_props[:]
    onnx.helper.set_model_props(model, {str(k): str(v) for k, v in metadata.items()})
    onnx.save_model(model, str(dst), save_as_external_data=False)


def export_onnx(
    model,
    path,
    layer: int = -2,
    opset: int = 18,
    check: bool = True,
    atol: float = 1e-4,
    exporter: str = "auto",
    check_shapes=DEFAULT_CHECK_SHAPES,
    threads: int = 1,
    seed: int = 0,
) -> dict:
    """Export the encoder of ``model`` up to hidden layer ``layer`` to one ``.onnx`` file.

    Parameters
    ----------
    model
        A transformers ``BertForMaskedLM`` (Geneformer; its ``.bert`` is exported) or ``BertModel``.
    path
        The ``.onnx`` file to write (atomically: it appears only after the check passed).
    layer
        ``hidden_states`` index to export (-2 = second-to-last); later layers are left out.
    opset
        ONNX opset (>= 17).
    check, atol
        Run ONNX Runtime on the ``check_shapes`` batches (other sizes and lengths than the
        traced example, padded) and fail with :class:`ExportCheckError`, leaving no file, when
        ``max |ORT - PyTorch|`` over the cell embeddings and the real tokens' states exceeds ``atol``.
    exporter
        ``"dynamo"`` (``torch.onnx.export(dynamo=True)``), ``"torchscript"`` or ``"auto"``
        (dynamo, falling back to TorchScript when it raises).
    threads
        ONNX Runtime threads of the check session.
    seed
        Seed of the check batches.

    Returns
    -------
    dict
        The report: path, opset, exporter used (and why a fallback happened), file size,
        layer, sizes of the model, and per check batch its shape and max |diff|.
    """
    import onnx
    import torch

    if int(opset) < 17:
        raise InputError(f"opset must be >= 17 (LayerNormalization as one op), got {opset}")
    if exporter not in EXPORTERS:
        raise InputError(f"exporter must be one of {EXPORTERS}, got {exporter!r}")
    if atol < 0:
        raise InputError(f"atol must be >= 0, got {atol}")
    bert = encoder_of(model)
    cfg = bert.config
    n_layers = int(cfg.num_hidden_layers)
    index = resolve_layer(layer, n_layers)
    max_len = int(cfg.max_position_embeddings)
    module = layer_encoder(bert, layer)
    example_len = min(16, max_len)
    (ids, mask) = sample_batches(cfg.vocab_size, [(2, example_len)], seed=seed + 1)[0]
    args = (torch.as_tensor(ids), torch.as_tensor(mask))

    path = Path(path)
    report = {
        "file": path.name,  # the name only: the report is the same bytes in any folder
        "layer": int(layer),
        "hidden_states_index": index,
        "n_layers_model": n_layers,
        "n_layers_exported": index,
        "hidden_size": int(cfg.hidden_size),
        "vocab_size": int(cfg.vocab_size),
        "max_len": max_len,
        "opset_requested": int(opset),
        "torch": torch.__version__,
        "onnx": onnx.__version__,
    }
    order = ["dynamo", "torchscript"] if exporter == "auto" else [exporter]
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".export_", dir=path.parent) as tmp:
        raw = Path(tmp) / "raw.onnx"
        errors = {}
        t0 = time.perf_counter()
        for name in order:
            try:
                (_export_dynamo if name == "dynamo" else _export_torchscript)(module, args, raw, int(opset), max_len)
                report["exporter"] = name
                break
            except Exception as exc:  # noqa: BLE001 - reported, then the next exporter is tried
                errors[name] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:500]
                log.warning("%s exporter failed: %s", name, errors[name])
                for leftover in Path(tmp).iterdir():
                    leftover.unlink()
        else:
            raise RuntimeError(f"ONNX export failed with every exporter tried: {errors}")
        report["export_seconds"] = round(time.perf_counter() - t0, 3)
        if errors:
            report["exporter_errors"] = errors
        report["external_data_folded"] = sorted(p.name for p in Path(tmp).iterdir() if p.name != raw.name)
        metadata = {
            "netpert.layer": int(layer),
            "netpert.hidden_states_index": index,
            "netpert.n_layers_model": n_layers,
            "netpert.precision": "fp32",
            "netpert.quantization": "none",
            "netpert.exporter": report["exporter"],
            "netpert.max_len": max_len,
            "netpert.num_heads": int(bert.config.num_attention_heads),
        }
        with atomic_path(path) as out:
            write_single_file(raw, out, metadata)
            proto = onnx.load(str(out), load_external_data=False)
            report["opset"] = max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
            report["file_size_bytes"] = os.path.getsize(out)
            report["n_nodes"] = len(proto.graph.node)
            onnx.checker.check_model(str(out))
            if check:
                report["checks"] = check_export(out, bert, layer, check_shapes, seed=seed, threads=threads)
                report["max_abs_diff"] = max(c["max_abs_diff"] for c in report["checks"])
                report["atol"] = float(atol)
                if report["max_abs_diff"] > atol:
                    worst = max(report["checks"], key=lambda c: c["max_abs_diff"])
                    raise ExportCheckError(
                        f"ONNX Runtime disagrees with PyTorch after export: max |difference| = "
                        f"{report['max_abs_diff']:.3g} > atol {atol:g} (worst on a batch of "
                        f"{worst['batch']} x {worst['length']}; cell {worst['max_abs_diff_cell']:.3g}, "
                        f"tokens {worst['max_abs_diff_tokens']:.3g}); no file written",
                        report,
                    )
    report["passed"] = True
    return report


def check_export(onnx_path, model, layer: int = -2, shapes=DEFAULT_CHECK_SHAPES, seed: int = 0, threads: int = 1):
    """Max |ONNX Runtime - PyTorch| per sample batch (cell embeddings; token states of real tokens)."""
    from netpert.isp.backends.onnx import OnnxBackend

    bert = encoder_of(model)
    backend = OnnxBackend(onnx_path, threads=threads, providers="cpu", name="onnx-check")
    results = []
    try:
        for ids, mask in sample_batches(bert.config.vocab_size, shapes, seed=seed, max_len=bert.config.max_position_embeddings):
            ref_cell, ref_tokens = reference_embed(bert, ids, mask, layer)
            out = backend.embed(ids, mask, return_tokens=True)
            real = mask.astype(bool)
            d_cell = float(np.abs(out.cell - ref_cell).max())
            d_tok = float(np.abs(out.tokens - ref_tokens)[real].max())
            results.append(
                {
                    "batch": int(ids.shape[0]),
                    "length": int(ids.shape[1]),
                    "n_padded_cells": int((~real.all(axis=1)).sum()),
                    "max_abs_diff_cell": d_cell,
                    "max_abs_diff_tokens": d_tok,
                    "max_abs_diff": max(d_cell, d_tok),
                }
            )
    finally:
        backend.close()
    return results


def write_report(report: dict, path) -> None:
    """Write a report dict as JSON (atomically)."""
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(report, indent=2, default=json_default) + "\n")

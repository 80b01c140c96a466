"""The one interface every ISP inference method implements.

A backend turns a padded batch of Geneformer token ids into embeddings of ONE chosen
hidden layer (``layer``, counted as in ``hidden_states``: 0 = embedding output,
n_layers = last layer, negative counts from the end, so -2 is the second-to-last layer
Geneformer uses):

* ``cell``   float32 (B, H): mean over the non-padding tokens of that layer;
* ``tokens`` float32 (B, L, H): the per-token states of that layer (only when asked:
  the shift computation needs them, throughput runs may not).

Inputs are numpy int64 arrays (B, L): ``input_ids`` padded with the model's pad id (0)
on the right, and ``attention_mask`` (1 = real token, 0 = padding).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from netpert.errors import InputError


def resolve_layer(layer: int, n_layers: int) -> int:
    """``hidden_states`` index (0 .. n_layers) of ``layer`` (negative counts from the end)."""
    layer = int(layer)
    index = layer + n_layers + 1 if layer < 0 else layer
    if not 0 <= index <= n_layers:
        raise InputError(
            f"layer {layer} (isp.layer) does not exist in a model with {n_layers} layers: "
            f"use 0..{n_layers} or -1..-{n_layers + 1} (hidden_states index; -2 = second-to-last)"
        )
    return index


def pad_batch(seqs: Sequence[np.ndarray], pad_id: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Right-padded ``(input_ids, attention_mask)`` int64 arrays (B, longest) of 1-D token arrays."""
    seqs = [np.asarray(s, dtype=np.int64).ravel() for s in seqs]
    if not seqs or min(len(s) for s in seqs) == 0:
        raise ValueError("pad_batch needs at least one sequence, each with at least one token")
    width = max(len(s) for s in seqs)
    ids = np.full((len(seqs), width), int(pad_id), dtype=np.int64)
    mask = np.zeros((len(seqs), width), dtype=np.int64)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = s
        mask[i, : len(s)] = 1
    return ids, mask


def check_batch(input_ids, attention_mask, max_len: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A padded batch as contiguous int64 arrays (B, L), checked: one shape, a real token in every
    row, no longer than ``max_len``. A malformed batch is a caller's bug (ValueError); a batch
    longer than the model's positions comes from ``isp.max_len`` (InputError)."""
    ids = np.ascontiguousarray(np.asarray(input_ids), dtype=np.int64)
    mask = np.ascontiguousarray(np.asarray(attention_mask), dtype=np.int64)
    if ids.ndim != 2 or ids.shape != mask.shape:
        raise ValueError(
            f"input_ids and attention_mask must be 2-D arrays of the same shape (batch, length); got {ids.shape} and {mask.shape}"
        )
    if ids.shape[0] == 0 or ids.shape[1] == 0:
        raise ValueError(f"empty batch {ids.shape}: a batch needs at least one cell of at least one token")
    if not mask.any(axis=1).all():
        raise ValueError("every cell of a batch needs at least one real token (a row of attention_mask is all 0)")
    if max_len is not None and ids.shape[1] > int(max_len):
        raise InputError(f"batch length {ids.shape[1]} exceeds the model's {max_len} positions: set isp.max_len to at most {max_len}")
    return ids, mask


@dataclass
class EmbedOutput:
    cell: np.ndarray
    tokens: np.ndarray | None = None


class Backend(abc.ABC):
    #: method name as used in the config and in results/isp/{method}/
    name: str = "abstract"
    #: the device the backend actually runs on ("cpu", "cuda")
    device: str = "cpu"

    @abc.abstractmethod
    def embed(self, input_ids: np.ndarray, attention_mask: np.ndarray, return_tokens: bool = False) -> EmbedOutput:
        """Embed one padded batch (see the module docstring)."""

    def describe(self) -> dict:
        """Facts about the backend for perf.json and the report (precision, providers, threads ...)."""
        return {"method": self.name, "device": self.device}

    def close(self) -> None:  # pragma: no cover - default no-op
        """Release sessions / device memory."""

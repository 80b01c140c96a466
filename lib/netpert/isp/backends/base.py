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

import numpy as np


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

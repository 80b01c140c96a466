"""metaVIPER: NES from several networks (one per stratum) combined per cell.

- ``integrate`` (R viper with a list of regulons): NES of a regulator a network lacks are 0, and
  the networks are averaged with weights ``|nes| ^ mvws`` (``mvws`` a number), or
  ``sigT(|nes|, slope, inflection) = 1 - 1 / (1 + exp(slope * (|nes| - inflection)))`` when
  ``mvws = (inflection, slope)`` (R's two-number form). With ``mvws = 1`` this is
  ``sum(nes * |nes|) / sum(|nes|)``. Where every weight is 0 the result is 0 (R gives NaN).
- ``auto`` (pyviper's ``mvws="auto"``): each cell takes the NES of the single network under
  which it is most enriched, scored as the mean of its top ``n_mrs`` NES minus the mean of its
  bottom ``n_mrs`` NES, halved (``n_mrs = 50``, at most half the network's regulators so that the
  two sets do not overlap); ties go to the first network.

Regulators are the union over networks, in order of first appearance.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from netpert.errors import InputError

CHOICES = ("integrate", "auto")


def union_regulators(reg_lists: Sequence[Sequence[str]]) -> list:
    seen: dict = {}
    for regs in reg_lists:
        for r in regs:
            seen.setdefault(r, len(seen))
    return list(seen)


def _expand(nes_list, reg_lists, union):
    pos = {r: i for i, r in enumerate(union)}
    out = np.zeros((len(nes_list), nes_list[0].shape[0], len(union)))
    for k, (nes, regs) in enumerate(zip(nes_list, reg_lists)):
        out[k][:, [pos[r] for r in regs]] = nes
    return out


def mvws_weights(abs_nes: np.ndarray, mvws) -> np.ndarray:
    """metaVIPER weights: ``|nes| ^ mvws`` or R's sigmoid ``sigT`` for ``mvws=(inflection, slope)``."""
    if np.ndim(mvws) == 0:
        if not np.isfinite(mvws) or mvws < 0:
            raise InputError(f"mvws must be a number >= 0 or a pair (inflection, slope), got {mvws!r}")
        return abs_nes ** float(mvws)
    if len(mvws) != 2:
        raise InputError(f"mvws as a sequence must be (inflection, slope), got {mvws!r}")
    inflection, slope = float(mvws[0]), float(mvws[1])
    return 1 - 1 / (1 + np.exp(slope * (abs_nes - inflection)))


def integrate(nes_list, reg_lists, mvws=1):
    """Weighted integration; returns ``(nes (cells x union), union)``."""
    union = union_regulators(reg_lists)
    if len(nes_list) == 1:
        return np.asarray(nes_list[0], dtype=np.float64), union
    stack = _expand(nes_list, reg_lists, union)
    ws = mvws_weights(np.abs(stack), mvws)
    num = (stack * ws).sum(axis=0)
    den = ws.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(den > 0, num / den, 0.0)
    return out, union


def network_scores(nes: np.ndarray, n_mrs: int = 50) -> np.ndarray:
    """Per-cell enrichment score of one network: (mean of the top n NES - mean of the bottom n) / 2
    with ``n = min(n_mrs, R // 2)`` so the two sets never overlap (pyviper takes ``n = 50`` as is,
    which for 50 regulators or fewer averages the same NES twice and scores every cell 0); a
    network with a single regulator scores ``|nes|``."""
    r = nes.shape[1]
    if r == 1:
        return np.abs(nes[:, 0])
    n = max(1, min(int(n_mrs), r // 2))
    srt = np.sort(nes, axis=1)
    return (srt[:, -n:].mean(axis=1) - srt[:, :n].mean(axis=1)) / 2


def choose_network(nes_list, reg_lists, n_mrs: int = 50):
    """pyviper's "auto": per cell the NES of its best network; returns ``(nes, union, choice)``."""
    union = union_regulators(reg_lists)
    scores = np.column_stack([network_scores(np.asarray(n), n_mrs) for n in nes_list])
    choice = np.argmax(scores, axis=1)
    stack = _expand(nes_list, reg_lists, union)
    out = stack[choice, np.arange(stack.shape[1]), :]
    return out, union, choice


def combine(nes_list, reg_lists, network_choice: str = "integrate", mvws=1, n_mrs: int = 50):
    """``(nes, union, choice)``: ``choice`` is the chosen network per cell (None for integrate)."""
    if network_choice not in CHOICES:
        raise InputError(f"unknown network_choice {network_choice!r}; use one of {list(CHOICES)}")
    if network_choice == "auto" and len(nes_list) > 1:
        return choose_network(nes_list, reg_lists, n_mrs)
    out, union = integrate(nes_list, reg_lists, mvws)
    choice = np.zeros(out.shape[0], dtype=np.int64) if network_choice == "auto" else None
    return out, union, choice

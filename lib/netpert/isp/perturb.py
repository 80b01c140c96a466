"""In-silico perturbations of rank-value encodings (Geneformer's ISP).

* ``delete``: the target's token is removed;
* ``overexpress``: the target moves to the front (after ``<cls>``); a cell that lacks it gets
  it inserted there, and the encoding is truncated to the model's input size;
* ``inhibit`` / ``activate``: the target moves down / up by ``shift_fraction`` of the cell's
  number of genes (at least one position; clipped at the ends).

A perturbation is one gene or, with ``pairs``, an anchor gene together with each other target
(both deleted / moved / overexpressed, the anchor first). A gene that is not expressed in a
cell cannot be deleted, inhibited or activated there: that (cell, perturbation) is skipped and
counted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from netpert.errors import InputError

KINDS = ("delete", "overexpress", "inhibit", "activate")


@dataclass(frozen=True)
class PerturbationSpec:
    """One perturbation: target genes (as named), their token ids, and the kind."""

    targets: tuple[str, ...]
    token_ids: tuple[int, ...]
    kind: str

    @property
    def label(self) -> str:
        return f"{self.kind}:{'+'.join(self.targets)}"

    def to_dict(self) -> dict:
        return {"targets": list(self.targets), "token_ids": [int(t) for t in self.token_ids], "kind": self.kind}

    @classmethod
    def from_dict(cls, d: Mapping) -> "PerturbationSpec":
        return cls(tuple(str(t) for t in d["targets"]), tuple(int(t) for t in d["token_ids"]), str(d["kind"]))


def check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise InputError(f"unknown perturbation '{kind}'; use one of {', '.join(KINDS)}")
    return kind


def perturb_tokens(
    input_ids,
    token_ids: Sequence[int],
    kind: str,
    shift_fraction: float = 0.25,
    max_len: int | None = None,
    n_prefix: int = 0,
    n_suffix: int = 0,
) -> np.ndarray | None:
    """The perturbed encoding of one cell, or ``None`` when the perturbation does not apply
    (a target of delete / inhibit / activate not expressed in the cell).

    ``n_prefix`` / ``n_suffix``: special tokens at the ends (``<cls>`` / ``<eos>``) that stay
    in place; ``max_len`` (with them) caps the length after an overexpression.
    """
    check_kind(kind)
    ids = np.asarray(input_ids)
    dtype = ids.dtype
    head = ids[:n_prefix]
    tail = ids[len(ids) - n_suffix :] if n_suffix else ids[:0]
    genes = ids[n_prefix : len(ids) - n_suffix] if n_suffix else ids[n_prefix:]
    targets = [int(t) for t in token_ids]
    present = [bool(np.any(genes == t)) for t in targets]
    if kind == "delete":
        if not all(present):
            return None
        genes = genes[~np.isin(genes, targets)]
    elif kind == "overexpress":
        rest = genes[~np.isin(genes, targets)]
        genes = np.concatenate([np.asarray(targets, dtype=dtype), rest])
        if max_len is not None:
            genes = genes[: max(int(max_len) - n_prefix - n_suffix, len(targets))]
    else:
        if not all(present):
            return None
        if not 0 < float(shift_fraction) <= 1:
            raise InputError(f"shift_fraction must be in (0, 1], got {shift_fraction}")
        n = len(genes)
        shift = max(1, int(round(float(shift_fraction) * n)))
        genes = genes.copy()
        for t in targets:
            pos = int(np.flatnonzero(genes == t)[0])
            new = min(pos + shift, n - 1) if kind == "inhibit" else max(pos - shift, 0)
            genes = np.insert(np.delete(genes, pos), new, t)
    return np.concatenate([head, genes.astype(dtype), tail]).astype(dtype)


def resolve_targets(
    genes: Sequence[str],
    token_dictionary: Mapping[str, int],
    gene_mapping: Mapping[str, str] | None = None,
) -> dict[str, int]:
    """Token id of each target gene (directly or through the symbol -> Ensembl mapping).

    Raises :class:`InputError` listing every target absent from the vocabulary.
    """
    out, missing = {}, []
    for g in genes:
        for cand in (g, gene_mapping.get(g) if gene_mapping else None):
            if cand is not None and cand in token_dictionary and not (cand.startswith("<") and cand.endswith(">")):
                out[g] = int(token_dictionary[cand])
                break
        else:
            missing.append(g)
    if missing:
        raise InputError(
            f"{len(missing)} target gene(s) are not in the model's vocabulary: {', '.join(missing)}; "
            "pick other targets (isp.targets.genes / top_k) or a model whose vocabulary has them"
        )
    return out


def make_specs(
    targets: Sequence[str],
    token_dictionary: Mapping[str, int],
    kind: str = "delete",
    pairs: bool = False,
    anchor: str | None = None,
    gene_mapping: Mapping[str, str] | None = None,
) -> list[PerturbationSpec]:
    """The perturbations of a run: each target alone, plus (``pairs``) the anchor (default:
    the first target) with each other target."""
    check_kind(kind)
    targets = list(dict.fromkeys(str(t) for t in targets))
    if not targets:
        raise InputError("no target genes to perturb: give isp.targets.genes or master regulators")
    if pairs:
        anchor = anchor or targets[0]
        if anchor not in targets:
            targets = [anchor, *targets]
    ids = resolve_targets(targets, token_dictionary, gene_mapping)
    specs = [PerturbationSpec((t,), (ids[t],), kind) for t in targets]
    if pairs:
        others = [t for t in targets if t != anchor]
        if not others:
            raise InputError(f"pairs need at least one target besides the anchor {anchor}")
        specs += [PerturbationSpec((anchor, t), (ids[anchor], ids[t]), kind) for t in others]
    return specs


@dataclass
class Expanded:
    """Perturbed encodings of a set of cells: item i is ``specs[spec_index[i]]`` applied to
    cell ``cell_index[i]``; ``skipped[label]`` counts cells where a perturbation did not apply."""

    cell_index: np.ndarray
    spec_index: np.ndarray
    input_ids: list[np.ndarray]
    skipped: dict[str, int]

    def __len__(self) -> int:
        return len(self.input_ids)


def expand(
    cells: Sequence[np.ndarray],
    specs: Sequence[PerturbationSpec],
    shift_fraction: float = 0.25,
    max_len: int | None = None,
    n_prefix: int = 0,
    n_suffix: int = 0,
) -> Expanded:
    """Every spec applied to every cell (cell-major order), skipping those that do not apply."""
    cell_index, spec_index, seqs = [], [], []
    skipped = {s.label: 0 for s in specs}
    for ci, ids in enumerate(cells):
        for si, spec in enumerate(specs):
            out = perturb_tokens(ids, spec.token_ids, spec.kind, shift_fraction, max_len, n_prefix, n_suffix)
            if out is None:
                skipped[spec.label] += 1
                continue
            cell_index.append(ci)
            spec_index.append(si)
            seqs.append(out)
    return Expanded(np.asarray(cell_index, dtype=np.int64), np.asarray(spec_index, dtype=np.int64), seqs, skipped)

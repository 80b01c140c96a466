"""Geneformer models for the ISP benchmark: load, build with random weights, save, reload.

A model is a :class:`ModelBundle`: the ``transformers`` ``BertForMaskedLM``, its token
dictionary (gene id -> token id, with ``<pad>`` 0 and ``<mask>`` 1, and ``<cls>`` / ``<eos>``
in the 95M+ series), the gene-median dictionary of the rank-value encoding (or ``None``:
then the medians are computed from the data, see :func:`netpert.isp.tokenizer.compute_gene_medians`),
an optional symbol -> Ensembl mapping, a ``trained`` flag and a provenance dict.

Model specs (config key ``isp.model``):

* ``helical-cache:<dir>[#<model>]`` - Helical's cache layout: ``<dir>/geneformer/v1/`` holds
  ``token_dictionary``, ``gene_median_dictionary`` and ``ensembl_mapping_dict`` (``.pkl`` as
  Helical writes them, or ``.json``) and ``<model>/`` (default ``gf-6L-10M-i2048``) holds
  ``config.json`` and ``pytorch_model.bin`` (v1) or ``model.safetensors`` (v2/v3).
  ``<dir>`` may also be the ``geneformer`` folder or the model folder itself.
* ``hf:<dir>`` - any local Geneformer checkpoint folder (``config.json`` + weights); the
  dictionaries are looked for in the folder, its parents and their ``geneformer/`` folders.
* ``random-init:<preset>`` - the exact architecture of a preset (:data:`PRESETS`) with
  seeded random weights; the data's genes take the first ids after the special tokens.

Weights are read safely (safetensors, or ``torch.load(weights_only=True)``) and pickled
dictionaries with an unpickler that only rebuilds plain containers, strings and numbers.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import pickle
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from netpert._io import json_default
from netpert.errors import InputError

log = logging.getLogger(__name__)

#: what every output says when the weights are random
UNTRAINED_NOTE = "untrained weights: timings and consistency only"
#: the special tokens of Geneformer's dictionaries (v1 has only the first two)
PAD, MASK, CLS, EOS = "<pad>", "<mask>", "<cls>", "<eos>"
SPECIAL_TOKENS = (PAD, MASK, CLS, EOS)
#: file names in a saved bundle (``results/isp/model/``)
BUNDLE_FILES = {
    "config": "config.json",
    "weights": "model.safetensors",
    "tokens": "token_dictionary.json",
    "medians": "gene_median_dictionary.json",
    "mapping": "ensembl_mapping_dict.json",
    "provenance": "netpert_model.json",
}
DEFAULT_HELICAL_MODEL = "gf-6L-10M-i2048"

# The architecture of Geneformer's gf-6L-10M-i2048 (Geneformer-V1-10M) as in its config.json:
# BERT, relu, LayerNorm eps 1e-12, dropout 0.02, 2 token types, absolute positions, and the
# 25,426-token vocabulary of the 30M-series dictionary (25,424 genes + <pad> + <mask>).
_GF_COMMON = {
    "hidden_act": "relu",
    "layer_norm_eps": 1e-12,
    "hidden_dropout_prob": 0.02,
    "attention_probs_dropout_prob": 0.02,
    "type_vocab_size": 2,
    "initializer_range": 0.02,
    "pad_token_id": 0,
    "position_embedding_type": "absolute",
    "model_type": "bert",
}
#: random-init presets: BertConfig keys; ``vocab_size`` None = the data's genes + specials
PRESETS: dict[str, dict] = {
    "gf-6L-10M-i2048": {
        **_GF_COMMON,
        "num_hidden_layers": 6,
        "hidden_size": 256,
        "num_attention_heads": 4,
        "intermediate_size": 512,
        "max_position_embeddings": 2048,
        "vocab_size": 25426,
    },
    "gf-12L-30M-i2048": {
        **_GF_COMMON,
        "num_hidden_layers": 12,
        "hidden_size": 512,
        "num_attention_heads": 8,
        "intermediate_size": 1024,
        "max_position_embeddings": 2048,
        "vocab_size": 25426,
    },
    # tiny presets for tests and smoke runs: a wider init so random embeddings differ
    "tiny": {
        **_GF_COMMON,
        "num_hidden_layers": 2,
        "hidden_size": 32,
        "num_attention_heads": 4,
        "intermediate_size": 64,
        "max_position_embeddings": 256,
        "vocab_size": None,
        "initializer_range": 0.2,
    },
    "tiny-4L": {
        **_GF_COMMON,
        "num_hidden_layers": 4,
        "hidden_size": 64,
        "num_attention_heads": 4,
        "intermediate_size": 128,
        "max_position_embeddings": 512,
        "vocab_size": None,
        "initializer_range": 0.2,
    },
}


@dataclass
class ModelBundle:
    """A Geneformer model with everything needed to tokenize for it and to say what it is."""

    model: object  # transformers.BertForMaskedLM
    token_dictionary: dict[str, int]
    gene_medians: dict[str, float] | None = None
    trained: bool = True
    provenance: dict = field(default_factory=dict)
    gene_mapping: dict[str, str] | None = None

    # ------------------------------------------------------------------ facts
    @property
    def config(self):
        return self.model.config

    @property
    def n_layers(self) -> int:
        return int(self.model.config.num_hidden_layers)

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def max_len(self) -> int:
        """The model's input size (positions), special tokens included."""
        return int(self.model.config.max_position_embeddings)

    @property
    def vocab_size(self) -> int:
        return int(self.model.config.vocab_size)

    @property
    def pad_id(self) -> int:
        return int(self.token_dictionary.get(PAD, 0))

    @property
    def mask_id(self) -> int | None:
        return self.token_dictionary.get(MASK)

    @property
    def cls_id(self) -> int | None:
        return self.token_dictionary.get(CLS)

    @property
    def eos_id(self) -> int | None:
        return self.token_dictionary.get(EOS)

    @property
    def special_ids(self) -> list[int]:
        return [int(self.token_dictionary[t]) for t in SPECIAL_TOKENS if t in self.token_dictionary]

    @property
    def note(self) -> str | None:
        """:data:`UNTRAINED_NOTE` when the weights are random, else None."""
        return None if self.trained else UNTRAINED_NOTE

    def id_to_gene(self) -> dict[int, str]:
        """Token id -> gene id (special tokens included)."""
        return {int(v): k for k, v in self.token_dictionary.items()}

    def describe(self) -> dict:
        """Short facts for perf.json and npz metadata."""
        out = {
            "spec": self.provenance.get("spec"),
            "trained": bool(self.trained),
            "n_layers": self.n_layers,
            "hidden_size": self.hidden_size,
            "vocab_size": self.vocab_size,
            "max_len": self.max_len,
            "n_genes_in_vocabulary": len(self.token_dictionary) - len(self.special_ids),
        }
        if not self.trained:
            out["note"] = UNTRAINED_NOTE
        return out

    # ------------------------------------------------------------------ save
    def save(self, directory) -> Path:
        """Write the bundle into ``directory``: HF ``config.json`` + ``model.safetensors``,
        ``token_dictionary.json``, ``gene_median_dictionary.json`` (when known),
        ``ensembl_mapping_dict.json`` (when known) and ``netpert_model.json`` (provenance).

        Wrap it in :func:`netpert._io.atomic_dir` for an all-or-nothing write.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        with _quiet_progress():
            self.model.save_pretrained(str(directory))
        if not (directory / BUNDLE_FILES["weights"]).exists():  # pragma: no cover - transformers always writes it
            raise RuntimeError(f"transformers did not write {BUNDLE_FILES['weights']} in {directory}")
        _write_json(directory / BUNDLE_FILES["tokens"], {k: int(v) for k, v in self.token_dictionary.items()})
        if self.gene_medians is not None:
            _write_json(directory / BUNDLE_FILES["medians"], {k: float(v) for k, v in self.gene_medians.items()})
        if self.gene_mapping:
            _write_json(directory / BUNDLE_FILES["mapping"], dict(self.gene_mapping))
        prov = dict(self.provenance)
        prov["trained"] = bool(self.trained)
        if not self.trained:
            prov["note"] = UNTRAINED_NOTE
        prov["gene_medians"] = prov.get("gene_medians") or ("model" if self.gene_medians is not None else "none")
        prov["saved"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        _write_json(directory / BUNDLE_FILES["provenance"], prov)
        return directory


def _write_json(path: Path, data) -> None:
    with open(path, "w") as fh:
        json.dump(data, fh, indent=1 if isinstance(data, dict) and len(data) < 200 else None, default=json_default)


# --------------------------------------------------------------------------- dictionaries


class _SafeUnpickler(pickle.Unpickler):
    """Rebuilds only dicts / lists / strings / numbers (and numpy scalars): no code runs."""

    _ALLOWED = {
        ("builtins", "dict"),
        ("builtins", "list"),
        ("builtins", "set"),
        ("builtins", "tuple"),
        ("builtins", "str"),
        ("builtins", "int"),
        ("builtins", "float"),
        ("collections", "OrderedDict"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy", "float64"),
        ("numpy", "float32"),
        ("numpy", "int64"),
    }

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}: only plain dictionaries are read")


def read_dictionary(path) -> dict:
    """A Geneformer / Helical dictionary from ``.json`` or ``.pkl`` (read safely)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"dictionary file not found: {path}")
    try:
        if path.suffix == ".json":
            with open(path) as fh:
                data = json.load(fh)
        else:
            with open(path, "rb") as fh:
                data = _SafeUnpickler(io.BytesIO(fh.read())).load()
    except (pickle.UnpicklingError, json.JSONDecodeError, EOFError, ValueError) as exc:
        raise InputError(f"cannot read the dictionary {path}: {exc}") from exc
    if not isinstance(data, Mapping):
        raise InputError(f"{path} does not hold a dictionary (got {type(data).__name__})")
    return dict(data)


def _clean_tokens(raw: Mapping, path) -> dict[str, int]:
    try:
        tokens = {str(k): int(v) for k, v in raw.items()}
    except (TypeError, ValueError) as exc:
        raise InputError(f"{path}: token ids must be integers ({exc})") from exc
    if PAD not in tokens:
        raise InputError(f"{path}: the token dictionary has no {PAD} token; is it a Geneformer token dictionary?")
    return tokens


def _clean_medians(raw: Mapping, path) -> dict[str, float]:
    try:
        return {str(k): float(v) for k, v in raw.items()}
    except (TypeError, ValueError) as exc:
        raise InputError(f"{path}: gene medians must be numbers ({exc})") from exc


def _clean_mapping(raw: Mapping) -> dict[str, str]:
    return {str(k): str(v) for k, v in raw.items() if v is not None}


# --------------------------------------------------------------------------- weights


def _read_config(path: Path):
    from transformers import BertConfig

    if not path.is_file():
        raise InputError(f"model config not found: {path}")
    try:
        config = BertConfig.from_json_file(str(path))
    except (ValueError, OSError) as exc:
        raise InputError(f"cannot read the model config {path}: {exc}") from exc
    return config


def _weights_file(folder: Path) -> Path:
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (folder / name).is_file():
            return folder / name
    raise InputError(
        f"model weights not found in {folder}: expected model.safetensors or pytorch_model.bin "
        f"({folder / 'pytorch_model.bin'} for Helical's v1 models)"
    )


@contextlib.contextmanager
def _quiet_progress():
    """No transformers progress bars (they would fill the rule logs)."""
    from transformers.utils import logging as tlog

    was = tlog.is_progress_bar_enabled()
    tlog.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            tlog.enable_progress_bar()


def _load_hf_weights(folder: Path):
    """``BertForMaskedLM`` from ``folder`` (config.json + weights), SDPA attention, eval mode."""
    from transformers import BertForMaskedLM

    _read_config(folder / "config.json")  # a clear error for a missing / broken config
    weights = _weights_file(folder)
    try:
        with _quiet_progress():
            model = BertForMaskedLM.from_pretrained(
                str(folder), attn_implementation="sdpa", weights_only=True, use_safetensors=weights.suffix == ".safetensors"
            )
    except pickle.UnpicklingError as exc:
        raise InputError(
            f"refusing to load the Geneformer weights {weights}: the file holds Python objects beyond tensors, which "
            "unpickling would run (torch.load weights_only refused them). Use a model.safetensors file, or convert "
            "a checkpoint you trust to safetensors"
        ) from exc
    except (OSError, ValueError, RuntimeError) as exc:
        raise InputError(f"cannot load the Geneformer weights {weights}: {exc}") from exc
    return model.eval(), weights


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _check_vocabulary(tokens: dict[str, int], vocab_size: int, source) -> None:
    top = max(tokens.values())
    if top >= vocab_size:
        raise InputError(
            f"the token dictionary {source} has ids up to {top} but the model's vocab_size is {vocab_size}: "
            "the dictionary does not belong to this model (30M-series models need the 30M dictionary, 95M+ the 95M one)"
        )


# --------------------------------------------------------------------------- specs


def parse_spec(spec: str) -> tuple[str, str]:
    """``'kind:rest'`` -> (kind, rest); kinds: helical-cache, hf, random-init."""
    if not isinstance(spec, str) or ":" not in spec:
        raise InputError(
            f"isp.model '{spec}' is not a model spec: use helical-cache:<dir>, hf:<dir> or random-init:<preset> "
            f"(presets: {', '.join(PRESETS)})"
        )
    kind, rest = spec.split(":", 1)
    if kind not in ("helical-cache", "hf", "random-init"):
        raise InputError(
            f"isp.model '{spec}': unknown kind '{kind}'; use helical-cache:<dir>, hf:<dir> or random-init:<preset>"
        )
    if not rest:
        raise InputError(f"isp.model '{spec}' names no folder / preset after '{kind}:'")
    return kind, rest


def load_model(spec: str, genes: Sequence[str] | None = None, seed: int = 0) -> ModelBundle:
    """Load or build the model named by ``spec`` (see the module docstring).

    ``genes``: the data's gene ids, used only by ``random-init`` to build the vocabulary
    (they take ids 2, 3, ... after ``<pad>`` 0 and ``<mask>`` 1). ``seed``: random-init's weights.
    """
    kind, rest = parse_spec(spec)
    if kind == "random-init":
        return random_init(rest, genes=genes, seed=seed)
    if kind == "helical-cache":
        return load_helical_cache(rest)
    return load_hf(rest)


def random_init(preset: str, genes: Sequence[str] | None = None, seed: int = 0) -> ModelBundle:
    """The preset's exact architecture with seeded random weights and a vocabulary of ``genes``.

    The real ``vocab_size`` is kept (so the masked-LM head costs what it costs for the real
    model); genes beyond its capacity are left out of the vocabulary (the tokenizer then
    counts them as unknown), keeping the first ones given.
    """
    import torch
    from transformers import BertConfig, BertForMaskedLM

    if preset not in PRESETS:
        raise InputError(f"unknown random-init preset '{preset}'; available: {', '.join(PRESETS)}")
    if genes is None or len(genes) == 0:
        raise InputError(
            f"random-init:{preset} builds its vocabulary from the data's genes, but no genes were given"
        )
    cfg = dict(PRESETS[preset])
    genes = list(dict.fromkeys(str(g) for g in genes))  # unique, in order
    specials = [PAD, MASK]
    vocab_size = cfg.pop("vocab_size") or len(genes) + len(specials)
    capacity = vocab_size - len(specials)
    dropped = max(0, len(genes) - capacity)
    if dropped:
        log.warning("random-init:%s: %d genes do not fit the %d-token vocabulary and are left out", preset, dropped, vocab_size)
        genes = genes[:capacity]
    tokens = {PAD: 0, MASK: 1}
    tokens.update({g: i + len(specials) for i, g in enumerate(genes)})
    config = BertConfig(vocab_size=int(vocab_size), **{k: v for k, v in cfg.items() if k != "model_type"})
    config.architectures = ["BertForMaskedLM"]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        model = BertForMaskedLM._from_config(config, attn_implementation="sdpa")
    model.eval()
    provenance = {
        "spec": f"random-init:{preset}",
        "kind": "random-init",
        "preset": preset,
        "seed": int(seed),
        "trained": False,
        "note": UNTRAINED_NOTE,
        "vocab_size": int(vocab_size),
        "n_genes_in_vocabulary": len(genes),
        "n_genes_left_out": int(dropped),
        "architecture": _arch(model),
        "versions": _versions(),
    }
    return ModelBundle(model=model, token_dictionary=tokens, gene_medians=None, trained=False, provenance=provenance)


def _arch(model) -> dict:
    c = model.config
    return {
        "class": type(model).__name__,
        "num_hidden_layers": int(c.num_hidden_layers),
        "hidden_size": int(c.hidden_size),
        "num_attention_heads": int(c.num_attention_heads),
        "intermediate_size": int(c.intermediate_size),
        "hidden_act": str(c.hidden_act),
        "max_position_embeddings": int(c.max_position_embeddings),
        "vocab_size": int(c.vocab_size),
        "layer_norm_eps": float(c.layer_norm_eps),
        "attn_implementation": getattr(c, "_attn_implementation", None),
        "n_parameters": int(sum(p.numel() for p in model.parameters())),
    }


def _versions() -> dict:
    import torch
    import transformers

    return {"torch": torch.__version__, "transformers": transformers.__version__, "python": platform.python_version()}


def _find_dictionary(folders: Sequence[Path], stem: str) -> Path | None:
    """The first ``stem*.pkl`` / ``stem*.json`` in ``folders`` (exact names first)."""
    for folder in folders:
        for suffix in (".pkl", ".json"):
            if (folder / f"{stem}{suffix}").is_file():
                return folder / f"{stem}{suffix}"
    for folder in folders:
        if folder.is_dir():
            found = sorted(p for p in folder.glob(f"{stem}*") if p.suffix in (".pkl", ".json") and p.is_file())
            if found:
                return found[0]
    return None


def load_helical_cache(location: str) -> ModelBundle:
    """A Geneformer model from Helical's cache layout (see the module docstring)."""
    root_s, _, model_name = location.partition("#")
    model_name = model_name or DEFAULT_HELICAL_MODEL
    root = Path(root_s).expanduser()
    if not root.exists():
        raise InputError(f"Helical cache folder not found: {root} (isp.model helical-cache:{location})")
    # locate the model folder and the version folder holding the dictionaries
    if (root / "config.json").is_file():
        model_dir, dict_dir = root, root.parent
    else:
        candidates = []
        for base in (root / "geneformer", root):
            for version in ("v1", "v2", "v3"):
                candidates.append((base / version / model_name, base / version))
        found = [c for c in candidates if c[0].is_dir()]
        if not found:
            expected = root / "geneformer" / "v1" / model_name
            raise InputError(
                f"Helical model folder not found: {expected} (isp.model helical-cache:{location}); "
                "the Helical cache holds geneformer/<version>/<model>/ with config.json and the weights"
            )
        model_dir, dict_dir = found[0]
    dictionaries = {}
    for key, stem, required in (
        ("tokens", "token_dictionary", True),
        ("medians", "gene_median_dictionary", True),
        ("mapping", "ensembl_mapping_dict", False),
    ):
        path = next((dict_dir / f"{stem}{s}" for s in (".pkl", ".json") if (dict_dir / f"{stem}{s}").is_file()), None)
        if path is None and required:
            raise InputError(
                f"Helical cache file missing: {dict_dir / (stem + '.pkl')} (or {stem}.json) for isp.model "
                f"helical-cache:{location}; re-download the model with Helical or fix the path"
            )
        dictionaries[key] = path
    for name in ("config.json",):
        if not (model_dir / name).is_file():
            raise InputError(f"Helical cache file missing: {model_dir / name} (isp.model helical-cache:{location})")
    model, weights = _load_hf_weights(model_dir)
    tokens = _clean_tokens(read_dictionary(dictionaries["tokens"]), dictionaries["tokens"])
    _check_vocabulary(tokens, int(model.config.vocab_size), dictionaries["tokens"])
    medians = _clean_medians(read_dictionary(dictionaries["medians"]), dictionaries["medians"])
    mapping = _clean_mapping(read_dictionary(dictionaries["mapping"])) if dictionaries["mapping"] else None
    provenance = {
        "spec": f"helical-cache:{location}",
        "kind": "helical-cache",
        "model_name": model_dir.name,
        # paths as the config gave them (never resolved: no absolute path the user did not write)
        "model_dir": str(model_dir),
        "weights": str(weights),
        "weights_sha256": _sha256(weights),
        "files": {k: str(v) if v else None for k, v in dictionaries.items()},
        "trained": True,
        "architecture": _arch(model),
        "versions": _versions(),
    }
    return ModelBundle(model, tokens, medians, True, provenance, mapping)


def load_hf(location: str) -> ModelBundle:
    """A Geneformer model from a local checkpoint folder (config.json + weights).

    The token dictionary is required (``token_dictionary*.json|pkl`` in the folder, its two
    parents, or their ``geneformer/`` and ``geneformer/gene_dictionaries_30m/`` folders); the
    gene medians and the Ensembl mapping are optional.
    """
    folder = Path(location).expanduser()
    if not folder.is_dir():
        raise InputError(f"model folder not found: {folder} (isp.model hf:{location})")
    if not (folder / "config.json").is_file():
        raise InputError(f"model file missing: {folder / 'config.json'} (isp.model hf:{location})")
    model, weights = _load_hf_weights(folder)
    vocab_size = int(model.config.vocab_size)
    search = []
    for base in (folder, folder.parent, folder.parent.parent):
        search += [base, base / "geneformer", base / "geneformer" / "gene_dictionaries_30m"]
    token_candidates = []
    for base in search:
        if base.is_dir():
            token_candidates += sorted(p for p in base.glob("token_dictionary*") if p.suffix in (".pkl", ".json"))
    tokens, token_path = None, None
    for path in token_candidates:
        cand = _clean_tokens(read_dictionary(path), path)
        if max(cand.values()) < vocab_size:
            tokens, token_path = cand, path
            break
    if tokens is None:
        if token_candidates:
            _check_vocabulary(_clean_tokens(read_dictionary(token_candidates[0]), token_candidates[0]), vocab_size, token_candidates[0])
        raise InputError(
            f"model file missing: {folder / 'token_dictionary.json'} (or token_dictionary*.pkl in {folder}, its parents "
            f"or their geneformer/ folders) for isp.model hf:{location}"
        )
    dict_dirs = [token_path.parent, *search]
    median_path = _find_dictionary(dict_dirs, "gene_median_dictionary")
    mapping_path = _find_dictionary(dict_dirs, "ensembl_mapping_dict")
    medians = _clean_medians(read_dictionary(median_path), median_path) if median_path else None
    mapping = _clean_mapping(read_dictionary(mapping_path)) if mapping_path else None
    provenance = {
        "spec": f"hf:{location}",
        "kind": "hf",
        # paths as the config gave them (never resolved: no absolute path the user did not write)
        "model_dir": str(folder),
        "weights": str(weights),
        "weights_sha256": _sha256(weights),
        "files": {
            "tokens": str(token_path),
            "medians": str(median_path) if median_path else None,
            "mapping": str(mapping_path) if mapping_path else None,
        },
        "trained": True,
        "architecture": _arch(model),
        "versions": _versions(),
    }
    if medians is None:
        provenance["gene_medians"] = "none in the checkpoint: computed from the data"
    return ModelBundle(model, tokens, medians, True, provenance, mapping)


def load_bundle(directory) -> ModelBundle:
    """Reload a bundle written by :meth:`ModelBundle.save` (``results/isp/model/``)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise InputError(f"model folder not found: {directory} (run the isp_model rule first)")
    for key in ("config", "tokens", "provenance"):
        if not (directory / BUNDLE_FILES[key]).is_file():
            raise InputError(f"model folder {directory} is missing {BUNDLE_FILES[key]}: rerun the isp_model rule")
    model, weights = _load_hf_weights(directory)
    tokens = _clean_tokens(read_dictionary(directory / BUNDLE_FILES["tokens"]), directory / BUNDLE_FILES["tokens"])
    _check_vocabulary(tokens, int(model.config.vocab_size), directory / BUNDLE_FILES["tokens"])
    medians_path = directory / BUNDLE_FILES["medians"]
    medians = _clean_medians(read_dictionary(medians_path), medians_path) if medians_path.is_file() else None
    mapping_path = directory / BUNDLE_FILES["mapping"]
    mapping = _clean_mapping(read_dictionary(mapping_path)) if mapping_path.is_file() else None
    with open(directory / BUNDLE_FILES["provenance"]) as fh:
        try:
            provenance = json.load(fh)
        except json.JSONDecodeError as exc:
            raise InputError(f"{directory / BUNDLE_FILES['provenance']} is not valid JSON: rerun the isp_model rule") from exc
    trained = bool(provenance.get("trained", True))
    provenance["bundle_dir"] = str(directory.resolve())
    return ModelBundle(model, tokens, medians, trained, provenance, mapping)


def as_bundle(bundle_or_dir) -> ModelBundle:
    """A :class:`ModelBundle` from a bundle or a saved bundle folder."""
    if isinstance(bundle_or_dir, ModelBundle):
        return bundle_or_dir
    return load_bundle(bundle_or_dir)


def build_model(adata, spec: str = "random-init:gf-6L-10M-i2048", seed: int = 0, gene_id_column: str | None = None) -> ModelBundle:
    """The workflow's model step: load / build ``spec`` for the cells in ``adata``.

    For ``random-init`` the vocabulary is the data's genes (those expressed in most cells
    first when they outnumber the vocabulary). When the model has no gene medians they are
    computed from ``adata`` (Geneformer's non-zero medians of normalised counts), so every
    stratum is tokenized with the same medians. The provenance records the data's gene
    coverage (genes in the vocabulary / unknown).
    """
    from netpert.isp.tokenizer import compute_gene_medians, gene_ids_of, match_genes

    genes = gene_ids_of(adata, gene_id_column)
    kind, _ = parse_spec(spec)
    if kind == "random-init":
        order = np.arange(len(genes))
        preset = spec.split(":", 1)[1]
        cap = (PRESETS.get(preset, {}).get("vocab_size") or 0) - 2
        if cap > 0 and len(genes) > cap:
            X = adata.X
            nnz = np.asarray((X > 0).sum(axis=0)).ravel()
            order = np.argsort(-nnz, kind="stable")
        bundle = load_model(spec, genes=[genes[i] for i in order], seed=seed)
    else:
        bundle = load_model(spec, seed=seed)
    match = match_genes(genes, bundle.token_dictionary, bundle.gene_mapping, special=bundle.special_ids)
    if bundle.gene_medians is None:
        bundle.gene_medians = compute_gene_medians(adata, gene_id_column=gene_id_column, token_dictionary=bundle.token_dictionary, gene_mapping=bundle.gene_mapping)
        bundle.provenance["gene_medians"] = (
            f"computed from the data ({adata.n_obs} cells): non-zero medians of counts / cell total x 10,000"
        )
    bundle.provenance["data"] = {
        "n_cells": int(adata.n_obs),
        "n_genes": int(len(genes)),
        "gene_id_column": gene_id_column or "index",
        "n_genes_in_vocabulary": int(match.n_known),
        "n_genes_unknown": int(match.n_unknown),
        "unknown_examples": match.unknown[:20],
    }
    return bundle


__all__ = [
    "ModelBundle",
    "PRESETS",
    "UNTRAINED_NOTE",
    "SPECIAL_TOKENS",
    "as_bundle",
    "build_model",
    "load_bundle",
    "load_helical_cache",
    "load_hf",
    "load_model",
    "parse_spec",
    "random_init",
    "read_dictionary",
    "write_model",
]


def write_model(adata, out_dir, spec: str = "random-init:gf-6L-10M-i2048", seed: int = 0, gene_id_column: str | None = None) -> ModelBundle:
    """Rule ``isp_model``: :func:`build_model` for ``adata`` (an AnnData or an .h5ad path),
    saved atomically into ``out_dir`` (all files or none)."""
    from netpert._io import atomic_dir

    if isinstance(adata, (str, Path)):
        import anndata as ad

        path = Path(adata)
        if not path.is_file():
            raise InputError(f"cell file not found: {path}")
        adata = ad.read_h5ad(path)
    bundle = build_model(adata, spec=spec, seed=seed, gene_id_column=gene_id_column)
    with atomic_dir(out_dir) as tmp:
        bundle.save(tmp)
    return bundle

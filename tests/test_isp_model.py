"""Model specs (netpert.isp.model): random-init presets, Helical's cache layout, HF folders, bundles."""

from __future__ import annotations

import json
import pickle

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch
from transformers import BertConfig, BertForMaskedLM

from netpert.errors import InputError
from netpert.isp.model import (
    PRESETS,
    UNTRAINED_NOTE,
    build_model,
    load_bundle,
    load_model,
    random_init,
    read_dictionary,
    write_model,
)

GENES = [f"G{i}" for i in range(30)]


def tiny_cells(n_cells=10, genes=GENES, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.poisson(rng.gamma(1.0, 2.0, size=len(genes)), size=(n_cells, len(genes))).astype(np.float32)
    X[:, 0] += 1  # every cell expresses something
    return ad.AnnData(sp.csr_matrix(X), obs=pd.DataFrame(index=[f"c{i}" for i in range(n_cells)]), var=pd.DataFrame(index=genes))


def embed(model, ids):
    ids = torch.as_tensor(ids)
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=torch.ones_like(ids), output_hidden_states=True).hidden_states[-2]


def test_gf_6l_preset_is_the_real_architecture_with_the_real_vocab_size():
    bundle = random_init("gf-6L-10M-i2048", genes=["B", "A", "B", "C"], seed=0)
    c = bundle.model.config
    assert (c.num_hidden_layers, c.hidden_size, c.num_attention_heads, c.intermediate_size) == (6, 256, 4, 512)
    assert (c.hidden_act, c.max_position_embeddings, c.vocab_size, c.pad_token_id) == ("relu", 2048, 25426, 0)
    assert (c.layer_norm_eps, c.type_vocab_size, c.initializer_range) == (1e-12, 2, 0.02)
    assert c.hidden_dropout_prob == 0.02 and c.attention_probs_dropout_prob == 0.02
    assert c._attn_implementation == "sdpa"
    # the masked-LM head spans the whole vocabulary, as for Helical's model
    assert bundle.model.cls.predictions.decoder.out_features == 25426
    # the data's genes (deduplicated, in order) take the first ids after <pad> 0 and <mask> 1
    assert bundle.token_dictionary == {"<pad>": 0, "<mask>": 1, "B": 2, "A": 3, "C": 4}
    assert bundle.trained is False and bundle.note == UNTRAINED_NOTE
    assert bundle.provenance["note"] == UNTRAINED_NOTE and bundle.describe()["note"] == UNTRAINED_NOTE
    assert not bundle.model.training


def test_random_init_is_seeded_and_checks_its_inputs():
    a, b = random_init("tiny", GENES, seed=1), random_init("tiny", GENES, seed=1)
    c = random_init("tiny", GENES, seed=2)
    ids = [[2, 5, 7, 9]]
    assert torch.equal(embed(a.model, ids), embed(b.model, ids))
    assert not torch.equal(embed(a.model, ids), embed(c.model, ids))
    assert a.model.config.vocab_size == len(GENES) + 2
    with pytest.raises(InputError, match="unknown random-init preset 'huge'"):
        load_model("random-init:huge", genes=GENES)
    with pytest.raises(InputError, match="no genes were given"):
        load_model("random-init:tiny")
    with pytest.raises(InputError, match="unknown kind 's3'"):
        load_model("s3:bucket")
    with pytest.raises(InputError, match="not a model spec"):
        load_model("gf-6L")
    assert {"gf-6L-10M-i2048", "tiny"} <= set(PRESETS)


def write_helical_cache(root, fmt="pkl", weights="pytorch_model.bin", model_name="gf-6L-10M-i2048"):
    """Helical's cache layout with a tiny random Geneformer (Ensembl-keyed dictionaries)."""
    ens = [f"ENSG{i:011d}" for i in range(len(GENES))]
    tokens = {"<pad>": 0, "<mask>": 1, **{e: i + 2 for i, e in enumerate(ens)}}
    medians = {e: float(1 + i % 5) for i, e in enumerate(ens)}
    mapping = {g: e for g, e in zip(GENES, ens)}
    v1 = root / "geneformer" / "v1"
    mdir = v1 / model_name
    mdir.mkdir(parents=True)
    for name, data in (("token_dictionary", tokens), ("gene_median_dictionary", medians), ("ensembl_mapping_dict", mapping)):
        if fmt == "pkl":
            with open(v1 / f"{name}.pkl", "wb") as fh:
                pickle.dump(data, fh)
        else:
            (v1 / f"{name}.json").write_text(json.dumps(data))
    config = BertConfig(
        vocab_size=len(tokens), hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
        max_position_embeddings=64, hidden_act="relu", initializer_range=0.3,
    )
    torch.manual_seed(5)
    model = BertForMaskedLM(config).eval()
    config.to_json_file(str(mdir / "config.json"))
    if weights == "pytorch_model.bin":
        torch.save(model.state_dict(), mdir / weights)
    else:
        model.save_pretrained(str(mdir))
    return model, tokens, medians, mapping


@pytest.mark.parametrize("fmt", ["pkl", "json"])
def test_helical_cache_layout_loads(tmp_path, fmt):
    ref, tokens, medians, mapping = write_helical_cache(tmp_path, fmt=fmt)
    bundle = load_model(f"helical-cache:{tmp_path}")
    assert bundle.trained is True and bundle.note is None
    assert bundle.token_dictionary == tokens and bundle.gene_medians == medians and bundle.gene_mapping == mapping
    assert bundle.provenance["model_name"] == "gf-6L-10M-i2048" and len(bundle.provenance["weights_sha256"]) == 64
    assert bundle.model.config._attn_implementation == "sdpa"
    ids = [[2, 9, 4, 17, 3]]
    torch.testing.assert_close(embed(bundle.model, ids), embed(ref, ids))
    # the model folder itself, and the geneformer folder, work too
    assert load_model(f"helical-cache:{tmp_path / 'geneformer' / 'v1' / 'gf-6L-10M-i2048'}").token_dictionary == tokens


def test_helical_cache_safetensors_and_model_choice(tmp_path):
    write_helical_cache(tmp_path, weights="model.safetensors", model_name="gf-12L-38M-i4096")
    bundle = load_model(f"helical-cache:{tmp_path}#gf-12L-38M-i4096")
    assert bundle.provenance["weights"].endswith("model.safetensors")
    with pytest.raises(InputError, match=r"geneformer/v1/gf-6L-10M-i2048"):
        load_model(f"helical-cache:{tmp_path}")


def test_helical_cache_missing_files_are_named(tmp_path):
    write_helical_cache(tmp_path)
    mdir = tmp_path / "geneformer" / "v1" / "gf-6L-10M-i2048"
    (mdir / "pytorch_model.bin").unlink()
    with pytest.raises(InputError, match=r"pytorch_model\.bin"):
        load_model(f"helical-cache:{tmp_path}")
    (tmp_path / "geneformer" / "v1" / "token_dictionary.pkl").unlink()
    with pytest.raises(InputError, match=r"v1/token_dictionary\.pkl"):
        load_model(f"helical-cache:{tmp_path}")
    (mdir / "config.json").unlink()
    (tmp_path / "geneformer" / "v1" / "token_dictionary.pkl").write_bytes(pickle.dumps({"<pad>": 0}))
    with pytest.raises(InputError, match=r"config\.json"):
        load_model(f"helical-cache:{tmp_path}")
    with pytest.raises(InputError, match="Helical cache folder not found"):
        load_model(f"helical-cache:{tmp_path / 'nope'}")


def test_pickles_are_read_without_running_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "token_dictionary.pkl"
    path.write_bytes(pickle.dumps({"<pad>": Evil()}))
    with pytest.raises(InputError, match="refusing to unpickle builtins.print"):
        read_dictionary(path)
    path.write_bytes(pickle.dumps({"A": np.float64(2.5)}))
    assert read_dictionary(path) == {"A": 2.5}


def test_weights_that_would_run_code_are_an_input_error(tmp_path):
    import os

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    write_helical_cache(tmp_path)
    weights = tmp_path / "geneformer" / "v1" / "gf-6L-10M-i2048" / "pytorch_model.bin"
    weights.write_bytes(pickle.dumps({"bert.embeddings.word_embeddings.weight": Evil()}))
    with pytest.raises(InputError, match=r"refusing to load the Geneformer weights .*pytorch_model\.bin.*safetensors"):
        load_model(f"helical-cache:{tmp_path}")


def test_bundle_round_trip_and_hf_folder(tmp_path):
    data = tiny_cells()
    out = tmp_path / "model"
    bundle = write_model(data, out, spec="random-init:tiny", seed=3)
    names = sorted(p.name for p in out.iterdir())
    assert names == ["config.json", "gene_median_dictionary.json", "model.safetensors", "netpert_model.json", "token_dictionary.json"]
    assert not list(tmp_path.glob(".model*"))  # no temporary folder left
    again = load_bundle(out)
    ids = [[2, 3, 4, 10, 11]]
    torch.testing.assert_close(embed(again.model, ids), embed(bundle.model, ids))
    assert again.token_dictionary == bundle.token_dictionary
    assert again.gene_medians == pytest.approx(bundle.gene_medians)
    assert again.trained is False
    prov = json.loads((out / "netpert_model.json").read_text())
    assert prov["note"] == UNTRAINED_NOTE and prov["trained"] is False and prov["seed"] == 3
    assert "computed from the data" in prov["gene_medians"] and prov["data"]["n_genes"] == len(GENES)
    # the saved folder is a local HF checkpoint folder too
    hf = load_model(f"hf:{out}")
    torch.testing.assert_close(embed(hf.model, ids), embed(bundle.model, ids))
    assert hf.gene_medians == pytest.approx(bundle.gene_medians)


def test_bundle_and_hf_missing_files(tmp_path):
    out = tmp_path / "model"
    write_model(tiny_cells(), out, spec="random-init:tiny")
    (out / "token_dictionary.json").unlink()
    with pytest.raises(InputError, match=r"token_dictionary\.json"):
        load_bundle(out)
    with pytest.raises(InputError, match=r"token_dictionary\.json"):
        load_model(f"hf:{out}")
    (out / "model.safetensors").unlink()
    with pytest.raises(InputError, match=r"model weights not found .*pytorch_model\.bin"):
        load_model(f"hf:{out}")
    with pytest.raises(InputError, match="model folder not found"):
        load_bundle(tmp_path / "absent")


def test_helical_model_for_symbol_data_reports_unknown_genes(tmp_path):
    write_helical_cache(tmp_path)
    data = tiny_cells(genes=GENES[:25] + ["NOTAGENE1", "NOTAGENE2"])
    bundle = build_model(data, f"helical-cache:{tmp_path}")
    assert bundle.provenance["data"]["n_genes_in_vocabulary"] == 25
    assert bundle.provenance["data"]["n_genes_unknown"] == 2
    assert bundle.gene_medians is not None and bundle.provenance.get("gene_medians") is None  # the model's own

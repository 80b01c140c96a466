"""One source per default: the config schema owns every default; the library functions the rule
scripts call either take the value from the rule (no default) or default to the schema's value,
and config/README.md documents the schema's defaults."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from netpert.config import load_schema

ROOT = Path(__file__).resolve().parents[1]


def schema_defaults(node: dict, path: tuple = ()) -> dict[str, object]:
    out = {}
    for key, sub in node.get("properties", {}).items():
        if "properties" in sub:
            out.update(schema_defaults(sub, path + (key,)))
        elif "default" in sub:
            out[".".join(path + (key,))] = sub["default"]
    return out


DEFAULTS = schema_defaults(load_schema())


def _functions():
    from netpert import aracne, data, viper
    from netpert.aracne.imported import regulons_from_file
    from netpert.isp import methods
    from netpert.isp.evaluate import evaluate_run  # noqa: F401
    from netpert.isp.export import export_onnx
    from netpert.isp.metrics import DEFAULT_BAR
    from netpert.isp.model import write_model
    from netpert.isp.quantize import quantize_onnx, token_batches
    from netpert.isp.runner import infer_stratum
    from netpert.isp.tokens import tokenize_stratum
    from netpert.regulators import regulators_in

    # (function, parameter) -> the config key its rule passes in
    pairs = {
        (data.prepare_data, "tissue_key"): "data.tissue_key",
        (data.prepare_data, "counts_layer"): "data.counts_layer",
        (data.prepare_data, "gene_symbols"): "data.gene_symbols",
        (data.prepare_data, "min_cells"): "data.min_cells",
        (data.prepare_data, "min_cells_per_gene"): "data.min_cells_per_gene",
        (data.prepare_data, "regulator_lists"): "regulators.lists",
        (data.prepare_data, "species"): "regulators.species",
        (regulators_in, "lists"): "regulators.lists",
        (regulators_in, "species"): "regulators.species",
        (data.stratify, "min_cells"): "strata.min_cells",
        (data.stratify, "max_cells"): "strata.max_cells",
        (data.stratify, "use_metacells"): "strata.metacells.enabled",
        (data.stratify, "metacell_method"): "strata.metacells.method",
        (data.stratify, "metacell_k"): "strata.metacells.k",
        (data.stratify, "metacell_max_k"): "strata.metacells.max_k",
        (data.stratify, "metacell_max_cells"): "strata.metacells.max_cells",
        (data.stratify, "target_umis"): "strata.metacells.target_umis",
        (data.stratify, "n_pcs"): "strata.metacells.n_pcs",
        (data.stratify, "seed"): "strata.seed",
        (aracne.calibrate, "method"): "aracne.threshold_method",
        (aracne.calibrate, "pvalue"): "aracne.pvalue",
        (aracne.calibrate, "fdr"): "aracne.fdr",
        (aracne.calibrate, "seed"): "aracne.seed",
        (aracne.calibrate, "resampling"): "aracne.resampling",
        (aracne.calibrate, "backend"): "aracne.backend",
        (aracne.calibrate, "estimator"): "aracne.estimator",
        (aracne.bootstrap_networks, "dpi"): "aracne.dpi",
        (aracne.bootstrap_networks, "dpi_tolerance"): "aracne.dpi_tolerance",
        (aracne.bootstrap_networks, "backend"): "aracne.backend",
        (aracne.stratum_consensus, "consensus_pvalue"): "aracne.consensus_pvalue",
        (aracne.stratum_consensus, "bonferroni"): "aracne.bonferroni",
        (aracne.stratum_consensus, "max_targets"): "aracne.max_targets",
        (aracne.stratum_consensus, "min_targets"): "aracne.min_targets",
        (aracne.stratum_consensus, "skip_empty"): "strata.skip_empty",
        (aracne.stratum_consensus, "seed"): "aracne.seed",
        (aracne.stratum_consensus, "backend"): "aracne.backend",
        (regulons_from_file, "max_targets"): "aracne.max_targets",
        (regulons_from_file, "min_targets"): "aracne.min_targets",
        (viper.run_viper, "signature"): "viper.signature",
        (viper.run_viper, "eset_filter"): "viper.eset_filter",
        (viper.run_viper, "min_targets"): "viper.min_targets",
        (viper.run_viper, "mvws"): "viper.mvws",
        (viper.run_viper, "pleiotropy"): "viper.pleiotropy",
        (viper.run_viper, "network_choice"): "viper.network_choice",
        (viper.run_viper, "block_size"): "viper.block_size",
        (viper.run_viper, "enrichment"): "viper.enrichment",
        (viper.run_master_regulators, "top_k"): "viper.top_k",
        (viper.run_master_regulators, "padj"): "viper.mr_padj",
        (write_model, "spec"): "isp.model",
        (write_model, "seed"): "isp.seed",
        (tokenize_stratum, "targets_source"): "isp.targets.source",
        (tokenize_stratum, "genes"): "isp.targets.genes",
        (tokenize_stratum, "top_k"): "isp.targets.top_k",
        (tokenize_stratum, "pairs"): "isp.targets.pairs",
        (tokenize_stratum, "anchor"): "isp.targets.anchor",
        (tokenize_stratum, "perturbation"): "isp.perturbation",
        (tokenize_stratum, "shift_fraction"): "isp.shift_fraction",
        (tokenize_stratum, "cells_per_stratum"): "isp.cells_per_stratum",
        (tokenize_stratum, "seed"): "isp.seed",
        (tokenize_stratum, "max_len"): "isp.max_len",
        (export_onnx, "layer"): "isp.layer",
        (export_onnx, "opset"): "isp.onnx.opset",
        (export_onnx, "atol"): "isp.onnx.atol",
        (quantize_onnx, "candidates"): "isp.onnx.int8_candidates",
        (quantize_onnx, "seed"): "isp.seed",
        (token_batches, "n_calibration"): "isp.onnx.n_calibration",
        (token_batches, "seed"): "isp.seed",
        (infer_stratum, "layer"): "isp.layer",
        (infer_stratum, "repeats"): "isp.repeats",
        (infer_stratum, "cells_per_job"): "isp.cells_per_job",
        (infer_stratum, "device"): "isp.device",
    }
    constants = {
        **{f"isp.batch_size.{m}": methods.DEFAULT_BATCH_SIZE[m] for m in methods.METHODS},
        **{f"isp.bar.{k}": v for k, v in DEFAULT_BAR.items()},
        "aracne.fdr": aracne.pipeline.DEFAULT_FDR,
    }
    return pairs, constants


def _same(a, b) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return list(a) == list(b)
    return a == b


def test_library_defaults_are_the_schemas():
    pairs, constants = _functions()
    wrong = []
    for (func, param), key in pairs.items():
        assert key in DEFAULTS, f"{key} has no default in the schema"
        sig = inspect.signature(func)
        assert param in sig.parameters, f"{func.__qualname__} has no parameter {param}"
        default = sig.parameters[param].default
        if default is not inspect.Parameter.empty and not _same(default, DEFAULTS[key]):
            wrong.append(f"{func.__module__}.{func.__qualname__}({param}={default!r}) vs {key}: {DEFAULTS[key]!r}")
    for key, value in constants.items():
        if not _same(value, DEFAULTS[key]):
            wrong.append(f"{key}: library {value!r} vs schema {DEFAULTS[key]!r}")
    assert not wrong, "\n".join(wrong)


def test_every_isp_method_has_a_batch_size_and_the_method_enum_is_the_registry():
    from netpert.isp.methods import METHODS

    isp = load_schema()["properties"]["isp"]["properties"]
    assert set(isp["batch_size"]["properties"]) == set(METHODS)
    text = str(isp["methods"])
    for name in METHODS:
        assert name in text


def _readme_defaults() -> dict[str, str]:
    rows = {}
    for line in (ROOT / "config" / "README.md").read_text().splitlines():
        m = re.match(r"\|\s*`([\w.]+)`\s*\|\s*(.*?)\s*\|", line)
        if m:
            rows[m.group(1)] = m.group(2)
    return rows


def _render(value) -> set[str]:
    """The spellings config/README may use for a schema default."""
    if value is None:
        return {"`null`", "null", "`~`"}
    if isinstance(value, bool):
        return {f"`{str(value).lower()}`"}
    if isinstance(value, float):
        return {f"`{value!r}`", f"`{value:g}`", f"`{value}`", f"`{value:.0e}`".replace("e-0", "e-"), f"`{value:.1e}`"}
    if isinstance(value, (list, dict)):
        import json

        return {f"`{json.dumps(value)}`", "`" + json.dumps(value).replace('"', "") + "`",
                "`[" + ", ".join(map(str, value)) + "]`" if isinstance(value, list) else "`{}`"}
    return {f"`{value}`", f"`{value!r}`"}


def test_config_readme_states_the_schema_defaults():
    rows = _readme_defaults()
    missing = sorted(k for k in DEFAULTS if k not in rows and not k.startswith(("isp.batch_size.", "isp.bar.")))
    assert not missing, f"config/README.md has no row for {missing}"
    wrong = [f"{k}: README {rows[k]!r}, schema {DEFAULTS[k]!r}" for k in DEFAULTS
             if k in rows and rows[k] and not any(s in rows[k] for s in _render(DEFAULTS[k]))]
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize(
    "given, expected",
    [
        ({"aracne": {"bootstraps": "20", "dpi": "false", "pvalue": "1e-6", "fdr": "null"}},
         {"aracne": {"bootstraps": 20, "dpi": False, "pvalue": 1e-6, "fdr": None}}),
        ({"aracne": {"dpi_tolerance": "0.1", "bonferroni": "true"}}, {"aracne": {"dpi_tolerance": 0.1, "bonferroni": True}}),
        ({"strata": {"metacells": {"enabled": "auto", "k": "7"}}}, {"strata": {"metacells": {"enabled": "auto", "k": 7}}}),
        ({"strata": {"metacells": {"enabled": "true"}}}, {"strata": {"metacells": {"enabled": True}}}),
        # a string where the schema takes strings stays a string: the column named 'null' is a column
        ({"data": {"cell_type_key": "123"}}, {"data": {"cell_type_key": "123"}}),
        ({"isp": {"batch_size": {"onnx": "4"}, "targets": {"genes": ["SPI1", "1"]}}},
         {"isp": {"batch_size": {"onnx": 4}, "targets": {"genes": ["SPI1", "1"]}}}),
        # not a number: left for validation to report
        ({"aracne": {"bootstraps": "many"}}, {"aracne": {"bootstraps": "many"}}),
    ],
)
def test_nested_config_strings_get_the_schema_types(given, expected):
    from netpert.config import coerce_config

    config = coerce_config(given)
    for section, values in expected.items():
        for key, value in values.items():
            got = config[section][key]
            if isinstance(value, dict):
                for k, v in value.items():
                    assert got[k] == v and type(got[k]) is type(v), (section, key, k, got[k])
            else:
                assert got == value and type(got) is type(value), (section, key, got)


def test_coerced_config_validates_and_bad_values_still_fail():
    import copy

    import jsonschema
    import yaml

    from netpert.config import coerce_config

    schema = load_schema()
    base = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    good = copy.deepcopy(base)
    good["aracne"] = {**good.get("aracne", {}), "bootstraps": "20", "bonferroni": "false"}
    coerce_config(good, schema)
    jsonschema.validate(good, schema)
    assert good["aracne"]["bootstraps"] == 20 and good["aracne"]["bonferroni"] is False
    bad = copy.deepcopy(base)
    bad["aracne"] = {**bad.get("aracne", {}), "bootstraps": "twenty"}
    coerce_config(bad, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)

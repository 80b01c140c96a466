"""The ISP method registry is the one place a method is defined; the schema, the rules and the
library defaults agree with it; planning imports neither torch nor onnxruntime."""

from __future__ import annotations

import inspect
import re
import subprocess
import sys
from pathlib import Path

import yaml

from netpert.isp import methods as M

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = yaml.safe_load((ROOT / "workflow" / "schemas" / "config.schema.yaml").read_text())
ISP = SCHEMA["properties"]["isp"]["properties"]
ISP_SMK = (ROOT / "workflow" / "rules" / "isp.smk").read_text()


def _default(*path):
    node = ISP
    for key in path[:-1]:
        node = node[key]["properties"]
    return node[path[-1]]["default"]


def test_schema_methods_and_batch_sizes_are_the_registry():
    enum = ISP["methods"]["oneOf"][1]["items"]["enum"]
    assert tuple(enum) == M.METHODS
    assert {k: v["default"] for k, v in ISP["batch_size"]["properties"].items()} == M.DEFAULT_BATCH_SIZE
    assert tuple(ISP["device"]["enum"]) == M.DEVICES
    for name in M.METHODS:
        assert name in ISP["methods"]["description"]


def test_every_artifact_has_its_rule_and_every_record_is_whole():
    for m in M.REGISTRY.values():
        assert m.batching in M.BATCHINGS and callable(m.factory)
        # a number, or auto: the artifact rule's tuning, with a number to fall back on
        assert m.batch_size >= 1 if m.batch_size != M.AUTO else (m.artifact_rule and m.fallback_batch_size >= 1)
        assert (m.artifact is None) == (m.artifact_rule is None)
        if m.artifact_rule:
            # the rule exists and writes the registry's artifact (ISP_ARTIFACTS[<method>])
            rule = re.search(rf"^rule {m.artifact_rule}:\n(.*?)(?=^rule |\Z)", ISP_SMK, re.S | re.M)
            assert rule, m.artifact_rule
            assert f'ISP_ARTIFACTS["{m.name}"]' in rule.group(1).split("log:")[0]
    assert M.REGISTRY[M.BASELINE].artifact is None
    assert [m for m in M.METHODS if M.REGISTRY[m].needs_cuda] == ["tensorrt"]


def test_library_defaults_are_the_schemas():
    from netpert.isp.export import export_onnx
    from netpert.isp.metrics import DEFAULT_BAR
    from netpert.isp.quantize import DEFAULT_CANDIDATES, token_batches
    from netpert.isp.tokens import tokenize_stratum

    def sig(fn, name):
        return inspect.signature(fn).parameters[name].default

    assert sig(export_onnx, "opset") == _default("onnx", "opset")
    assert sig(export_onnx, "atol") == _default("onnx", "atol")
    assert sig(export_onnx, "layer") == _default("layer")
    assert list(DEFAULT_CANDIDATES) == _default("onnx", "int8_candidates")
    assert sig(token_batches, "n_calibration") == _default("onnx", "n_calibration")
    assert DEFAULT_BAR == {k: v["default"] for k, v in ISP["bar"]["properties"].items()}
    for key in ("top_k", "pairs", "anchor"):
        assert sig(tokenize_stratum, key) == _default("targets", key), key
    assert sig(tokenize_stratum, "targets_source") == _default("targets", "source")
    for key in ("perturbation", "shift_fraction", "cells_per_stratum", "seed", "max_len"):
        assert sig(tokenize_stratum, key) == _default(key), key


def test_planning_imports_no_torch_or_onnxruntime():
    code = (
        "import sys; from netpert.isp.methods import plan_methods; "
        "p = plan_methods('auto', 'cuda'); import netpert.isp.backends, netpert.isp.records; "
        "print(sorted(m for m in ('torch', 'onnxruntime', 'tensorrt') if m in sys.modules), p.methods)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.startswith("[]") and "tensorrt" in out

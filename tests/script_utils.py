"""A script of benchmarks/ loaded as a module, for the tests of its functions."""

from __future__ import annotations

import importlib.util
import sys

from workflow_utils import ROOT


def load_benchmark(name: str):
    """``benchmarks/<name>.py`` as the module ``name`` (registered in sys.modules, which its
    dataclasses need)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod

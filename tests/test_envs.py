"""envs/*.yaml against pyproject.toml: conda channels cannot be reached here to solve the envs, so this
test holds what can be checked without them.

- every env installs netpert's base dependencies and its stage's extras, no more, each with the range
  pyproject.toml gives it (conda names mapped to pip names below); pip's `-e ..[extras]` then finds
  them satisfied, and only the [gpu] wheels come from PyPI;
- isp-gpu has onnxruntime-gpu and never the CPU onnxruntime (the two clash); only ISP envs have torch;
- every rule's `conda:` env exists, and every env file is used by a rule;
- the modules each rule's script imports load in its env: they do not import, at import time, a heavy
  package that env does not have (torch, matplotlib, snakemake, ...).
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
ENVS = ROOT / "envs"
RULES = ROOT / "workflow" / "rules"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PROJECT = canonicalize_name(PYPROJECT["project"]["name"])

#: the extras each env installs (its rule family's stage)
ENV_EXTRAS = {
    "data": {"data"},
    "aracne": {"aracne"},
    "viper": {"viper"},
    "isp-cpu": {"isp", "onnx-cpu"},
    "isp-gpu": {"isp", "gpu"},
    "report": {"report"},
}
#: conda-forge name -> pip name, where they differ
CONDA_TO_PIP = {"pytorch": "torch"}
#: packages an env may leave to pip (`-e ..[extras]` installs them from PyPI): the [gpu] wheels
PIP_ONLY = {"isp-gpu": {"onnxruntime-gpu", "tensorrt", "pynvml"}}
#: import names of the heavy packages that a stage must not import where its env lacks them
HEAVY = {
    "torch": "torch",
    "transformers": "transformers",
    "onnx": "onnx",
    "onnxscript": "onnxscript",
    "onnxruntime": "onnxruntime",
    "onnxruntime-gpu": "onnxruntime",
    "tensorrt": "tensorrt",
    "matplotlib": "matplotlib",
    "scanpy": "scanpy",
    "numba": "numba",
    "scikit-learn": "sklearn",
    "snakemake": "snakemake",
}


def _requirements(extras: set[str], seen: set[str] | None = None) -> dict[str, SpecifierSet]:
    """pip name -> range of netpert's base dependencies plus `extras`, self-references resolved."""
    seen = set() if seen is None else seen
    optional = PYPROJECT["project"]["optional-dependencies"]
    out: dict[str, SpecifierSet] = {}
    lines = list(PYPROJECT["project"]["dependencies"]) if not seen else []
    for extra in sorted(extras - seen):
        assert extra in optional, f"pyproject.toml has no extra [{extra}]"
        seen.add(extra)
        lines += optional[extra]
    for line in lines:
        req = Requirement(line)
        name = canonicalize_name(req.name)
        if name == PROJECT:
            out.update(_requirements(set(req.extras), seen))
            continue
        assert out.get(name, req.specifier) == req.specifier, f"{name}: two ranges in pyproject.toml"
        out[name] = req.specifier
    return out


def _conda_spec(item: str) -> tuple[str, str, str | None]:
    """`name>=1,<2 build*` -> (name, version spec, build)."""
    parts = item.split()
    assert len(parts) <= 2, f"unexpected conda spec {item!r}"
    m = re.fullmatch(r"([A-Za-z0-9_.\-]+)(.*)", parts[0])
    assert m, f"unexpected conda spec {item!r}"
    return m.group(1), m.group(2), parts[1] if len(parts) == 2 else None


def _env(name: str) -> dict:
    data = yaml.safe_load((ENVS / f"{name}.yaml").read_text())
    conda, pip = {}, []
    for item in data["dependencies"]:
        if isinstance(item, dict):
            pip += item["pip"]
            continue
        pkg, spec, build = _conda_spec(str(item))
        conda[pkg] = (spec, build)
    return {"channels": data.get("channels", []), "conda": conda, "pip": pip}


def _pip_extras(pip_lines: list[str]) -> set[str]:
    assert len(pip_lines) == 1, f"the pip section holds only netpert itself, found {pip_lines}"
    m = re.fullmatch(r"-e \.\.\[([a-z0-9,\-]+)\]", pip_lines[0].strip())
    assert m, f"pip section should be `-e ..[extras]`, found {pip_lines[0]!r}"
    return set(m.group(1).split(","))


def test_every_env_file_is_known():
    assert {p.stem for p in ENVS.glob("*.yaml")} == set(ENV_EXTRAS)


@pytest.mark.parametrize("env", sorted(ENV_EXTRAS))
def test_env_matches_pyproject(env):
    spec = _env(env)
    assert _pip_extras(spec["pip"]) == ENV_EXTRAS[env]
    assert "defaults" not in spec["channels"]
    wanted = _requirements(ENV_EXTRAS[env])
    conda = dict(spec["conda"])
    py, _ = conda.pop("python")
    assert Version(py.lstrip("=")) in SpecifierSet(PYPROJECT["project"]["requires-python"]), py
    conda.pop("pip")
    listed = {}
    for pkg, (version, _build) in conda.items():
        name = canonicalize_name(CONDA_TO_PIP.get(pkg, pkg))
        assert name in wanted, f"envs/{env}.yaml: {pkg} is not in netpert's base or [{','.join(ENV_EXTRAS[env])}]"
        assert SpecifierSet(version) == wanted[name], (
            f"envs/{env}.yaml: {pkg}{version} but pyproject.toml says {name}{wanted[name]}"
        )
        listed[name] = version
    missing = set(wanted) - set(listed) - PIP_ONLY.get(env, set())
    assert not missing, f"envs/{env}.yaml lacks {sorted(missing)} (pyproject.toml's base or stage extras)"


def test_isp_gpu_has_onnxruntime_gpu_and_no_cpu_onnxruntime():
    spec = _env("isp-gpu")
    resolved = _requirements(_pip_extras(spec["pip"]))
    assert "onnxruntime" not in spec["conda"] and "onnxruntime" not in resolved
    assert "onnxruntime-gpu" in resolved
    assert spec["conda"]["pytorch"][1].startswith("cuda")
    assert _env("isp-cpu")["conda"]["pytorch"][1].startswith("cpu")
    # neither ONNX Runtime build in [isp] itself, so that [isp] combines with [onnx-cpu] or [gpu]
    isp = _requirements({"isp"})
    assert not {"onnxruntime", "onnxruntime-gpu"} & set(isp)
    assert "onnxruntime-gpu" not in _requirements({"all"}) and "onnxruntime" not in _requirements({"all-gpu"})


@pytest.mark.parametrize("env", sorted(set(ENV_EXTRAS) - {"isp-cpu", "isp-gpu"}))
def test_only_isp_envs_have_torch(env):
    spec = _env(env)
    assert "pytorch" not in spec["conda"] and "torch" not in spec["conda"]
    assert "torch" not in _requirements(_pip_extras(spec["pip"]))


def test_base_dependencies_are_minimal():
    base = _requirements(set())
    assert not {"torch", "onnxruntime", "transformers", "snakemake", "matplotlib", "scanpy", "numba"} & set(base)
    everything = _requirements({"all"})
    for extra in ("data", "aracne", "viper", "isp", "onnx-cpu", "report", "workflow"):
        assert set(_requirements({extra})) <= set(everything), extra
    assert set(everything) <= set(_requirements({"test"}))


def _rules() -> list[dict]:
    """Every rule of workflow/rules/*.smk: name, file, its conda env files and its script."""
    common = (RULES / "common.smk").read_text()
    envs_dir = re.search(r'^ENVS\s*=\s*"([^"]+)"', common, re.M).group(1)
    texts = {p.name: p.read_text() for p in sorted(RULES.glob("*.smk"))}
    every = "\n".join(texts.values())
    rules = []
    for fname, text in texts.items():
        for block in re.split(r"^(?=rule \w+:)", text, flags=re.M)[1:]:
            name = re.match(r"rule (\w+):", block).group(1)
            rule = {"name": name, "file": fname, "envs": [], "script": None}
            m = re.search(r"^    conda:\s*\n\s+(.+)$", block, re.M)
            if m:
                value = m.group(1).strip()
                if not value.startswith(("f\"", '"')):  # a name defined in the rules, e.g. ISP_ENV
                    assigned = re.search(rf"^{re.escape(value)}\s*=\s*(.+)$", every, re.M)
                    assert assigned, f"rule {name}: conda: {value} is defined nowhere in workflow/rules"
                    value = assigned.group(1)
                files = re.findall(r"\{ENVS\}/([\w.\-]+\.yaml)", value)
                assert files, f"rule {name}: cannot read its conda env from {value!r}"
                rule["envs"] = [(RULES / envs_dir / f).resolve() for f in files]
            s = re.search(r'^    script:\s*\n\s+"([^"]+)"', block, re.M)
            if s:
                rule["script"] = (RULES / s.group(1)).resolve()
            rules.append(rule)
    return rules


def test_every_rule_conda_env_exists():
    rules = _rules()
    assert rules
    used = set()
    for rule in rules:
        if rule["script"] is None and not rule["envs"]:
            continue  # a target rule (all, networks, ...)
        assert rule["envs"], f"rule {rule['name']} ({rule['file']}) has no conda: env"
        for path in rule["envs"]:
            assert path.is_file(), f"rule {rule['name']}: conda env {path} does not exist"
            assert path.parent == ENVS.resolve()
            used.add(path.stem)
    assert used == set(ENV_EXTRAS), f"env files no rule uses: {sorted(set(ENV_EXTRAS) - used)}"


def _netpert_imports(path: Path) -> set[str]:
    mods = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "netpert":
            mods.add(node.module)
        elif isinstance(node, ast.Import):
            mods |= {a.name for a in node.names if a.name.split(".")[0] == "netpert"}
    return mods


def _loaded_heavy(modules: set[str], forbidden: set[str]) -> list[str]:
    code = (
        "import importlib, json, sys\n"
        f"for m in {sorted(modules)!r}:\n    importlib.import_module(m)\n"
        f"print(json.dumps(sorted({{k.split('.')[0] for k in sys.modules}} & set({sorted(forbidden)!r}))))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _forbidden(extras: set[str]) -> set[str]:
    have = _requirements(extras)
    return {imp for pip, imp in HEAVY.items() if pip not in have and not (imp == "onnxruntime" and "onnxruntime-gpu" in have)}


@pytest.mark.parametrize("env", sorted(ENV_EXTRAS))
def test_stage_scripts_import_only_their_env(env):
    """Imported here, where every package is installed: what loads at import time must be in the env."""
    modules = set()
    for rule in _rules():
        if any(p.stem == env for p in rule["envs"]) and rule["script"] is not None:
            modules |= _netpert_imports(rule["script"])
    assert modules, f"no rule script uses envs/{env}.yaml"
    loaded = _loaded_heavy(modules, _forbidden(ENV_EXTRAS[env]))
    assert not loaded, f"envs/{env}.yaml's scripts import {loaded} at import time ({sorted(modules)})"


def test_workflow_host_imports_no_stage_package():
    """Snakemake plans the DAG with netpert's base + [workflow]: what the rules import at parse time."""
    modules = set()
    for p in [ROOT / "Snakefile", *sorted(RULES.glob("*.smk"))]:
        modules |= set(re.findall(r"^(?:from|import) (netpert[\w.]*)", p.read_text(), re.M))
    assert modules
    loaded = _loaded_heavy(modules, _forbidden({"workflow"}) - {"snakemake"})
    assert not loaded, f"the rules import {loaded} at parse time ({sorted(modules)})"

"""The machine and software a benchmark ran on: CPU, cores, RAM, GPU, package versions.

Everything here is read, never guessed: a fact that cannot be found is recorded as
``None`` (the report prints "n/a"), and the GPU is ``"none"`` only when neither torch nor
``nvidia-smi`` sees one.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

#: distributions whose versions the report names (the ones the benchmark depends on)
DEFAULT_PACKAGES = (
    "netpert",
    "snakemake",
    "numpy",
    "pandas",
    "scipy",
    "numba",
    "anndata",
    "scanpy",
    "torch",
    "transformers",
    "onnx",
    "onnxruntime",
    "onnxruntime-gpu",
    "tensorrt",
    "matplotlib",
)

from netpert.machine import (  # noqa: E402,F401  (re-exported: the report's names for them)
    BF16_FLAGS,
    VECTOR_FLAGS,
    _cpuinfo_field,
    _read_text,
    cpu_bf16,
    cpu_flags,
    cpu_model,
    cpu_summary,
)


def package_versions(packages=DEFAULT_PACKAGES) -> dict[str, str | None]:
    """Installed version of each distribution (``None`` where it is not installed)."""
    out = {}
    for name in packages:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def _gpus_from_torch() -> list[dict] | None:
    """CUDA devices torch sees; ``None`` when torch is not installed (it is imported only if installed)."""
    if importlib.util.find_spec("torch") is None:
        return None
    try:
        import torch

        if not torch.cuda.is_available():
            return []
        gpus = []
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            gpus.append({"name": props.name, "memory_gb": round(props.total_memory / 2**30, 1), "source": "torch.cuda"})
        return gpus
    except Exception:  # a broken CUDA install must not stop the report
        return None


def _gpus_from_nvidia_smi() -> list[dict] | None:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        proc = subprocess.run(
            [exe, "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=20,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if proc.returncode != 0:
        return []
    gpus = []
    for line in proc.stdout.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if not parts or not parts[0]:
            continue
        gpu = {"name": parts[0], "source": "nvidia-smi"}
        if len(parts) > 1:
            try:
                gpu["memory_gb"] = round(float(parts[1]) / 1024, 1)
            except ValueError:
                pass
        if len(parts) > 2:
            gpu["driver"] = parts[2]
        gpus.append(gpu)
    return gpus


def gpus() -> list[dict]:
    """GPUs as a list of ``{"name", "memory_gb", "source"}``: torch.cuda first, then nvidia-smi; [] if none."""
    found = _gpus_from_torch()
    if found:
        return found
    smi = _gpus_from_nvidia_smi()
    return smi or []


def ram_gb() -> float | None:
    """Total physical memory in GiB."""
    try:
        import psutil

        return round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:  # pragma: no cover - psutil is a dependency
        text = _read_text("/proc/meminfo")
        value = _cpuinfo_field(text, ("memtotal",))
        return round(int(value.split()[0]) / 2**20, 1) if value else None


def cores() -> tuple[int | None, int | None]:
    """(logical, physical) core counts (psutil; physical may be ``None`` where it cannot tell)."""
    try:
        import psutil

        return psutil.cpu_count(logical=True), psutil.cpu_count(logical=False)
    except ImportError:  # pragma: no cover
        return os.cpu_count(), None


def capture_environment(packages=DEFAULT_PACKAGES) -> dict:
    """Facts about this machine and its software, as a flat-ish JSON-able dict.

    Keys: ``platform``, ``python``, ``cpu_model``, ``cores_logical``, ``cores_physical``,
    ``cpu_affinity`` (cores this process may use), ``ram_gb``, ``cpu_bf16``, ``gpus`` (list of
    dicts, [] when none), ``gpu`` (one line: names or "none"), ``packages`` (name -> version or None).
    """
    logical, physical = cores()
    try:
        affinity = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = None
    flags = cpu_flags()
    gpu_list = gpus()
    return {
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "cpu_model": cpu_model(),
        "cores_logical": logical,
        "cores_physical": physical,
        "cpu_affinity": affinity,
        "ram_gb": ram_gb(),
        "cpu_bf16": cpu_bf16(flags) if flags else None,
        "vector_flags": [f for f in VECTOR_FLAGS if f in flags],
        "cpu": cpu_summary(),
        "gpus": gpu_list,
        "gpu": ", ".join(g["name"] + (f" ({g['memory_gb']} GiB)" if "memory_gb" in g else "") for g in gpu_list) or "none",
        "packages": package_versions(packages),
    }

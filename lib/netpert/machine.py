"""The CPU a figure is measured on: model, feature flags, bfloat16 support, one summary line.

Standard library only, so that every part of netpert (the ISP jobs' perf records, the report,
the benchmarks) names the machine the same way. Facts that cannot be read are ``None`` / empty.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from pathlib import Path


#: CPU flags (x86 /proc/cpuinfo "flags", ARM "Features") that mean native bfloat16 arithmetic
BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")


def _read_text(path: str) -> str:
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return ""


def _cpuinfo_field(text: str, names: tuple[str, ...]) -> str | None:
    """The value of the first of ``names`` (in that priority) found as a "key : value" line."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        key = key.strip().lower()
        if sep and value.strip() and key not in fields:
            fields[key] = value.strip()
    return next((fields[n] for n in names if n in fields), None)


def _lscpu() -> str:
    """What ``lscpu`` prints (C locale), or "" where it is missing or fails."""
    if not shutil.which("lscpu"):
        return ""
    try:
        return subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10, env=dict(os.environ, LC_ALL="C")).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def cpu_field(name: str, cpuinfo: str | None = None) -> str | None:
    """One field of ``/proc/cpuinfo`` (its first core's; ``name`` lower-case, e.g. "vendor_id",
    "cpu family"), None where it is missing."""
    return _cpuinfo_field(_read_text("/proc/cpuinfo") if cpuinfo is None else cpuinfo, (name,))


def cpu_clock(cpuinfo: str | None = None, lscpu: str | None = None) -> tuple[float | None, str]:
    """The clock a peak is computed at (MHz) and where it comes from: ``lscpu``'s "CPU max MHz"
    where it has one (the highest clock the cores run at), else /proc/cpuinfo's "cpu MHz" of the
    first core (on a VM usually the nominal clock: the real one may be higher under boost)."""
    mhz = _cpuinfo_field(_lscpu() if lscpu is None else lscpu, ("cpu max mhz",))
    if mhz:
        return float(mhz), "lscpu 'CPU max MHz'"
    mhz = cpu_field("cpu mhz", cpuinfo)
    if mhz:
        return float(mhz), "/proc/cpuinfo 'cpu MHz' (first core; lscpu gives no max MHz here)"
    return None, "no clock found"


def cpu_model(cpuinfo: str | None = None, lscpu: str | None = None) -> str | None:
    """The CPU's model name: ``lscpu`` "Model name", else ``/proc/cpuinfo`` "model name", else platform."""
    if lscpu is None:
        lscpu = _lscpu()
    name = _cpuinfo_field(lscpu or "", ("model name",))
    if name is None:
        text = _read_text("/proc/cpuinfo") if cpuinfo is None else cpuinfo
        name = _cpuinfo_field(text, ("model name", "hardware", "cpu model", "processor"))
    return name or platform.processor() or None


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    """The CPU's feature flags from ``/proc/cpuinfo`` (empty set where there is no such file)."""
    text = _read_text("/proc/cpuinfo") if cpuinfo is None else cpuinfo
    value = _cpuinfo_field(text, ("flags", "features"))
    return set(value.split()) if value else set()


def cpu_bf16(flags: set[str] | None = None) -> bool:
    """Whether the CPU does bfloat16 arithmetic natively (AVX512-BF16, AMX-BF16 or ARM BF16)."""
    flags = cpu_flags() if flags is None else flags
    return any(f in flags for f in BF16_FLAGS)


#: the vector-unit flags a speed figure depends on, in the order they are printed
VECTOR_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8", "neon", "asimd")


def cpu_summary(cpuinfo: str | None = None) -> str:
    """One line naming the CPU a figure was measured on: model, the cores this process may use
    (of the machine's), and the vector flags of :data:`VECTOR_FLAGS` it has (AVX2 / AVX-512 /
    VNNI / bf16)."""
    flags = cpu_flags(cpuinfo)
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    vec = [f for f in VECTOR_FLAGS if f in flags]
    return (f"{cpu_model(cpuinfo, '' if cpuinfo is not None else None) or 'unknown CPU'}, {usable} of {os.cpu_count()} cores, "
            f"vector flags: {' '.join(vec) if vec else 'none of ' + '/'.join(VECTOR_FLAGS[:5])}")

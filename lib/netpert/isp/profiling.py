"""What an ISP run costs: wall time, throughput, memory, CPU and GPU use.

:class:`Profiler` is a context manager: a daemon thread samples the process's resident memory
(psutil) and, where a GPU exists, its utilisation and memory (pynvml, optional) every
``interval`` seconds; at the end the CPU time used, the process's own peak RSS (VmHWM on Linux, else ``resource.getrusage``) and
torch's peak CUDA allocation are added. :func:`throughput` turns counts and seconds into rates.
"""

from __future__ import annotations

import logging
import os
import resource
import sys
import threading
import time

from netpert.machine import VECTOR_FLAGS, cpu_flags, cpu_model, cpu_summary

log = logging.getLogger(__name__)


def _nvml():
    """pynvml, initialised, or None (not installed / no driver)."""
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except Exception:  # pragma: no cover - needs an NVIDIA driver
        return None
    return pynvml


def _process_peak_rss_mb() -> float:
    """This process's own peak resident memory (MB): VmHWM from /proc/self/status on Linux.

    ``getrusage``'s ru_maxrss is the fallback elsewhere only: on Linux it keeps the peak of a
    parent that spawned this process directly across exec (a 9 MB child of a 1 GB parent
    reported 979 MB), so it is not the job's own number there.
    """
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # kilobytes on Linux, bytes on macOS
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


class Profiler:
    """Measure a block of work.

    >>> with Profiler(gpu=False) as prof:
    ...     _ = sum(range(1000))
    >>> sorted(prof.summary())[:3]
    ['cpu_percent', 'cpu_time_s', 'gpu']

    Parameters
    ----------
    interval
        Seconds between samples.
    gpu
        Sample the GPU (device ``gpu_index``) with pynvml when available; ``"auto"`` = when
        torch sees CUDA.
    """

    def __init__(self, interval: float = 0.05, gpu="auto", gpu_index: int = 0):
        import psutil

        self.interval = float(interval)
        self.process = psutil.Process(os.getpid())
        if gpu == "auto":
            gpu = _torch_cuda()
        self.gpu_index = int(gpu_index)
        self._nvml = _nvml() if gpu else None
        self._handle = None
        if self._nvml is not None:
            try:
                self._handle = self._nvml.nvmlDeviceGetHandleByIndex(self.gpu_index)
            except Exception:  # pragma: no cover - needs an NVIDIA driver
                self._nvml = None
        self.rss_samples: list[float] = []
        self.gpu_util: list[float] = []
        self.gpu_mem: list[float] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.wall_s = 0.0
        self.cpu_time_s = 0.0
        self.machine_busy_s: float | None = None
        self._cuda = bool(gpu) and _torch_cuda()

    def _sample(self) -> None:
        try:
            self.rss_samples.append(self.process.memory_info().rss / 2**20)
        except Exception:  # pragma: no cover - process vanished
            pass
        if self._handle is not None:
            try:
                util = self._nvml.nvmlDeviceGetUtilizationRates(self._handle)
                mem = self._nvml.nvmlDeviceGetMemoryInfo(self._handle)
                self.gpu_util.append(float(util.gpu))
                self.gpu_mem.append(mem.used / 2**20)
            except Exception:  # pragma: no cover - needs an NVIDIA driver
                pass

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> "Profiler":
        if self._cuda:
            import torch

            torch.cuda.reset_peak_memory_stats()
        self._sample()
        self._cpu0 = self.process.cpu_times()
        self._sys0 = _machine_busy_s()
        self._t0 = time.perf_counter()
        self._thread = threading.Thread(target=self._run, name="netpert-profiler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._cuda:
            import torch

            torch.cuda.synchronize()
        self.wall_s = time.perf_counter() - self._t0
        cpu1 = self.process.cpu_times()
        sys1 = _machine_busy_s()
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sample()
        self.cpu_time_s = (cpu1.user - self._cpu0.user) + (cpu1.system - self._cpu0.system)
        self.machine_busy_s = None if self._sys0 is None or sys1 is None else sys1 - self._sys0

    def other_load_cores(self) -> float | None:
        """CPU the rest of the machine used during the block, in cores (machine-wide busy CPU
        seconds from psutil, less this process's, over the wall time); None where unknown."""
        if self.machine_busy_s is None or self.wall_s <= 0:
            return None
        return max(float((self.machine_busy_s - self.cpu_time_s) / self.wall_s), 0.0)

    def summary(self) -> dict:
        """wall_s, cpu_time_s, cpu_percent (100 = one core busy), peak_rss_mb (sampled during
        the block), process_peak_rss_mb (the process's own lifetime peak: VmHWM on Linux), and a ``gpu`` dict (or None)."""
        out = {
            "wall_s": float(self.wall_s),
            "cpu_time_s": float(self.cpu_time_s),
            "cpu_percent": float(100.0 * self.cpu_time_s / self.wall_s) if self.wall_s > 0 else None,
            "peak_rss_mb": float(max(self.rss_samples)) if self.rss_samples else None,
            "process_peak_rss_mb": float(_process_peak_rss_mb()),
            "rss_samples": len(self.rss_samples),
            "other_load_cores": self.other_load_cores(),
            "gpu": None,
        }
        gpu = {}
        if self.gpu_util:
            gpu["util_percent"] = float(sum(self.gpu_util) / len(self.gpu_util))
            gpu["util_percent_max"] = float(max(self.gpu_util))
            gpu["mem_used_peak_mb"] = float(max(self.gpu_mem))
        if self._cuda:
            import torch

            gpu["max_memory_allocated_mb"] = float(torch.cuda.max_memory_allocated() / 2**20)
        if gpu:
            out["gpu"] = gpu
            out["gpu_util_percent"] = gpu.get("util_percent")
            out["gpu_peak_mem_mb"] = gpu.get("max_memory_allocated_mb", gpu.get("mem_used_peak_mb"))
        return out


def _machine_busy_s() -> float | None:
    """Busy CPU seconds of the whole machine so far (all cores; idle and iowait left out)."""
    import psutil

    try:
        t = psutil.cpu_times()
    except Exception:  # pragma: no cover - no /proc
        return None
    return float(sum(v for k, v in t._asdict().items() if k not in ("idle", "iowait", "guest", "guest_nice")))


def _torch_cuda() -> bool:
    torch = sys.modules.get("torch")
    if torch is None:
        try:
            import torch  # noqa: F811
        except ImportError:  # pragma: no cover
            return False
    return bool(torch.cuda.is_available())


def throughput(n_perturbations: int, n_cells: int, n_sequences: int, wall_s: float) -> dict:
    """Rates per second of wall time (None when no time passed)."""
    ok = wall_s and wall_s > 0
    return {
        "perturbations_per_s": float(n_perturbations / wall_s) if ok else None,
        "cells_per_s": float(n_cells / wall_s) if ok else None,
        "sequences_per_s": float(n_sequences / wall_s) if ok else None,
    }


def machine() -> dict:
    """Facts about this machine for perf.json."""
    import platform

    import psutil

    out = {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "cpu_count_logical": psutil.cpu_count(logical=True),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "memory_total_mb": psutil.virtual_memory().total / 2**20,
    }
    out["cpu_model"] = cpu_model()
    out["vector_flags"] = [f for f in VECTOR_FLAGS if f in cpu_flags()]
    out["cpu"] = cpu_summary()
    if _torch_cuda():
        import torch

        out["gpu_name"] = torch.cuda.get_device_name(0)
    return out

"""The ISP method registry: one record per inference method, and the plan made from the config.

Everything that names a method derives from :data:`REGISTRY`: the workflow's jobs and artifact
rules, the default batching and batch size, the report's order, the benchmark's lists; the
config schema's enum and batch-size defaults are held equal to it by a test. Adding a method is
one :class:`Method` record (and its backend class).

This module imports neither torch nor onnxruntime: the workflow plans its jobs from the config
alone (:func:`plan_methods`, at parse time, on a submit host that may have no GPU), and each
``isp_infer`` job asks :meth:`Method.check` where it runs whether the method can run there
(:func:`run_check`); where it cannot, the job writes a "not run" record instead of results.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable

from netpert.errors import InputError

#: ``isp.device``: the device the jobs are meant for (intent, not a probe of this machine)
DEVICES = ("auto", "cpu", "cuda")
#: batching strategies (see :func:`netpert.isp.runner.make_batches`)
BATCHINGS = ("input_order", "length_sorted", "cell_grouped", "cell")
#: a method's batch size ``auto``: the batch size (and threads) its artifact rule measured fastest on
#: the machine that ran it (``quantize_onnx``: :func:`netpert.isp.quantize.read_tuning`)
AUTO = "auto"


def _always(device: str) -> tuple[bool, str]:
    return True, ""


def _module_check(module: str) -> Callable[[str], tuple[bool, str]]:
    """A check that imports ``module`` (lazily, in the job) and asks its ``available()``."""

    def check(device: str) -> tuple[bool, str]:
        try:
            mod = importlib.import_module(module)
        except ImportError as exc:
            return False, f"{module} cannot be imported ({exc})"
        ok, why = mod.available()
        return ok, why.removeprefix("not run: ")

    return check


def _amp_gain(device: str) -> tuple[bool, str]:
    from netpert.isp.backends.torch_fast import amp_plan

    plan = amp_plan(device)
    return bool(plan["amp_effective"]), plan["amp_note"]


def _baseline(bundle, *, layer, device, threads, artifact):
    from netpert.isp.backends.torch_eager import BaselineBackend

    return BaselineBackend(bundle.model, layer=layer, device=device, threads=threads)


def _fast(amp: bool):
    def factory(bundle, *, layer, device, threads, artifact):
        from netpert.isp.backends.torch_fast import FastBackend

        return FastBackend(bundle.model, layer=layer, device=device, threads=threads, amp=amp)

    return factory


def _onnx(name: str):
    def factory(bundle, *, layer, device, threads, artifact):
        from netpert.isp.backends.onnx import OnnxBackend

        providers = "auto" if device == "cuda" else ["CPUExecutionProvider"]
        return OnnxBackend(artifact, threads=threads, providers=providers, name=name)

    return factory


def _tensorrt(bundle, *, layer, device, threads, artifact):
    from netpert.isp.backends.tensorrt import TensorRTBackend

    return TensorRTBackend(artifact, name="tensorrt")


@dataclass(frozen=True)
class Method:
    """One ISP inference method.

    ``factory(bundle, layer=, device=, threads=, artifact=)`` builds its
    :class:`~netpert.isp.backends.base.Backend`; ``artifact`` / ``artifact_rule`` name the file
    under ``results/isp/`` the method runs from and the rule that makes it (None: it runs the
    model folder itself); ``needs_cuda``: it cannot run without a CUDA device;
    ``available(device)`` says whether its software is present where the job runs;
    ``gain(device)`` whether it can be expected to be faster than ``batched`` there (``auto``
    leaves it out where not). ``batch_size`` :data:`AUTO`: as tuned by the artifact rule on its
    machine (recorded in the artifact), ``fallback_batch_size`` for an artifact without tuning.
    """

    name: str
    summary: str
    batching: str
    batch_size: int | str
    factory: Callable
    artifact: str | None = None
    artifact_rule: str | None = None
    needs_cuda: bool = False
    available: Callable[[str], tuple[bool, str]] = _always
    gain: Callable[[str], tuple[bool, str]] = _always
    fallback_batch_size: int | None = None

    def check(self, device: str) -> tuple[bool, str]:
        """Whether the method can run on ``device`` (``cpu`` / ``cuda``, resolved) here, and why not."""
        if self.needs_cuda and device != "cuda":
            return False, "no CUDA device" + (" in this job" if device == "cpu" else "")
        return self.available(device)


REGISTRY: dict[str, Method] = {
    m.name: m
    for m in (
        Method("baseline", "Helical's forward: full BertForMaskedLM, hidden states, fp32", "input_order", 10, _baseline),
        Method("batched", "the encoder up to the pooled layer, inference_mode, fp32", "length_sorted", 32, _fast(False)),
        Method(
            "amp", "batched + autocast (fp16 on CUDA, bf16 on CPU)", "length_sorted", 16, _fast(True), gain=_amp_gain
        ),
        Method(
            "onnx", "ONNX Runtime on the exported encoder", "length_sorted", 8, _onnx("onnx"),
            artifact="model.onnx", artifact_rule="export_onnx", available=_module_check("netpert.isp.backends.onnx"),
        ),
        # dynamic int8 quantisation scales activations per batch: one cell (its original and its
        # perturbations) per batch, so they are quantised alike and a cell's results do not depend
        # on the other cells (nor on shards); batch size and threads as quantize_onnx measured
        # fastest on its machine (16 for a file without that record)
        Method(
            "onnx_int8", "ONNX Runtime, int8-quantised encoder", "cell", AUTO, _onnx("onnx_int8"),
            artifact="model.int8.onnx", artifact_rule="quantize_onnx",
            available=_module_check("netpert.isp.backends.onnx"), fallback_batch_size=16,
        ),
        Method(
            "tensorrt", "TensorRT FP16 engine (CUDA only)", "length_sorted", 64, _tensorrt,
            artifact="model.plan", artifact_rule="build_tensorrt", needs_cuda=True,
            available=_module_check("netpert.isp.backends.tensorrt"),
        ),
    )
}
#: method names in the registry's order (the report's order too)
METHODS = tuple(REGISTRY)
#: the method every other one is compared with
BASELINE = "baseline"
#: batching and batch size of each method (views of the registry)
DEFAULT_BATCHING = {m.name: m.batching for m in REGISTRY.values()}
DEFAULT_BATCH_SIZE = {m.name: m.batch_size for m in REGISTRY.values()}
ARTIFACT_NAMES = {m.name: m.artifact for m in REGISTRY.values() if m.artifact}
#: the methods that run from the saved model folder (PyTorch)
TORCH_METHODS = tuple(m.name for m in REGISTRY.values() if m.artifact is None)


def get_method(name: str) -> Method:
    """The registry record of ``name``; an unknown name is an InputError listing the known ones."""
    try:
        return REGISTRY[name]
    except (KeyError, TypeError):
        raise InputError(f"unknown ISP method {name!r} (isp.methods); use one of {', '.join(METHODS)}") from None


def check_method(name: str) -> str:
    return get_method(name).name


def check_device(device: str) -> str:
    if device not in DEVICES:
        raise InputError(f"unknown device {device!r} (isp.device); use one of {', '.join(DEVICES)}")
    return device


@dataclass(frozen=True)
class Plan:
    """The methods the workflow runs (``methods``), the ones it leaves out with the reason
    (``not_planned``), whether they were asked for by name (``explicit``) and the device intent."""

    methods: tuple[str, ...]
    not_planned: dict
    explicit: bool
    device: str

    @property
    def wants_gpu(self) -> bool:
        """The jobs ask the scheduler for a GPU (``isp.device: cuda``)."""
        return self.device == "cuda"

    def artifact_rules(self) -> dict[str, str]:
        """artifact file name -> the rule that makes it, for the planned methods."""
        return {REGISTRY[m].artifact: REGISTRY[m].artifact_rule for m in self.methods if REGISTRY[m].artifact}


def plan_methods(spec="auto", device: str = "auto") -> Plan:
    """The ISP jobs to plan, from the config alone (no import of torch / onnxruntime, no probe).

    ``device``: ``cuda`` plans every asked method, the CUDA-only ones (tensorrt) included, for
    jobs that will get a GPU (a SLURM GPU partition) even when this machine has none; ``cpu``
    and ``auto`` leave the CUDA-only methods out (``auto`` jobs still use a CUDA device when
    they find one). ``spec``: ``"auto"`` or a list of method names.
    """
    check_device(device)
    if isinstance(spec, str):
        if spec != "auto":
            raise InputError(f"isp.methods must be 'auto' or a list of methods ({', '.join(METHODS)}), got {spec!r}")
        wanted, explicit = list(METHODS), False
    else:
        wanted = [check_method(str(m)) for m in spec]
        if not wanted:
            raise InputError("isp.methods is an empty list: give 'auto' or at least one method")
        wanted, explicit = list(dict.fromkeys(wanted)), True
    methods, not_planned = [], {}
    for name in wanted:
        if REGISTRY[name].needs_cuda and device != "cuda":
            not_planned[name] = f"needs a CUDA device and isp.device is {device} (set isp.device: cuda to plan it for GPU jobs)"
        else:
            methods.append(name)
    return Plan(tuple(methods), not_planned, explicit, device)


def cuda_available() -> bool:
    """Whether PyTorch sees a CUDA device here (imports torch: call it in jobs only)."""
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def job_device(intent: str) -> str:
    """The device a job runs on: CUDA where one is visible and ``intent`` is ``auto`` or ``cuda``."""
    check_device(intent)
    if intent == "cpu":
        return "cpu"
    return "cuda" if cuda_available() else "cpu"


def run_check(name: str, intent: str = "auto", explicit: bool = True) -> tuple[str, str | None, str]:
    """Where an ``isp_infer`` job runs: ``(device, reason_not_run, note)``.

    ``reason_not_run`` is None when the method can run here; ``note`` says when the device
    differs from the intent. A method ``auto`` chose (``explicit`` False) that cannot be faster
    here (amp without bf16 / fp16 units) is not run either.
    """
    method = get_method(name)
    device = job_device(intent)
    note = "isp.device is cuda but this job sees no CUDA device: ran on the CPU" if intent == "cuda" and device == "cpu" else ""
    ok, why = method.check(device)
    if not ok:
        return device, why, note
    if not explicit:
        gains, why = method.gain(device)
        if not gains:
            return device, f"cannot be faster on this machine ({why}); list it in isp.methods to run it anyway", note
    return device, None, note

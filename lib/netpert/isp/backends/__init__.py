"""ISP inference backends: one interface (:class:`~netpert.isp.backends.base.Backend`).

The methods themselves (name, batching, batch size, artifact, device needs, factory) are
records of :data:`netpert.isp.methods.REGISTRY`; :func:`make_backend` builds the backend of
one of them. The ONNX / TensorRT modules are imported lazily, so this works without them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

from netpert.errors import InputError
from netpert.isp.backends.base import Backend, EmbedOutput, resolve_layer
from netpert.isp.methods import (
    ARTIFACT_NAMES,
    DEFAULT_BATCH_SIZE,
    DEFAULT_BATCHING,
    DEVICES,
    METHODS,
    check_device,
    check_method,
    cuda_available,
    get_method,
    job_device,
)


def resolve_device(device: str = "auto") -> str:
    """The device a job runs on (see :func:`netpert.isp.methods.job_device`); imports torch."""
    return job_device(device)


def method_available(method: str, device: str) -> tuple[bool, str]:
    """Whether ``method`` can run on ``device`` (``cpu`` / ``cuda``) here, and why not."""
    return get_method(method).check(device)


def artifact_path(method: str, artifacts) -> Path:
    """The artifact file of ``method`` from ``artifacts`` (a path, a list of paths, or a dict)."""
    record = get_method(method)
    if artifacts is None or (not isinstance(artifacts, (str, Path, Mapping)) and len(artifacts) == 0):
        raise ValueError(f"method {method} needs its artifact ({record.artifact}, from the {record.artifact_rule} rule) but none was given")
    if isinstance(artifacts, Mapping):
        if method not in artifacts:
            raise ValueError(f"no artifact for method {method} among {sorted(artifacts)}")
        path = Path(artifacts[method])
    elif isinstance(artifacts, (str, Path)):
        path = Path(artifacts)
    else:
        paths = [Path(p) for p in artifacts]
        named = [p for p in paths if p.name == record.artifact]
        path = named[0] if named else paths[0]
    if not path.is_file():
        raise InputError(f"artifact for method {method} not found: {path} (run the {record.artifact_rule} rule)")
    return path


def make_backend(
    method: str,
    bundle_dir_or_bundle,
    *,
    layer: int = -2,
    threads: int = 1,
    device: str = "auto",
    artifacts=None,
) -> Backend:
    """A ready :class:`Backend` for ``method`` (a :data:`~netpert.isp.methods.REGISTRY` name).

    ``bundle_dir_or_bundle``: a :class:`~netpert.isp.model.ModelBundle` or its saved folder
    (``results/isp/model``); ``device``: ``auto``, ``cpu`` or ``cuda`` (resolved here);
    ``artifacts``: the ONNX / TensorRT file (a path, a list, or a dict method -> path) of the
    artifact-based methods, whose baked-in layer must be ``layer``.
    """
    record = get_method(method)
    device = job_device(check_device(device)) if device == "auto" else check_device(device)
    if device == "cuda" and not cuda_available():
        raise InputError(f"method {method} was asked to run on CUDA but no CUDA device is visible here; use device 'auto' or 'cpu'")
    ok, why = record.check(device)
    if not ok:
        raise InputError(f"method {method} cannot run here: {why}")
    from netpert.isp.model import as_bundle

    bundle = as_bundle(bundle_dir_or_bundle)
    index = resolve_layer(layer, bundle.n_layers)
    path = artifact_path(method, artifacts) if record.artifact else None
    backend = record.factory(bundle, layer=layer, device=device, threads=threads, artifact=path)
    baked = getattr(backend, "layer", None) if path is not None else None
    if baked is not None and int(baked) != index:
        raise InputError(
            f"{path} was exported for hidden_states[{baked}] but this run pools layer {layer} (= hidden_states[{index}]): "
            "re-export it with the same isp.layer"
        )
    return backend


__all__ = [
    "ARTIFACT_NAMES",
    "artifact_path",
    "Backend",
    "DEFAULT_BATCHING",
    "DEFAULT_BATCH_SIZE",
    "DEVICES",
    "EmbedOutput",
    "METHODS",
    "check_method",
    "make_backend",
    "method_available",
    "resolve_device",
]

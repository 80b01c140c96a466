"""int8 quantisation of the exported ONNX encoder: recipes, calibration, batch-composition drift.

:func:`quantize_onnx` quantises the fp32 file of :func:`netpert.isp.export.export_onnx` with
ONNX Runtime's tools, scores every candidate recipe against fp32 on evaluation batches and ISP
screens (cosine of the cell embeddings, Spearman of the perturbation shifts, the drift of a
cell's embedding with the batch it sits in), times every candidate on the screens on this
machine, keeps the fastest one that meets the consistency bar, and tunes its batch size and
threads (:func:`tune_file`, read back by :func:`read_tuning`).
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from netpert._io import atomic_path
from netpert.errors import InputError
from netpert.isp.backends.base import pad_batch
from netpert.isp.export import write_single_file
from netpert.isp.metrics import DEFAULT_BAR, cosine_rows

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------- int8 quantisation

DEFAULT_CANDIDATES = (
    "dynamic-qint8",
    "dynamic-quint8",
    "dynamic-qint8-perchannel",
    "dynamic-qint8-perchannel-reduced",
    "static-qdq",
)
SELECT_RULES = ("speed", "shift", "accuracy")
#: batch sizes (most items per batch) the tuning of the kept int8 file tries
DEFAULT_TUNE_BATCH_SIZES = (4, 8, 16, 32)
#: metadata key of the int8 file holding the tuned batching, batch size and threads (JSON)
TUNED_KEY = "netpert.tuned"
#: candidates whose median time is within this fraction of the fastest's count as equally fast
#: (timing noise on a shared machine: rounds of one candidate spread by several %); of those the
#: most accurate is kept
SPEED_TOLERANCE = 0.03


@dataclass(frozen=True)
class QuantRecipe:
    """One int8 recipe of ONNX Runtime's quantisation tools.

    ``mode="dynamic"``: weights int8 offline, activation scales computed per batch at run time
    (``quantize_dynamic``: MatMulInteger / DynamicQuantizeMatMul). ``mode="static"``:
    activation scales fixed by calibration on sample batches (``quantize_static``, QDQ format),
    so a cell's embedding does not depend on the other cells of its batch.
    """

    name: str
    mode: str
    weight_type: str = "QInt8"
    activation_type: str = "QUInt8"
    per_channel: bool = False
    op_types: tuple[str, ...] = ("MatMul",)
    #: static only: quantise only MatMuls with a constant weight (not Q.K^T and P.V)
    const_b_only: bool = True
    calibrate_method: str = "MinMax"
    #: static only: give the quantised MatMuls their own copy (Identity) of an input tensor that
    #: also feeds other nodes, so the Q/DQ pair sits on the MatMul side only and the float tensor
    #: still feeds the residual Add; ORT's QDQ quantiser otherwise rounds the residual stream
    #: itself to 8 bits (1 - cosine ~30x larger on gf-6L)
    isolate_inputs: bool = True
    #: static only: also round the MatMul outputs to 8 bits (QDQ default; costs accuracy)
    quantize_outputs: bool = False
    #: 7-bit weights (ORT's ``reduce_range``): a u8 x s8 pair sum stays within int16, so the u8s8
    #: kernel of CPUs without VNNI (AVX2, AVX-512 before VNNI: ``vpmaddubsw``, 16-bit saturating)
    #: cannot saturate; costs one bit of weight precision
    reduce_range: bool = False

    def as_dict(self) -> dict:
        return asdict(self)


QUANT_RECIPES = {
    r.name: r
    for r in (
        QuantRecipe("dynamic-qint8", "dynamic", weight_type="QInt8"),
        QuantRecipe("dynamic-quint8", "dynamic", weight_type="QUInt8"),
        QuantRecipe("dynamic-qint8-perchannel", "dynamic", weight_type="QInt8", per_channel=True),
        QuantRecipe("dynamic-quint8-perchannel", "dynamic", weight_type="QUInt8", per_channel=True),
        QuantRecipe("dynamic-qint8-reduced", "dynamic", weight_type="QInt8", reduce_range=True),
        QuantRecipe("dynamic-qint8-perchannel-reduced", "dynamic", weight_type="QInt8", per_channel=True, reduce_range=True),
        QuantRecipe("static-qdq-s8s8", "static", weight_type="QInt8", activation_type="QInt8", per_channel=True),
        QuantRecipe("static-qdq", "static", weight_type="QInt8", activation_type="QUInt8", per_channel=True),
        QuantRecipe(
            "static-qdq-percentile",
            "static",
            weight_type="QInt8",
            activation_type="QUInt8",
            per_channel=True,
            calibrate_method="Percentile",
        ),
        QuantRecipe(
            "static-qdq-shared",
            "static",
            weight_type="QInt8",
            activation_type="QUInt8",
            per_channel=True,
            isolate_inputs=False,
            quantize_outputs=True,
        ),
        QuantRecipe(
            "static-qdq-allmatmul",
            "static",
            weight_type="QInt8",
            activation_type="QUInt8",
            per_channel=True,
            const_b_only=False,
        ),
    )
}


def parse_recipe(name: str) -> QuantRecipe:
    """The :class:`QuantRecipe` called ``name`` (see :data:`QUANT_RECIPES`)."""
    if name not in QUANT_RECIPES:
        raise InputError(
            f"unknown int8 candidate {name!r} (isp.onnx.int8_candidates): choose from {', '.join(QUANT_RECIPES)}"
        )
    return QUANT_RECIPES[name]


class QuantizationError(InputError):
    """No int8 candidate meets the consistency bar; ``report`` holds every candidate's figures."""

    def __init__(self, message: str, report: dict):
        super().__init__(message)
        self.report = report


def unpad_batches(batches) -> list[np.ndarray]:
    """The cells (1-D arrays of their real tokens) of padded ``(input_ids, attention_mask)`` batches."""
    cells = []
    for ids, mask in batches:
        ids, mask = np.asarray(ids), np.asarray(mask)
        cells.extend(ids[i, mask[i] > 0].astype(np.int64) for i in range(ids.shape[0]))
    return cells


def embed_cells_in_batches(backend, cells, batches_of_indices) -> np.ndarray:
    """Cell embeddings (N, H) of ``cells`` embedded in the given batches (lists of cell indices)."""
    out = [None] * len(cells)
    for index in batches_of_indices:
        ids, mask = pad_batch([cells[i] for i in index])
        emb = backend.embed(ids, mask).cell
        for row, i in enumerate(index):
            out[i] = emb[row]
    return np.stack(out)


def _delete_token(cell: np.ndarray, position: int) -> np.ndarray:
    return np.delete(cell, position)


def composition_drift(
    backend,
    cells,
    reference=None,
    n_probes: int = 8,
    n_perturb: int = 3,
    n_compositions: int = 3,
    batch_size: int = 8,
    seed: int = 0,
) -> dict:
    """How much a cell's embedding moves with the batch it is embedded in, and what that does to ISP shifts.

    ``n_probes`` cells (of ``cells``, 1-D token id arrays) each get ``n_perturb`` perturbed
    copies (one gene token deleted, as in an ISP deletion). Every one of these variants is
    embedded (a) alone, (b) in its cell's group (the cell and its perturbations in one batch:
    the runner's ``cell_grouped`` strategy) and (c) ``n_compositions`` times in random batches
    of ``batch_size`` mixed with other cells (``input_order``-like: a cell and its
    perturbations usually land in different batches).

    Returns
    -------
    dict
        ``spread_mean`` / ``spread_max``: 1 - min pairwise cosine of a variant's embeddings
        across its compositions (0 for a composition-independent method);
        ``shift_error_grouped_*`` / ``shift_error_mixed_*``: |shift - reference shift| with
        shift = 1 - cos(original, perturbed) and the reference shift from ``reference``'s
        grouped batches (or ``backend``'s own when ``reference`` is None), as mean and max,
        and ``*_relative``: mean error / mean reference shift.
    """
    rng = np.random.default_rng(seed)
    cells = [np.asarray(c, dtype=np.int64).ravel() for c in cells]
    eligible = [i for i, c in enumerate(cells) if len(c) >= n_perturb + 2]
    if len(eligible) < 2:
        raise InputError(
            f"composition_drift needs at least 2 cells of >= {n_perturb + 2} tokens, got {len(eligible)}"
        )
    probes = rng.choice(eligible, size=min(n_probes, len(eligible)), replace=False)
    variants, groups = [], []
    for p in probes:
        cell = cells[p]
        positions = rng.choice(np.arange(1, len(cell)), size=n_perturb, replace=False)
        group = [len(variants)]
        variants.append(cell)
        for pos in positions:
            group.append(len(variants))
            variants.append(_delete_token(cell, int(pos)))
        groups.append(group)
    fillers = [cells[i] for i in rng.choice(len(cells), size=len(variants), replace=True)]
    everything = variants + fillers

    def embed_alone(b):
        return embed_cells_in_batches(b, variants, [[i] for i in range(len(variants))])

    def embed_grouped(b):
        return embed_cells_in_batches(b, variants, groups)

    compositions = {"alone": embed_alone(backend), "grouped": embed_grouped(backend)}
    for r in range(n_compositions):
        order = rng.permutation(len(everything))
        chunks = [order[i : i + batch_size].tolist() for i in range(0, len(order), batch_size)]
        compositions[f"mixed{r}"] = embed_cells_in_batches(backend, everything, chunks)[: len(variants)]

    names = list(compositions)
    spread = np.zeros(len(variants))
    for a in range(len(names)):
        for b in range(a + 1, len(names)):
            cos = cosine_rows(compositions[names[a]], compositions[names[b]])
            spread = np.maximum(spread, 1.0 - cos)

    ref = embed_grouped(reference) if reference is not None else compositions["grouped"]

    def shifts(emb):
        return np.array(
            [1.0 - cosine_rows(emb[g[0]][None], emb[j][None])[0] for g in groups for j in g[1:]], dtype=np.float64
        )

    ref_shift = shifts(ref)
    err_grouped = np.abs(shifts(compositions["grouped"]) - ref_shift)
    err_mixed = np.concatenate([np.abs(shifts(compositions[f"mixed{r}"]) - ref_shift) for r in range(n_compositions)])
    scale = max(float(ref_shift.mean()), 1e-300)
    return {
        "n_probes": len(probes),
        "n_perturb": n_perturb,
        "n_compositions": n_compositions,
        "batch_size": batch_size,
        "spread_mean": float(spread.mean()),
        "spread_max": float(spread.max()),
        "reference_shift_mean": float(ref_shift.mean()),
        "shift_error_grouped_mean": float(err_grouped.mean()),
        "shift_error_grouped_max": float(err_grouped.max()),
        "shift_error_grouped_relative": float(err_grouped.mean() / scale),
        "shift_error_mixed_mean": float(err_mixed.mean()),
        "shift_error_mixed_max": float(err_mixed.max()),
        "shift_error_mixed_relative": float(err_mixed.mean() / scale),
    }


class _BatchReader:
    """ONNX Runtime calibration data reader over padded batches."""

    def __init__(self, batches):
        self.batches = [(np.asarray(i, dtype=np.int64), np.asarray(m, dtype=np.int64)) for i, m in batches]
        self.position = 0

    def get_next(self):
        if self.position >= len(self.batches):
            return None
        ids, mask = self.batches[self.position]
        self.position += 1
        return {"input_ids": ids, "attention_mask": mask}

    def rewind(self):
        self.position = 0


def fuse_file(path, metadata: dict) -> int:
    """Fuse the attention blocks of the ONNX file ``path`` in place (see :mod:`netpert.isp.fusion`);
    returns how many were fused (0 when the export records no head count or the pattern differs)."""
    import onnx

    from netpert.isp.fusion import fuse_attention

    heads = metadata.get("netpert.num_heads")
    if not heads:
        return 0
    proto = onnx.load(str(path))
    n = fuse_attention(proto, int(heads))
    if n:
        onnx.save(proto, str(path))
    return n


def preprocess_for_quantization(src, dst) -> dict:
    """ORT's recommended pre-processing (symbolic shape inference + optimisation) of the fp32 model.

    Falls back to ONNX shape inference alone when the symbolic shape inference fails on the graph.
    """
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        quant_pre_process(str(src), str(dst), skip_optimization=False)
        return {"symbolic_shape_inference": True, "optimization": True}
    except Exception as exc:  # noqa: BLE001 - reported and retried without the symbolic pass
        log.warning("quant_pre_process with symbolic shape inference failed (%s); retrying without", exc)
        quant_pre_process(str(src), str(dst), skip_optimization=False, skip_symbolic_shape=True)
        return {"symbolic_shape_inference": False, "optimization": True, "symbolic_error": str(exc)[:300]}


def weight_matmul_nodes(model_path) -> list[str]:
    """Names of the MatMul nodes whose second input is a constant weight (not Q.K^T or P.V)."""
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    constants = {i.name for i in model.graph.initializer}
    constants |= {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    return [n.name for n in model.graph.node if n.op_type in ("MatMul", "Gemm") and n.input[1] in constants]


def isolate_matmul_inputs(src, dst, nodes=None) -> int:
    """Copy ``src`` to ``dst`` with an Identity between a shared tensor and the MatMuls to quantise.

    For every activation tensor that feeds (some of) the MatMuls ``nodes`` (all MatMuls when
    None) and also other nodes, the MatMuls read it through one new Identity, so that static
    QDQ quantisation rounds only the MatMul inputs. Returns the number of Identity nodes added.
    """
    import onnx

    model = onnx.load(str(src))
    graph = model.graph
    chosen = set(nodes) if nodes is not None else {n.name for n in graph.node if n.op_type == "MatMul"}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    types = {v.name: v for v in list(graph.value_info) + list(graph.input) + list(graph.output)}
    added = []
    for tensor, users in consumers.items():
        quantised = [u for u in users if u.name in chosen and u.input[0] == tensor]
        if not quantised or len(quantised) == len(users):
            continue
        copy_name = f"{tensor}__to_matmul"
        added.append(onnx.helper.make_node("Identity", [tensor], [copy_name], name=f"{tensor}__isolate"))
        if tensor in types:
            info = onnx.ValueInfoProto()
            info.CopyFrom(types[tensor])
            info.name = copy_name
            graph.value_info.append(info)
        for user in quantised:
            user.input[0] = copy_name
    if added:
        # keep the graph topologically sorted: each Identity right after its input's producer
        producer_of = {o: i for i, n in enumerate(graph.node) for o in n.output}
        ordered = list(graph.node)
        for ident in sorted(added, key=lambda n: -producer_of.get(n.input[0], -1)):
            ordered.insert(producer_of.get(ident.input[0], -1) + 1, ident)
        del graph.node[:]
        graph.node.extend(ordered)
    onnx.save_model(model, str(dst))
    return len(added)


def uniform_batches(batches, batch_size: int | None = None):
    """The cells of ``batches`` re-batched into equal batches padded to one common length."""
    cells = unpad_batches(batches)
    size = int(batch_size or max(len(b[0]) for b in batches))
    length = max(len(c) for c in cells)
    out = []
    for start in range(0, len(cells) - size + 1, size):
        ids, mask = pad_batch(cells[start : start + size])
        pad = length - ids.shape[1]
        out.append((np.pad(ids, ((0, 0), (0, pad))), np.pad(mask, ((0, 0), (0, pad)))))
    return out or [pad_batch(cells)]


def quantize_with_recipe(src, dst, recipe: QuantRecipe, calibration=None) -> None:
    """Quantise the pre-processed fp32 model ``src`` into ``dst`` following ``recipe``."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )

    if recipe.mode == "dynamic":
        quantize_dynamic(
            str(src),
            str(dst),
            op_types_to_quantize=list(recipe.op_types),
            per_channel=recipe.per_channel,
            reduce_range=recipe.reduce_range,
            weight_type=getattr(QuantType, recipe.weight_type),
        )
        return
    if not calibration:
        raise InputError(f"int8 candidate {recipe.name} (static) needs calibration batches")

    class Reader(_BatchReader, CalibrationDataReader):
        pass

    if recipe.calibrate_method != "MinMax":
        # the histogram calibrators stack every batch's activations: they need one shape
        calibration = uniform_batches(calibration)
    # the QDQ quantiser ignores MatMulConstBOnly: name the weight MatMuls explicitly
    nodes = weight_matmul_nodes(src) if recipe.const_b_only else None
    with tempfile.TemporaryDirectory(prefix=".isolate_", dir=Path(dst).parent) as tmp:
        if recipe.isolate_inputs:
            isolated = Path(tmp) / "isolated.onnx"
            isolate_matmul_inputs(src, isolated, nodes)
            src = isolated
        quantize_static(
            str(src),
            str(dst),
            Reader(calibration),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(recipe.op_types),
            nodes_to_quantize=nodes,
            per_channel=recipe.per_channel,
            reduce_range=recipe.reduce_range,
            activation_type=getattr(QuantType, recipe.activation_type),
            weight_type=getattr(QuantType, recipe.weight_type),
            calibrate_method=getattr(CalibrationMethod, recipe.calibrate_method),
            calibration_providers=["CPUExecutionProvider"],
            extra_options={
                "MatMulConstBOnly": recipe.const_b_only,
                "OpTypesToExcludeOutputQuantization": [] if recipe.quantize_outputs else list(recipe.op_types),
            },
        )


def _embed_all(backend, batches) -> tuple[np.ndarray, float]:
    t0 = time.perf_counter()
    cells = [backend.embed(ids, mask).cell for ids, mask in batches]
    return np.concatenate(cells), time.perf_counter() - t0


def int8_kernel(flags=None) -> str:
    """The int8 matrix kernel ONNX Runtime's MLAS picks on a CPU with ``flags`` (its CPUID dispatch:
    onnxruntime/core/mlas/lib/platform.cpp), in words. MLAS chooses by CPUID at run time; no
    session option or environment variable caps it."""
    from netpert.machine import cpu_flags

    flags = set(cpu_flags() if flags is None else flags)
    if "avx512_vnni" in flags:
        return "u8s8 AVX-512 VNNI (vpdpbusd, 32-bit accumulation: no saturation)"
    if "avx_vnni" in flags:
        return "u8s8 AVX-VNNI (vpdpbusd on 256 bits: no saturation)"
    if "avx512bw" in flags:
        return "u8s8 AVX-512BW (vpmaddubsw: u8 x s8 pair sums saturate at 16 bits; 7-bit weights or u8u8 avoid it)"
    if "avx2" in flags:
        return "u8s8 AVX2 (vpmaddubsw: u8 x s8 pair sums saturate at 16 bits; 7-bit weights or u8u8 avoid it)"
    return "u8s8 SSE / portable kernel"


def synthetic_screens(cells, n_cells: int = 32, n_perturb: int = 3, seed: int = 0) -> list[list[np.ndarray]]:
    """Screens for timing and shift checks where no perturbation plan is at hand: ``n_cells`` of
    ``cells`` (1-D token arrays), each followed by ``n_perturb`` copies with one random gene token
    (not the first) deleted, as an ISP deletion does."""
    rng = np.random.default_rng(seed)
    cells = [np.asarray(c, dtype=np.int64).ravel() for c in cells]
    eligible = [i for i, c in enumerate(cells) if len(c) >= n_perturb + 2]
    chosen = rng.choice(eligible, size=min(n_cells, len(eligible)), replace=False) if eligible else []
    screens = []
    for i in chosen:
        cell = cells[i]
        positions = rng.choice(np.arange(1, len(cell)), size=n_perturb, replace=False)
        screens.append([cell] + [_delete_token(cell, int(p)) for p in positions])
    return screens


def _screen_batches(screens, batching: str, batch_size: int):
    """Padded batches of ``screens`` made as the runner makes them, and each item's (screen, row)."""
    from netpert.isp.runner import make_batches

    items = [(g, k) for g, screen in enumerate(screens) for k in range(len(screen))]
    lengths = [len(screens[g][k]) for g, k in items]
    batches = make_batches(lengths, [g for g, _ in items], batching, batch_size)
    return [pad_batch([screens[items[i][0]][items[i][1]] for i in b]) for b in batches], [[items[i] for i in b] for b in batches]


def _embed_screens(backend, screens, batches, index) -> list[np.ndarray]:
    """Cell embeddings of every screen (rows: the cell, then its perturbations)."""
    rows = {}
    for (ids, mask), idx in zip(batches, index):
        cell = backend.embed(ids, mask).cell
        for r, key in enumerate(idx):
            rows[key] = cell[r]
    return [np.stack([rows[(g, k)] for k in range(len(screen))]) for g, screen in enumerate(screens)]


def _shifts(embedded) -> np.ndarray:
    """1 - cosine(original, perturbed) of every perturbation of every screen."""
    return np.concatenate(
        [1.0 - cosine_rows(np.repeat(e[:1], len(e) - 1, axis=0), e[1:]) for e in embedded if len(e) > 1] or [np.zeros(0)]
    )


def screen_accuracy(embedded, reference) -> dict:
    """Cosines of every screen item with the reference's and the agreement of the perturbation shifts."""
    from netpert.isp.metrics import spearman

    cos = cosine_rows(np.concatenate(embedded), np.concatenate(reference))
    mine, ref = _shifts(embedded), _shifts(reference)
    err = np.abs(mine - ref)
    rho = spearman(mine, ref)
    return {
        "mean_cosine": float(cos.mean()),
        "min_cosine": float(cos.min()),
        "n_shifts": int(len(ref)),
        "shift_spearman": None if not np.isfinite(rho) else float(rho),
        "shift_error_mean": float(err.mean()) if len(err) else None,
        "shift_error_relative": float(err.mean() / max(ref.mean(), 1e-300)) if len(err) else None,
    }


def time_rounds(runs: dict, rounds: int = 3) -> dict[str, list[float]]:
    """Wall seconds of each ``runs[name]()`` in ``rounds`` rounds, the names interleaved and their
    order rotated round by round (load from other processes then hits every name alike)."""
    names = list(runs)
    out = {n: [] for n in names}
    for r in range(int(rounds)):
        for n in names[r % len(names):] + names[: r % len(names)]:
            t0 = time.perf_counter()
            runs[n]()
            out[n].append(round(time.perf_counter() - t0, 5))
    return out


def _thread_grid(threads: int) -> list[int]:
    grid, t = {1, int(threads)}, 2
    while t < threads:
        grid.add(t)
        t *= 2
    return sorted(grid)


def _passes(entry: dict, bar: dict) -> list[str]:
    """The criteria of ``bar`` a candidate misses (empty: it passes)."""
    failed = []
    if entry["mean_cosine"] < bar["mean_cosine"]:
        failed.append(f"mean cosine {entry['mean_cosine']:.6f} < {bar['mean_cosine']}")
    if entry["min_cosine"] < bar["min_cosine"]:
        failed.append(f"min cosine {entry['min_cosine']:.6f} < {bar['min_cosine']}")
    rho = entry.get("screen", {}).get("shift_spearman")
    if rho is not None and "spearman" in bar and rho < bar["spearman"]:
        failed.append(f"Spearman of the perturbation shifts {rho:.4f} < {bar['spearman']}")
    return failed


def as_fast(candidates: dict, tolerance: float = SPEED_TOLERANCE) -> list[str]:
    """The passing candidates whose median time is within ``tolerance`` (relative) of the fastest's."""
    passing = {k: v["seconds"] for k, v in candidates.items() if v.get("passed")}
    if not passing:
        return []
    best = min(passing.values())
    return [k for k, t in passing.items() if t <= best * (1 + tolerance)]


def _choose(candidates: dict, select: str, tolerance: float = SPEED_TOLERANCE) -> str | None:
    passing = {k: v for k, v in candidates.items() if v.get("passed")}
    if not passing:
        return None
    if select == "accuracy":
        key = lambda k: (-passing[k]["mean_cosine"], -passing[k]["min_cosine"])  # noqa: E731
    elif select == "shift":
        key = lambda k: (passing[k]["drift"]["shift_error_mixed_mean"], -passing[k]["mean_cosine"])  # noqa: E731
    else:
        # speed differences within the tolerance are timing noise: of those, the most accurate
        passing = {k: passing[k] for k in as_fast(passing, tolerance)}
        key = lambda k: (-passing[k]["mean_cosine"], -passing[k]["min_cosine"], passing[k]["seconds"])  # noqa: E731
    return min(passing, key=key)


def _why(report: dict, chosen: str, select: str, tolerance: float = SPEED_TOLERANCE) -> str:
    """In words: which candidate was kept and why (the figures it was chosen on)."""
    cands = report["candidates"]
    passing = [k for k, v in cands.items() if v.get("passed")]
    failed = {k: v.get("error") or "; ".join(v.get("failed", [])) for k, v in cands.items() if not v.get("passed")}
    c = cands[chosen]
    if select == "speed":
        tied = as_fast(cands, tolerance)
        others = sorted((cands[k]["seconds"], k) for k in passing if k not in tied)
        if len(tied) == 1:
            text = (f"{chosen}: the fastest of the {len(passing)} candidates meeting the bar on this CPU "
                    f"({c['seconds']:.3f} s median for the screens, {c['speed_vs_fp32']:.2f}x fp32")
        else:
            text = (f"{chosen}: of the {len(passing)} candidates meeting the bar, {len(tied)} were as fast on this CPU "
                    f"(medians within {100 * tolerance:g}% of the fastest: "
                    + ", ".join(f"{k} {cands[k]['seconds']:.3f} s" for k in sorted(tied, key=lambda k: cands[k]["seconds"]))
                    + f"), and it is the most accurate of them (mean cosine {c['mean_cosine']:.6f})")
        text += f"; next {others[0][1]} {others[0][0]:.3f} s)" if others else ")"
    elif select == "accuracy":
        text = f"{chosen}: the highest mean cosine with fp32 ({c['mean_cosine']:.6f}) of the {len(passing)} meeting the bar"
    else:
        text = (f"{chosen}: of the {len(passing)} meeting the bar, the one whose perturbation shifts differ least "
                f"from fp32's in mixed batches ({c['drift']['shift_error_mixed_mean']:.3g})")
    if failed:
        text += "; not meeting the bar: " + "; ".join(f"{k} ({v})" for k, v in failed.items())
    return text


def read_tuning(path) -> dict | None:
    """The batching, batch size and threads ``quantize_onnx`` measured fastest for an int8 file
    (its ``netpert.tuned`` metadata), or None for a file without them."""
    import json

    import onnx

    model = onnx.load(str(path), load_external_data=False)
    raw = next((p.value for p in model.metadata_props if p.key == TUNED_KEY), None)
    return json.loads(raw) if raw else None


def quantize_onnx(
    src,
    dst,
    calibration,
    evaluation=None,
    candidates=DEFAULT_CANDIDATES,
    bar: dict | None = None,
    select: str = "speed",
    threads: int = 1,
    drift: bool = True,
    drift_batch_size: int = 8,
    seed: int = 0,
    keep_dir=None,
    screens=None,
    timing_rounds: int = 3,
    tune: bool = True,
    tune_batch_sizes=DEFAULT_TUNE_BATCH_SIZES,
    speed_tolerance: float = SPEED_TOLERANCE,
) -> dict:
    """Quantise the fp32 ``src`` to int8 and keep in ``dst`` the fastest candidate meeting the bar.

    Parameters
    ----------
    src, dst
        The fp32 export (:func:`export_onnx`) and the int8 file to write (atomically).
    calibration
        Padded batches ``[(input_ids, attention_mask), ...]`` for static calibration.
    evaluation
        Batches the candidates are scored on against fp32 ONNX Runtime (default: ``calibration``;
        pass held-out batches for an unbiased score).
    candidates
        Recipe names of :data:`QUANT_RECIPES` to try.
    bar
        ``{"mean_cosine": 0.999, "min_cosine": 0.99, "spearman": 0.95}``: a candidate passes when
        the cosines of its cell embeddings with fp32's (evaluation batches and screens) meet the
        first two and the Spearman correlation of its perturbation shifts with fp32's meets the third.
    select
        Among passing candidates keep the ``"speed"`` one (default: the shortest median time for
        the screens, measured here, in the ``onnx_int8`` method's batching; of candidates within
        ``speed_tolerance`` of it, the most accurate: the highest mean cosine), the best
        ``"accuracy"`` (mean cosine), or the smallest ISP ``"shift"`` error against fp32 when a cell
        and its perturbations sit in different, mixed batches (needs ``drift``).
    threads
        ONNX Runtime intra-op threads (the most the tuning tries).
    drift, drift_batch_size
        Also measure :func:`composition_drift` of every candidate (and of fp32).
    keep_dir
        When given, every candidate's quantised file is also kept there as ``{name}.onnx``.
    screens
        ISP screens to time and to check the shifts on: a list of groups, each a cell's token ids
        (1-D) followed by its perturbed encodings (:func:`screen_groups` reads them from the token
        files); default: :func:`synthetic_screens` of the evaluation cells (3 deletions each).
    timing_rounds
        Rounds of the timing (candidates interleaved, order rotated); the median is kept.
    tune, tune_batch_sizes
        Time the kept file at every thread count up to ``threads`` (1, powers of two, ``threads``)
        and batch size of ``tune_batch_sizes`` (those giving distinct batches) and write the
        fastest into its metadata (:func:`read_tuning`), which ``onnx_int8`` jobs use.

    Returns
    -------
    dict
        Report: the CPU and its int8 kernel, pre-processing, fp32's figures, every candidate's
        recipe, cosines, shift agreement, timing rounds and median, speed against fp32, file size,
        drift (or error), whether it passed and why not, ``chosen`` with ``why``, and ``tuning``.

    Raises
    ------
    QuantizationError
        When no candidate passes (an :class:`InputError`: the message lists every candidate's figures).
    """
    import json

    import onnx

    from netpert.isp.backends.onnx import OnnxBackend
    from netpert.isp.methods import get_method
    from netpert.machine import cpu_summary

    bar = {**DEFAULT_BAR, **(bar or {})}
    if select not in SELECT_RULES:
        raise InputError(f"select must be one of {SELECT_RULES}, got {select!r}")
    recipes = [parse_recipe(name) for name in candidates]
    if not recipes:
        raise InputError("no int8 candidates given (isp.onnx.int8_candidates is empty)")
    if int(timing_rounds) < 1:
        raise InputError(f"timing_rounds must be >= 1, got {timing_rounds}")
    calibration = list(calibration)
    evaluation = list(evaluation) if evaluation is not None else calibration
    if not evaluation:
        raise InputError("quantize_onnx needs at least one evaluation batch")
    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise InputError(f"fp32 ONNX model not found: {src} (run export_onnx first)")
    metadata = {p.key: p.value for p in onnx.load(str(src), load_external_data=False).metadata_props}
    method = get_method("onnx_int8")
    batching, batch_size = method.batching, int(method.fallback_batch_size or 8)

    report = {
        "src": src.name,  # names only: the report is the same bytes in any folder
        "dst": dst.name,
        "bar": bar,
        "select": select,
        "speed_tolerance": float(speed_tolerance),
        "threads": int(threads),
        "machine": {"cpu": cpu_summary(), "int8_kernel": int8_kernel()},
        "n_calibration_batches": len(calibration),
        "n_calibration_cells": int(sum(len(b[0]) for b in calibration)),
        "n_evaluation_batches": len(evaluation),
        "n_evaluation_cells": int(sum(len(b[0]) for b in evaluation)),
        "evaluation_held_out": evaluation is not calibration,
        "candidates": {},
    }
    eval_cells = unpad_batches(evaluation)
    source = "the token files' perturbation plan"
    if screens is None:
        screens, source = synthetic_screens(eval_cells, seed=seed), "3 random deletions per evaluation cell"
    screens = [[np.asarray(x, dtype=np.int64).ravel() for x in g] for g in screens if len(g)]
    if not screens:
        raise InputError("quantize_onnx needs at least one screen (a cell and its perturbations) to time the candidates")
    s_batches, s_index = _screen_batches(screens, batching, batch_size)
    report["screens"] = {
        "source": source,
        "n_cells": len(screens),
        "n_sequences": int(sum(len(g) for g in screens)),
        "n_perturbations": int(sum(len(g) - 1 for g in screens)),
        "mean_length": float(np.mean([len(x) for g in screens for x in g])),
        "batching": batching,
        "batch_size": batch_size,
        "n_batches": len(s_batches),
        "timing_rounds": int(timing_rounds),
    }

    def screen_run(backend):
        return lambda: [backend.embed(ids, mask, return_tokens=True) for ids, mask in s_batches]

    dst.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".quantize_", dir=dst.parent) as tmp:
        tmp = Path(tmp)
        pre = tmp / "preprocessed.onnx"
        report["preprocess"] = preprocess_for_quantization(src, pre)
        report["attention_fused"] = fuse_file(pre, metadata)
        fp32 = OnnxBackend(src, threads=threads, providers="cpu", name="onnx")
        ref, _ = _embed_all(fp32, evaluation)
        ref_screens = _embed_screens(fp32, screens, s_batches, s_index)
        report["fp32"] = {"file_size_bytes": os.path.getsize(src)}
        if drift:
            report["fp32"]["drift"] = composition_drift(fp32, eval_cells, batch_size=drift_batch_size, seed=seed)
        backends = {}
        for recipe in recipes:
            entry = {"recipe": recipe.as_dict()}
            report["candidates"][recipe.name] = entry
            path = tmp / f"{recipe.name}.onnx"
            try:
                t0 = time.perf_counter()
                quantize_with_recipe(pre, path, recipe, calibration)
                entry["quantize_seconds"] = round(time.perf_counter() - t0, 3)
                backend = OnnxBackend(path, threads=threads, providers="cpu", name="onnx_int8")
                emb, _ = _embed_all(backend, evaluation)
                mine = _embed_screens(backend, screens, s_batches, s_index)
            except InputError:
                raise
            except Exception as exc:  # noqa: BLE001 - a failing recipe is reported, the others go on
                entry.update(passed=False, error=f"{type(exc).__name__}: {exc}"[:500])
                log.warning("int8 candidate %s failed: %s", recipe.name, entry["error"])
                continue
            cos = np.concatenate([cosine_rows(emb, ref), cosine_rows(np.concatenate(mine), np.concatenate(ref_screens))])
            entry.update(
                mean_cosine=float(cos.mean()),
                min_cosine=float(cos.min()),
                screen=screen_accuracy(mine, ref_screens),
                file_size_bytes=os.path.getsize(path),
            )
            if drift:
                entry["drift"] = composition_drift(
                    backend, eval_cells, reference=fp32, batch_size=drift_batch_size, seed=seed
                )
            entry["failed"] = _passes(entry, bar)
            entry["passed"] = not entry["failed"]
            backends[recipe.name] = backend
        # speed: every candidate and fp32 on the same screens, interleaved
        rounds = time_rounds({"fp32": screen_run(fp32), **{k: screen_run(b) for k, b in backends.items()}}, timing_rounds)
        report["fp32"].update(seconds=float(np.median(rounds["fp32"])), seconds_rounds=rounds["fp32"],
                              sequences_per_s=report["screens"]["n_sequences"] / float(np.median(rounds["fp32"])))
        for name in backends:
            entry = report["candidates"][name]
            med = float(np.median(rounds[name]))
            entry.update(seconds=med, seconds_rounds=rounds[name], sequences_per_s=report["screens"]["n_sequences"] / med,
                         speed_vs_fp32=report["fp32"]["seconds"] / med)
            log.info("int8 candidate %s: %s", name, {k: v for k, v in entry.items() if k not in ("recipe", "drift")})
        for b in backends.values():
            b.close()
        fp32.close()
        if keep_dir is not None:
            Path(keep_dir).mkdir(parents=True, exist_ok=True)
            for name, entry in report["candidates"].items():
                if "error" not in entry:
                    write_single_file(
                        tmp / f"{name}.onnx",
                        Path(keep_dir) / f"{name}.onnx",
                        {**metadata, "netpert.precision": "int8", "netpert.quantization": name},
                    )
        select_used = select if drift or select != "shift" else "accuracy"
        chosen = _choose(report["candidates"], select_used, speed_tolerance)
        report["select_used"] = select_used
        report["chosen"] = chosen
        if chosen is None:
            figures = "; ".join(
                f"{k}: " + (f"mean {v['mean_cosine']:.5f}, min {v['min_cosine']:.5f}"
                            + (f", shift Spearman {v['screen']['shift_spearman']:.3f}" if v["screen"]["shift_spearman"] is not None else "")
                            if "mean_cosine" in v else v["error"])
                for k, v in report["candidates"].items()
            )
            raise QuantizationError(
                f"no int8 candidate meets the consistency bar (mean cosine >= {bar['mean_cosine']}, "
                f"min >= {bar['min_cosine']}, Spearman of shifts >= {bar['spearman']} vs fp32) on "
                f"{report['n_evaluation_cells']} cells and {len(screens)} screens: {figures}. "
                "Try other isp.onnx.int8_candidates (e.g. static-qdq, *-perchannel), more n_calibration, "
                "or leave onnx_int8 out of isp.methods",
                report,
            )
        report["why"] = _why(report, chosen, select_used, speed_tolerance)
        # dynamic scales depend on the batch: keep a cell and its perturbations in one batch
        report["recommended_batching"] = "cell" if parse_recipe(chosen).mode == "dynamic" else "any"
        metadata.update({"netpert.precision": "int8", "netpert.quantization": chosen})
        if tune:
            t = report["tuning"] = tune_file(tmp / f"{chosen}.onnx", screens, batching, threads, tune_batch_sizes,
                                             timing_rounds, speed_tolerance)
            metadata[TUNED_KEY] = json.dumps({k: t[k] for k in ("batching", "batch_size", "threads", "threads_tried", "cpu")})
        with atomic_path(dst) as out:
            write_single_file(tmp / f"{chosen}.onnx", out, metadata)
        report["file_size_bytes"] = os.path.getsize(dst)
    return report


def tune_file(path, screens, batching: str, threads: int, batch_sizes=DEFAULT_TUNE_BATCH_SIZES, rounds: int = 3,
              tolerance: float = SPEED_TOLERANCE) -> dict:
    """Time the ONNX file ``path`` on ``screens`` at every thread count up to ``threads`` and every
    batch size of ``batch_sizes`` that makes distinct batches (in ``batching``); returns the grid
    (every round's seconds and the median) and the fastest setting (of those within ``tolerance``
    of the shortest median, the largest batches, then the most threads), with the CPU it ran on."""
    from netpert.isp.backends.onnx import OnnxBackend
    from netpert.machine import cpu_summary

    threads_tried = _thread_grid(threads)
    layouts, same_as = {}, {}
    # of batch sizes that give the same batches, the largest is timed (and kept: it splits no
    # more than what was measured)
    for b in sorted({int(x) for x in batch_sizes}, reverse=True):
        batches, index = _screen_batches(screens, batching, b)
        key = tuple(tuple(i) for i in index)
        first = next((k for k, v in layouts.items() if v[2] == key), None)
        if first is None:
            layouts[b] = (batches, index, key)
        else:
            same_as[b] = first
    backends = {t: OnnxBackend(path, threads=t, providers="cpu", name="onnx_int8") for t in threads_tried}
    runs = {
        (t, b): (lambda be=backends[t], bs=layouts[b][0]: [be.embed(i, m, return_tokens=True) for i, m in bs])
        for t in threads_tried for b in layouts
    }
    for run in runs.values():  # first-call costs (per shape allocations) out of the timing
        run()
    timed = time_rounds(runs, rounds)
    for be in backends.values():
        be.close()
    grid = [
        {"threads": t, "batch_size": b, "n_batches": len(layouts[b][0]), "seconds_rounds": timed[(t, b)],
         "seconds": float(np.median(timed[(t, b)]))}
        for (t, b) in runs
    ]
    fastest = min(g["seconds"] for g in grid)
    # settings within the tolerance of the fastest are as fast as the timing can tell: of those the
    # one splitting cells least, then with the most threads
    tied = [g for g in grid if g["seconds"] <= fastest * (1 + tolerance)]
    best = max(tied, key=lambda g: (g["batch_size"], g["threads"]))
    slowest = max(g["seconds"] for g in grid)
    return {
        "batching": batching,
        "batch_size": best["batch_size"],
        "threads": best["threads"],
        "threads_tried": threads_tried,
        "batch_sizes_same_batches": {str(k): v for k, v in same_as.items()},
        "grid": grid,
        "cpu": cpu_summary(),
        "tolerance": float(tolerance),
        "why": (f"{best['threads']} thread(s), batches of at most {best['batch_size']} ({batching}): "
                + (f"the shortest median time of {len(grid)} settings ({best['seconds']:.3f} s; slowest {slowest:.3f} s)"
                   if len(tied) == 1 else
                   f"of the {len(tied)} of {len(grid)} settings within {100 * tolerance:g}% of the shortest median time "
                   f"({fastest:.3f} s; slowest {slowest:.3f} s), the one with the largest batches, then the most threads")),
    }


def screen_groups(paths, n_calibration: int = 64, n_evaluation: int | None = None, n_cells: int = 32, seed: int = 0):
    """ISP screens of held-out cells from tokenized parquet files (``isp_tokenize`` outputs): up to
    ``n_cells`` of the evaluation cells of :func:`token_batches` (same draw), each followed by
    its perturbed encodings under its file's perturbation plan. Returns ``(screens, info)``;
    ``screens`` is None where no file holds a perturbation plan."""
    from netpert.isp.perturb import expand
    from netpert.isp.tokens import read_tokens, special_ends

    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    cells, plans = [], []
    for path in paths:
        tok = read_tokens(path)
        n_prefix, n_suffix = special_ends(bool(tok.meta.get("special_tokens", False)))
        for ids in tok.input_ids:
            if len(ids):
                cells.append(np.asarray(ids, dtype=np.int64))
                plans.append((tok.specs, tok.shift_fraction, tok.meta.get("max_len"), n_prefix, n_suffix))
    if not any(p[0] for p in plans):
        return None, {"n_cells": 0, "reason": "no perturbation plan in the token files"}
    _, eval_idx = _split(len(cells), n_calibration, n_evaluation, seed)
    screens = []
    for i in eval_idx[: int(n_cells)]:
        specs, fraction, max_len, n_prefix, n_suffix = plans[i]
        exp = expand([cells[i]], specs, fraction, max_len, n_prefix, n_suffix)
        screens.append([cells[i]] + [np.asarray(x, dtype=np.int64) for x in exp.input_ids])
    info = {"n_cells": len(screens), "n_perturbations": int(sum(len(s) - 1 for s in screens))}
    return screens, info


def _split(n: int, n_calibration: int, n_evaluation: int | None, seed: int):
    """Indices of the calibration and evaluation cells of ``n`` (see :func:`token_batches`)."""
    if int(n_calibration) < 1:
        raise InputError(f"n_calibration must be >= 1, got {n_calibration}")
    n_evaluation = int(n_calibration if n_evaluation is None else n_evaluation)
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    if n >= n_calibration + n_evaluation:
        return order[:n_calibration], order[n_calibration : n_calibration + n_evaluation]
    if n >= 2:
        half = n // 2
        return order[:half], order[half:]
    return order, order


def token_batches(paths, n_calibration: int = 64, n_evaluation: int | None = None, batch_size: int = 8, seed: int = 0):
    """Calibration and held-out evaluation batches drawn from tokenized parquet files.

    ``paths``: parquet files with columns ``cell_id``, ``input_ids`` (list of ints) and
    ``length`` (the ``isp_tokenize`` output). ``n_calibration`` cells are drawn at random for
    calibration and ``n_evaluation`` (default: as many) other cells for scoring; when the files
    hold fewer cells, the two sets are split evenly (or shared, for a single cell; the report
    says ``evaluation_held_out: False`` then). Returns ``(calibration, evaluation, info)``.
    """
    import pandas as pd

    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    frames = []
    for path in paths:
        frame = pd.read_parquet(path)
        if "input_ids" not in frame.columns:
            raise InputError(f"{path}: no input_ids column (expected the isp_tokenize output: cell_id, input_ids, length)")
        frames.append(frame[["input_ids"]])
    if not frames:
        raise InputError("no token files given to draw calibration batches from")
    cells = [np.asarray(x, dtype=np.int64) for x in pd.concat(frames, ignore_index=True)["input_ids"]]
    cells = [c for c in cells if len(c) > 0]
    if not cells:
        raise InputError(f"the token files {list(map(str, paths))} hold no cells with tokens")
    cal_idx, eval_idx = _split(len(cells), n_calibration, n_evaluation, seed)

    def batches(index):
        return [pad_batch([cells[i] for i in index[s : s + batch_size]]) for s in range(0, len(index), batch_size)]

    info = {
        "n_cells_available": len(cells),
        "n_calibration_cells": len(cal_idx),
        "n_evaluation_cells": len(eval_idx),
        "evaluation_held_out": bool(len(cells) >= 2),
        "batch_size": int(batch_size),
    }
    return batches(cal_idx), batches(eval_idx), info

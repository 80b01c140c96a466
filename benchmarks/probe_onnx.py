"""Probe (not a test): PyTorch eager vs ONNX Runtime fp32 vs int8 (dynamic, static) at Geneformer size.

A random-weight model of the gf-6L-10M-i2048 architecture (6 layers, hidden 256, 4 heads,
intermediate 512, 2048 positions, vocab 25,426, relu) is exported (layer -2), quantised with
every recipe asked for, and each method embeds the same batches of ``--batch`` cells of random
lengths in each ``--lengths`` range (``300-500`` or a fixed ``2048``). Reported per method and
length: seconds per batch (fastest of ``--repeats`` runs after one warm-up run), cells/s, and the cosine
of the cell embeddings vs the PyTorch fp32 baseline (full model, ``output_hidden_states``);
plus the int8 report (cosines and composition drift of every recipe).

    python benchmarks/probe_onnx.py --lengths 300-500 2048 --batch 32 --out results/probe_onnx.json

Reusable from ``benchmarks/benchmark_isp.py``: :func:`random_geneformer`, :func:`random_batch`,
:func:`time_method`, :func:`probe`.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

GF_6L = {
    "vocab_size": 25426,
    "hidden_size": 256,
    "num_hidden_layers": 6,
    "num_attention_heads": 4,
    "intermediate_size": 512,
    "max_position_embeddings": 2048,
    "hidden_act": "relu",
    "pad_token_id": 0,
    "layer_norm_eps": 1e-12,
    "hidden_dropout_prob": 0.02,
    "attention_probs_dropout_prob": 0.02,
    "initializer_range": 0.02,
}


def random_geneformer(seed: int = 0, **overrides):
    """A random-weight ``BertForMaskedLM`` of the gf-6L-10M-i2048 architecture (eval mode)."""
    import torch
    from transformers import BertConfig, BertForMaskedLM

    torch.manual_seed(seed)
    return BertForMaskedLM(BertConfig(**{**GF_6L, **overrides})).eval()


def random_batch(n: int, lengths: tuple[int, int], vocab_size: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """``n`` cells of random token ids with lengths uniform in ``lengths`` (inclusive), right-padded."""
    from netpert.isp.backends.base import pad_batch

    sizes = rng.integers(lengths[0], lengths[1] + 1, size=n)
    return pad_batch([rng.integers(4, vocab_size, size=s) for s in sizes])


def parse_lengths(text: str) -> tuple[int, int]:
    lo, _, hi = text.partition("-")
    return int(lo), int(hi or lo)


def time_method(fn, batch, repeats: int = 2) -> tuple[np.ndarray, list[float]]:
    """Run ``fn(ids, mask) -> cells`` once on the full batch (warm-up: ONNX Runtime sizes its
    memory arena on the first call of a shape), then time ``repeats`` runs."""
    ids, mask = batch
    out = fn(ids, mask)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn(ids, mask)
        times.append(time.perf_counter() - t0)
    return out, times


def probe(
    lengths=((300, 500), (2048, 2048)),
    batch: int = 32,
    repeats: int = 2,
    threads: int | None = None,
    candidates=("dynamic-qint8", "dynamic-qint8-perchannel", "static-qdq"),
    n_calibration: int = 64,
    n_evaluation: int = 32,
    workdir=None,
    seed: int = 0,
    log=print,
) -> dict:
    """Export, quantise and time the methods; returns the figures (see the module docstring)."""
    import psutil
    import torch

    from netpert.isp.backends.onnx import OnnxBackend
    from netpert.isp.export import export_onnx, layer_encoder, reference_embed
    from netpert.isp.metrics import cosine_rows
    from netpert.isp.quantize import quantize_onnx

    threads = int(threads or torch.get_num_threads())
    torch.set_num_threads(threads)
    rng = np.random.default_rng(seed)
    model = random_geneformer(seed)
    vocab = model.config.vocab_size
    workdir = Path(workdir or tempfile.mkdtemp(prefix="probe_onnx_"))
    result = {"threads": threads, "batch": batch, "repeats": repeats, "model": GF_6L, "layer": -2}
    result["load_average_start"] = os.getloadavg()

    t0 = time.perf_counter()
    export = export_onnx(model, workdir / "model.onnx", layer=-2, opset=18, threads=threads)
    result["export"] = {k: export[k] for k in ("exporter", "opset", "file_size_bytes", "max_abs_diff", "n_nodes")}
    result["export"]["seconds"] = round(time.perf_counter() - t0, 2)
    log(f"export: {result['export']}")

    calib = [random_batch(8, (300, 500), vocab, rng) for _ in range(max(1, n_calibration // 8))]
    evaluation = [random_batch(8, (300, 500), vocab, rng) for _ in range(max(1, n_evaluation // 8))]
    t0 = time.perf_counter()
    quant = quantize_onnx(
        workdir / "model.onnx",
        workdir / "model.int8.onnx",
        calib,
        evaluation,
        candidates=candidates,
        threads=threads,
        keep_dir=workdir / "int8",
        seed=seed,
    )
    result["quantize_seconds"] = round(time.perf_counter() - t0, 2)
    result["int8"] = {
        k: {kk: v.get(kk) for kk in ("mean_cosine", "min_cosine", "seconds", "file_size_bytes", "passed", "drift")}
        for k, v in quant["candidates"].items()
    }
    result["int8_fp32_drift"] = quant["fp32"].get("drift")
    result["int8_chosen"] = quant["chosen"]
    log(f"int8 chosen: {quant['chosen']}")

    cut = layer_encoder(model, -2)

    def torch_cut(ids, mask):
        with torch.inference_mode():
            return cut(torch.as_tensor(ids), torch.as_tensor(mask))[0].numpy()

    # torch_eager: the baseline's arithmetic (all layers, output_hidden_states); torch_eager_cut:
    # the same module as the ONNX graph (layers up to -2 only), for a like-for-like comparison.
    # Each method is a factory: ONNX Runtime sessions keep their memory arena (GBs at 32 x 2048)
    # until closed, so one session lives at a time.
    factories = {
        "torch_eager": lambda: (lambda i, m: reference_embed(model, i, m, -2)[0], None),
        "torch_eager_cut": lambda: (torch_cut, None),
    }

    def onnx_factory(path, name):
        def make():
            backend = OnnxBackend(path, threads=threads, providers="cpu", name=name)
            return (lambda i, m: backend.embed(i, m).cell), backend

        return make

    factories["onnx_fp32"] = onnx_factory(workdir / "model.onnx", "onnx")
    for name in candidates:
        path = workdir / "int8" / f"{name}.onnx"
        if path.exists():
            factories[f"onnx_int8_{name}"] = onnx_factory(path, "onnx_int8")
    process = psutil.Process()

    result["timings"] = {}
    for lo, hi in lengths:
        key = f"{lo}-{hi}" if lo != hi else str(lo)
        data = random_batch(batch, (lo, hi), vocab, rng)
        rows, ref = {}, None
        for name, factory in factories.items():
            gc.collect()
            rss0 = process.memory_info().rss
            fn, backend = factory()
            cells, times = time_method(fn, data, repeats)
            rss_growth = (process.memory_info().rss - rss0) / 2**20
            if backend is not None:
                backend.close()
            del fn, backend
            if ref is None:
                ref = cells
            cos = cosine_rows(cells, ref)
            sec = min(times)  # a shared machine: the least disturbed run
            rows[name] = {
                "seconds_per_batch": round(sec, 4),
                "cells_per_second": round(batch / sec, 2),
                "mean_cosine_vs_torch": float(cos.mean()),
                "min_cosine_vs_torch": float(cos.min()),
                "times": [round(t, 4) for t in times],
                "median_seconds": round(statistics.median(times), 4),
                "rss_retained_mb": round(rss_growth, 1),
            }
            log(f"  len {key:>8} {name:34s} {sec:8.3f} s/batch  {batch / sec:8.1f} cells/s  "
                f"cos mean {cos.mean():.6f} min {cos.min():.6f}  +{rss_growth:.0f} MB RSS retained")
        base = rows["torch_eager"]["seconds_per_batch"]
        for row in rows.values():
            row["speedup_vs_torch"] = round(base / row["seconds_per_batch"], 3)
        result["timings"][key] = {"mean_length": float(data[1].sum(1).mean()), "padded_length": int(data[0].shape[1]), "methods": rows}
    result["load_average_end"] = os.getloadavg()
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lengths", nargs="+", default=["300-500", "2048"], help="length ranges, e.g. 300-500 2048")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="default: torch.get_num_threads()")
    parser.add_argument("--candidates", nargs="+", default=["dynamic-qint8", "dynamic-qint8-perchannel", "static-qdq"])
    parser.add_argument("--n-calibration", type=int, default=64)
    parser.add_argument("--n-evaluation", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--out", default=None, help="write the figures as JSON here")
    args = parser.parse_args(argv)
    result = probe(
        lengths=[parse_lengths(x) for x in args.lengths],
        batch=args.batch,
        repeats=args.repeats,
        threads=args.threads,
        candidates=args.candidates,
        n_calibration=args.n_calibration,
        n_evaluation=args.n_evaluation,
        workdir=args.workdir,
        seed=args.seed,
        log=lambda msg: print(msg, flush=True),
    )
    result["command"] = " ".join([os.path.basename(sys.executable), *sys.argv])
    text = json.dumps(result, indent=2)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

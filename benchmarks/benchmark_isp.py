#!/usr/bin/env python
"""Benchmark of the ISP inference methods (netpert.isp): perturbations/s and agreement with baseline.

Rows (name, size, seconds, ratio, agreement):

* one row per method (``baseline``, ``batched``, ``amp``, and ``onnx`` / ``onnx_int8`` when
  onnxruntime is installed): ``seconds`` = wall time of the whole
  screen (each cell's original + its perturbations, effects included; best of ``--repeat``
  rounds, methods interleaved so machine load hits all alike), ``ratio`` = perturbations/s over
  baseline's measured in the same run, ``agreement`` = mean cosine of the method's cell
  embeddings (originals and perturbed) with baseline's. The printed table adds the minimum
  cosine, the Spearman correlation of the per-perturbation effects (1 - cosine) with
  baseline's, the batching and the precision notes (e.g. whether bf16 has native units here).
  ``model_mb``: what the method runs (the ONNX file, or the torch module's weights: the full model
  with its masked-LM head for baseline, the encoder up to the pooled layer for batched / amp);
  ``peak_rss_mb``: the benchmark process's peak while the method ran (every method's model is
  loaded in it; the workflow's report gives each method's own job memory).
* ``batched@input_order/10``: the encoder-only forward in baseline's batches, separating the
  gain of dropping the masked-LM head and the unused last layer from that of batching.

Data: the embedded default (scanpy's pbmc68k_reduced: counts-like = expm1 of .raw.X, cell type
in obs['bulk_labels']), ``--cells`` cells (spread over cell types), ``--targets`` transcription
factors expressed in most cells, each deleted in every cell (``--perturbation``); model
``random-init:gf-6L-10M-i2048`` (Geneformer's architecture, random weights: timings and
consistency only). ``--seq-len 2048``: synthetic cells with 2,048 expressed genes instead, i.e.
full-length encodings. ``--quick``: a tiny smoke run (tiny model, a few cells, seconds).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from netpert.isp.backends import make_backend
from netpert.isp.methods import DEFAULT_BATCH_SIZE, DEFAULT_BATCHING, REGISTRY
from netpert.isp.metrics import cosine_rows, spearman
from netpert.isp.model import build_model
from netpert.isp.perturb import make_specs
from netpert.isp.profiling import Profiler
from netpert.isp.runner import run_isp
from netpert.isp.tokens import write_tokens
from netpert.isp.tokenizer import tokenize_for_model

#: the CPU methods this benchmark times (the registry's, less the CUDA-only ones)
CPU_METHODS = tuple(m.name for m in REGISTRY.values() if not m.needs_cuda)
#: those that run from an ONNX file made here
ONNX_METHODS = tuple(m for m in CPU_METHODS if (REGISTRY[m].artifact or "").endswith(".onnx"))


def default_cells(n_cells: int, seed: int = 0):
    """pbmc68k_reduced as counts-like AnnData, ``n_cells`` cells drawn across cell types."""
    from netpert.data import load_embedded

    adata = load_embedded("pbmc68k_reduced")
    rng = np.random.default_rng(seed)
    if n_cells < adata.n_obs:
        labels = adata.obs["bulk_labels"].astype(str).to_numpy()
        # round-robin over cell types so every type is represented
        pools = {k: list(rng.permutation(np.flatnonzero(labels == k))) for k in sorted(set(labels))}
        keep = []
        while len(keep) < n_cells:
            for k in list(pools):
                if pools[k] and len(keep) < n_cells:
                    keep.append(pools[k].pop())
        adata = adata[np.sort(keep)].copy()
    return adata


def synthetic_cells(n_cells: int, seq_len: int, n_genes: int | None = None, seed: int = 0):
    """Cells expressing ``seq_len`` (or more) genes each: full-length encodings."""
    import anndata as ad
    import scipy.sparse as sp

    n_genes = n_genes or int(seq_len * 1.5)
    rng = np.random.default_rng(seed)
    X = rng.poisson(rng.gamma(2.0, 2.0, size=n_genes), size=(n_cells, n_genes)).astype(np.float32) + 1.0
    genes = [f"SYN{i}" for i in range(n_genes)]
    return ad.AnnData(
        sp.csr_matrix(X),
        obs=pd.DataFrame({"bulk_labels": ["synthetic"] * n_cells}, index=[f"cell{i}" for i in range(n_cells)]),
        var=pd.DataFrame(index=genes),
    )


def choose_targets(adata, k: int) -> list[str]:
    """The ``k`` transcription factors expressed in most cells (else the most expressed genes)."""
    from netpert.regulators import regulators_in

    genes = list(map(str, adata.var_names))
    try:
        candidates = regulators_in(genes, ("tfs",), "human")
    except Exception:  # the packaged lists are optional here
        candidates = []
    if len(candidates) < k:
        candidates = genes
    index = {g: i for i, g in enumerate(genes)}
    nnz = np.asarray((adata.X > 0).sum(axis=0)).ravel()
    return sorted(candidates, key=lambda g: (-nnz[index[g]], g))[:k]


def model_mb(method: str, backend, artifacts: dict) -> float:
    """Size of what the method runs: the ONNX file, or the torch module's weights (MiB)."""
    if method in artifacts:
        return os.path.getsize(artifacts[method]) / 2**20
    module = getattr(backend, "encoder", None) or getattr(backend, "model", None)
    if module is None:
        return float("nan")
    return sum(p.numel() * p.element_size() for p in module.parameters()) / 2**20


def onnx_artifacts(bundle, tmp: Path, methods, tokens, layer: int, threads: int, int8_candidates=None) -> tuple[dict, dict]:
    """Export (and quantise) the encoder for the ONNX methods; returns (paths, notes)."""
    paths, notes = {}, {}
    if not any(m in methods for m in ONNX_METHODS):
        return paths, notes
    from netpert.isp.export import export_onnx
    from netpert.isp.quantize import DEFAULT_CANDIDATES, quantize_onnx, token_batches

    int8_candidates = list(int8_candidates or DEFAULT_CANDIDATES)

    t0 = time.perf_counter()
    report = export_onnx(bundle.model, tmp / "model.onnx", layer=layer, threads=threads)
    paths["onnx"] = tmp / "model.onnx"
    notes["onnx"] = f"export {time.perf_counter() - t0:.1f} s ({report.get('exporter')}, max diff {report.get('max_abs_diff', float('nan')):.2g})"
    if "onnx_int8" in methods:
        tok_path = tmp / "tokens.parquet"
        write_tokens(tok_path, tokens.cell_ids, tokens.input_ids, [], {"stratum": "benchmark"})
        n_cal = max(2, min(16, len(tokens) // 2))
        cal, ev, _ = token_batches([tok_path], n_calibration=n_cal, seed=0)
        t0 = time.perf_counter()
        try:
            rep = quantize_onnx(tmp / "model.onnx", tmp / "model.int8.onnx", cal, ev, candidates=int8_candidates, threads=threads)
            paths["onnx_int8"] = tmp / "model.int8.onnx"
            notes["onnx_int8"] = f"quantised {time.perf_counter() - t0:.1f} s ({rep.get('chosen')})"
        except Exception as exc:  # report, don't hide: the row says why it is missing
            notes["onnx_int8"] = f"quantisation failed: {type(exc).__name__}: {exc}"
    return paths, notes


def effects(result) -> np.ndarray:
    return 1.0 - result.table["cosine"].to_numpy()


def run(args) -> pd.DataFrame:
    import torch

    torch.set_num_threads(args.threads)
    if args.seq_len:
        adata = synthetic_cells(args.cells, args.seq_len, seed=args.seed)
        data_name = f"synthetic ({args.seq_len} expressed genes per cell)"
    else:
        adata = default_cells(args.cells, seed=args.seed)
        data_name = "pbmc68k_reduced"
    bundle = build_model(adata, args.model, seed=args.seed)
    max_len = min(bundle.max_len, args.seq_len or bundle.max_len)
    tokens = tokenize_for_model(adata, bundle, max_len=max_len, source=data_name)
    targets = choose_targets(adata, args.targets)
    specs = make_specs(targets, bundle.token_dictionary, args.perturbation)
    lengths = tokens.lengths
    print(
        f"# {data_name}: {len(tokens)} cells, encodings {lengths.min()}-{lengths.max()} tokens (mean {lengths.mean():.0f}); "
        f"model {args.model} ({bundle.note or 'trained'}); targets {', '.join(targets)} ({args.perturbation}); "
        f"threads {args.threads}; layer {args.layer}",
        flush=True,
    )
    wanted = [m.strip() for m in args.methods.split(",")] if args.methods != "auto" else list(CPU_METHODS)
    methods, notes = [], {}
    for m in wanted:
        ok, why = REGISTRY[m].check("cpu")
        (methods.append(m) if ok else notes.__setitem__(m, why))
    if "baseline" not in methods:
        methods.insert(0, "baseline")
    variants = [(m, DEFAULT_BATCHING[m], args.batch_size or DEFAULT_BATCH_SIZE[m]) for m in methods]
    if not args.no_ablation and "batched" in methods:
        variants.append(("batched", "input_order", DEFAULT_BATCH_SIZE["baseline"]))
    with tempfile.TemporaryDirectory(prefix="benchmark_isp.") as tmp:
        artifacts, art_notes = onnx_artifacts(bundle, Path(tmp), methods, tokens, args.layer, args.threads,
                                                 args.int8_candidates.split(",") if args.int8_candidates else None)
        notes.update(art_notes)
        backends = {}
        for m, batching, bs in variants:
            if m in ONNX_METHODS and m not in artifacts:
                continue
            if m not in backends:
                backends[m] = make_backend(m, bundle, layer=args.layer, threads=args.threads, device="cpu", artifacts=artifacts.get(m))
        best: dict[tuple, tuple] = {}
        for rnd in range(args.repeat):
            for m, batching, bs in variants:
                if m not in backends:
                    continue
                with Profiler(gpu=False) as prof:
                    res = run_isp(
                        backends[m], tokens.input_ids, tokens.cell_ids, specs,
                        id_to_gene=bundle.id_to_gene(), max_len=max_len, pad_id=bundle.pad_id,
                        special_ids=bundle.special_ids, batch_size=bs, batching=batching,
                    )
                key = (m, batching, bs)
                summ = prof.summary()
                summ["wall_s"] -= res.stats["warmup_s"]  # steady state, as isp_infer reports it
                if key not in best or summ["wall_s"] < best[key][1]["wall_s"]:
                    best[key] = (res, summ)
                print(f"  round {rnd + 1}: {m} ({batching}, batch {bs}): {summ['wall_s']:.2f} s", flush=True)
        descs = {m: b.describe() for m, b in backends.items()}
        sizes = {m: model_mb(m, b, artifacts) for m, b in backends.items()}
        for b in backends.values():
            b.close()
    base_key = ("baseline", DEFAULT_BATCHING["baseline"], args.batch_size or DEFAULT_BATCH_SIZE["baseline"])
    base_res, base_prof = best[base_key]
    base_rate = base_res.n_perturbations / base_prof["wall_s"]
    base_all = np.concatenate([base_res.original, base_res.perturbed])
    rows = []
    size = (
        f"{len(tokens)} cells x {len(specs)} targets = {base_res.n_perturbations} perturbations "
        f"(mean length {lengths.mean():.0f})"
    )
    for (m, batching, bs), (res, prof) in best.items():
        rate = res.n_perturbations / prof["wall_s"]
        cos = cosine_rows(np.concatenate([res.original, res.perturbed]), base_all)
        rho = spearman(effects(res), effects(base_res))
        name = m if (batching, bs) == (DEFAULT_BATCHING[m], args.batch_size or DEFAULT_BATCH_SIZE[m]) else f"{m}@{batching}/{bs}"
        d = descs[m]
        note = d.get("precision", "")
        if d.get("amp_note"):
            note += f"; {d['amp_note']}" + ("" if d.get("amp_effective") else " [no native bf16: no gain expected]")
        rows.append(
            {
                "name": name,
                "size": size,
                "seconds": prof["wall_s"],
                "ratio": rate / base_rate,
                "agreement": float(cos.mean()),
                "min_cosine": float(cos.min()),
                "effect_spearman": rho,
                "perturbations_per_s": rate,
                "cells_per_s": len(res.cell_ids) / prof["wall_s"],
                "peak_rss_mb": prof["peak_rss_mb"],
                "model_mb": sizes[m],
                "cpu_percent": prof["cpu_percent"],
                "batching": f"{batching}/{bs}",
                "padding": res.stats["padding_fraction"],
                "note": note,
            }
        )
    for m, why in notes.items():
        if not any(r["name"] == m for r in rows):
            rows.append({"name": m, "size": size, "seconds": np.nan, "ratio": np.nan, "agreement": np.nan, "note": f"not run: {why}"})
        else:
            for r in rows:
                if r["name"] == m:
                    r["note"] = f"{r['note']}; {why}"
    return pd.DataFrame(rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", help="write the rows (name, size, seconds, ratio, agreement, ...) to this CSV")
    ap.add_argument("--quick", action="store_true", help="tiny smoke run: tiny model, 6 cells, 2 targets, 1 round")
    ap.add_argument("--methods", default="auto", help="comma-separated methods (default: every one available here)")
    ap.add_argument("--seq-len", type=int, default=0, help="synthetic cells with this many expressed genes (e.g. 2048)")
    ap.add_argument("--cells", type=int, default=None, help="cells (default 60; 8 with --seq-len; 6 with --quick)")
    ap.add_argument("--targets", type=int, default=None, help="target genes (default 5; 2 with --seq-len / --quick)")
    ap.add_argument("--perturbation", default="delete", choices=["delete", "overexpress", "inhibit", "activate"])
    ap.add_argument("--model", default=None, help="model spec (default random-init:gf-6L-10M-i2048; tiny with --quick)")
    ap.add_argument("--layer", type=int, default=-2)
    ap.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--batch-size", type=int, default=None, help="one batch size for every method (default: each method's)")
    ap.add_argument("--repeat", type=int, default=None, help="rounds, methods interleaved; best wall time kept (default 2, 1 with --quick)")
    ap.add_argument("--no-ablation", action="store_true", help="leave out the batched@input_order/10 row")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--int8-candidates", default=None,
                    help="comma-separated int8 recipes for onnx_int8 (default: the workflow's, isp.onnx.int8_candidates)")
    args = ap.parse_args(argv)
    if args.quick:
        args.model = args.model or "random-init:tiny"
        args.cells = args.cells or 6
        args.targets = args.targets or 2
        args.repeat = args.repeat or 1
        if args.seq_len:
            args.seq_len = min(args.seq_len, 128)
    args.model = args.model or "random-init:gf-6L-10M-i2048"
    args.cells = args.cells or (8 if args.seq_len else 60)
    args.targets = args.targets or (2 if args.seq_len else 5)
    args.repeat = args.repeat or 2
    table = run(args)
    with pd.option_context("display.width", 250, "display.max_columns", 20, "display.max_colwidth", 90):
        print(table.drop(columns=["size"]).to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print(f"# size: {table['size'].iloc[0]}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(args.out, index=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())

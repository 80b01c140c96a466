#!/usr/bin/env python
"""Benchmark of the ISP inference methods (netpert.isp): perturbations/s, agreement with baseline, GOP/s.

Rows (name, size, seconds, ratio, agreement, ...):

* one row per method (``baseline``, ``batched``, ``amp``, and ``onnx`` / ``onnx_int8`` when
  onnxruntime is installed): ``seconds`` = wall time of the whole screen (each cell's original +
  its perturbations, effects included), the median of ``--repeat`` rounds with the methods
  interleaved (so machine load hits all alike; ``seconds_min`` / ``seconds_max`` the range);
  ``ratio`` = the method's perturbations/s over baseline's in the same round, median over the
  rounds (``ratio_min`` / ``ratio_max`` the range); ``agreement`` = mean cosine of the method's
  cell embeddings (originals and perturbed) with baseline's, ``min_cosine``, ``effect_spearman``
  (the per-perturbation effects, 1 - cosine, against baseline's) and ``meets_bar`` (isp.bar's
  defaults: mean >= 0.999, min >= 0.99, Spearman >= 0.95). ``gops``: the multiply-adds the method
  computes for the screen (:func:`netpert.isp.export.encoder_macs`: its layers, baseline also the
  last layer and the masked-LM head; padding not counted) x 2 / median seconds, and
  ``pct_int8_peak`` / ``pct_fp32_peak`` against the CPU's peak (see :func:`cpu_peak`).
  ``model_mb``: what the method runs; ``peak_rss_mb``: the benchmark process's peak while it ran.
* ``batched@input_order/10``: the encoder-only forward in baseline's batches, separating the
  gain of dropping the masked-LM head and the unused last layer from that of batching.

The header names the CPU (model, cores, every vector flag), the int8 kernel ONNX Runtime's MLAS
takes on it, torch's CPU capability, the clock and its source, the peak formulas and a measured
ceiling (a large int8 and fp32 GEMM in ONNX Runtime, same threads); then the int8 candidates
``quantize_onnx`` tried here (speed and accuracy of each, the one kept and why, the tuned batch
size and threads).

``--isa avx2`` caps torch's kernels at AVX2 (ATEN_CPU_CAPABILITY=avx2, ONEDNN_MAX_CPU_ISA=AVX2;
the script re-executes itself with them): ``baseline``, ``batched`` and ``amp`` then run AVX2
code. ONNX Runtime's MLAS picks its kernels by CPUID at run time and no option or environment
variable caps it, so its rows keep their AVX-512 kernels there: their ratios are left out and the
note says why.

Data: the embedded default (scanpy's pbmc68k_reduced: counts-like = expm1 of .raw.X, cell type
in obs['bulk_labels']), ``--cells`` cells (spread over cell types), ``--targets`` transcription
factors expressed in most cells, each deleted in every cell (``--perturbation``); model
``random-init:gf-6L-10M-i2048`` (Geneformer's architecture, random weights: timings and
consistency only). ``--seq-len 2048``: synthetic cells with 2,048 expressed genes instead, i.e.
full-length encodings. ``--quick``: a tiny smoke run (tiny model, a few cells, seconds).
"""

from __future__ import annotations

import os
import sys

#: torch's own switches to cap its kernels at an instruction set (set before torch is imported)
ISA_ENV = {"avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}}


def _cap_isa(argv) -> None:
    """With ``--isa X``, re-execute this script with torch's ISA caps in the environment."""
    if "--isa" not in argv:
        return
    isa = argv[argv.index("--isa") + 1] if argv.index("--isa") + 1 < len(argv) else ""
    env = ISA_ENV.get(isa)
    if env is None:
        sys.exit(f"--isa must be one of {', '.join(ISA_ENV)}, got {isa!r}")
    if all(os.environ.get(k) == v for k, v in env.items()):
        return
    os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **env})


if __name__ == "__main__":
    _cap_isa(sys.argv)

import argparse  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from netpert.isp.methods import DEFAULT_BATCH_SIZE, REGISTRY  # noqa: E402
from netpert.isp.metrics import DEFAULT_BAR, cosine_rows, spearman  # noqa: E402

#: the CPU methods this benchmark times (the registry's, less the CUDA-only ones)
CPU_METHODS = tuple(m.name for m in REGISTRY.values() if not m.needs_cuda)
#: those that run from an ONNX file made here
ONNX_METHODS = tuple(m for m in CPU_METHODS if (REGISTRY[m].artifact or "").endswith(".onnx"))
#: the flags the header prints (every SIMD extension the kernels may pick)
SIMD_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx_vnni", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
              "avx512_bf16", "avx512_fp16", "amx_tile", "amx_int8", "amx_bf16")


# --------------------------------------------------------------------------- the CPU


def cpu_peak(flags, cores: int, mhz: float, vendor: str = "", family: int | None = None) -> dict:
    """Peak int8 and fp32 throughput of ``cores`` cores at ``mhz`` from the vector width.

    fp32 GFLOP/s = cores x GHz x 2 FMA pipes x (datapath bits / 32) lanes x 2 (multiply + add).
    int8 GOP/s with VNNI (vpdpbusd: datapath/8 u8 x s8 multiply-adds per instruction) =
    cores x GHz x 2 pipes x (datapath bits / 8) x 2; without VNNI (AVX2, AVX-512BW: vpmaddubsw
    then vpmaddwd, two multiply-pipe instructions per datapath/8 multiply-adds) half that.
    The ISA width is 512 bits with avx512f, 256 with avx2, else 128; the datapath is the ISA width
    but on AMD family 25 (Zen 4), which runs each 512-bit instruction as two 256-bit halves.
    Two vector multiply pipes per core is assumed (Intel since Haswell, AMD since Zen 2).
    """
    flags = set(flags)
    isa = 512 if "avx512f" in flags else 256 if "avx2" in flags else 128
    datapath = 256 if (isa == 512 and vendor == "AuthenticAMD" and family == 25) else isa
    vnni = ("avx512_vnni" in flags) if isa == 512 else ("avx_vnni" in flags)
    ghz, pipes = mhz / 1000.0, 2
    fp32 = cores * ghz * pipes * datapath / 32 * 2
    int8 = cores * ghz * pipes * datapath / 8 * 2 / (1 if vnni else 2)
    return {
        "fp32_gflops": fp32,
        "int8_gops": int8,
        "isa_bits": isa,
        "datapath_bits": datapath,
        "vnni": vnni,
        "fp32_formula": f"{cores} cores x {ghz:.3f} GHz x {pipes} FMA pipes x {datapath}/32 lanes x 2 = {fp32:.0f} GFLOP/s",
        "int8_formula": (f"{cores} cores x {ghz:.3f} GHz x {pipes} pipes x {datapath}/8 multiply-adds x 2"
                         + (" (VNNI)" if vnni else " / 2 (no VNNI: vpmaddubsw + vpmaddwd)") + f" = {int8:.0f} GOP/s"),
    }


def gemm_ceiling(threads: int, m: int = 2048, k: int = 1024, n: int = 1024, repeats: int = 5) -> dict:
    """Measured: ONNX Runtime (MLAS) on one large u8 x s8 MatMulInteger and one fp32 MatMul of
    (m x k) @ (k x n) with ``threads`` threads, the best of ``repeats`` (GOP/s, GFLOP/s)."""
    import onnxruntime as ort
    from onnx import TensorProto as T
    from onnx import helper

    def session(node, a_type, b_type, out_type):
        graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("a", a_type, [m, k]),
                                                helper.make_tensor_value_info("b", b_type, [k, n])],
                                  [helper.make_tensor_value_info("c", out_type, [m, n])])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        so = ort.SessionOptions()
        so.intra_op_num_threads = int(threads)
        return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])

    rng = np.random.default_rng(0)
    runs = {
        "int8": (session(helper.make_node("MatMulInteger", ["a", "b"], ["c"]), T.UINT8, T.INT8, T.INT32),
                 {"a": rng.integers(0, 255, (m, k)).astype(np.uint8), "b": rng.integers(-127, 127, (k, n)).astype(np.int8)}),
        "fp32": (session(helper.make_node("MatMul", ["a", "b"], ["c"]), T.FLOAT, T.FLOAT, T.FLOAT),
                 {"a": rng.standard_normal((m, k), dtype=np.float32), "b": rng.standard_normal((k, n), dtype=np.float32)}),
    }
    out = {}
    for name, (sess, feeds) in runs.items():
        sess.run(None, feeds)
        best = min(_timed(lambda: sess.run(None, feeds)) for _ in range(repeats))
        out[name] = 2 * m * k * n / best / 1e9
    return out


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def machine_header(threads: int) -> tuple[list[str], dict]:
    """The header lines about the CPU, and the peaks (for the rows' percentages) with the measured
    GEMM ceiling (``ceiling``: int8 GOP/s and fp32 GFLOP/s) where ONNX Runtime is installed."""
    import torch

    from netpert.isp.quantize import int8_kernel
    from netpert.machine import cpu_clock, cpu_field, cpu_flags, cpu_summary

    vendor, family, model = (cpu_field(k) or "" for k in ("vendor_id", "cpu family", "model"))
    flags = cpu_flags()
    mhz, source = cpu_clock()
    family = int(family) if family.isdigit() else None
    peak = cpu_peak(flags, threads, mhz, vendor, family) if mhz else None
    capped = {k: os.environ[k] for k in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA") if k in os.environ}
    lines = [
        f"# CPU: {cpu_summary()}; vendor {vendor or '?'} family {family} model {model or '?'}",
        f"# SIMD flags: {' '.join(f for f in SIMD_FLAGS if f in flags) or 'none'}",
        f"# ONNX Runtime int8 kernel (MLAS, by CPUID; no option caps it): {int8_kernel(flags)}",
        f"# torch {torch.__version__} CPU capability: {torch.backends.cpu.get_cpu_capability()}"
        + (f" (capped: {' '.join(f'{k}={v}' for k, v in capped.items())})" if capped else ""),
        f"# clock: {mhz} MHz from {source}" if mhz else f"# clock: {source}",
    ]
    if peak:
        lines += [
            f"# peak fp32 ({threads} threads): {peak['fp32_formula']}",
            f"# peak int8 ({threads} threads): {peak['int8_formula']}",
            f"#   ({peak['isa_bits']}-bit instructions on a {peak['datapath_bits']}-bit datapath)",
        ]
    peak = dict(peak or {})
    try:
        ceiling = peak["ceiling"] = gemm_ceiling(threads)
        lines.append(
            f"# measured ceiling, ONNX Runtime GEMM 2048x1024x1024, {threads} threads: int8 {ceiling['int8']:.0f} GOP/s"
            + (f" ({100 * ceiling['int8'] / peak['int8_gops']:.0f}% of the int8 peak)" if "int8_gops" in peak else "")
            + f", fp32 {ceiling['fp32']:.0f} GFLOP/s" + (f" ({100 * ceiling['fp32'] / peak['fp32_gflops']:.0f}% of the fp32 peak)" if "fp32_gflops" in peak else "")
        )
        if "fp32_gflops" in peak and ceiling["fp32"] > peak["fp32_gflops"]:
            lines.append(f"#   the fp32 GEMM beats the fp32 peak at {mhz:.0f} MHz: the cores run faster than that clock (boost), "
                         "so the % of peak below are upper bounds")
    except ImportError:  # onnxruntime missing: no ceiling
        pass
    return lines, peak


# --------------------------------------------------------------------------- data


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


def onnx_artifacts(bundle, tmp: Path, methods, tokens, specs, layer: int, threads: int, int8_candidates=None):
    """Export (and quantise) the encoder for the ONNX methods; returns (paths, notes, int8 report)."""
    paths, notes, report = {}, {}, None
    if not any(m in methods for m in ONNX_METHODS):
        return paths, notes, report
    from netpert.isp.export import export_onnx
    from netpert.isp.quantize import DEFAULT_CANDIDATES, quantize_onnx, screen_groups, token_batches
    from netpert.isp.tokens import write_tokens

    int8_candidates = list(int8_candidates or DEFAULT_CANDIDATES)

    t0 = time.perf_counter()
    exported = export_onnx(bundle.model, tmp / "model.onnx", layer=layer, threads=threads)
    paths["onnx"] = tmp / "model.onnx"
    if "onnx" in methods:  # else exported only as onnx_int8's source: no row of its own
        notes["onnx"] = f"export {time.perf_counter() - t0:.1f} s ({exported.get('exporter')}, max diff {exported.get('max_abs_diff', float('nan')):.2g})"
    if "onnx_int8" in methods:
        tok_path = tmp / "tokens.parquet"
        meta = {"stratum": "benchmark", "max_len": int(bundle.max_len), "special_tokens": bool(tokens.info.get("special_tokens", False))}
        write_tokens(tok_path, tokens.cell_ids, tokens.input_ids, specs, meta)
        n_cal = max(2, min(16, len(tokens) // 2))
        cal, ev, _ = token_batches([tok_path], n_calibration=n_cal, seed=0)
        screens, _ = screen_groups([tok_path], n_calibration=n_cal, seed=0)
        t0 = time.perf_counter()
        try:
            report = quantize_onnx(tmp / "model.onnx", tmp / "model.int8.onnx", cal, ev, candidates=int8_candidates,
                                   threads=threads, screens=screens)
            paths["onnx_int8"] = tmp / "model.int8.onnx"
            notes["onnx_int8"] = f"quantised {time.perf_counter() - t0:.1f} s ({report.get('chosen')})"
        except Exception as exc:  # report, don't hide: the row says why it is missing
            notes["onnx_int8"] = f"quantisation failed: {type(exc).__name__}: {exc}"
    return paths, notes, report


def int8_lines(report: dict | None) -> list[str]:
    """The int8 candidates quantize_onnx tried on this CPU: speed and accuracy, the one kept and why."""
    if not report:
        return []
    sc = report["screens"]
    lines = [f"# int8 candidates (quantize_onnx on this CPU; {sc['n_cells']} cells, {sc['n_perturbations']} perturbations "
             f"from {sc['source']}, {sc['timing_rounds']} interleaved timing rounds, medians; fp32 {report['fp32']['seconds']:.3f} s):"]
    for name, c in report["candidates"].items():
        if "error" in c:
            lines.append(f"#   {name}: failed ({c['error'][:120]})")
            continue
        rho = c["screen"]["shift_spearman"]
        lines.append(
            f"#   {name}: {c['seconds']:.3f} s ({c['speed_vs_fp32']:.2f}x fp32), mean cosine {c['mean_cosine']:.6f}, "
            f"min {c['min_cosine']:.6f}, shift Spearman {'n/a' if rho is None else f'{rho:.4f}'}: "
            + ("meets the bar" if c["passed"] else "misses the bar (" + "; ".join(c["failed"]) + ")")
        )
    lines.append(f"# kept {report['why']}")
    if report.get("tuning"):
        lines.append(f"# tuned: {report['tuning']['why']}")
    return lines


def effects(result) -> np.ndarray:
    return 1.0 - result.table["cosine"].to_numpy()


# --------------------------------------------------------------------------- the run


def run(args) -> tuple[pd.DataFrame, list[str]]:
    import torch

    from netpert.isp.backends import make_backend
    from netpert.isp.backends.base import resolve_layer
    from netpert.isp.export import encoder_macs
    from netpert.isp.model import build_model
    from netpert.isp.perturb import expand, make_specs
    from netpert.isp.profiling import Profiler
    from netpert.isp.runner import resolve_settings, run_isp
    from netpert.isp.tokenizer import tokenize_for_model

    torch.set_num_threads(args.threads)
    header, peak = machine_header(args.threads)
    for line in header:
        print(line, flush=True)
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
    capped = "ATEN_CPU_CAPABILITY" in os.environ
    line = (f"# {data_name}: {len(tokens)} cells, encodings {lengths.min()}-{lengths.max()} tokens (mean {lengths.mean():.0f}); "
            f"model {args.model} ({bundle.note or 'trained'}); targets {', '.join(targets)} ({args.perturbation}); "
            f"threads {args.threads}; layer {args.layer}; {args.repeat} rounds")
    print(line, flush=True)
    header.append(line)
    # every sequence of the screen: each cell's original and its perturbations (for the MAC count)
    exp = expand(tokens.input_ids, specs, 0.25, max_len)
    seq_lengths = np.concatenate([lengths, [len(x) for x in exp.input_ids]]).astype(np.float64)
    config = bundle.model.config
    macs = {
        "full": encoder_macs(config, seq_lengths, mlm_head=True),
        "encoder": encoder_macs(config, seq_lengths, layers=resolve_layer(args.layer, config.num_hidden_layers)),
    }

    wanted = [m.strip() for m in args.methods.split(",")] if args.methods != "auto" else list(CPU_METHODS)
    methods, notes = [], {}
    for m in wanted:
        ok, why = REGISTRY[m].check("cpu")
        (methods.append(m) if ok else notes.__setitem__(m, why))
    if "baseline" not in methods:
        methods.insert(0, "baseline")
    rows = []
    with tempfile.TemporaryDirectory(prefix="benchmark_isp.") as tmp:
        artifacts, art_notes, int8_report = onnx_artifacts(
            bundle, Path(tmp), methods, tokens, specs, args.layer, args.threads,
            args.int8_candidates.split(",") if args.int8_candidates else None)
        notes.update(art_notes)
        for line in int8_lines(int8_report):
            print(line, flush=True)
            header.append(line)
        variants, defaults = [], {}
        for m in methods:
            if m in ONNX_METHODS and m not in artifacts:
                continue
            s = resolve_settings(m, None, args.batch_size, args.threads, artifacts.get(m))
            variants.append((m, s["batching"], s["batch_size"], s["threads"]))
            defaults[m] = variants[-1]
        if not args.no_ablation and "batched" in methods:
            variants.append(("batched", "input_order", DEFAULT_BATCH_SIZE["baseline"], args.threads))
        backends = {}
        for m, batching, bs, threads in variants:
            if (m, threads) not in backends:
                backends[(m, threads)] = make_backend(m, bundle, layer=args.layer, threads=threads, device="cpu",
                                                      artifacts=artifacts.get(m))
        runs: dict[tuple, list] = {}
        first: dict[tuple, object] = {}
        for rnd in range(args.repeat):
            for m, batching, bs, threads in variants:
                with Profiler(gpu=False) as prof:
                    res = run_isp(
                        backends[(m, threads)], tokens.input_ids, tokens.cell_ids, specs,
                        id_to_gene=bundle.id_to_gene(), max_len=max_len, pad_id=bundle.pad_id,
                        special_ids=bundle.special_ids, batch_size=bs, batching=batching,
                    )
                key = (m, batching, bs, threads)
                summ = prof.summary()
                summ["wall_s"] -= res.stats["warmup_s"]  # steady state, as isp_infer reports it
                runs.setdefault(key, []).append(summ)
                first.setdefault(key, res)
                print(f"  round {rnd + 1}: {m} ({batching}, batch {bs}, {threads} threads): {summ['wall_s']:.2f} s", flush=True)
        descs = {m: b.describe() for (m, _), b in backends.items()}
        sizes = {m: model_mb(m, b, artifacts) for (m, _), b in backends.items()}
        for b in backends.values():
            b.close()
    base_key = next(k for k in runs if k[0] == "baseline")
    base_res = first[base_key]
    base_walls = np.array([r["wall_s"] for r in runs[base_key]])
    base_all = np.concatenate([base_res.original, base_res.perturbed])
    size = (
        f"{len(tokens)} cells x {len(specs)} targets = {base_res.n_perturbations} perturbations "
        f"(mean length {lengths.mean():.0f})"
    )
    for key, summaries in runs.items():
        m, batching, bs, threads = key
        res = first[key]
        walls = np.array([r["wall_s"] for r in summaries])
        ratios = base_walls / walls  # same screen: perturbations/s over baseline's, round by round
        cos = cosine_rows(np.concatenate([res.original, res.perturbed]), base_all)
        rho = spearman(effects(res), effects(base_res))
        name = m if key == defaults[m] else f"{m}@{batching}/{bs}"
        d = descs[m]
        note = d.get("precision", "")
        if d.get("amp_note"):
            note += f"; {d['amp_note']}" + ("" if d.get("amp_effective") else " [no native bf16: no gain expected]")
        if d.get("tuning"):
            note += "; batch size/threads " + ("as tuned" if d["tuning"].get("source") else "not tuned")
        uncapped = capped and m in ONNX_METHODS
        if uncapped:
            note += "; ONNX Runtime not capped (MLAS picks its kernels by CPUID): not an AVX2 figure, ratio left out"
        work = macs["full" if m == "baseline" else "encoder"]
        gops = 2 * work["total"] / float(np.median(walls)) / 1e9
        int8 = d.get("precision") == "int8"
        rows.append(
            {
                "name": name,
                "size": size,
                "seconds": float(np.median(walls)),
                "seconds_min": float(walls.min()),
                "seconds_max": float(walls.max()),
                "ratio": np.nan if uncapped else float(np.median(ratios)),
                "ratio_min": np.nan if uncapped else float(ratios.min()),
                "ratio_max": np.nan if uncapped else float(ratios.max()),
                "agreement": float(cos.mean()),
                "min_cosine": float(cos.min()),
                "effect_spearman": rho,
                "meets_bar": bool(cos.mean() >= DEFAULT_BAR["mean_cosine"] and cos.min() >= DEFAULT_BAR["min_cosine"]
                                  and (not np.isfinite(rho) or rho >= DEFAULT_BAR["spearman"])),
                "perturbations_per_s": res.n_perturbations / float(np.median(walls)),
                "gmacs_per_screen": work["total"] / 1e9,
                "gops": gops,
                "pct_int8_peak": 100 * gops / peak["int8_gops"] if "int8_gops" in peak and int8 else np.nan,
                "pct_fp32_peak": 100 * gops / peak["fp32_gflops"] if "fp32_gflops" in peak and not int8 else np.nan,
                "peak_rss_mb": max(r["peak_rss_mb"] for r in summaries),
                "model_mb": sizes[m],
                "cpu_percent": float(np.median([r["cpu_percent"] for r in summaries])),
                "batching": f"{batching}/{bs}",
                "threads": threads,
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
    enc = macs["encoder"]
    header.append(
        f"# work per screen: encoder to the pooled layer {enc['total'] / 1e9:.1f} GMAC ({enc['linear'] / 1e9:.1f} in weight "
        f"matrices, int8 in onnx_int8; {enc['attention'] / 1e9:.1f} in attention, float everywhere); "
        f"baseline's full forward {macs['full']['total'] / 1e9:.1f} GMAC (masked-LM head {macs['full']['head'] / 1e9:.1f})"
    )
    int8_row = next((r for r in rows if r["name"] == "onnx_int8" and np.isfinite(r.get("seconds", np.nan))), None)
    if int8_row is not None and "ceiling" in peak:
        header.append(int8_bound(enc, peak["ceiling"], float(np.median(base_walls)), int8_row["seconds"]))
    return pd.DataFrame(rows), header


def int8_bound(encoder_macs: dict, ceiling: dict, baseline_s: float, measured_s: float) -> str:
    """The fastest onnx_int8 could run the screen on this CPU: its weight products at the measured
    int8 GEMM ceiling, its (float) attention at the measured fp32 ceiling, nothing else costing time."""
    linear_s = 2 * encoder_macs["linear"] / (ceiling["int8"] * 1e9)
    attention_s = 2 * encoder_macs["attention"] / (ceiling["fp32"] * 1e9)
    bound = linear_s + attention_s
    return (
        f"# bound for onnx_int8 here: weight products at the int8 ceiling ({linear_s:.3f} s) + attention at the fp32 "
        f"ceiling ({attention_s:.3f} s), nothing else costing time = {bound:.3f} s = at most {baseline_s / bound:.1f}x "
        f"baseline ({baseline_s:.2f} s); measured {measured_s:.3f} s = {baseline_s / measured_s:.1f}x, "
        f"{100 * bound / measured_s:.0f}% of the bound's speed"
    )


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
    ap.add_argument("--repeat", type=int, default=None,
                    help="rounds, methods interleaved; median and range reported (default 3, 1 with --quick)")
    ap.add_argument("--no-ablation", action="store_true", help="leave out the batched@input_order/10 row")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--int8-candidates", default=None,
                    help="comma-separated int8 recipes for onnx_int8 (default: the workflow's, isp.onnx.int8_candidates)")
    ap.add_argument("--isa", choices=sorted(ISA_ENV), default=None,
                    help="cap torch's kernels at this instruction set (ONNX Runtime cannot be capped: its ratios are left out)")
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
    args.repeat = args.repeat or 3
    table, header = run(args)
    show = table.drop(columns=["size", "seconds_min", "seconds_max", "ratio_min", "ratio_max", "gmacs_per_screen"], errors="ignore")
    if "ratio" in table:
        show.insert(2, "ratio range", [f"{a:.3g}-{b:.3g}" if np.isfinite(a) else "" for a, b in
                                       zip(table["ratio_min"].fillna(np.nan), table["ratio_max"].fillna(np.nan))])
    with pd.option_context("display.width", 300, "display.max_columns", 30, "display.max_colwidth", 90):
        print(show.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print(f"# size: {table['size'].iloc[0]}")
    print("\n".join(line for line in header if line.startswith(("# work per screen", "# bound"))))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(args.out, index=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""Peak memory and time of the workflow's viper step (``netpert.viper.run_viper``: cells h5ad +
regulon TSV -> activity h5ad with NES, pvalue, padj) on synthetic sparse data.

Data: ``--genes`` genes (20,000), ``--density`` non-zero (10 %, counts 1..9, float32 CSR written with
anndata), ``--regulons`` regulons (1,500) of ``--targets`` targets (50) with random mode of
regulation and likelihood; cells as listed by ``--cells`` (20,000 and 100,000). Each step runs in a
fresh subprocess (``python benchmark_viper_memory.py --child ...``), so its peak RSS (the
process's ``VmHWM`` from /proc/self/status at its end, numba's JIT included) is the step's own;
``getrusage``'s ru_maxrss is not used: on Linux it carries the spawning parent's peak across
exec (with vfork, the parent's whole high-water mark). The time is the child's wall time from
start to the renamed output file.

``--today`` also runs the step as it was before block-wise writing (``anndata.read_h5ad`` of the
whole file, ``activity_anndata`` in memory, ``write_h5ad``) for comparison.

The header names the CPU (model, cores, avx2 / avx512f / avx512_bf16 / avx512_vnni). Prints one row
per run: cells, mode, peak RSS (GiB), seconds, and whether the output file equals the block-wise
one (with ``--today``). ``--out FILE.csv`` writes the rows; ``--workdir`` keeps the generated data
(default: a temporary folder, removed at the end).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni")


def cpu_line() -> str:
    from netpert.report.environment import cpu_flags, cpu_model

    flags = cpu_flags()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    have = " ".join(f"{f}={'yes' if f in flags else 'no'}" for f in FLAGS)
    return f"{cpu_model() or 'unknown CPU'}, {usable} of {os.cpu_count()} cores, {have}"


def make_cells(path: Path, n_cells: int, n_genes: int, density: float, seed: int = 0, chunk: int = 5000) -> None:
    """A float32 CSR h5ad of counts 1..9, generated and written chunk by chunk of cells (h5py)."""
    import h5py
    from anndata.io import write_elem

    rng = np.random.default_rng(seed)
    nnz_row = max(1, int(round(density * n_genes)))
    with h5py.File(path, "w") as f:
        f.attrs.update({"encoding-type": "anndata", "encoding-version": "0.1.0"})
        g = f.create_group("X")
        g.attrs.update({"encoding-type": "csr_matrix", "encoding-version": "0.1.0", "shape": np.array([n_cells, n_genes])})
        total = nnz_row * n_cells
        data = g.create_dataset("data", shape=(total,), dtype=np.float32)
        indices = g.create_dataset("indices", shape=(total,), dtype=np.int32)
        g.create_dataset("indptr", data=np.arange(n_cells + 1, dtype=np.int64) * nnz_row)
        for a in range(0, n_cells, chunk):
            b = min(a + chunk, n_cells)
            keys = rng.random((b - a, n_genes), dtype=np.float32)
            cols = np.sort(np.argpartition(keys, nnz_row, axis=1)[:, :nnz_row], axis=1).astype(np.int32)
            del keys
            indices[a * nnz_row:b * nnz_row] = cols.ravel()
            data[a * nnz_row:b * nnz_row] = rng.integers(1, 10, size=(b - a) * nnz_row).astype(np.float32)
        strata = np.array(["s1", "s2", "s3", "s4"])[np.arange(n_cells) % 4]
        write_elem(f, "obs", pd.DataFrame({"stratum": pd.Categorical(strata)}, index=[f"c{i}" for i in range(n_cells)]))
        write_elem(f, "var", pd.DataFrame(index=[f"g{j}" for j in range(n_genes)]))
        for key in ("layers", "obsm", "obsp", "varm", "varp", "uns"):
            write_elem(f, key, {})


def make_regulons(path: Path, n_genes: int, n_regulons: int, n_targets: int, seed: int = 1) -> None:
    rng = np.random.default_rng(seed)
    regs = rng.choice(n_genes, size=n_regulons, replace=False)
    rows = []
    for r in regs:
        tg = rng.choice(n_genes, size=n_targets, replace=False)
        rows.append(pd.DataFrame({"regulator": f"g{r}", "target": [f"g{t}" for t in tg], "mor": rng.uniform(-1, 1, n_targets),
                                  "likelihood": rng.uniform(0.1, 1, n_targets)}))
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.concat(rows, ignore_index=True).to_csv(path, sep="\t", index=False)


def child(args) -> None:
    t0 = time.perf_counter()
    import netpert.viper as V

    kw = {"signature": args.signature, "block_size": args.block_size, "enrichment": args.enrichment}
    if args.mode == "blocks":
        V.run_viper(args.cells, [args.regulon], args.activity, **kw)
    else:  # the step as it was: everything in memory
        import anndata as ad

        adata = ad.read_h5ad(args.cells)
        act = V.activity_anndata(adata, {Path(args.regulon).parent.name: V.read_regulons(args.regulon)}, method=kw["signature"],
                                 eset_filter=False, min_targets=10, mvws=1, pleiotropy=False, network_choice="integrate",
                                 block_size=kw["block_size"], backend="numba", enrichment=kw["enrichment"])
        act.write_h5ad(args.activity)
    seconds = time.perf_counter() - t0
    peak = vm_hwm_bytes()
    print(json.dumps({"seconds": seconds, "peak_bytes": peak}))


def vm_hwm_bytes() -> int:
    """This process's own peak resident set (VmHWM, Linux), in bytes."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024  # kB
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def run_child(mode, cells, regulon, activity, args) -> dict:
    cmd = [sys.executable, __file__, "--child", mode, str(cells), str(regulon), str(activity), "--block-size", str(args.block_size),
           "--signature", args.signature, "--enrichment", args.enrichment]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        raise SystemExit(f"the {mode} step failed (exit {proc.returncode})")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def same_file(a, b) -> bool:
    import anndata as ad

    x, y = ad.read_h5ad(a, backed="r"), ad.read_h5ad(b, backed="r")
    if x.shape != y.shape or sorted(x.layers) != sorted(y.layers):
        return False
    step = 5000
    for s in range(0, x.n_obs, step):
        if not np.array_equal(x.X[s:s + step], y.X[s:s + step], equal_nan=True):
            return False
        for k in y.layers:
            if not np.array_equal(x.layers[k][s:s + step], y.layers[k][s:s + step], equal_nan=True):
                return False
    return True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cells", default="20000,100000", help="comma-separated cell counts")
    ap.add_argument("--genes", type=int, default=20000)
    ap.add_argument("--density", type=float, default=0.1)
    ap.add_argument("--regulons", type=int, default=1500)
    ap.add_argument("--targets", type=int, default=50)
    ap.add_argument("--block-size", type=int, default=5000, help="viper.block_size (schema default 5000)")
    ap.add_argument("--signature", default="scale")
    ap.add_argument("--enrichment", default="area", choices=["area", "narnea"])
    ap.add_argument("--today", action="store_true", help="also run the step as it was (all in memory) and compare the files")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="viper_mem_"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"# CPU: {cpu_line()}")
    print(f"# {args.genes} genes, {args.density:.0%} non-zero, {args.regulons} regulons of {args.targets} targets, "
          f"signature {args.signature}, enrichment {args.enrichment}, block_size {args.block_size}")
    regulon = work / "net" / "regulon.tsv"
    make_regulons(regulon, args.genes, args.regulons, args.targets)
    rows = []
    print(f"{'cells':>8} {'mode':>7} {'peak GiB':>9} {'seconds':>8} {'file GiB':>8} equal")
    for n in (int(c) for c in args.cells.split(",")):
        cells = work / f"cells_{n}.h5ad"
        if not cells.exists():
            make_cells(cells, n, args.genes, args.density)
        outs = {}
        for mode in (("blocks", "today") if args.today else ("blocks",)):
            out = work / f"activity_{n}_{mode}.h5ad"
            r = run_child(mode, cells, regulon, out, args)
            outs[mode] = out
            eq = "" if mode == "blocks" else str(same_file(outs["blocks"], out))
            row = {"cells": n, "genes": args.genes, "regulons": args.regulons, "mode": mode, "peak_gib": r["peak_bytes"] / 2**30,
                   "seconds": r["seconds"], "file_gib": out.stat().st_size / 2**30, "equal_to_blocks": eq}
            rows.append(row)
            print(f"{n:>8} {mode:>7} {row['peak_gib']:>9.2f} {row['seconds']:>8.1f} {row['file_gib']:>8.2f} {eq}", flush=True)
        for out in outs.values():
            out.unlink()
    if args.out:
        pd.DataFrame(rows).to_csv(args.out, index=False)
    if not args.workdir:
        import shutil

        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        cp = argparse.ArgumentParser()
        cp.add_argument("mode", choices=["blocks", "today"])
        cp.add_argument("cells")
        cp.add_argument("regulon")
        cp.add_argument("activity")
        cp.add_argument("--block-size", type=int, default=5000)
        cp.add_argument("--signature", default="scale")
        cp.add_argument("--enrichment", default="area")
        child(cp.parse_args(sys.argv[2:]))
    else:
        main()

#!/usr/bin/env python
"""Benchmark of the ARACNe engine (netpert.aracne): speed and accuracy.

Rows (name, size, seconds, ratio, agreement):

* ``mi numba <size>`` / ``mi python <size> (...)``: APMI of a regulators x genes block with the
  numba kernel and with the plain-Python reference. The reference is timed on a subset of pairs and
  extrapolated per pair to the whole block (the row name says how many pairs were timed). ratio =
  speedup of numba over Python; agreement = max |numba - python| on the timed pairs.
* ``bootstrap network``: one bootstrap network (resampling, ranking, APMI, threshold, DPI) of
  100 regulators x 2000 genes x 300 cells (median of 3 runs). ratio = goal (0.4 s) / seconds.
* ``threshold fit``: the null + tail fit for n = 300 (no cache). ratio = goal (2 s) / seconds.
* ``threshold aracne-ap``: ARACNe-AP's own null and fit for n = 150 (4.5M pairs); agreement =
  |ours - ARACNe-AP's threshold.txt|.
* ``scale``: one bootstrap network of 1,800 regulators x 20,000 genes x 1,000 cells (counts with
  ties), timed on 180 of the regulators and extrapolated x10 (the MI work is linear in the
  regulators); the row name gives the peak resident memory of the process.
* ``planted precision/recall``: consensus network of a simulated planted network against its truth
  (precision counts an edge as true in either direction; recall is over the directed truth edges);
  ``fixture precision/recall``: the same on fixtures/aracne/expr.tsv against truth.tsv.

Use ``--quick`` for a tiny smoke run (seconds).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numba
import numpy as np
import pandas as pd

import netpert.aracne as A
from netpert.aracne.mi import mi_block
from netpert.aracne.prepare import rank_matrix
from netpert.aracne.threshold import all_pairs_mi, fit_null_vectors

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(os.environ.get("NETPERT_FIXTURES", ROOT / "tests" / "data" / "fixtures")) / "aracne"


def timed(fn, repeat=1):
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), out


def random_ranks(n_cells, n_genes, seed=0):
    data, _ = A.simulate_network(n_cells, max(1, n_genes // 10), n_genes - max(1, n_genes // 10), seed=seed, n_noise=0)
    return rank_matrix(np.ascontiguousarray(np.asarray(data.X).T), None, seed)


def bench_mi(rows, label, n_cells, n_genes, n_regs, max_python_pairs):
    ranks = random_ranks(n_cells, n_genes)
    regs = np.arange(n_regs)
    mi_block(ranks[:, :], regs[:1])  # compile / warm up
    t_nb, block = timed(lambda: mi_block(ranks, regs), repeat=3)
    n_pairs = n_regs * (n_genes - 1)
    # python on a subset of (regulator, gene) pairs, extrapolated per pair
    pairs = [(i, g) for i in range(n_regs) for g in range(n_genes) if g != i]
    rng = np.random.default_rng(0)
    sub = [pairs[k] for k in rng.choice(len(pairs), min(max_python_pairs, len(pairs)), replace=False)]
    t0 = time.perf_counter()
    ref = [A.apmi_python(ranks[i], ranks[g]) for i, g in sub]
    t_py = (time.perf_counter() - t0) / len(sub) * n_pairs
    diff = max(abs(block[i, g] - v) for (i, g), v in zip(sub, ref))
    size = f"{n_cells} cells x {n_genes} genes x {n_regs} regs"
    rows.append((f"mi numba {label}", size, t_nb, np.nan, np.nan))
    rows.append((f"mi python {label} ({len(sub)} of {n_pairs} pairs timed, extrapolated)", size, t_py, t_py / t_nb, diff))


_SCALE_CODE = """
import sys, time
import anndata as ad
import netpert.aracne as A
data = ad.read_h5ad(sys.argv[1])
regs = [g for g in data.var_names if g.startswith("TF")]
expr = A.prepare_expression(data, regs)
del data
thr, _ = A.compute_threshold(expr.n_samples, 1e-8)
A.network(expr, None, thr, seed=0, progress=False, chunk_size=5)  # warm up
t0 = time.perf_counter()
net = A.network(expr, None, thr, seed=1, progress=False)
dt = time.perf_counter() - t0
peak = [line for line in open("/proc/self/status") if line.startswith("VmHWM")]  # this process image only
print(dt, int(peak[0].split()[1]) / 1024 if peak else float("nan"), len(net))
"""


def scale_row():
    """One bootstrap network at scale, in a fresh process (so the peak memory is the engine's)."""
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        data, _ = A.simulate_network(1000, 180, 19_820, seed=3, n_noise=0, counts=True)
        path = Path(tmp) / "scale.h5ad"
        data.write_h5ad(path)
        del data
        out = subprocess.run([sys.executable, "-c", _SCALE_CODE, str(path)], capture_output=True, text=True, check=True)
    seconds, peak_mb, n_edges = out.stdout.split()
    return (f"scale bootstrap network (timed on 180 of 1800 regs, x10; peak RSS {float(peak_mb):.0f} MB, {n_edges} edges for 180 regs)",
            "1800 regs x 20000 genes x 1000 cells (counts)", float(seconds) * 10, np.nan, np.nan)


def precision_recall(net, truth):
    pred = set(zip(net["regulator"].astype(str), net["target"].astype(str)))
    directed = set(zip(truth["regulator"], truth["target"]))
    undirected = directed | {(b, a) for a, b in directed}
    precision = len(pred & undirected) / len(pred) if pred else float("nan")
    recall = len(pred & directed) / len(directed) if directed else float("nan")
    return precision, recall


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", help="write the rows to this CSV file")
    ap.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    ap.add_argument("--bootstraps", type=int, default=None, help="bootstraps of the accuracy runs (default 100, quick 6)")
    ap.add_argument("--no-scale", action="store_true", help="skip the 20,000-gene x 1,000-cell scale row")
    args = ap.parse_args(argv)
    q = args.quick
    n_boot = args.bootstraps or (6 if q else 100)
    rows = []
    print(f"netpert.aracne benchmark ({'quick' if q else 'full'}); numba threads: {numba.get_num_threads()}", flush=True)

    # 1. numba vs the Python reference
    sizes = [("small", 100, 100, 10)] if not q else [("tiny", 30, 20, 4)]
    if not q:
        sizes += [("medium", 500, 200, 20), ("large", 1000, 500, 50)]
    for label, n_cells, n_genes, n_regs in sizes:
        bench_mi(rows, label, n_cells, n_genes, n_regs, max_python_pairs=60 if q else 300)

    # 2. one bootstrap network and the null threshold
    n_cells, n_regs, n_genes = (60, 10, 200) if q else (300, 100, 2000)
    data, _ = A.simulate_network(n_cells, n_regs, n_genes - n_regs, seed=1, n_noise=0)
    regs = [g for g in data.var_names if g.startswith("TF")]
    expr = A.prepare_expression(data, regs)
    thr, _ = A.compute_threshold(n_cells, 1e-8, n_vectors=300 if q else None)
    A.network(expr, None, thr, seed=0, progress=False)  # warm up
    t_boot, net = timed(lambda: A.network(expr, None, thr, seed=1, progress=False), repeat=3)
    rows.append(("bootstrap network (MI+threshold+DPI; ratio = 0.4 s goal / time)",
                 f"{n_regs} regs x {n_genes} genes x {n_cells} cells", t_boot, 0.4 / t_boot, np.nan))
    n_null = 300 if q else None
    all_pairs_mi(fit_null_vectors(20, 10, 0))  # warm up
    t_thr, (thr300, info) = timed(lambda: A.compute_threshold(n_cells, 1e-8, n_vectors=n_null))
    rows.append((f"threshold fit (null {info['null_size']} pairs; ratio = 2 s goal / time)", f"n={n_cells}", t_thr, 2.0 / t_thr, np.nan))
    if not q and FIXTURES.is_dir():
        ref = float((FIXTURES / "threshold.txt").read_text())
        t_ap, (thr_ap, _) = timed(lambda: A.compute_threshold(150, 1e-8, seed=1, method="aracne-ap"))
        rows.append(("threshold aracne-ap compat (4,498,500 pairs; agreement = |ours - ARACNe-AP|)", "n=150", t_ap, np.nan, abs(thr_ap - ref)))

    if not q and not args.no_scale:
        rows.append(scale_row())

    # 3. accuracy on a planted network and on the fixture
    n_cells, n_regs, n_targets = (60, 5, 40) if q else (300, 50, 1000)
    data, truth = A.simulate_network(n_cells, n_regs, n_targets, seed=2)
    regs = [g for g in data.var_names if g.startswith("TF")]
    for mode in ("bootstrap", "subsample"):
        t_acc, net = timed(lambda: A.aracne(data, regs, bootstraps=n_boot, pvalue=1e-8, seed=1, resampling=mode, progress=False))
        p, r = precision_recall(net, truth)
        size = f"{n_cells} cells, {n_regs} regs, {n_targets} targets, {n_boot} x {mode}, {len(net)} edges"
        rows.append((f"planted precision (consensus, {mode})", size, t_acc, np.nan, p))
        rows.append((f"planted recall (consensus, {mode})", size, t_acc, np.nan, r))
    if FIXTURES.is_dir():
        expr_fx = pd.read_csv(FIXTURES / "expr.tsv", sep="\t", index_col=0).T
        truth_fx = pd.read_csv(FIXTURES / "truth.tsv", sep="\t")
        tfs = [line.strip() for line in (FIXTURES / "tfs.txt").read_text().splitlines() if line.strip()]
        p, r = precision_recall(A.read_network(FIXTURES / "consolidated.tsv"), truth_fx)
        rows.append(("fixture precision, ARACNe-AP consolidated.tsv (10 bootstraps)", "150 samples, 20 TFs, 300 genes", np.nan, np.nan, p))
        rows.append(("fixture recall, ARACNe-AP consolidated.tsv (10 bootstraps)", "150 samples, 20 TFs, 300 genes", np.nan, np.nan, r))
        thr_fx = None if not q else A.compute_threshold(150, 1e-8, n_vectors=300)[0]
        for b in sorted({min(10, n_boot), n_boot}):
            t_fx, net_fx = timed(lambda: A.aracne(expr_fx, tfs, bootstraps=b, pvalue=1e-8, seed=1, threshold=thr_fx, progress=False))
            p, r = precision_recall(net_fx, truth_fx)
            size = f"150 samples, 20 TFs, 300 genes, {b} bootstraps, {len(net_fx)} edges"
            rows.append((f"fixture precision, ours ({b} bootstraps)", size, t_fx, np.nan, p))
            rows.append((f"fixture recall, ours ({b} bootstraps)", size, t_fx, np.nan, r))

    table = pd.DataFrame(rows, columns=["name", "size", "seconds", "ratio", "agreement"])
    with pd.option_context("display.max_colwidth", 90, "display.width", 250):
        print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    for _, row in table[table["name"].str.startswith("mi python")].iterrows():
        print(f"speedup numba vs python, {row['size']}: {row['ratio']:.0f}x")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(args.out, index=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""Benchmark of the VIPER engine (netpert.viper): speed and agreement with other implementations.

Rows (name, size, seconds, ratio, agreement):

* ``netpert area``: ``netpert.viper.viper`` (method "none", no eset filter, numba backend) on
  2,000 cells x 5,000 genes x 200 regulons of 50-100 targets, warm (median of 3 runs).
  ratio = goal (0.6 s) / seconds; agreement = max |NES - plain-Python reference|.
* ``netpert area python``: the plain reference backend on the same data; ratio = its time over
  the numba time.
* ``pyviper``: ``pyviper.viper`` (viper-in-python, aREA, eset_filter off, method None) on the same
  data and network, timed inside this process when installed (else "not installed");
  ratio = pyviper seconds / netpert seconds (netpert's speedup); agreement = max |NES difference|.
* ``decoupler``: ``decoupler.mt.viper`` (pleiotropy off). decoupler has no likelihood column, so
  it is compared with netpert run on the same network with every likelihood set to 1 (that run's
  time is the ratio's denominator).
* ``scaling numba`` / ``scaling python``: the PySCES-style table: 10, 50 and 200 regulons on the
  same cells; ratio on the numba rows = speedup over the plain reference; agreement = max |diff|.

``--quick`` runs a tiny version (a few seconds, no external tools unless ``--external``).
``--out FILE.csv`` writes the rows.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
import warnings

import numba
import numpy as np
import pandas as pd

import netpert.viper as V

GOAL_SECONDS = 0.6


def timed(fn, repeat=1):
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), out


def make_data(n_cells: int, n_genes: int, n_regs: int, tmin: int = 50, tmax: int = 100, seed: int = 0):
    """Log-normal-ish expression (cells x genes) and random regulons (mor in [-1, 1], likelihood in (0, 1])."""
    rng = np.random.default_rng(seed)
    genes = np.array([f"G{i:05d}" for i in range(n_genes)])
    expr = pd.DataFrame(rng.lognormal(1.0, 1.0, size=(n_cells, n_genes)), index=[f"C{i:05d}" for i in range(n_cells)], columns=genes)
    rows = []
    for r in range(n_regs):
        k = int(rng.integers(tmin, tmax + 1))
        tg = rng.choice(n_genes, size=min(k, n_genes), replace=False)
        rows.append(pd.DataFrame({"regulator": f"TF{r:04d}", "target": genes[tg], "mor": rng.uniform(-1, 1, len(tg)),
                                  "likelihood": rng.uniform(0.05, 1, len(tg))}))
    return expr, pd.concat(rows, ignore_index=True)


def run_netpert(expr, net, backend="numba", min_targets=10):
    return V.viper(expr, net, method="none", eset_filter=False, min_targets=min_targets, backend=backend)


def maxdiff(a: pd.DataFrame, b: pd.DataFrame) -> float:
    b = b.loc[a.index, a.columns]
    return float(np.nanmax(np.abs(a.to_numpy() - b.to_numpy())))


def run_pyviper(expr, net, min_targets):
    import anndata as ad
    import pyviper

    adata = ad.AnnData(expr)
    inter = pyviper.Interactome("bench", net[["regulator", "target", "mor", "likelihood"]].copy())
    t0 = time.perf_counter()
    res = pyviper.viper(adata, inter, eset_filter=False, method=None, min_targets=min_targets, verbose=False,
                        return_as_df=True, store_input_data=False)
    return time.perf_counter() - t0, res


def run_decoupler(expr, net, min_targets):
    import decoupler as dc

    dnet = net.rename(columns={"regulator": "source", "mor": "weight"})[["source", "target", "weight"]]
    t0 = time.perf_counter()
    res = dc.mt.viper(expr, dnet, tmin=min_targets, pleiotropy=False, verbose=False)
    seconds = time.perf_counter() - t0
    es = res[0] if isinstance(res, tuple) else res
    return seconds, es


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny smoke run")
    ap.add_argument("--external", action="store_true", help="with --quick: also run pyviper / decoupler when installed")
    ap.add_argument("--out", help="write the rows to this CSV")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    if args.quick:
        n_cells, n_genes, n_regs, scaling, repeat = 100, 400, 12, (3, 6, 12), 1
        tmin, tmax = 15, 30
    else:
        n_cells, n_genes, n_regs, scaling, repeat = 2000, 5000, 200, (10, 50, 200), args.repeat
        tmin, tmax = 50, 100
    min_targets = min(10, tmin)
    size = f"{n_cells}x{n_genes}x{n_regs}"
    rows = []
    expr, net = make_data(n_cells, n_genes, n_regs, tmin, tmax)
    run_netpert(expr.iloc[:5], net, min_targets=min_targets)  # JIT warm-up (cached after the first run)
    t_np, nes = timed(lambda: run_netpert(expr, net, min_targets=min_targets), repeat)
    t_py, nes_py = timed(lambda: run_netpert(expr, net, "python", min_targets), 1)
    rows.append(("netpert area", size, t_np, GOAL_SECONDS / t_np, maxdiff(nes, nes_py)))
    rows.append(("netpert area python", size, t_py, t_py / t_np, maxdiff(nes, nes_py)))

    external = not args.quick or args.external
    for name, runner, lik1 in (("pyviper", run_pyviper, False), ("decoupler", run_decoupler, True)):
        module = {"pyviper": "pyviper", "decoupler": "decoupler"}[name]
        if not external:
            rows.append((name, size, float("nan"), float("nan"), float("nan")))
            print(f"{name}: skipped (--quick)")
            continue
        if importlib.util.find_spec(module) is None:
            rows.append((name, size, float("nan"), float("nan"), float("nan")))
            print(f"{name}: not installed (pip install 'netpert[bench]')")
            continue
        ref_net, ref_nes, ref_t = net, nes, t_np
        if lik1:
            ref_net = net.assign(likelihood=1.0)
            ref_t, ref_nes = timed(lambda: run_netpert(expr, ref_net, min_targets=min_targets), repeat)
        try:
            runner(expr.iloc[:20], ref_net, min_targets)  # warm-up (imports, JIT), not timed
            seconds, other = runner(expr, ref_net, min_targets)
        except Exception as exc:  # an external tool failing is reported, not fatal
            print(f"{name}: failed: {type(exc).__name__}: {exc}")
            rows.append((name, size, float("nan"), float("nan"), float("nan")))
            continue
        other = pd.DataFrame(other)
        other.index = other.index.astype(str)
        rows.append((name, size, seconds, seconds / ref_t, maxdiff(ref_nes, other)))

    for k in scaling:
        sub = net.loc[net["regulator"].isin(pd.unique(net["regulator"])[:k])]
        size_k = f"{n_cells}x{n_genes}x{k}"
        t_n, a = timed(lambda: run_netpert(expr, sub, min_targets=min_targets), repeat)
        t_p, b = timed(lambda: run_netpert(expr, sub, "python", min_targets), 1)
        rows.append(("scaling numba", size_k, t_n, t_p / t_n, maxdiff(a, b)))
        rows.append(("scaling python", size_k, t_p, 1.0, maxdiff(a, b)))

    table = pd.DataFrame(rows, columns=["name", "size", "seconds", "ratio", "agreement"])
    with pd.option_context("display.width", 120, "display.float_format", "{:.4g}".format):
        print(f"netpert.viper benchmark (numba threads: {numba.get_num_threads()})")
        print(table.to_string(index=False))
    if args.out:
        table.to_csv(args.out, index=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())

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
* ``netpert narnea`` / ``pyviper narnea``: NaRnEA (``enrichment="narnea"``) on the same data and
  network; netpert's ratio = pyviper narnea seconds / netpert narnea seconds (its speedup; the
  goal is >= 10x), its agreement = max |NES - plain-Python reference|; pyviper's agreement = max
  |NES difference| from netpert.
* ``split ...``: where netpert's aREA time goes, each part timed alone on the same block:
  ``ranking`` (the within-cell ranks over the network's genes: radix sort on float32 keys, float64
  ties), ``inverse normal`` (qnorm lookup tables, 2n + 2 quantiles), ``enrichment`` (the aREA kernel
  minus its ranking: quantile lookup and the weighted sums), ``rest`` (signature, network matching,
  tail maximum, result frame); ratio = share of the total. ``ranking lower bound``: one pass that
  reads the block and writes one code per gene (no sorting at all), same threads; ratio = ranking
  time over it.
* ``scaling numba`` / ``scaling python``: the PySCES-style table: 10, 50 and 200 regulons on the
  same cells; ratio on the numba rows = speedup over the plain reference; agreement = max |diff|.

The header names the CPU (model, cores, vector flags) and numba's thread count; compare ratios
measured in one run (the machine may be shared).

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
from netpert.report.environment import cpu_summary

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


def run_netpert(expr, net, backend="numba", min_targets=10, enrichment="area"):
    return V.viper(expr, net, method="none", eset_filter=False, min_targets=min_targets, backend=backend, enrichment=enrichment)


@numba.njit(parallel=True, cache=True)
def _one_pass(block, cols):
    """The ranking's floor: read every value of the network's genes once, write one code each."""
    b, n = block.shape[0], cols.shape[0]
    out = np.empty((b, n), dtype=np.int64)
    for i in numba.prange(b):
        for j in range(n):
            out[i, j] = np.int64(block[i, cols[j]] * 2.0)
    return out


def time_split(expr, net, min_targets, total, repeat):
    """(name, seconds) of netpert's aREA parts, each timed alone (see the module docstring)."""
    from netpert.viper._kernels import rank_codes_numba
    from netpert.viper.area import area_block, cell_tail_max, prepare_network, quantile_luts

    X = np.ascontiguousarray(expr.to_numpy(dtype=np.float64))
    net_obj = prepare_network(net, expr.columns, None, False, min_targets)
    sub = np.ascontiguousarray(X[:, net_obj.genes])
    m = float(cell_tail_max(X, net_obj).max())
    rank_codes_numba(sub[:4])
    _one_pass(X[:4], net_obj.genes)
    t_rank, _ = timed(lambda: rank_codes_numba(sub), repeat)
    t_lut, _ = timed(lambda: quantile_luts(net_obj.n_genes, m), repeat)
    t_area, _ = timed(lambda: area_block(X, net_obj, m), repeat)
    t_bound, _ = timed(lambda: _one_pass(X, net_obj.genes), repeat)
    enrich = max(t_area - t_rank - t_lut, 0.0)
    rest = max(total - t_area, 0.0)
    return [("split ranking", t_rank), ("split inverse normal", t_lut), ("split enrichment", enrich), ("split rest", rest)], t_bound, t_rank


def maxdiff(a: pd.DataFrame, b: pd.DataFrame) -> float:
    b = b.loc[a.index, a.columns]
    return float(np.nanmax(np.abs(a.to_numpy() - b.to_numpy())))


def run_pyviper(expr, net, min_targets, enrichment="area"):
    import anndata as ad
    import pyviper

    adata = ad.AnnData(expr)
    inter = pyviper.Interactome("bench", net[["regulator", "target", "mor", "likelihood"]].copy())
    t0 = time.perf_counter()
    res = pyviper.viper(adata, inter, eset_filter=False, method=None, min_targets=min_targets, verbose=False,
                        return_as_df=True, store_input_data=False, enrichment=enrichment)
    seconds = time.perf_counter() - t0
    if isinstance(res, dict):  # narnea: {"nes": ..., "pes": ...}
        res = res["nes"]
    return seconds, res


def run_pyviper_narnea(expr, net, min_targets):
    return run_pyviper(expr, net, min_targets, "narnea")


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
    run_netpert(expr.iloc[:5], net, min_targets=min_targets, enrichment="narnea")
    t_nar, nes_nar = timed(lambda: run_netpert(expr, net, min_targets=min_targets, enrichment="narnea"), repeat)
    nar_ref = run_netpert(expr, net, "python", min_targets, enrichment="narnea")
    nar_row = len(rows)
    rows.append(("netpert narnea", size, t_nar, float("nan"), maxdiff(nes_nar, nar_ref)))

    external = not args.quick or args.external
    for name, runner, lik1 in (("pyviper", run_pyviper, False), ("pyviper narnea", run_pyviper_narnea, False),
                               ("decoupler", run_decoupler, True)):
        module = {"pyviper": "pyviper", "pyviper narnea": "pyviper", "decoupler": "decoupler"}[name]
        if not external:
            rows.append((name, size, float("nan"), float("nan"), float("nan")))
            print(f"{name}: skipped (--quick)")
            continue
        if importlib.util.find_spec(module) is None:
            rows.append((name, size, float("nan"), float("nan"), float("nan")))
            print(f"{name}: not installed (pip install 'netpert[bench]')")
            continue
        ref_net, ref_nes, ref_t = net, nes, t_np
        if name == "pyviper narnea":
            ref_nes, ref_t = nes_nar, t_nar
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
        if name == "pyviper narnea":
            rows[nar_row] = ("netpert narnea", size, t_nar, seconds / t_nar, rows[nar_row][4])

    split, t_bound, t_rank = time_split(expr, net, min_targets, t_np, repeat)
    for part, seconds in split:
        rows.append((part, size, seconds, seconds / t_np, float("nan")))
    rows.append(("ranking lower bound", size, t_bound, t_rank / t_bound, float("nan")))

    for k in scaling:
        sub = net.loc[net["regulator"].isin(pd.unique(net["regulator"])[:k])]
        size_k = f"{n_cells}x{n_genes}x{k}"
        t_n, a = timed(lambda: run_netpert(expr, sub, min_targets=min_targets), repeat)
        t_p, b = timed(lambda: run_netpert(expr, sub, "python", min_targets), 1)
        rows.append(("scaling numba", size_k, t_n, t_p / t_n, maxdiff(a, b)))
        rows.append(("scaling python", size_k, t_p, 1.0, maxdiff(a, b)))

    table = pd.DataFrame(rows, columns=["name", "size", "seconds", "ratio", "agreement"])
    with pd.option_context("display.width", 120, "display.float_format", "{:.4g}".format):
        print(f"netpert.viper benchmark on {cpu_summary()}; numba threads: {numba.get_num_threads()}")
        print(table.to_string(index=False))
    if args.out:
        table.to_csv(args.out, index=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())

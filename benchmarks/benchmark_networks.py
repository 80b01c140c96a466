#!/usr/bin/env python
"""Network benchmark: does the first stage (strata -> ARACNe) recover known networks from UMI counts?

Sections (``--sections``, comma-separated):

* ``sergio``: SERGIO v2 (sergio-scsim) UMI counts from a hierarchical network (30 regulators, 440
  targets; 4 cell types x 300 cells; SERGIO's outlier-gene, library-size, dropout and Poisson noise)
  per seed. ``simulator``: the project's planted network (netpert.aracne.simulate_network) as UMI
  counts (4 cell types, lognormal library sizes, logistic dropout). For each data set, cell type
  (stratum) and variant (``--variants``): the consensus network's unordered pairs, correct pairs,
  precision, recall, F1, regulons (regulators with >= 10 targets) and seconds (the stratum's ARACNe
  run plus its share of netpert.data.stratify: metacells if on, and null data), next to Spearman
  |rho| top-N and random pairs at the same N (on the same samples the network was built from).
* ``nulls``: edges the default pipeline finds on two nulls of each data set: (i) genes permuted
  within each cell type before any aggregation, (ii) Poisson counts around each cell's library size.
* ``fixture``: the ARACNe-AP fixture (``--fixtures``/aracne): ARACNe-AP's consolidated network
  against the planted truth, and ours with 10 bootstraps.
* ``continuous``: the project's simulator, continuous values (2,000 genes, 300 samples, 100
  regulators, 8 bootstraps): the default against APMI with the calibrated threshold and against
  ``threshold_method: aracne-ap``.

Scoring: pairs are unordered (a predicted pair is correct when the truth holds it in either
direction); the truth is restricted to the testable pairs (both genes present, non-constant, in the
samples the network was built from, and one of them a regulator). Random precision at the same N is
its expectation, the truth density among the candidate regulator x gene pairs.

Writes ``--out`` (long CSV: section, dataset, stratum, variant, metric, value). Data sets are
cached in ``--cache-dir`` (default results/benchmark_cache, git-ignored). ``--write-h5ad PATH``
writes the first seed's SERGIO data set as h5ad plus ``regulators.txt`` beside it.
"""

from __future__ import annotations

import argparse
import inspect
import logging
import os
import sys
import time
import warnings
from pathlib import Path

import numba
import numpy as np
import pandas as pd

import netpert.aracne as A
from netpert.aracne import benchmarking as B
from netpert.report import environment as env

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_FIXTURES = Path(os.environ.get("NETPERT_FIXTURES", ROOT / "tests" / "data" / "fixtures"))
SECTIONS = ("sergio", "simulator", "nulls", "fixture", "continuous")

#: variants: keyword arguments passed through to netpert.data.stratify ("stratify") and
#: netpert.aracne.aracne ("aracne") on top of the library defaults ("default" = the defaults)
VARIANTS = {
    "default": {},
    "metacells-on": {"stratify": {"use_metacells": True}},
    "apmi": {"aracne": {"estimator": "apmi"}},
    "metacells-knn": {"stratify": {"use_metacells": True, "metacell_method": "knn"}},
    "aracne-ap": {"aracne": {"threshold_method": "aracne-ap", "fdr": None}},
    "fit-1e-8": {"aracne": {"threshold_method": "fit", "pvalue": 1e-8, "fdr": None}},
    "fdr-0.05": {"aracne": {"fdr": 0.05}},
    "subsample": {"aracne": {"resampling": "subsample"}},
    "bootstrap": {"aracne": {"resampling": "bootstrap"}},
}
VARIANT_LABELS = {
    "aracne-ap": "aracne-ap (netpert's exact reproduction of ARACNe-AP's threshold)",
    "fit-1e-8": "fit, p 1e-8 (the old default)",
}

#: the project's simulator as UMI counts (tuned to ~85 % zeros, median ~300 UMIs)
UMI_SIM = {"n_regulators": 30, "n_targets": 400, "n_noise": 100, "umis": 400.0, "gene_sd": 1.5, "size_sd": 0.5,
           "dropout_midpoint": 1.0, "dropout_shape": 2.0, "cell_type_effect": 1.0}


def schema_default(section: str, key: str):
    """The workflow's default of ``section.key`` (the config schema owns it)."""
    import yaml

    schema = yaml.safe_load((ROOT / "workflow" / "schemas" / "config.schema.yaml").read_text())
    return schema["properties"][section]["properties"][key]["default"]


def _fmt(v):
    if isinstance(v, (float, np.floating)):
        return "nan" if not np.isfinite(v) else (f"{v:.3f}" if abs(v) < 1000 else f"{v:.0f}")
    return str(v)


def print_table(title: str, rows: list[dict], columns: list[str]) -> None:
    print(f"\n== {title}", flush=True)
    if not rows:
        print("(no rows)")
        return
    df = pd.DataFrame(rows)[columns]
    with pd.option_context("display.max_colwidth", 60, "display.width", 250, "display.max_rows", 10_000):
        print(df.to_string(index=False, formatters={c: _fmt for c in columns}), flush=True)


def cpu_line() -> str:
    logical, physical = env.cores()
    flags = env.cpu_flags()
    vec = sorted(f for f in flags if f.startswith(("avx", "sse4", "fma", "neon", "sve", "asimd", "amx")))
    try:
        affinity = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = None
    return (f"CPU: {env.cpu_model()}; cores logical {logical}, physical {physical}, usable {affinity}; "
            f"numba threads {numba.get_num_threads()}; vector flags: {' '.join(vec) or 'unknown'}")


def defaults_line() -> str:
    from netpert.data import stratify

    s = inspect.signature(stratify).parameters
    a = inspect.signature(A.aracne).parameters
    get = lambda p, k: p[k].default if k in p else "n/a"  # noqa: E731
    return (f"default = library defaults: stratify(use_metacells={get(s, 'use_metacells')!r}, metacell_method={get(s, 'metacell_method')!r}), "
            f"aracne(threshold_method={get(a, 'threshold_method')!r}, fdr={get(a, 'fdr')!r}, pvalue={get(a, 'pvalue')!r}, "
            f"resampling={get(a, 'resampling')!r})")


class Recorder:
    """The long-format rows of --out."""

    def __init__(self):
        self.rows: list[dict] = []

    def add(self, section, dataset, stratum, variant, values: dict):
        for k, v in values.items():
            if isinstance(v, (int, float, np.integer, np.floating, bool)):
                self.rows.append({"section": section, "dataset": dataset, "stratum": stratum, "variant": variant, "metric": k, "value": float(v)})

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=["section", "dataset", "stratum", "variant", "metric", "value"])


# --------------------------------------------------------------------------------------------- data sets
def sergio_dataset(seed: int, args) -> tuple:
    params = dict(simulator="sergio", n_cell_types=args.cell_types, n_cells=args.cells, n_regulators=args.regulators,
                  n_targets=args.targets, n_master=max(1, args.regulators * 4 // 15), seed=seed, steps=args.steps)
    kw = {k: v for k, v in params.items() if k != "simulator"}
    t0 = time.perf_counter()
    adata, truth, cached = B.cached_dataset(args.cache_dir, "sergio", params, lambda: B.simulate_sergio(**kw))
    return adata, truth, time.perf_counter() - t0, cached


def simulator_dataset(seed: int, args) -> tuple:
    scale = args.targets / 440
    n_targets, n_noise = int(round(UMI_SIM["n_targets"] * scale)), int(round(UMI_SIM["n_noise"] * scale))
    n_genes = args.regulators + n_targets + n_noise  # UMIs per gene as in the full-size data set
    umis = UMI_SIM["umis"] * n_genes / (UMI_SIM["n_regulators"] + UMI_SIM["n_targets"] + UMI_SIM["n_noise"])
    kw = dict(UMI_SIM, n_regulators=args.regulators, n_targets=n_targets, n_noise=n_noise, umis=umis)
    params = dict(kw, simulator="netpert", n_cells=args.cells * args.cell_types, n_cell_types=args.cell_types, seed=seed)

    def make():
        adata, truth = A.simulate_network(args.cells * args.cell_types, seed=seed, n_cell_types=args.cell_types, **kw)
        return adata, truth

    t0 = time.perf_counter()
    adata, truth, cached = B.cached_dataset(args.cache_dir, "netpert-umi", params, make)
    return adata, truth, time.perf_counter() - t0, cached


def regulators_of(adata, truth) -> list[str]:
    regs = set(truth["regulator"].astype(str))
    return [g for g in adata.var_names if g in regs]


# --------------------------------------------------------------------------------------------- scoring rows
def score_row(data, net, truth, regs) -> dict:
    """Network score next to Spearman top-N and random at the same N, on ``data``."""
    genes = B.varying_genes(data)
    sc = B.score_network(net, truth, genes, regs)
    top = B.spearman_top(data, regs, sc["pairs"], genes=genes)
    regs_in = [r for r in regs if r in set(genes)]
    sp = B.score_pairs(B.network_pairs(top), B.testable_truth(truth, genes, regs_in))
    return dict(sc, regulons=B.regulons(net), spearman_correct=sp["correct"], spearman_precision=sp["precision"],
                spearman_f1=sp["f1"], random_precision=sc["density"])


def run_dataset(section, name, adata, truth, args, rec, variants, table_rows):
    regs = regulators_of(adata, truth)
    reg_file = B.regulators_file(regs, Path(args.cache_dir or args.tmp) / "regulators")
    for variant in variants:
        spec = VARIANTS[variant]
        results = B.run_networks(adata, regs, reg_file, args.bootstraps, seed=args.pipeline_seed,
                                 stratify_kw=spec.get("stratify"), aracne_kw=spec.get("aracne"), min_cells=args.min_cells)
        for r in results:
            row = score_row(r.data, r.network, truth, regs)
            row.update(samples=r.data.n_obs, cells=r.n_cells, seconds=r.seconds)
            rec.add(section, name, r.name, variant, row)
            table_rows.append(dict(row, dataset=name, stratum=r.name, variant=variant, aggregation=r.aggregation))


def run_nulls(name, adata, truth, args, rec, table_rows):
    regs = regulators_of(adata, truth)
    reg_file = B.regulators_file(regs, Path(args.cache_dir or args.tmp) / "regulators")
    for null_name, make in (("permuted", B.permuted_within), ("library-size", B.library_null)):
        null = make(adata, "cell_type", seed=args.pipeline_seed)
        zeros = B.count_stats(null)["zeros"]
        t0 = time.perf_counter()
        results = B.run_networks(null, regs, reg_file, args.bootstraps, seed=args.pipeline_seed, min_cells=args.min_cells)
        for r in results:
            row = {"edges": len(r.network), "pairs": len(B.network_pairs(r.network)), "regulons": B.regulons(r.network),
                   "samples": r.data.n_obs, "null_zeros": zeros, "seconds": r.seconds}
            rec.add("nulls", name, r.name, null_name, row)
            table_rows.append(dict(row, dataset=name, stratum=r.name, null=null_name, aggregation=r.aggregation))
        log_time = time.perf_counter() - t0
        print(f"  null {null_name} of {name}: {sum(len(r.network) for r in results)} edges over {len(results)} strata ({log_time:.0f} s)", flush=True)


# --------------------------------------------------------------------------------------------- planted continuous
def fixture_section(args, rec) -> list[dict]:
    fx = Path(args.fixtures) / "aracne"
    if not (fx / "expr.tsv").is_file():
        print(f"\n== fixture: skipped, {fx}/expr.tsv not found (give --fixtures)")
        return []
    expr = pd.read_csv(fx / "expr.tsv", sep="\t", index_col=0).T
    truth = pd.read_csv(fx / "truth.tsv", sep="\t")
    tfs = [x.strip() for x in (fx / "tfs.txt").read_text().splitlines() if x.strip()]
    rows = []
    ref = A.read_network(fx / "consolidated.tsv")
    row = score_row(expr, ref, truth, tfs)
    rec.add("fixture", "aracne-fixture", "all", "ARACNe-AP consolidated.tsv", row)
    rows.append(dict(row, variant="ARACNe-AP consolidated.tsv (10 bootstraps)", seconds=float("nan")))
    b = args.fixture_bootstraps
    for variant in ("default", "apmi", "aracne-ap"):
        t0 = time.perf_counter()
        net = A.aracne(expr, tfs, bootstraps=b, seed=1, progress=False, **VARIANTS[variant].get("aracne", {}))
        row = dict(score_row(expr, net, truth, tfs), seconds=time.perf_counter() - t0)
        rec.add("fixture", "aracne-fixture", "all", variant, row)
        rows.append(dict(row, variant=f"netpert {VARIANT_LABELS.get(variant, variant)} ({b} bootstraps)"))
    return rows


def continuous_section(args, rec) -> list[dict]:
    rows = []
    n_genes, n_regs = args.continuous_genes, args.continuous_regulators
    n_noise = n_genes // 5
    for seed in args.seed_list:
        data, truth = A.simulate_network(args.continuous_samples, n_regs, n_genes - n_regs - n_noise, seed=seed, n_noise=n_noise)
        regs = [g for g in data.var_names if g.startswith("TF")]
        name = f"continuous-s{seed}"
        for variant in ("default", "apmi", "aracne-ap"):
            t0 = time.perf_counter()
            net = A.aracne(data, regs, bootstraps=args.continuous_bootstraps, seed=1, progress=False, **VARIANTS[variant].get("aracne", {}))
            row = dict(score_row(data, net, truth, regs), seconds=time.perf_counter() - t0)
            rec.add("continuous", name, "all", variant, row)
            rows.append(dict(row, dataset=name, variant=VARIANT_LABELS.get(variant, variant)))
    return rows


# --------------------------------------------------------------------------------------------- summary
def summary(rows: list[dict], nulls: list[dict], rec: Recorder) -> None:
    if rows:
        df = pd.DataFrame(rows)
        df["simulator"] = df["dataset"].str.split("-s").str[0]
        out = []
        for (sim, variant), g in df.groupby(["simulator", "variant"], sort=False):
            sp_correct = g["spearman_correct"].sum()
            ratio = g["correct"].sum() / sp_correct if sp_correct else float("nan")
            s = {"simulator": sim, "variant": variant, "strata": len(g), "mean_f1": g["f1"].mean(),
                 "mean_precision": g["precision"].mean(), "mean_recall": g["recall"].mean(),
                 "precision_vs_spearman": ratio, "mean_random_precision": g["random_precision"].mean(),
                 "strata_without_regulons": int((g["regulons"] == 0).sum()), "total_pairs": int(g["pairs"].sum()),
                 "seconds": g["seconds"].sum()}
            out.append(s)
            rec.add("summary", sim, "all", variant, {k: v for k, v in s.items() if k not in ("simulator", "variant")})
        print_table("summary per variant (precision_vs_spearman = correct pairs / Spearman top-N correct pairs, pooled over strata)",
                    out, list(out[0].keys()))
        for s in out:
            print(f"  {s['simulator']} {VARIANT_LABELS.get(s['variant'], s['variant'])}: mean F1 {s['mean_f1']:.3f} over {s['strata']} strata, "
                  f"precision x{s['precision_vs_spearman']:.2f} of Spearman at the same N, "
                  f"{s['strata_without_regulons']} of {s['strata']} strata without regulons")
    if nulls:
        nd = pd.DataFrame(nulls)
        for null_name, g in nd.groupby("null", sort=False):
            print(f"  null {null_name}: {int(g['edges'].sum())} edges in total over {len(g)} strata "
                  f"(max {int(g['edges'].max())} in one stratum; {int((g['regulons'] > 0).sum())} strata with a regulon)")
            rec.add("summary", "all", "all", f"null {null_name}", {"total_edges": int(g["edges"].sum()), "strata": len(g)})


# --------------------------------------------------------------------------------------------- main
def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", help="write the long-format rows to this CSV file")
    ap.add_argument("--seeds", default="0,1,2", help="data-set seeds, comma-separated (default 0,1,2)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 1 seed, 4 bootstraps, 2 cell types x 120 cells, small networks")
    ap.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, of: {', '.join(VARIANTS)}")
    ap.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated, of: {', '.join(SECTIONS)} (empty: none)")
    ap.add_argument("--bootstraps", type=int, help="bootstraps per network (default: the workflow's aracne.bootstraps, quick 4)")
    ap.add_argument("--cells", type=int, help="cells per cell type (default 300, quick 120)")
    ap.add_argument("--cell-types", type=int, help="cell types per data set (default 4, quick 2)")
    ap.add_argument("--regulators", type=int, help="regulators of the simulated UMI networks (default 30, quick 12)")
    ap.add_argument("--targets", type=int, help="SERGIO targets (default 440, quick 120; the simulator scales with it)")
    ap.add_argument("--steps", type=int, help="SERGIO steps per cell chain (default 1000, quick 300)")
    ap.add_argument("--min-cells", type=int, default=30, help="strata.min_cells (default 30)")
    ap.add_argument("--pipeline-seed", type=int, default=1, help="seed of stratify / aracne (default 1)")
    ap.add_argument("--fixtures", default=str(DEFAULT_FIXTURES), help=f"folder holding aracne/ (default {DEFAULT_FIXTURES})")
    ap.add_argument("--cache-dir", default=str(ROOT / "results" / "benchmark_cache"),
                    help="cache of simulated data sets (default results/benchmark_cache); 'none' to disable")
    ap.add_argument("--write-h5ad", metavar="PATH", help="write the first seed's SERGIO data set here (+ regulators.txt beside it)")
    args = ap.parse_args(argv)
    q = args.quick
    if q and args.seeds == "0,1,2":
        args.seeds = "0"
    args.seed_list = [int(s) for s in args.seeds.split(",") if s.strip()]
    args.bootstraps = args.bootstraps or (4 if q else schema_default("aracne", "bootstraps"))
    args.cells = args.cells or (120 if q else 300)
    args.cell_types = args.cell_types or (2 if q else 4)
    args.regulators = args.regulators or (12 if q else 30)
    args.targets = args.targets or (120 if q else 440)
    args.steps = args.steps or (300 if q else 1000)
    args.fixture_bootstraps = 4 if q else 10
    args.continuous_genes, args.continuous_samples = (300, 100) if q else (2000, 300)
    args.continuous_regulators, args.continuous_bootstraps = (20, 4) if q else (100, 8)
    args.cache_dir = None if str(args.cache_dir).lower() == "none" else args.cache_dir
    args.tmp = str(ROOT / "results" / "benchmark_tmp")
    args.section_list = [s.strip() for s in args.sections.split(",") if s.strip()]
    args.variant_list = [v.strip() for v in args.variants.split(",") if v.strip()]
    bad = [s for s in args.section_list if s not in SECTIONS] + [v for v in args.variant_list if v not in VARIANTS]
    if bad:
        ap.error(f"unknown section(s)/variant(s): {', '.join(bad)}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*Transforming to str index.*")
    warnings.filterwarnings("ignore", message="Some cells have zero counts")  # scanpy, on sparse simulated cells
    t_start = time.perf_counter()
    print(f"netpert network benchmark ({'quick' if args.quick else 'full'}); {cpu_line()}", flush=True)
    print(defaults_line())
    print(f"bootstraps {args.bootstraps}; data sets: seeds {args.seed_list}, {args.cell_types} cell types x {args.cells} cells, "
          f"{args.regulators} regulators; variants {', '.join(args.variant_list)}; sections {', '.join(args.section_list) or 'none'}")
    rec = Recorder()
    if args.write_h5ad:
        adata, truth, secs, cached = sergio_dataset(args.seed_list[0], args)
        h5, regs = B.write_h5ad(adata, args.write_h5ad, regulators_of(adata, truth))
        truth.to_csv(Path(h5).with_name("truth.tsv"), sep="\t", index=False)
        st = B.count_stats(adata)
        print(f"wrote {h5} ({st['cells']} cells x {st['genes']} genes, {st['zeros']:.1%} zeros, median {st['median_umis']:.0f} UMIs), "
              f"{regs} and {Path(h5).with_name('truth.tsv')}")

    datasets = []
    for sec, make in (("sergio", sergio_dataset), ("simulator", simulator_dataset)):
        if sec in args.section_list or ("nulls" in args.section_list and sec in ("sergio", "simulator")):
            for seed in args.seed_list:
                adata, truth, secs, cached = make(seed, args)
                name = f"{'sergio' if sec == 'sergio' else 'netpert-umi'}-s{seed}"
                datasets.append((sec, name, adata, truth))
                st = B.count_stats(adata)
                sim_s = adata.uns.get("netpert", {}).get("simulated", {}).get("seconds")
                how = f"read from cache in {secs:.1f} s" + (f" (simulated in {sim_s:.1f} s)" if sim_s else "") if cached else f"simulated in {secs:.1f} s"
                print(f"data set {name}: {st['cells']} cells x {st['genes']} genes, {st['zeros']:.1%} zeros, median {st['median_umis']:.0f} UMIs "
                      f"per cell, integer {st['integer']}; {len(truth)} truth edges; {how}", flush=True)
                rec.add("data", name, "all", "", {k: v for k, v in st.items()} | {"seconds": secs})

    rows, null_rows = [], []
    cols = ["dataset", "stratum", "variant", "aggregation", "samples", "pairs", "correct", "precision", "recall", "f1", "regulons",
            "spearman_precision", "spearman_f1", "random_precision", "seconds"]
    for sec in ("sergio", "simulator"):
        if sec not in args.section_list:
            continue
        sec_rows = []
        for s, name, adata, truth in datasets:
            if s == sec:
                t0 = time.perf_counter()
                run_dataset(sec, name, adata, truth, args, rec, args.variant_list, sec_rows)
                print(f"  {name}: {len(args.variant_list)} variants in {time.perf_counter() - t0:.0f} s", flush=True)
        print_table(f"{sec}: networks per stratum and variant (Spearman / random at the same N)", sec_rows, cols)
        rows += sec_rows
    if "nulls" in args.section_list:
        for s, name, adata, truth in datasets:
            run_nulls(name, adata, truth, args, rec, null_rows)
        print_table("nulls: edges of the default pipeline on (i) genes permuted within cell type, (ii) Poisson around library size",
                    null_rows, ["dataset", "stratum", "null", "null_zeros", "aggregation", "samples", "edges", "pairs", "regulons", "seconds"])
    pcols = ["variant", "pairs", "correct", "precision", "recall", "f1", "regulons", "spearman_precision", "random_precision", "seconds"]
    if "fixture" in args.section_list:
        fx = fixture_section(args, rec)
        if fx:
            print_table("fixture: ARACNe-AP fixture (150 samples, 20 TFs, 300 genes) against truth.tsv", fx, pcols)
    if "continuous" in args.section_list:
        print_table(f"continuous: project simulator, {args.continuous_genes} genes x {args.continuous_samples} samples, "
                    f"{args.continuous_regulators} regulators, {args.continuous_bootstraps} bootstraps",
                    continuous_section(args, rec), ["dataset"] + pcols)
    summary(rows, null_rows, rec)
    total = time.perf_counter() - t_start
    print(f"\ntotal {total:.0f} s", flush=True)
    rec.add("run", "all", "all", "", {"seconds": total, "bootstraps": args.bootstraps})
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(args.out).with_name(Path(args.out).name + ".tmp")
        rec.frame().to_csv(tmp, index=False)
        tmp.replace(args.out)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

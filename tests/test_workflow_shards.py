"""isp.cells_per_job in the workflow: one isp_infer job per shard x method, isp_merge per stratum x
method, planned from the config and the strata checkpoint; the tiny run split into shards equals
the unsplit tiny run (tests/test_isp_shards.py holds the library to it bit for bit and states the
tolerances used here)."""

import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from netpert.isp.metrics import cosine_rows
from netpert.isp.records import read_metrics, read_perf, read_result
from netpert.isp.shards import planned_shards
from test_workflow_plan import _jobs
from workflow_utils import ROOT, SNAKEFILE, TINY_CONFIG, run_snakemake, write_tiny_config

pytestmark = pytest.mark.workflow

CELLS_PER_JOB = 2
#: arrays equal whatever the batches (tests/test_isp_shards.py)
EXACT_ALWAYS = ("cell_ids", "perturbation", "cell_index", "kind", "targets", "n_genes_compared", "skipped_labels",
                "skipped_counts")
TIMING = ("wall_s", "wall_min_s", "wall_max_s", "perturbations_per_s", "cells_per_s", "speedup", "speedup_min",
          "speedup_max", "peak_rss_mb", "cpu_percent", "other_load_cores", "gpu_peak_mem_mb")


def test_lint_and_rules_with_shards():
    """The sharded workflow lints clean; isp_merge declares what every rule declares."""
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "--lint", "--snakefile", str(SNAKEFILE), "--config", "isp={cells_per_job: 5}"],
        cwd=ROOT, capture_output=True, text=True,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "Lints for" not in out, out
    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import ConfigSettings, ResourceSettings

    with SnakemakeApi() as api:
        wf = api.workflow(
            snakefile=SNAKEFILE,
            workdir=ROOT,
            resource_settings=ResourceSettings(),
            config_settings=ConfigSettings(configfiles=[ROOT / "config" / "config.yaml"], config={"isp": {"cells_per_job": 5}}),
        )
        rules = {r.name: r for r in wf._workflow.rules}
    merge = rules["isp_merge"]
    assert merge.log and merge.benchmark and merge.conda_env and {"_cores", "mem_mb", "runtime"} <= set(merge.resources)
    assert "/shard_{shard," in str(rules["isp_infer"].output[0])


def test_tiny_run_split_into_shards_equals_the_unsplit_run(tiny_run, tmp_path):
    """The tiny run (3 cells per stratum) again with isp.cells_per_job 2: shards of 2 and 1 cells."""
    work = tmp_path / "split"
    shutil.copytree(tiny_run, work, symlinks=True)
    # the unsplit isp_infer jobs' benchmark files stay: the report must not count them as jobs of this run
    unsplit = sorted((work / "results" / "benchmarks" / "isp_infer").glob("*/*.tsv"))
    assert unsplit
    cfg = write_tiny_config(tmp_path / "cfg", isp={"cells_per_job": CELLS_PER_JOB})
    res, ref = work / "results", tiny_run / "results"
    strata = pd.read_csv(res / "strata" / "strata.tsv", sep="\t", keep_default_na=False)
    kept = strata[strata["status"] == "kept"]
    shards = {r.slug: planned_shards(r.n_output, TINY_CONFIG["isp"]["cells_per_stratum"], CELLS_PER_JOB)
              for r in kept.itertuples()}
    assert set(shards.values()) == {2}
    methods = sorted(p.name for p in (ref / "isp").iterdir() if p.is_dir() and p.name not in ("model", "tokens"))

    # the plan: every shard of every planned method, one merge per stratum and method; nothing before reruns
    plan = _jobs(run_snakemake(work, cfg, ["-n", "--forcerun", "isp_merge"]).stdout)
    assert plan["isp_infer"] == len(methods) * sum(shards.values()), plan
    assert plan["isp_merge"] == len(methods) * len(kept), plan
    assert not {"isp_tokenize", "isp_model", "export_onnx", "quantize_onnx", "viper", "aracne_bootstrap"} & set(plan), plan

    run_snakemake(work, cfg, ["--forcerun", "isp_merge"])
    for method in methods:
        for slug in kept["slug"]:
            parts = [read_perf(res / "isp" / method / slug / f"shard_{k}.perf.json") for k in range(shards[slug])]
            merged, alone = read_perf(res / "isp" / method / f"{slug}.perf.json"), read_perf(ref / "isp" / method / f"{slug}.perf.json")
            assert [p.shard["n_cells"] for p in parts] == [2, 1] and len(merged.shards) == 2
            assert (merged.status, merged.reason, merged.n_cells, merged.n_perturbations) == (
                alone.status, alone.reason, alone.n_cells, alone.n_perturbations)
            if not merged.ran:
                continue
            assert merged.wall_s == pytest.approx(sum(p.wall_s for p in parts))
            assert merged.process_peak_rss_mb == max(p.process_peak_rss_mb for p in parts)
            u, s = read_result(ref / "isp" / method / f"{slug}.npz"), read_result(res / "isp" / method / f"{slug}.npz")
            for name in EXACT_ALWAYS:
                np.testing.assert_array_equal(s[name], u[name], err_msg=f"{method} {slug} {name}")
            emb_u, emb_s = (np.concatenate([r["original"], r["perturbed"]]) for r in (u, s))
            if method in ("onnx_int8", "amp"):  # per-batch int8 scales; bf16 rounding
                assert 1 - cosine_rows(emb_s, emb_u).min() < 1e-3, method
            else:
                np.testing.assert_allclose(emb_s, emb_u, atol=1e-5, rtol=0, err_msg=method)
                np.testing.assert_allclose(s["cell_shift"], u["cell_shift"], atol=1e-7, rtol=0, err_msg=method)

    # metrics.tsv: the same rows and counts, the consistency figures within the methods' tolerance
    u = read_metrics(ref / "isp" / "metrics.tsv").set_index(["method", "stratum"])
    s = read_metrics(res / "isp" / "metrics.tsv").set_index(["method", "stratum"])
    assert list(s.index) == list(u.index) and list(s.columns) == list(u.columns)
    for col in ("status", "reason", "n_cells", "n_perturbations", "repeats", "trained", "device"):
        pd.testing.assert_series_equal(s[col], u[col], check_exact=True)
    ran = u["status"] == "ok"
    fp32 = ran & ~u.index.get_level_values("method").isin(["onnx_int8", "amp"])
    # int8 / bf16: a stratum at the bar may cross it (measured: onnx_int8 in Dendritic, spearman of the
    # effects over its 5 perturbations 0.9 unsplit, 1.0 split: two nearly equal effects swapped places)
    pd.testing.assert_series_equal(s.loc[fp32, "passes_bar"], u.loc[fp32, "passes_bar"], check_exact=True)
    near = ["mean_cosine", "min_cosine", "mean_effect", "max_effect", "mean_cell_shift"]
    pd.testing.assert_frame_equal(s.loc[fp32, near], u.loc[fp32, near], check_exact=False, rtol=1e-6, atol=1e-7)
    pd.testing.assert_frame_equal(s.loc[ran, near], u.loc[ran, near], check_exact=False, rtol=0, atol=1e-3)

    # the report: the ISP methods' time is the shards' summed, their memory the largest shard's;
    # every shard is an isp_infer job
    report = pd.read_csv(res / "report" / "methods.csv").set_index("method")
    for method in methods:
        if s.loc[(method, "all"), "status"] != "ok":
            continue
        parts = [read_perf(p) for p in sorted((res / "isp" / method).glob("*/shard_*.perf.json"))]
        assert report.loc[method, "wall_s"] == pytest.approx(sum(p.wall_s for p in parts), rel=1e-6)
        assert report.loc[method, "peak_rss_mb"] == pytest.approx(max(p.process_peak_rss_mb for p in parts), rel=1e-6)
    stages = pd.read_csv(res / "report" / "stages.csv").set_index("rule")
    assert all(p.exists() for p in unsplit)  # the earlier plan's files, not read
    assert stages.loc["isp_infer", "n_jobs"] == len(methods) * sum(shards.values())
    assert stages.loc["isp_merge", "n_jobs"] == len(methods) * len(kept)
    shard_files = sorted((res / "benchmarks" / "isp_infer").glob("*/*/shard_*.tsv"))
    assert len(shard_files) == stages.loc["isp_infer", "n_jobs"]
    assert stages.loc["isp_infer", "seconds"] == pytest.approx(sum(pd.read_csv(p, sep="\t")["s"].mean() for p in shard_files))
    md = (res / "report" / "benchmark_report.md").read_text()
    assert "Not counted" not in md and "files left by jobs of an earlier plan are not read" in md

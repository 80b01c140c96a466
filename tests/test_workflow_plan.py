"""The ISP jobs are planned from the config alone: isp.device cuda plans TensorRT on a CPU-only
host, and the jobs that land where their method cannot run write "not run" records."""

import json
import math

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from workflow_utils import run_snakemake, workflow_dag, write_tiny_config

pytestmark = pytest.mark.workflow


def _jobs(stdout: str) -> dict[str, int]:
    """Job counts of a dry run's 'Job stats' table."""
    counts, on = {}, False
    for line in stdout.splitlines():
        if line.startswith("job ") and "count" in line:
            on = True
            continue
        if on:
            parts = line.split()
            if not parts or parts[0] == "total":
                break
            if len(parts) == 2 and parts[1].isdigit():
                counts[parts[0]] = int(parts[1])
    return counts


def test_cuda_plan_on_a_cpu_host_and_not_run_records(tmp_path):
    import netpert.isp.methods as M

    if M.cuda_available():
        pytest.skip("a CUDA device is present: the tensorrt jobs would run")
    work = tmp_path / "run"
    # targets from a gene list: the ISP jobs need no networks (a short run)
    cfg = write_tiny_config(tmp_path, isp={"device": "cuda", "methods": ["baseline", "batched", "tensorrt"]})
    run_snakemake(work, cfg, ["--until", "stratify"])
    strata = sorted(p.stem for p in (work / "results" / "strata").glob("*.h5ad") if not p.stem.endswith(".null"))
    assert strata
    plan = run_snakemake(work, cfg, ["-n"])
    jobs = _jobs(plan.stdout)
    assert jobs.get("build_tensorrt") == 1 and jobs["isp_infer"] == 3 * len(strata), plan.stdout[-3000:]
    assert "resources: " in plan.stdout and "gpu=1" in plan.stdout
    cpu_plan = _jobs(run_snakemake(work, write_tiny_config(tmp_path / "cpu", isp={"device": "cpu"}), ["-n"]).stdout)
    assert "build_tensorrt" not in cpu_plan

    # run one stratum's ISP jobs here (no CUDA): tensorrt is "not run", the others ran on the CPU
    cells = ad.read_h5ad(work / "results" / "strata" / f"{strata[0]}.h5ad")
    mean = np.asarray(cells.X.mean(axis=0)).ravel()
    genes = [str(g) for g in cells.var_names[np.argsort(-mean)[:2]]]
    cfg = write_tiny_config(
        tmp_path, isp={"device": "cuda", "methods": ["baseline", "tensorrt"], "targets": {"source": "list", "genes": genes}}
    )
    targets = [f"results/isp/{m}/{strata[0]}.perf.json" for m in ("baseline", "tensorrt")]
    run_snakemake(work, cfg, targets)
    trt = json.loads((work / targets[1]).read_text())
    assert trt["status"] == "not run" and trt["reason"] == "no CUDA device in this job"
    base = json.loads((work / targets[0]).read_text())
    assert base["status"] == "ok" and base["device"] == "cpu" and "ran on the CPU" in base["note"]
    built = json.loads((work / "results" / "isp" / "model.plan.json").read_text())
    assert built["status"] == "not built"


def _aracne3_file(path, genes, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for r in genes[:4]:
        for t in rng.choice(genes[4:], 30, replace=False):
            rows.append((r, t, rng.uniform(0.05, 0.5), rng.uniform(-0.8, 0.8), int(rng.integers(1, 10)), -4.0))
    import pandas as pd

    pd.DataFrame(rows, columns=["regulator.values", "target.values", "mi.values", "scc.values", "count.values",
                                "log.p.values"]).to_csv(path, sep="\t", index=False)


def test_networks_brought_in_and_narnea(tmp_path):
    """aracne.networks: the named stratum skips ARACNe (its regulons come from an ARACNe3 file);
    with '*' no ARACNe job runs and VIPER (NaRnEA) scores the cells over the imported networks."""
    work = tmp_path / "run"
    cfg = write_tiny_config(tmp_path)
    run_snakemake(work, cfg, ["--until", "stratify"])
    strata = sorted(p.stem for p in (work / "results" / "strata").glob("*.h5ad") if not p.stem.endswith(".null"))
    cells = ad.read_h5ad(work / "results" / "data" / "cells.h5ad")
    net = tmp_path / "consolidated-net_defaultid.tsv"
    _aracne3_file(net, [str(g) for g in cells.var_names])
    one = write_tiny_config(tmp_path / "one", aracne={"networks": {strata[0]: str(net)}})
    jobs = _jobs(run_snakemake(work, one, ["-n"]).stdout)
    assert jobs["aracne_import"] == 1 and jobs["aracne_threshold"] == len(strata) - 1
    every = write_tiny_config(tmp_path / "all", aracne={"networks": {"*": str(net)}}, viper={"enrichment": "narnea"})
    run_snakemake(work, every, ["activity"])
    assert not list((work / "results" / "aracne").glob("*/threshold.txt"))
    status = json.loads((work / "results" / "aracne" / strata[0] / "status.json").read_text())
    assert status["source"] == f"aracne3 file {net.name}" and status["regulons"] == 4
    act = ad.read_h5ad(work / "results" / "viper" / "activity.h5ad")
    assert act.uns["viper"]["enrichment"] == "narnea" and act.layers["pes"].shape == act.shape
    assert (np.abs(act.layers["pes"]) <= 1 + 1e-9).all()


def test_report_reads_the_benchmarks_of_snakemakes_own_plan_and_shards_ask_their_share_of_time(tmp_path):
    """The report's benchmark_files (planned_benchmarks in workflow/rules/common.smk) are exactly the
    benchmark files of the jobs of Snakemake's own DAG but the report's, for plans that differ in
    every way jobs are planned (methods and their artifacts, isp.device, shards, networks brought
    in); isp_infer asks 120 minutes per stratum, a shard its cells' share of that, at least 15."""
    work = tmp_path / "run"
    base = write_tiny_config(tmp_path)
    run_snakemake(work, base, ["--until", "stratify"])
    table = pd.read_csv(work / "results" / "strata" / "strata.tsv", sep="\t", keep_default_na=False)
    kept = table[table["status"] == "kept"]
    strata = sorted(kept["slug"])
    cells = ad.read_h5ad(work / "results" / "data" / "cells.h5ad")
    net = tmp_path / "consolidated-net_defaultid.tsv"
    _aracne3_file(net, [str(g) for g in cells.var_names])
    plans = {
        "tiny": ({}, None),
        "shards of 8 of 20 cells": ({"isp": {"cells_per_stratum": 20, "cells_per_job": 8}}, 20),
        "shards of 1 cell": ({"isp": {"cells_per_stratum": 20, "cells_per_job": 1}}, 20),
        "int8 only, one network brought in": (
            {"isp": {"methods": ["baseline", "onnx_int8"]}, "aracne": {"networks": {strata[0]: str(net)}}}, None),
        "tensorrt, every network brought in": (
            {"isp": {"device": "cuda", "methods": ["baseline", "tensorrt"]}, "aracne": {"networks": {"*": str(net)}}}, None),
    }
    seen = {}
    for name, (over, token_cells) in plans.items():
        jobs = workflow_dag(work, write_tiny_config(tmp_path / name.replace(" ", "_").replace(",", ""), **over))
        report = [j for j in jobs if j["rule"] == "report"]
        assert len(report) == 1, name
        planned = report[0]["benchmark_files"]
        dag = sorted(j["benchmark"] for j in jobs if j["benchmark"] and j["rule"] != "report")
        assert len(planned) == len(set(planned)) and sorted(planned) == dag, (name, set(planned) ^ set(dag))
        rules = {j["rule"] for j in jobs}
        seen[name] = rules
        infer = [j for j in jobs if j["rule"] == "isp_infer"]
        cells_per_job = over.get("isp", {}).get("cells_per_job")
        if cells_per_job is None:
            assert {j["resources"]["runtime"] for j in infer} == {120}, name
            continue
        n = {s: min(int(c), token_cells) for s, c in zip(kept["slug"], kept["n_output"])}
        for j in infer:
            first = int(j["wildcards"]["shard"]) * cells_per_job
            share = (min(first + cells_per_job, n[j["wildcards"]["stratum"]]) - first) / n[j["wildcards"]["stratum"]]
            assert j["resources"]["runtime"] == max(15, math.ceil(120 * share)), (name, j)
            assert j["resources"]["mem_mb"] == 8000
        for stratum, count in n.items():
            shards = {j["wildcards"]["shard"] for j in infer if j["wildcards"]["stratum"] == stratum}
            assert len(shards) == math.ceil(count / cells_per_job), (name, stratum)
    assert {"aracne_import", "aracne_threshold", "quantize_onnx", "export_onnx"} <= seen["int8 only, one network brought in"]
    assert "build_tensorrt" not in seen["int8 only, one network brought in"]
    assert {"aracne_import", "build_tensorrt", "export_onnx"} <= seen["tensorrt, every network brought in"]
    assert not {"aracne_threshold", "quantize_onnx"} & seen["tensorrt, every network brought in"]
    assert "isp_merge" in seen["shards of 1 cell"] and "isp_merge" not in seen["tiny"]

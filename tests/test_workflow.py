"""The Snakemake workflow: lint, formatting, config validation, dry-run of the default, tiny run."""

import subprocess
import sys

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import yaml
from workflow_utils import ROOT, SNAKEFILE, run_snakemake, write_tiny_config


def test_lint_is_clean():
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "--lint", "--snakefile", str(SNAKEFILE)],
        cwd=ROOT, capture_output=True, text=True,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "Lints for" not in out, out


def test_snakefmt_is_clean():
    files = [str(SNAKEFILE)] + sorted(str(p) for p in (ROOT / "workflow" / "rules").glob("*.smk"))
    proc = subprocess.run([sys.executable, "-m", "snakefmt", "--check", *files], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_rule_declares_log_benchmark_threads_resources_conda():
    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import ConfigSettings, ResourceSettings

    with SnakemakeApi() as api:
        wf = api.workflow(
            snakefile=SNAKEFILE,
            workdir=ROOT,
            resource_settings=ResourceSettings(),
            config_settings=ConfigSettings(configfiles=[ROOT / "config" / "config.yaml"]),
        )
        rules = wf._workflow.rules
        assert len(rules) >= 3
        for rule in rules:
            if rule.name in ("all", "networks", "activity", "perturbation"):  # targets only: no job runs
                assert not rule.shellcmd and not rule.script and not rule.output, rule.name
                continue
            assert rule.log, f"rule {rule.name} has no log:"
            assert rule.benchmark, f"rule {rule.name} has no benchmark:"
            assert rule.conda_env, f"rule {rule.name} has no conda:"
            assert "_cores" in rule.resources and ("mem_mb" in rule.resources and "runtime" in rule.resources), (
                f"rule {rule.name} lacks threads/mem_mb/runtime resources"
            )
            env = (ROOT / "workflow" / "rules" / rule.conda_env).resolve() if not str(rule.conda_env).startswith("/") else rule.conda_env
            assert (ROOT / "envs").resolve() in list(env.parents), env


def test_dry_run_of_default_config(tmp_path):
    proc = run_snakemake(tmp_path, ROOT / "config" / "config.yaml", ["-n"])
    assert "prepare_data" in proc.stdout and "stratify" in proc.stdout


def test_nested_config_on_the_command_line_plans(tmp_path):
    # --config parses nested values with YAML's BaseLoader (all strings): netpert gives them the schema's types
    proc = run_snakemake(
        tmp_path, ROOT / "config" / "config.yaml",
        ["-n", "--config", "aracne={bootstraps: 20, dpi: false, pvalue: 1e-6}", "strata={metacells: {enabled: true}}"],
    )
    assert "prepare_data" in proc.stdout
    bad = run_snakemake(tmp_path, ROOT / "config" / "config.yaml", ["-n", "--config", "aracne={bootstraps: twenty}"], check=False)
    assert bad.returncode != 0 and "'twenty' is not of type 'integer'" in bad.stdout + bad.stderr


@pytest.mark.parametrize(
    "override, message",
    [
        ({"strata": {"min_cells": "many"}}, "'many' is not of type 'integer'"),
        ({"aracne": {"bootstrapz": 3}}, "'bootstrapz' was unexpected"),
        ({"isp": {"methods": ["baseline", "warp-drive"]}}, "isp"),
        ({"report": {"formats": ["pdf"]}}, "['pdf'] must include 'png'"),
    ],
)
def test_bad_config_stops_before_any_job(tmp_path, override, message):
    config = write_tiny_config(tmp_path, **override)
    proc = run_snakemake(tmp_path, config, ["-n"], check=False)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "Error validating config file" in out and message in out, out[-3000:]
    assert not (tmp_path / "results").exists()


def test_config_readme_documents_every_key():
    schema = yaml.safe_load((ROOT / "workflow" / "schemas" / "config.schema.yaml").read_text())
    doc = (ROOT / "config" / "README.md").read_text()

    def keys(node, prefix=""):
        for k, v in node.get("properties", {}).items():
            yield prefix + k
            if isinstance(v, dict) and v.get("type") == "object":
                yield from keys(v, prefix + k + ".")

    missing = [k for k in keys(schema) if f"`{k}`" not in doc]
    assert not missing, f"config/README.md does not document: {missing}"


@pytest.mark.workflow
def test_tiny_run_prepares_and_stratifies(tiny_run):
    res = tiny_run / "results"
    cells = ad.read_h5ad(res / "data" / "cells.h5ad")
    assert cells.n_obs == 700 and cells.X.min() >= 0
    table = pd.read_csv(res / "strata" / "strata.tsv", sep="\t", keep_default_na=False)
    kept = table[table.status == "kept"]
    assert set(kept.slug) == {"Dendritic", "CD14pos_Monocyte", "CD19pos_B"}
    for slug in kept.slug:
        assert ad.read_h5ad(res / "strata" / f"{slug}.h5ad").n_obs == 40
    for rule in ("prepare_data", "stratify"):
        assert (res / "logs" / f"{rule}.log").read_text().strip()
        bench = pd.read_csv(res / "benchmarks" / f"{rule}.tsv", sep="\t")
        assert {"s", "max_rss"} <= set(bench.columns)


@pytest.mark.workflow
def test_tiny_run_builds_a_network_and_regulon_per_stratum(tiny_run):
    res = tiny_run / "results"
    table = pd.read_csv(res / "strata" / "strata.tsv", sep="\t", keep_default_na=False)
    for slug in table.loc[table.status == "kept", "slug"]:
        net = pd.read_csv(res / "aracne" / slug / "network.tsv", sep="\t")
        assert {"Regulator", "Target", "MI", "pvalue"} <= set(net.columns) and len(net) > 0  # ARACNe-AP format
        reg = pd.read_csv(res / "aracne" / slug / "regulon.tsv", sep="\t")
        assert list(reg.columns) == ["regulator", "target", "mor", "likelihood"]
        assert reg["mor"].between(-1, 1).all() and reg["likelihood"].between(0, 1).all()
        assert (res / "aracne" / slug / "threshold.txt").read_text().strip()
        for chunk in (0, 1):
            assert (res / "logs" / "aracne_bootstrap" / f"{slug}_{chunk}.log").exists()


@pytest.mark.workflow
def test_tiny_run_network_equals_the_api(tiny_run, tmp_path):
    """One seed scheme: aracne() with the run's seed and settings writes the workflow's network.tsv byte
    for byte, although the workflow spread the bootstraps over jobs (bootstraps_per_job 2 of 4)."""
    from netpert.aracne import aracne, write_network
    from netpert.regulators import regulators_in
    from workflow_utils import TINY_CONFIG

    res = tiny_run / "results"
    a = TINY_CONFIG["aracne"]
    assert a["bootstraps_per_job"] < a["bootstraps"]
    table = pd.read_csv(res / "strata" / "strata.tsv", sep="\t", keep_default_na=False)
    slug = table.loc[table.status == "kept", "slug"].iloc[0]
    cells = ad.read_h5ad(res / "strata" / f"{slug}.h5ad")
    regs = regulators_in(cells.var_names, TINY_CONFIG["regulators"]["lists"], "human")
    net = aracne(cells, regs, bootstraps=a["bootstraps"], fdr=a["fdr"], pvalue=a["pvalue"], bonferroni=a["bonferroni"], seed=1, progress=False)
    write_network(net, tmp_path / "network.tsv")
    assert (tmp_path / "network.tsv").read_bytes() == (res / "aracne" / slug / "network.tsv").read_bytes()
    summary = pd.read_csv(res / "aracne" / "strata.tsv", sep="\t", keep_default_na=False)
    assert {"edges", "regulons", "network_status"} <= set(summary.columns)
    assert (summary.loc[summary.slug == slug, "edges"] == len(net)).all()


@pytest.mark.workflow
def test_tiny_run_scores_activity_and_master_regulators(tiny_run):
    res = tiny_run / "results"
    act = ad.read_h5ad(res / "viper" / "activity.h5ad")
    assert act.n_obs == 700 and act.n_vars > 0 and np.isfinite(act.X).all()
    assert {"pvalue", "padj"} <= set(act.layers) and "viper" in act.uns
    assert "cell_type" in act.obs
    from netpert.mr_table import read_master_regulators

    mr = read_master_regulators(res / "viper" / "master_regulators.tsv")
    table = pd.read_csv(res / "strata" / "strata.tsv", sep="\t", keep_default_na=False)
    kept = set(table.loc[table.status == "kept", "slug"])
    st = mr.strata.set_index("stratum")
    # every stratum of the activity is listed; only kept strata (with a network) get master regulators
    assert set(st.index) == set(act.obs["stratum"].astype(str)) and kept <= set(st.index)
    assert set(mr.regulators["stratum"]) <= kept and (st.loc[list(set(st.index) - kept), "status"] == "no_network").all()
    assert (mr.regulators["padj"] < 0.05).all() and (mr.regulators["rank"] <= 2).all()
    assert set(mr.regulators["regulator"]) <= set(act.var_names)


@pytest.mark.workflow
def test_tiny_run_perturbs_with_every_cpu_method_and_evaluates(tiny_run):
    res = tiny_run / "results"
    table = pd.read_csv(res / "strata" / "strata.tsv", sep="\t", keep_default_na=False)
    kept = list(table.loc[table.status == "kept", "slug"])
    from netpert.isp.methods import get_method

    # methods: auto on a CPU machine: every CPU method, amp only where it can gain (bf16 units)
    amp_gains = get_method("amp").gain("cpu")[0]
    methods = ["baseline", "batched", "onnx", "onnx_int8"] + (["amp"] if amp_gains else [])
    for method in methods:
        for slug in kept:
            with np.load(res / "isp" / method / f"{slug}.npz", allow_pickle=False) as npz:
                assert npz["original"].shape[0] == 3 and npz["perturbed"].shape[0] > 0
                assert "untrained weights" in str(npz["metadata"])
    assert not (res / "isp" / "tensorrt").exists()
    from netpert.isp.records import read_metrics

    metrics = read_metrics(res / "isp" / "metrics.tsv")
    overall = metrics[metrics.stratum == "all"].set_index("method")
    # the methods auto left out are rows too, marked not run with their reason
    not_run = ["tensorrt"] + ([] if amp_gains else ["amp"])
    assert set(overall.index) == set(methods) | set(not_run)
    assert (overall.loc[methods, "status"] == "ok").all()
    for method in not_run:
        assert overall.loc[method, "status"] == "not run" and overall.loc[method, "reason"], method
    overall = overall.loc[methods]
    assert overall.loc["baseline", "mean_cosine"] == pytest.approx(1.0)
    for method in methods:
        assert overall.loc[method, "mean_cosine"] >= 0.999, method
        assert overall.loc[method, "perturbations_per_s"] > 0
    assert (res / "isp" / "model.onnx.json").exists() and (res / "isp" / "model.int8.onnx").exists()


def _strings_in(path):
    """The text a result file holds, whatever its format (npz arrays, HDF5 attributes and string
    datasets, parquet rows and metadata, plain bytes)."""
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as data:
            return " ".join(str(data[k].tolist()) for k in data.files)
    if path.suffix in (".h5ad", ".h5"):
        import h5py

        texts = []

        def visit(name, obj):
            texts.extend(f"{k}={v}" for k, v in obj.attrs.items())
            if isinstance(obj, h5py.Dataset) and obj.dtype.kind in "OSU":
                texts.append(str(np.asarray(obj[()]).tolist()))

        with h5py.File(path, "r") as f:
            f.visititems(visit)
        return " ".join(texts)
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        return f"{table.schema.metadata} {table.to_pylist()}"
    return path.read_bytes().decode("latin-1")


@pytest.mark.workflow
def test_tiny_run_result_files_hold_no_paths(tiny_run):
    """No result file names the folder it was written in (absolute, or relative as 'results/'), so
    that the same results are the same bytes in any folder (issue 16 item 6); logs and Snakemake's
    benchmark files are not results."""
    res = tiny_run / "results"
    files = [p for p in res.rglob("*") if p.is_file() and not {"logs", "benchmarks"} & set(p.relative_to(res).parts)]
    assert len(files) > 40 and {".npz", ".h5ad", ".parquet", ".json", ".tsv", ".csv", ".md"} <= {p.suffix for p in files}
    holding = {str(p.relative_to(res)) for p in files if str(tiny_run) in (text := _strings_in(p)) or "results/" in text}
    assert not holding, sorted(holding)


@pytest.mark.workflow
def test_snakemake_html_report_holds_the_figures(tiny_run, tmp_path):
    config = tiny_run / "tiny.yaml"
    html = tmp_path / "report.html"
    run_snakemake(tiny_run, config, ["--report", str(html)])
    text = html.read_text(errors="replace")
    assert html.stat().st_size > 10_000
    for name in ("isp__throughput.png", "benchmark_report.md", "methods.csv", "stages.csv"):
        assert name in text, name


@pytest.mark.workflow
def test_stage_target_runs_its_stage_only(tmp_path):
    """`snakemake networks` runs data + networks, the strata checkpoint included, and nothing after."""
    config = write_tiny_config(tmp_path, strata={"max_cells": 30})
    run_snakemake(tmp_path, config, ["networks"])
    res = tmp_path / "results"
    table = pd.read_csv(res / "aracne" / "strata.tsv", sep="\t", keep_default_na=False)
    ok = table.loc[table["network_status"] == "ok", "slug"].tolist()
    assert ok and all((res / "aracne" / slug / "regulon.tsv").is_file() for slug in ok)
    assert not (res / "viper").exists() and not (res / "isp").exists() and not (res / "report").exists()
    proc = run_snakemake(tmp_path, config, ["activity", "-n"])
    assert "viper" in proc.stdout and "isp_infer" not in proc.stdout


@pytest.mark.workflow
def test_counts_run_calibrates_and_finds_regulons(tmp_path):
    """Sparse UMI counts with the default network settings: the cells themselves, the copula estimator,
    a null of the stratum's cells permuted afresh, the full-data gate; every stratum gets regulons and
    master regulators follow."""
    from netpert.aracne import simulate_network
    from netpert.aracne.pipeline import DEFAULT_FDR

    data, truth = simulate_network(n_cells=360, n_regulators=10, n_targets=150, n_noise=40, seed=3, n_cell_types=2,
                                   umis=400.0, dropout_midpoint=5.0, counts=True)
    zeros = 1 - data.X.nnz / (data.n_obs * data.n_vars)
    assert zeros > 0.8
    data.write_h5ad(tmp_path / "counts.h5ad")
    (tmp_path / "regs.txt").write_text("\n".join(g for g in data.var_names if g.startswith("TF")) + "\n")
    config = write_tiny_config(
        tmp_path,
        input=str(tmp_path / "counts.h5ad"),
        data={"cell_type_key": "cell_type"},
        regulators={"lists": [str(tmp_path / "regs.txt")]},
        strata={"min_cells": 30, "max_cells": None},
        aracne={"bootstraps": 10, "bootstraps_per_job": 5, "min_targets": 3, "fdr": DEFAULT_FDR},  # the default's FDR
        viper={"min_targets": 3},
    )
    run_snakemake(tmp_path, config, ["results/viper/master_regulators.tsv", "results/aracne/strata.tsv"])
    res = tmp_path / "results"
    table = pd.read_csv(res / "aracne" / "strata.tsv", sep="\t", keep_default_na=False)
    assert list(table["aggregation"]) == ["none", "none"]
    assert (table["network_status"] == "ok").all() and (table["regulons"] > 0).all()
    for slug in table["slug"]:
        info = yaml.safe_load((res / "aracne" / slug / "threshold.json").read_text())
        assert info["method"] == "calibrated" and info["estimator"] == "copula" and info["full_data_gate"] is True
        assert info["source"].startswith("the data, every gene permuted") and info["fdr"] == DEFAULT_FDR
        assert "full-data gate" in (res / "logs" / "aracne_consensus" / f"{slug}.log").read_text()
    mr = pd.read_csv(res / "viper" / "master_regulators.tsv", sep="\t", keep_default_na=False)
    assert set(mr["stratum"]) == set(table["slug"])

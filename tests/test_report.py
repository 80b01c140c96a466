"""The benchmark report (netpert.report): aggregation, figures, markdown, environment, wandb,
on synthetic results that mirror the workflow's file formats, and on the tiny workflow run."""

from __future__ import annotations

import dataclasses
import inspect
import json
import re
import struct
import subprocess
import sys
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from netpert import InputError
from netpert.isp.evaluate import evaluate_run
from netpert.isp.metrics import judge
from netpert.isp.records import (
    METRICS_COLUMNS,
    NOT_RUN,
    QUALITY_PREFIXES,
    RESULT_ARRAYS,
    PerfRecord,
    empty_result_arrays,
    read_perf,
    write_perf,
    write_result,
)
from netpert.mr_table import MasterRegulatorTable
from netpert.report import (
    ReportInputs,
    ReportOptions,
    ReportOutputs,
    aggregate,
    build_report,
    environment,
    markdown,
    tracking,
)

METHODS = ("baseline", "batched", "onnx", "onnx_int8")
#: methods whose jobs wrote "not run" records, with the reason
NOT_RUN_REASONS = {
    "amp": "cannot be faster on this machine (no bf16 / fp16 units); list it in isp.methods to run it anyway",
    "tensorrt": "no CUDA device in this job",
}
BAR = {"mean_cosine": 0.999, "min_cosine": 0.99, "spearman": 0.95}
OPTIONS = ReportOptions(bar=BAR, input="embedded:pbmc68k_reduced", cell_type_key="bulk_labels")
STRATA = ("CD14_Monocyte", "Dendritic")
BENCH_HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
EXPECTED_FIGURES = {
    "isp__throughput.png", "isp__memory.png", "isp__consistency.png", "isp__umap.png", "isp__embedding_quality.png",
    "workflow__stage_time.png", "viper__master_regulators.png", "aracne__network_size.png",
}
#: per method: wall seconds per stratum, peak RSS, consistency (mean cos, min cos, spearman)
PERF = {
    "baseline": (4.0, 900.0, (1.0, 1.0, 1.0)),
    "batched": (2.0, 950.0, (0.999999, 0.99999, 0.9999)),
    "onnx": (1.0, 700.0, (0.99998, 0.9999, 0.998)),
    "onnx_int8": (0.5, 600.0, (0.9950, 0.97, 0.91)),  # the fastest, and under the bar
}


def bench_line(s, rss, cpu):
    return f"{s:.4f}\t0:00:{int(s):02d}\t{rss}\t{rss * 2}\t{rss * 0.9}\t{rss * 0.95}\t0.1\t0.2\t{100 * cpu / s:.1f}\t{cpu}\n"


def make_results(root: Path, trained: bool = False, n_cells: int = 4, n_pert: int = 3, hidden: int = 16) -> dict:
    """Synthetic results/ in the workflow's formats (the ISP records by their writers, metrics.tsv by
    isp_evaluate); returns the report's inputs."""
    rng = np.random.default_rng(0)
    res = root / "results"
    # strata
    (res / "strata").mkdir(parents=True)
    pd.DataFrame([
        {"stratum": "CD14+ Monocyte", "slug": "CD14_Monocyte", "cell_type": "CD14+ Monocyte", "tissue": "", "n_cells": 129,
         "n_output": 40, "status": "kept", "reason": "subsampled to 40"},
        {"stratum": "Dendritic", "slug": "Dendritic", "cell_type": "Dendritic", "tissue": "", "n_cells": 240,
         "n_output": 40, "status": "kept", "reason": "subsampled to 40"},
        {"stratum": "CD34+", "slug": "CD34", "cell_type": "CD34+", "tissue": "", "n_cells": 13,
         "n_output": 0, "status": "skipped", "reason": "13 cells < strata.min_cells=30"},
    ]).to_csv(res / "strata" / "strata.tsv", sep="\t", index=False)
    # aracne
    regulators = [f"TF{i}" for i in range(8)]
    networks, regulons = [], []
    for k, slug in enumerate(STRATA):
        d = res / "aracne" / slug
        d.mkdir(parents=True)
        n_edges = 30 + 25 * k
        net = pd.DataFrame({
            "Regulator": rng.choice(regulators[: 5 + k], n_edges),
            "Target": [f"G{j}" for j in rng.integers(0, 60, n_edges)],
            "MI": rng.uniform(0.2, 0.8, n_edges),
            "pvalue": rng.uniform(0, 1e-3, n_edges),
        }).drop_duplicates(["Regulator", "Target"])
        net.to_csv(d / "network.tsv", sep="\t", index=False)
        reg = net.rename(columns={"Regulator": "regulator", "Target": "target"})[["regulator", "target"]]
        reg = reg[reg["regulator"] != regulators[0]]  # pruning drops one regulon
        reg = reg.assign(mor=rng.uniform(-1, 1, len(reg)), likelihood=rng.uniform(0, 1, len(reg)))
        reg.to_csv(d / "regulon.tsv", sep="\t", index=False)
        networks.append(d / "network.tsv")
        regulons.append(d / "regulon.tsv")
    # viper
    (res / "viper").mkdir()
    cell_types = np.repeat(["CD14+ Monocyte", "Dendritic"], 20)
    nes = rng.normal(0, 1, (40, len(regulators))).astype(np.float32)
    nes[:20, 1] += 3
    nes[20:, 2] -= 3
    act = ad.AnnData(nes, obs=pd.DataFrame({"cell_type": cell_types, "stratum": np.repeat(STRATA, 20)},
                                           index=[f"c{i}" for i in range(40)]), var=pd.DataFrame(index=regulators))
    act.write_h5ad(res / "viper" / "activity.h5ad")
    MasterRegulatorTable.build(pd.DataFrame([
        {"stratum": "CD14_Monocyte", "regulator": "TF1", "mean_nes": 3.1, "direction": "up", "rank": 1},
        {"stratum": "CD14_Monocyte", "regulator": "TF3", "mean_nes": -1.2, "direction": "down", "rank": 1},
        {"stratum": "Dendritic", "regulator": "TF2", "mean_nes": -3.0, "direction": "down", "rank": 1},
        {"stratum": "Dendritic", "regulator": "TF4", "mean_nes": 1.1, "direction": "up", "rank": 1},
    ]), pd.DataFrame([
        {"stratum": "CD14_Monocyte", "status": "reported", "n_regulons": 4, "n_tested": 4, "n_candidates_up": 1,
         "n_candidates_down": 1, "padj_cutoff": 0.05},
        {"stratum": "Dendritic", "status": "reported", "n_regulons": 5, "n_tested": 5, "n_candidates_up": 3,
         "n_candidates_down": 1, "padj_cutoff": 0.05},
        {"stratum": "CD34", "status": "no_network", "reason": "no ARACNe network (stratum not kept)", "padj_cutoff": 0.05},
    ])).write(res / "viper" / "master_regulators.tsv")
    # isp
    model = res / "isp" / "model"
    model.mkdir(parents=True)
    (model / "netpert_model.json").write_text(json.dumps(
        {"spec": "random-init:tiny", "trained": trained, "hidden_size": hidden, "n_layers": 2}))
    (res / "isp" / "model.onnx").write_bytes(b"onnx")
    (res / "isp" / "model.onnx.json").write_text(json.dumps({"exporter": "dynamo", "opset": 18, "max_abs_diff": 2e-6,
                                                            "passed": True}))
    (res / "isp" / "model.int8.onnx").write_bytes(b"onnx")
    (res / "isp" / "model.int8.onnx.json").write_text(json.dumps({"chosen": "dynamic-qint8", "select_used": "shift", "candidates": {
        "dynamic-qint8": {"mean_cosine": 0.9995, "min_cosine": 0.995, "passed": True},
        "static-qdq": {"passed": False, "error": "RuntimeError: boom"}}}))
    npz, perf = [], []
    base = rng.normal(0, 1, (len(STRATA), n_cells, hidden)).astype(np.float32)
    shift = rng.normal(0, 1, (n_pert, hidden)).astype(np.float32)
    labels = np.array([f"delete:TF{j}" for j in range(n_pert)])
    model_desc = {"spec": "random-init:tiny", "trained": trained, "n_layers": 2, "hidden_size": hidden}
    untrained = None if trained else "untrained weights: timings and consistency only"
    for method, (wall, rss, _) in PERF.items():
        d = res / "isp" / method
        for k, slug in enumerate(STRATA):
            noise = 0 if method == "baseline" else 0.01
            orig = (base[k] + noise * rng.normal(0, 1, base[k].shape)).astype(np.float32)
            # cell-major: every perturbation of cell 0, then of cell 1 ...
            cell_index = np.repeat(np.arange(n_cells), n_pert)
            pert = (orig[cell_index] + 0.8 * shift[np.tile(np.arange(n_pert), n_cells)]).astype(np.float32)
            n_p = len(pert)
            cosine = np.sum(orig[cell_index] * pert, axis=1) / (
                np.linalg.norm(orig[cell_index], axis=1) * np.linalg.norm(pert, axis=1))
            arrays = {
                "cell_ids": np.array([f"c{i}" for i in range(n_cells)]), "original": orig, "perturbed": pert,
                "perturbation": np.tile(labels, n_cells), "cell_index": cell_index,
                "kind": np.full(n_p, "delete"), "targets": np.tile(np.char.replace(labels, "delete:", ""), n_cells),
                "cosine": cosine.astype(np.float64), "cell_shift": 0.9 + 0.01 * np.arange(n_p, dtype=np.float64),
                "n_genes_compared": np.full(n_p, 50), "top_genes": np.full((n_p, 2), "G1"),
                "top_cosines": np.full((n_p, 2), 0.5, dtype=np.float32),
                "skipped_labels": np.array([], dtype=str), "skipped_counts": np.array([], dtype=np.int64),
            }
            assert set(arrays) == set(RESULT_ARRAYS)
            write_result(d / f"{slug}.npz", arrays, {"method": method, "stratum": slug, "status": "ok"})
            write_perf(d / f"{slug}.perf.json", PerfRecord(
                method=method, stratum=slug, trained=trained, note=untrained, notes=[untrained] if untrained else [],
                device="cpu", n_cells=n_cells, n_perturbations=n_p, n_sequences=n_cells + n_p,
                skipped={str(lab): 0 for lab in labels}, wall_s=wall, cpu_time_s=0.95 * wall, cpu_percent=95.0,
                repeats=3, wall_repeats_s=[0.9 * wall, wall, 1.3 * wall], cpu_repeats_s=[0.9 * wall, 0.95 * wall, wall],
                other_load_cores=0.8 if method == "onnx" else 0.0,
                peak_rss_mb=rss + 10 * k, process_peak_rss_mb=rss + 50 + 10 * k, perturbations_per_s=n_p / wall,
                cells_per_s=n_cells / wall, sequences_per_s=(n_cells + n_p) / wall, load_s=0.1,
                batching="length_sorted", batch_size=32, threads=1, layer=-2,
                backend={"method": method, "device": "cpu", "runtime": "test runtime 1.0",
                         "precision": "int8" if "int8" in method else "fp32", "providers": ["CPUExecutionProvider"]},
                model=model_desc, machine={"cpu_model": "Test CPU 9000", "cpu_count_logical": 2,
                                           "cpu": "Test CPU 9000, 2 of 2 cores, vector flags: avx2 fma"},
            ))
            npz.append(d / f"{slug}.npz")
            perf.append(d / f"{slug}.perf.json")
    for method, reason in NOT_RUN_REASONS.items():  # the jobs that found they could not run
        d = res / "isp" / method
        for slug in STRATA:
            write_result(d / f"{slug}.npz", empty_result_arrays(),
                         {"method": method, "stratum": slug, "status": NOT_RUN, "reason": reason})
            write_perf(d / f"{slug}.perf.json", PerfRecord(method=method, stratum=slug, status=NOT_RUN, reason=reason,
                                                           device="cpu", trained=trained, model=model_desc))
            npz.append(d / f"{slug}.npz")
            perf.append(d / f"{slug}.perf.json")
    # metrics.tsv by isp_evaluate itself; the consistency figures then set to the designed ones
    metrics = res / "isp" / "metrics.tsv"
    evaluate_run(npz, perf, metrics, bar=BAR, seed=0)
    table = pd.read_csv(metrics, sep="\t")
    table["failed_criteria"] = table["failed_criteria"].astype(object)
    for method, (_, _, (mean_cos, min_cos, rho)) in PERF.items():
        figures = {"mean_cosine": mean_cos, "min_cosine": min_cos, "spearman": rho, "max_shift_diff": 1 - mean_cos}
        figures.update(judge(figures, BAR))
        for key, value in figures.items():
            table.loc[table["method"] == method, key] = value
    table.to_csv(metrics, sep="\t", index=False)
    # benchmarks
    b = res / "benchmarks"
    (b / "aracne_bootstrap").mkdir(parents=True)
    (b / "isp_infer" / "batched").mkdir(parents=True)
    (b / "prepare_data.tsv").write_text(BENCH_HEADER + bench_line(3.5, 300.0, 3.0))
    (b / "stratify.tsv").write_text(BENCH_HEADER + "0.8000\t0:00:00\tNA\tNA\tNA\tNA\tNA\tNA\tNA\tNA\n")
    for j, (s, rss) in enumerate([(10.0, 500.0), (12.0, 520.0), (11.0, 480.0)]):
        (b / "aracne_bootstrap" / f"Dendritic_{j}.tsv").write_text(BENCH_HEADER + bench_line(s, rss, s * 0.9))
    for slug in STRATA:
        (b / "isp_infer" / "batched" / f"{slug}.tsv").write_text(BENCH_HEADER + bench_line(5.0, 1000.0, 4.5))
    return ReportInputs(
        strata=res / "strata", networks=networks, regulons=regulons, activity=res / "viper" / "activity.h5ad",
        master_regulators=res / "viper" / "master_regulators.tsv", metrics=metrics, model=model,
        npz=npz, perf=perf, artifacts=[res / "isp" / "model.onnx", res / "isp" / "model.int8.onnx"], benchmarks=b,
    )


def outputs(root: Path) -> ReportOutputs:
    return ReportOutputs.in_folder(root / "results" / "report")


def assert_png_with_content(path: Path) -> None:
    """A readable PNG that is not blank (its pixels vary)."""
    import matplotlib.image as mpimg

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[0] > 200 and img.shape[1] > 200, (path, img.shape)
    gray = img[..., :3].mean(axis=2)
    assert gray.std() > 0.05, f"{path} looks blank (pixel std {gray.std():.3f})"
    assert (gray < 0.5).mean() > 0.005, f"{path} has almost no dark pixels (no text / axes?)"


FAKE_ENV = {
    "platform": "Linux-test", "python": "3.11.7", "cpu_model": "Test CPU 9000", "cores_logical": 8, "cores_physical": 4,
    "cpu_affinity": 2, "ram_gb": 31.3, "cpu_bf16": True, "gpus": [], "gpu": "none",
    "packages": {"torch": "2.13.0", "onnxruntime": "1.32.0", "numba": "0.68.0", "snakemake": "9.27.0", "tensorrt": None},
}


@pytest.fixture(scope="module")
def synthetic_report(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    inputs = make_results(root)
    out = outputs(root)
    data = build_report(inputs, out, OPTIONS, environment=FAKE_ENV)
    return root, inputs, out, data


# --------------------------------------------------------------------------- aggregation
def test_benchmarks_are_summed_per_rule(synthetic_report):
    _, inputs, _, _ = synthetic_report
    jobs = aggregate.read_benchmarks(inputs.benchmarks)
    assert len(jobs) == 1 + 1 + 3 + 2
    assert set(jobs.loc[jobs["rule"] == "isp_infer", "job"]) == {"batched/CD14_Monocyte", "batched/Dendritic"}
    stages = aggregate.summarize_stages(jobs).set_index("stage")
    assert list(stages.index) == ["prepare_data", "stratify", "aracne_bootstrap", "isp_infer"]  # workflow order
    boot = stages.loc["aracne_bootstrap"]
    assert boot["n_jobs"] == 3 and boot["seconds"] == pytest.approx(33.0) and boot["cpu_time"] == pytest.approx(29.7)
    assert boot["max_rss_mb"] == pytest.approx(520.0) and boot["family"] == "aracne"
    # a job too short to be sampled (NA) still counts its time, its memory stays missing
    assert stages.loc["stratify", "seconds"] == pytest.approx(0.8) and np.isnan(stages.loc["stratify", "max_rss_mb"])


def test_repeats_are_averaged(tmp_path):
    (tmp_path / "r.tsv").write_text(BENCH_HEADER + bench_line(2.0, 100.0, 1.0) + bench_line(4.0, 300.0, 3.0))
    jobs = aggregate.read_benchmarks(tmp_path)
    assert jobs.loc[0, "repeats"] == 2 and jobs.loc[0, "s"] == pytest.approx(3.0) and jobs.loc[0, "max_rss"] == 200.0


def test_only_the_planned_jobs_benchmarks_are_read(tmp_path):
    """isp.cells_per_job changed in an existing results folder (and a method dropped): the unsplit
    isp_infer jobs' benchmark files stay, but the report reads only those of the jobs the workflow
    plans now (ReportInputs.benchmark_files), and names the planned jobs without one."""
    inputs = make_results(tmp_path)
    b = inputs.benchmarks
    planned = [b / "prepare_data.tsv", b / "stratify.tsv"]
    planned += [b / "aracne_bootstrap" / f"Dendritic_{j}.tsv" for j in range(4)]  # Dendritic_3: no file
    for slug in STRATA:  # now two shards each; the unsplit batched/{slug}.tsv files are the earlier plan's
        for k, s in enumerate((2.0, 1.5)):
            path = b / "isp_infer" / "batched" / slug / f"shard_{k}.tsv"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(BENCH_HEADER + bench_line(s, 700.0 + k, s))
            planned.append(path)
    (b / "isp_infer" / "onnx").mkdir()
    (b / "isp_infer" / "onnx" / "Dendritic.tsv").write_text(BENCH_HEADER + bench_line(9.0, 9000.0, 9.0))  # dropped
    (b / "report.tsv").write_text(BENCH_HEADER + bench_line(7.0, 300.0, 7.0))  # the last report's own

    jobs = aggregate.read_benchmarks(b, planned)
    assert sorted(jobs.loc[jobs["rule"] == "isp_infer", "job"]) == sorted(
        f"batched/{slug}/shard_{k}" for slug in STRATA for k in (0, 1))
    assert "report" not in set(jobs["rule"])
    assert aggregate.missing_benchmarks(b, planned).values.tolist() == [["aracne_bootstrap", "Dendritic_3"]]
    everything = aggregate.summarize_stages(aggregate.read_benchmarks(b)).set_index("stage")
    assert everything.loc["isp_infer", "n_jobs"] == 2 + 4 + 1  # without the plan: the old jobs counted too

    out = outputs(tmp_path)
    data = build_report(dataclasses.replace(inputs, benchmark_files=planned), out, OPTIONS, environment=FAKE_ENV)
    stages = pd.read_csv(out.stages).set_index("rule")
    assert list(stages.index) == ["prepare_data", "stratify", "aracne_bootstrap", "isp_infer"]
    assert stages.loc["isp_infer", "n_jobs"] == 4 and stages.loc["isp_infer", "seconds"] == pytest.approx(2 * 3.5)
    assert stages.loc["isp_infer", "cpu_time"] == pytest.approx(2 * 3.5)
    assert stages.loc["aracne_bootstrap", "n_jobs"] == 3
    pd.testing.assert_frame_equal(data.stages.rename(columns={"stage": "rule", "family": "stage"}).set_index("rule"),
                                  stages.drop(columns="machine"), check_dtype=False)  # the figure draws data.stages
    md = out.markdown.read_text().split("## Workflow stages")[1]
    assert "files left by jobs of an earlier plan are not read" in md
    assert ("Not counted: 1 job(s) of this run's plan have no benchmark file (their outputs were made without "
            "Snakemake's benchmark, or the file was deleted): aracne_bootstrap (Dendritic_3).") in md
    with pytest.raises(ValueError, match="not under the benchmarks folder"):
        aggregate.read_benchmarks(b, [tmp_path / "elsewhere.tsv"])


def test_method_table_speedup_and_bar(synthetic_report):
    _, _, _, data = synthetic_report
    m = data.methods.set_index("method")
    assert list(m.index) == list(METHODS)  # the registry's order, the methods that ran
    # throughput = total perturbations / total seconds over both strata (isp_evaluate's "all" rows)
    assert m.loc["baseline", "perturbations_per_s"] == pytest.approx(2 * 12 / 8.0)
    assert m.loc["onnx_int8", "speedup"] == pytest.approx(8.0)
    assert m.loc["batched", "speedup"] == pytest.approx(2.0)
    # one peak memory per job: its own high-water mark (ru_maxrss), not the sample of the screen (peak_rss_mb)
    assert m.loc["onnx", "peak_rss_mb"] == pytest.approx(760.0)  # max over strata
    assert m.loc["baseline", "passes_bar"] is True and m.loc["onnx", "passes_bar"] is True
    assert m.loc["onnx_int8", "passes_bar"] is False
    assert "mean_cosine 0.995 < 0.999" in m.loc["onnx_int8", "failed_criteria"]
    assert "spearman 0.91 < 0.95" in m.loc["onnx_int8", "failed_criteria"]
    assert aggregate.fastest_method(data.methods) == "onnx_int8"
    assert aggregate.fastest_method(data.methods, require_bar=True) == "onnx"
    quality = aggregate.quality_table(data.methods).columns.tolist()
    assert quality[0] == "method" and "cell_type_silhouette" in quality and "perturbation_knn_consistency" in quality
    assert all(c.startswith(QUALITY_PREFIXES) for c in quality[1:])
    # how each method ran, from the perf records
    facts = data.method_facts.set_index("method")
    assert list(facts.index) == list(METHODS)
    assert facts.loc["onnx_int8", "backend.precision"] == "int8" and facts.loc["onnx", "batch_size"] == "32"
    assert facts.loc["onnx", "backend.providers"] == "CPUExecutionProvider"


def test_not_run_methods_come_from_the_metrics(synthetic_report):
    _, _, out, data = synthetic_report
    assert data.not_run.set_index("method")["reason"].to_dict() == NOT_RUN_REASONS
    assert set(data.not_run["stratum"]) == {"all"}
    assert "tensorrt" not in data.embeddings and "amp" not in data.methods["method"].tolist()
    md = out.markdown.read_text()
    assert "| tensorrt | not run: no CUDA device in this job |" in md
    assert "| amp | not run: cannot be faster on this machine" in md
    assert "Not run: amp (cannot be faster" in md and "tensorrt (no CUDA device in this job)." in md
    csv = pd.read_csv(out.methods).set_index("method")
    assert csv.loc["tensorrt", "status"] == "not run" and csv.loc["tensorrt", "reason"] == "no CUDA device in this job"
    assert csv.loc["amp", "status"] == "not run" and np.isnan(csv.loc["tensorrt", "wall_s"])


def test_a_method_not_run_in_one_stratum_says_where(tmp_path):
    inputs = make_results(tmp_path)
    table = pd.read_csv(inputs.metrics, sep="\t")
    row = table[(table["method"] == "onnx") & (table["stratum"] == "Dendritic")].index
    table.loc[row, "status"] = NOT_RUN
    table.loc[row, "reason"] = "onnxruntime cannot be imported"
    table.to_csv(inputs.metrics, sep="\t", index=False)
    data = aggregate.collect(inputs, OPTIONS)
    assert "onnx" in data.methods["method"].tolist()
    assert data.not_run[["method", "stratum"]].values.tolist() == [["amp", "all"], ["onnx", "Dendritic"],
                                                                    ["tensorrt", "all"]]
    csv = aggregate.methods_csv(data).set_index("method")
    assert csv.loc["onnx", "status"] == "ok"
    assert csv.loc["onnx", "reason"] == "not run in Dendritic: onnxruntime cannot be imported"
    md = markdown.render_markdown(data, FAKE_ENV)
    assert "| onnx | not run in Dendritic: onnxruntime cannot be imported |" in md


def test_build_report_takes_a_few_records():
    params = inspect.signature(build_report).parameters
    assert len(params) <= 6, list(params)
    assert list(params)[:3] == ["inputs", "outputs", "options"]
    assert len(inspect.signature(aggregate.collect).parameters) <= 2
    assert ReportOptions().bar == BAR  # netpert.isp.metrics.DEFAULT_BAR
    assert aggregate.METHOD_ORDER[0] == "baseline"


def test_report_imports_no_torch():
    code = "import sys, netpert.report, netpert.report.aggregate, netpert.report.inputs; print('torch' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "False"


def test_mr_heatmap_keeps_the_best_ranks_of_every_stratum(synthetic_report):
    _, inputs, _, _ = synthetic_report
    mrs = pd.DataFrame([
        {"stratum": s, "regulator": f"TF{i}", "direction": d, "rank": r}
        for s, regs in (("CD14_Monocyte", (1, 3, 5)), ("Dendritic", (2, 4, 6))) for d, r, i in
        (("up", 1, regs[0]), ("down", 1, regs[1]), ("up", 2, regs[2]))
    ])
    a = aggregate.master_regulator_activity(inputs.activity, mrs, max_regulators=4)
    assert list(a.columns) == ["TF1", "TF3", "TF2", "TF4"]  # rank 1 of both strata, rank 2 left out


def test_network_sizes_and_mr_activity(synthetic_report):
    _, inputs, _, data = synthetic_report
    n = data.networks.set_index("stratum")
    net = pd.read_csv(inputs.networks[1], sep="\t")
    assert n.loc["Dendritic", "n_edges"] == len(net)
    assert n.loc["Dendritic", "n_regulators"] == net["Regulator"].nunique()
    assert n.loc["Dendritic", "n_regulons"] == net["Regulator"].nunique() - ("TF0" in set(net["Regulator"]))
    a = data.mr_activity
    # per stratum the up regulators, then the down ones, by rank
    assert list(a.columns) == ["TF1", "TF3", "TF4", "TF2"] and list(a.index) == ["CD14+ Monocyte", "Dendritic"]
    act = ad.read_h5ad(inputs.activity)
    expect = act[act.obs["cell_type"] == "Dendritic", "TF2"].X.mean()
    assert a.loc["Dendritic", "TF2"] == pytest.approx(float(expect), rel=1e-5)


def test_embedding_points_flattens_cells_by_perturbations(synthetic_report):
    _, inputs, _, _ = synthetic_report
    paths = [p for p in inputs.npz if p.parent.name == "baseline"]
    X, labels, strata = aggregate.embedding_points(paths)
    assert X.shape == (2 * (4 + 4 * 3), 16)
    assert strata.tolist() == ["CD14_Monocyte"] * 16 + ["Dendritic"] * 16  # originals and perturbed alike
    assert (labels == "original").sum() == 8 and (labels == "delete:TF2").sum() == 8
    first = np.load(paths[0])
    np.testing.assert_array_equal(X[:4], first["original"])
    np.testing.assert_array_equal(X[4:16], first["perturbed"])


def test_methods_and_stages_csv(synthetic_report):
    """methods.csv: one row per ISP method, with the machine its jobs ran on; stages.csv: one row per
    rule; one peak memory per job (isp_infer: the jobs' own peak, as in methods.csv) with its source."""
    _, _, out, data = synthetic_report
    methods = pd.read_csv(out.methods)
    assert list(methods.columns[:3]) == ["method", "status", "reason"] and "kind" not in methods
    assert methods["method"].tolist() == ["baseline", "batched", "amp", "onnx", "onnx_int8", "tensorrt"]
    ran = methods[methods["status"] == "ok"].set_index("method")
    assert list(ran.index) == list(METHODS)
    for col in ("wall_s", "wall_min_s", "wall_max_s", "perturbations_per_s", "speedup", "speedup_min", "peak_rss_mb",
                "mean_cosine", "min_cosine", "spearman", "cell_type_silhouette"):
        assert ran[col].notna().all(), col
    assert (ran["machine"] == "Test CPU 9000, 2 of 2 cores, vector flags: avx2 fma; GPU: none").all()
    assert methods.set_index("method").loc["tensorrt", "reason"] == "no CUDA device in this job"
    stages = pd.read_csv(out.stages).set_index("rule")
    assert list(stages.index) == ["prepare_data", "stratify", "aracne_bootstrap", "isp_infer"]
    assert stages.loc["isp_infer", "stage"] == "isp" and stages.loc["isp_infer", "n_jobs"] == 2
    assert stages.loc["isp_infer", "seconds"] == pytest.approx(10.0)
    assert (stages["machine"] == "Test CPU 9000; GPU: none").all()
    # one peak memory per job: isp_infer's is the jobs' own (1010 MB), not Snakemake's sample (1000 MB)
    assert stages.loc["isp_infer", "max_rss_mb"] == pytest.approx(ran["peak_rss_mb"].max()) == pytest.approx(1010.0)
    assert stages.loc["isp_infer", "memory_source"] == aggregate.ISP_MEMORY
    assert stages.loc["aracne_bootstrap", "memory_source"] == aggregate.SNAKEMAKE_MEMORY
    md = out.markdown.read_text()
    assert "| isp_infer | isp | 2 | 10 | 9 | 1010 * |" in md and f"* {aggregate.ISP_MEMORY}" in md
    assert "1000" not in md.split("## Workflow stages")[1]


# --------------------------------------------------------------------------- figures and markdown
def test_every_figure_is_a_png_with_content(synthetic_report):
    _, _, out, _ = synthetic_report
    names = {p.name for p in out.figures.iterdir()}
    assert names == EXPECTED_FIGURES | {n.replace(".png", ".pdf") for n in EXPECTED_FIGURES}  # report.formats [png, pdf]
    for name in EXPECTED_FIGURES:
        assert_png_with_content(out.figures / name)
        assert (out.figures / name).with_suffix(".pdf").read_bytes()[:5] == b"%PDF-"
    md = out.markdown.read_text()
    assert "Also as [PDF](figures/isp__umap.pdf)." in md


def test_embedding_quality_is_one_panel_against_the_baseline(synthetic_report):
    """One row per metric in words, with which way is better and the baseline's value; each other
    method at its change from the baseline (% of its value, right = better)."""
    from netpert.report import plots

    _, _, _, data = synthetic_report
    quality = aggregate.quality_table(data.methods)
    fig = plots.plot_embedding_quality(quality, baseline="baseline")
    (ax,) = fig.axes
    rows = [t.get_text() for t in ax.get_yticklabels()]
    assert len(rows) == quality.shape[1] - 1 and all("; baseline " in r for r in rows)
    assert "Davies-Bouldin index of cell types (lower is better); baseline " in "".join(rows)
    q = quality.set_index("method")
    onnx = next(c for c in ax.collections if c.get_label() == "onnx")
    x = onnx.get_offsets()[list(q.columns).index("cell_type_davies_bouldin"), 0]  # one point per metric, in order
    base, value = q.loc["baseline", "cell_type_davies_bouldin"], q.loc["onnx", "cell_type_davies_bouldin"]
    assert x == pytest.approx(-100 * (value - base) / abs(base))  # lower is better: a rise is drawn to the left
    plots.plt.close(fig)


def test_figure_formats(tmp_path):
    """report.formats: png always (the report shows it), pdf / svg beside it, without a creation date
    (the same figure is the same bytes); anything else is an InputError."""
    from netpert.report import plots

    for bad in (["pdf"], ["png", "eps"], []):
        with pytest.raises(InputError, match="report.formats"):
            ReportOptions(formats=bad)
    assert ReportOptions().formats == ("png", "pdf") and ReportOptions(formats=["PNG", "svg"]).formats == ("png", "svg")
    for run in ("a", "b"):
        (tmp_path / run).mkdir()
        fig, ax = plots.plt.subplots()
        ax.plot([0, 1], [1, 0])
        assert plots.save(fig, tmp_path / run / "x__y.png", ("png", "pdf", "svg")) == tmp_path / run / "x__y.png"
    for suffix in (".png", ".pdf", ".svg"):
        assert (tmp_path / "a" / f"x__y{suffix}").read_bytes() == (tmp_path / "b" / f"x__y{suffix}").read_bytes(), suffix
    assert b"<svg" in (tmp_path / "a" / "x__y.svg").read_bytes()[:2000]


def test_umap_by_cell_type_and_by_perturbation(synthetic_report):
    """The UMAP has a row coloured by cell type and a row by perturbation (issue 16 item 5), in the
    Okabe-Ito palette, the original cells drawn last as black rings, one UMAP for both methods;
    large sets are subsampled and say so."""
    from matplotlib.colors import to_hex

    from netpert.report import plots

    _, inputs, _, data = synthetic_report
    cell_type = dict(zip(data.strata["slug"], data.strata["cell_type"]))
    panels = {}
    for method in ("baseline", "onnx"):
        X, labels, strata = aggregate.embedding_points([p for p in inputs.npz if p.parent.name == method])
        panels[method] = (X, labels, np.array([cell_type[s] for s in strata]))
    fig = plots.plot_umap(panels, seed=0)
    axes = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in axes] == ["baseline: by cell type (32 embeddings)", "onnx: by cell type (32 embeddings)",
                                               "baseline: by perturbation", "onnx: by perturbation"]
    assert [lg.get_title().get_text() for lg in fig.legends] == ["cell type", "perturbation"]
    legend_labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend_labels[:2] == ["CD14+ Monocyte", "Dendritic"]
    palette = {c.lower() for c in plots.OKABE_ITO}
    for ax in axes:
        colours = {to_hex(c) for coll in ax.collections[:-1] for c in coll.get_facecolors()}
        assert colours and colours <= palette, (ax.get_title(), colours)
    rings = axes[2].collections[-1]  # originals last, hollow, black
    assert len(rings.get_offsets()) == 8 and rings.get_facecolors().size == 0
    assert to_hex(rings.get_edgecolors()[0]) == "#000000"
    plots.plt.close(fig)
    small = plots.plot_umap(panels, seed=0, max_points=16)
    assert "16 of 32 shown" in small.axes[0].get_title()
    plots.plt.close(small)
    many = plots.category_styles([f"p{i}" for i in range(30)])
    assert len(set(many.values())) == 21 and many["p29"] == ("#bbbbbb", "o")  # 20 styles, then "other"


def test_markdown_names_environment_readings_and_flags(synthetic_report):
    _, _, out, _ = synthetic_report
    md = out.markdown.read_text()
    for needle in ("Test CPU 9000", "31.3 GiB", "GPU | none", "torch | 2.13.0", "onnxruntime | 1.32.0",
                   "numba | 0.68.0", "snakemake | 9.27.0", "tensorrt | not installed", "embedded:pbmc68k_reduced",
                   "random-init:tiny"):
        assert needle in md, needle
    assert "Untrained weights: timings and consistency only" in md
    # readings computed from the data
    assert "onnx_int8 is the fastest: 8.0x baseline" in md and "at mean cosine 0.9950" in md
    assert "the fastest within the bar is onnx: 4.0x" in md
    assert "**UNDER THE BAR**: mean cosine 0.995 < 0.999" in md
    assert "2 of 3 methods meet the bar" in md
    assert "aracne_bootstrap takes the longest: 33.0 s over 3 job(s)" in md
    assert "| tensorrt | not run: no CUDA device in this job |" in md
    for name in EXPECTED_FIGURES:
        assert f"](figures/{name})" in md, name
    assert "strongest mean activity is TF" in md
    assert "`model.onnx`: exported with the dynamo exporter (opset 18); largest difference from PyTorch 2e-06: passed" in md
    assert "`model.int8.onnx`: int8 recipe kept: dynamic-qint8" in md
    assert "| dynamic-qint8 (kept) | 0.9995 | 0.9950 | yes |" in md and "RuntimeError: boom" in md
    # untrained: the embedding figures are labelled
    assert "Embedding quality per method (untrained weights: timings and consistency only)" in md
    # the network stage per stratum, the strata without a network marked (issue 16 item 4)
    assert "## Networks" in md and "| CD34+ | 13 | n/a | n/a | **not built** | 13 cells < strata.min_cells=30 |" in md
    assert "- Networks: 2 of 3 strata have one" in md and "1 not built (CD34+: 13 cells < strata.min_cells=30)" in md
    # spread, machine and load (issue 16 items 1, 2)
    assert "In-silico perturbation (ISP) timed on: Test CPU 9000, 2 of 2 cores, vector flags: avx2 fma; GPU: none." in md
    assert "Measured on: Test CPU 9000, 2 of 2 cores, vector flags: avx2 fma; GPU: none." in md
    assert "| time (s), median [range] | repeats |" in md and "speedup [range over strata]" in md
    base_row = next(line for line in md.splitlines() if line.startswith("| **baseline** |"))
    cells = [c.strip() for c in base_row.split("|")]
    wall = float(cells[2].split(" [")[0])
    lo, hi = (float(v) for v in cells[2].split("[")[1].rstrip("]").split("-"))
    assert lo == pytest.approx(0.9 * wall, rel=0.01) and hi == pytest.approx(1.3 * wall, rel=0.01) and cells[3] == "3"
    assert "**CPU s per wall s**:" in md and "| 0.95 |" in base_row
    assert "**The machine was busy**: other processes took up to 0.8 of 2 cores" in md
    assert "worst: onnx on" in md


def test_speed_figures_and_tables_name_the_machine(synthetic_report):
    """Every figure and table with a speed says what it was measured on (issue 16 item 2): the ISP
    figures the perf records' CPU line, the stage-time figure and table the report job's machine."""
    from netpert.report import plots

    _, _, out, data = synthetic_report
    isp_line = "Test CPU 9000, 2 of 2 cores, vector flags: avx2 fma; GPU: none"
    assert aggregate.machine_line(data) == isp_line
    env = {**FAKE_ENV, "cpu": "Report CPU, 2 of 8 cores, vector flags: avx2", "gpu": "none"}
    for fig in (plots.plot_throughput(data.methods, machine=aggregate.machine_line(data)),
                plots.plot_memory(data.methods, machine=aggregate.machine_line(data))):
        assert [t.get_text() for t in fig.texts if t.get_text().startswith("measured on")] == [f"measured on: {isp_line}"]
    fig = plots.plot_stage_time(data.stages, aggregate.env_machine_line(env))
    assert any(t.get_text().startswith("measured on: Report CPU, 2 of 8 cores, vector flags: avx2; GPU: none")
               for t in fig.texts)
    md = markdown.render_markdown(data, env)
    stages = md.split("## Workflow stages")[1]
    assert "Measured on: Report CPU, 2 of 8 cores, vector flags: avx2; GPU: none" in stages
    assert f"Measured on: {isp_line}." in md.split("## ISP methods")[1]
    plots.plt.close("all")


def test_report_speaks_plain_words(synthetic_report):
    """No internal names where words do (issue 16 item 6): the int8 choice, the export check, the
    batching, the strata and quality columns, the failed criteria, a stratum's cell type."""
    _, _, out, _ = synthetic_report
    md = out.markdown.read_text()
    assert ("int8 recipe kept: dynamic-qint8, of those meeting the bar the one whose perturbation shifts differ "
            "least from fp32's") in md
    assert "| baseline | cpu | sorted by length | 32 |" in md
    assert "| stratum | file name | cells | cells (or metacells) used | status | reason |" in md
    assert "worst: onnx on CD14+ Monocyte" in md
    assert "the largest difference from baseline: " in md
    for jargon in ("select used", "select_used", "max abs diff", "atol", "input_order", "length_sorted", "n_cells",
                   "n_output", "mean_cosine", "perturbation_", "cell_type_", "attn implementation"):
        assert not re.search(rf"(?<![\w.]){re.escape(jargon)}", md), jargon  # (strata.min_cells is a config key)


def test_isp_time_and_memory_words_hold_for_shards(synthetic_report):
    """With isp.cells_per_job one stratum's screen is several isp_infer jobs, joined into one record:
    the words for ISP time and memory say so (time summed over strata and shards, memory the
    largest job's), and the busy-machine warning counts screens (method x stratum), not jobs."""
    _, _, out, _ = synthetic_report
    md = out.markdown.read_text()
    assert "seconds of the timed screen summed over the strata (and over the shards of a stratum" in md
    assert "the peak resident memory of the method's largest job" in md and "and over the shards where" in md
    assert "(each method's largest job)" in md
    assert re.search(r"\(\d+ of \d+ screens, one per method and stratum, above", md)
    assert "every shard is a job where isp.cells_per_job split a stratum" in md.split("## Workflow stages")[1]
    assert "the job's peak resident memory" not in md


def test_trained_model_has_no_untrained_warning(tmp_path):
    inputs = make_results(tmp_path, trained=True)
    data = aggregate.collect(inputs, OPTIONS)
    assert data.model["trained"] is True and data.model["spec"] == "random-init:tiny"
    md = markdown.render_markdown(data, FAKE_ENV, figures=["isp__throughput.png"])
    assert "untrained" not in md.lower()
    assert "weights | trained" in md


def test_model_trained_flag_falls_back_to_perf_files(tmp_path):
    inputs = make_results(tmp_path, trained=False)
    (inputs.model / "netpert_model.json").write_text(json.dumps({"spec": "hf:/x"}))
    perfs = aggregate.read_perfs(inputs.perf)
    assert aggregate.model_provenance(inputs.model, perfs)["trained"] is False
    assert aggregate.model_provenance(inputs.model)["trained"] is None
    (inputs.model / "netpert_model.json").write_text(json.dumps({"spec": "hf:/x", "trained": "maybe"}))
    with pytest.raises(InputError, match="netpert_model|'trained'"):
        aggregate.model_provenance(inputs.model, perfs)


def test_report_without_isp_methods_or_benchmarks(tmp_path):
    inputs = dataclasses.replace(make_results(tmp_path), npz=[], perf=[], metrics=None, benchmarks=tmp_path / "none")
    out = outputs(tmp_path)
    build_report(inputs, out, OPTIONS, environment=FAKE_ENV)
    names = {p.name for p in out.figures.iterdir() if p.suffix == ".png"}
    assert names == {"viper__master_regulators.png", "aracne__network_size.png"}
    md = out.markdown.read_text()
    assert "No ISP method ran." in md and "`isp__throughput.png`: no ISP performance files" in md
    assert pd.read_csv(out.methods).empty
    assert pd.read_csv(out.stages).empty and "rule" in pd.read_csv(out.stages).columns


# --------------------------------------------------------------------------- input errors
def test_bad_benchmark_file_is_an_input_error(tmp_path):
    (tmp_path / "x.tsv").write_text("seconds\n1\n")
    with pytest.raises(InputError, match="no 's' column"):
        aggregate.read_benchmarks(tmp_path)


def test_missing_strata_table_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="run the stratify rule"):
        aggregate.read_strata(tmp_path)


def test_bad_network_is_an_input_error(tmp_path):
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "network.tsv").write_text("a\tb\n1\t2\n")
    with pytest.raises(InputError, match="Regulator/Target"):
        aggregate.network_sizes([tmp_path / "s" / "network.tsv"])


def test_bad_perf_json_is_an_input_error(tmp_path):
    (tmp_path / "onnx").mkdir()
    path = tmp_path / "onnx" / "a.perf.json"
    path.write_text("{not json")
    with pytest.raises(InputError, match=str(path)):
        aggregate.read_perfs([path])


def test_perf_json_with_a_renamed_field_fails_the_report(tmp_path):
    inputs = make_results(tmp_path)
    path = inputs.perf[1]
    record = json.loads(path.read_text())
    record["wall_time_s"] = record.pop("wall_s")  # another layout: an error, not "n/a"
    path.write_text(json.dumps(record))
    with pytest.raises(InputError, match=f"{path}.*wall_time_s"):
        aggregate.collect(inputs, OPTIONS)
    out = outputs(tmp_path)
    with pytest.raises(InputError, match=str(path)):
        build_report(inputs, out, OPTIONS, environment=FAKE_ENV)
    assert not out.markdown.exists() and not out.methods.exists() and not out.stages.exists()  # nothing half written


def test_npz_of_another_layout_is_an_input_error(tmp_path):
    np.savez(tmp_path / "a.npz", originals=np.zeros((2, 3)), metadata=np.asarray("{}"))
    with pytest.raises(InputError, match=f"{tmp_path / 'a.npz'}.*lacks the arrays"):
        aggregate.embedding_points([tmp_path / "a.npz"])


def test_npz_with_mismatched_labels_is_an_input_error(tmp_path):
    arrays = empty_result_arrays()
    arrays.update(original=np.zeros((2, 3), np.float32), perturbed=np.zeros((4, 3), np.float32),
                  perturbation=np.array(["a"]))
    write_result(tmp_path / "a.npz", arrays, {"method": "onnx", "stratum": "a"})
    with pytest.raises(InputError, match="1 perturbation labels for 4 perturbed embeddings"):
        aggregate.embedding_points([tmp_path / "a.npz"])


def test_metrics_of_another_layout_is_an_input_error(tmp_path):
    (tmp_path / "m.tsv").write_text("method\tpass_bar\nonnx\tTrue\n")
    with pytest.raises(InputError, match=f"{tmp_path / 'm.tsv'} lacks the columns"):
        aggregate.read_metrics_table(tmp_path / "m.tsv")
    # a method without its row over all strata
    row = {c: "" for c in METRICS_COLUMNS}
    pd.DataFrame([{**row, "method": "onnx", "stratum": "A", "status": "ok"}]).to_csv(tmp_path / "m.tsv", sep="\t",
                                                                                      index=False)
    with pytest.raises(InputError, match="no row over all strata.*onnx"):
        aggregate.read_metrics_table(tmp_path / "m.tsv")


def test_activity_without_cell_type_is_an_input_error(tmp_path):
    ad.AnnData(np.zeros((2, 1), dtype=np.float32), var=pd.DataFrame(index=["TF1"])).write_h5ad(tmp_path / "a.h5ad")
    with pytest.raises(InputError, match="no obs column 'cell_type'"):
        aggregate.master_regulator_activity(tmp_path / "a.h5ad", pd.DataFrame({"stratum": ["s"], "regulator": ["TF1"]}))


# --------------------------------------------------------------------------- environment
def test_environment_of_this_machine():
    env = environment.capture_environment()
    assert env["python"] == sys.version.split()[0]
    assert env["cores_logical"] >= 1 and env["ram_gb"] > 0
    assert env["gpu"] == "none" or env["gpus"]
    assert env["packages"]["numpy"] == np.__version__
    assert env["packages"]["snakemake"] is not None and env["packages"]["onnxruntime"] is not None
    if Path("/proc/cpuinfo").exists():
        assert env["cpu_model"]


def test_cpu_facts_from_cpuinfo_text():
    text = "processor\t: 0\nmodel name\t: Fancy CPU @ 3GHz\nflags\t\t: fpu sse avx512f avx512_bf16\n"
    assert environment.cpu_model(cpuinfo=text, lscpu="") == "Fancy CPU @ 3GHz"
    assert environment.cpu_bf16(environment.cpu_flags(text)) is True
    assert environment.cpu_bf16(environment.cpu_flags("flags\t: fpu sse avx2\n")) is False
    assert environment.cpu_model(cpuinfo="", lscpu="Architecture: x86_64\nModel name:   Other CPU\n") == "Other CPU"
    assert environment.package_versions(["netpert", "surely-not-a-package-xyz"])["surely-not-a-package-xyz"] is None


# --------------------------------------------------------------------------- wandb
def test_wandb_not_imported_unless_asked(tmp_path):
    code = (
        "import sys, json\n"
        "from netpert.report import build_report\n"
        "import netpert.report.tracking, netpert.report.plots, netpert.report.markdown\n"
        "print(json.dumps('wandb' in sys.modules))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "false"


@pytest.mark.skipif(not tracking.wandb_available(),
                    reason="wandb is not installed (pip install 'netpert[wandb]'; the test extra installs it)")
def test_wandb_offline_run_logs_metrics_and_figures(synthetic_report, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    _, _, out, _ = synthetic_report
    methods, stages = pd.read_csv(out.methods), pd.read_csv(out.stages)
    figures = {p.name: p for p in out.figures.iterdir() if p.suffix == ".png"}
    run_dir = tracking.log_to_wandb(methods, stages, figures, environment=FAKE_ENV, model={"trained": False},
                                    config={"input": "x"}, mode="offline", directory=tmp_path)
    assert run_dir is not None and Path(run_dir).name.startswith("offline-run-")
    files = list(Path(run_dir).rglob("*"))
    assert any(f.suffix == ".wandb" for f in files)  # the run's record, for `wandb sync`
    pngs = [f for f in files if f.suffix == ".png"]
    assert len(pngs) == len(figures)
    records = read_wandb_records(next(f for f in files if f.suffix == ".wandb"))
    summary = {u.key: json.loads(u.value_json) for r in records if r.WhichOneof("record_type") == "summary"
               for u in r.summary.update if u.key}
    assert "isp_method/onnx_int8/speedup" in summary, (sorted(summary), [r.WhichOneof("record_type") for r in records])
    assert summary["isp_method/onnx_int8/speedup"] == pytest.approx(8.0)
    assert summary["stage/aracne_bootstrap/seconds"] == pytest.approx(33.0)
    config = next(r.run.config for r in records if r.WhichOneof("record_type") == "run")
    assert any(u.key == "environment" and "Test CPU 9000" in u.value_json for u in config.update)


def read_wandb_records(path: Path) -> list:
    """The protobuf records of an offline run's ``.wandb`` file (a LevelDB-style log: a 7-byte
    file header, then 32 KiB blocks of chunks with a 7-byte header: crc, length, type)."""
    from wandb.proto import wandb_internal_pb2 as pb

    raw = path.read_bytes()
    assert raw[:4] == b":W&B", raw[:7]
    block, pos, records, partial = 32768, 7, [], b""
    while pos < len(raw):
        left = block - pos % block
        if left < 7:
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", raw[pos:pos + 7])
        if kind == 0:
            pos += left
            continue
        chunk, pos = raw[pos + 7:pos + 7 + length], pos + 7 + length
        if kind == 1:
            records.append(chunk)
        elif kind == 2:
            partial = chunk
        elif kind == 3:
            partial += chunk
        elif kind == 4:
            records.append(partial + chunk)
    out = []
    for data in records:
        rec = pb.Record()
        rec.ParseFromString(data)
        out.append(rec)
    return out


def test_flat_metrics_keeps_numbers_only():
    table = pd.DataFrame({"kind": ["stage"], "name": ["viper"], "seconds": [2.5], "status": ["ran"], "x": [np.nan]})
    assert tracking.flat_metrics(table) == {"stage/viper/seconds": 2.5}


# --------------------------------------------------------------------------- the workflow
@pytest.mark.workflow
def test_tiny_workflow_report(tiny_run):
    res = tiny_run / "results"
    rep = res / "report"
    if not (rep / "benchmark_report.md").exists():
        stdout = (tiny_run / "snakemake.stdout").read_text()[-3000:]
        pytest.fail(f"the tiny run did not produce the report:\n{stdout}")
    isp = pd.read_csv(rep / "methods.csv").set_index("method")
    methods = isp[isp["status"] == "ok"]
    assert "baseline" in set(methods.index) and len(methods) >= 2
    assert methods["perturbations_per_s"].notna().all() and methods["speedup"].notna().all()
    # tensorrt needs a CUDA device: left out by the plan (isp.device auto) or not run by its job
    if "tensorrt" in isp.index and isp.loc["tensorrt", "status"] != "ok":
        assert isp.loc["tensorrt", "status"] == "not run" and "CUDA" in isp.loc["tensorrt", "reason"]
    stages = set(pd.read_csv(rep / "stages.csv")["rule"])
    assert {"prepare_data", "stratify", "aracne_bootstrap", "viper", "isp_infer", "isp_evaluate"} <= stages
    # the jobs the report counts are the jobs that ran: every benchmark file but the report's own, none missing
    tally = pd.Series([p.relative_to(res / "benchmarks").parts[0].removesuffix(".tsv")
                       for p in (res / "benchmarks").rglob("*.tsv")]).value_counts().drop("report", errors="ignore")
    counted = pd.read_csv(rep / "stages.csv").set_index("rule")["n_jobs"]
    pd.testing.assert_series_equal(counted.sort_index(), tally.sort_index(), check_names=False, check_dtype=False)
    for name in EXPECTED_FIGURES:
        assert_png_with_content(rep / "figures" / name)
        # vector figures (report.formats: [png, pdf] by default), linked from the report
        assert (rep / "figures" / name).with_suffix(".pdf").read_bytes()[:5] == b"%PDF-", name
    md = (rep / "benchmark_report.md").read_text()
    env = environment.capture_environment()
    assert env["cpu_model"] in md and f"| Python | {env['python']} |" in md and "onnxruntime |" in md
    assert "## ISP methods" in md and "## Workflow stages" in md and "Not counted" not in md
    assert "Also as [PDF](figures/isp__umap.pdf)." in md and "### UMAP of cell embeddings by cell type and by perturbation" in md
    # the done-when of issue 16 on the tiny workflow: medians with ranges ...
    assert "| time (s), median [range] | repeats |" in md
    base_row = next(line for line in md.splitlines() if line.startswith("| **baseline** |"))
    assert re.fullmatch(r"[\d.e+-]+ \[[\d.e+-]+-[\d.e+-]+\]", base_row.split("|")[2].strip()), base_row
    # ... the CPU and its vector flags (summary, under the methods table, methods.csv, stages.csv) ...
    cpu = environment.cpu_summary()
    assert "vector flags: " in cpu and f"In-silico perturbation (ISP) timed on: {cpu}; GPU:" in md
    assert f"Measured on: {cpu}; GPU:" in md.split("## ISP methods")[1]
    assert methods["machine"].str.startswith(cpu).all()
    stage_table = pd.read_csv(rep / "stages.csv").set_index("rule")
    assert stage_table["machine"].str.startswith(cpu).all()
    # ... one peak memory per job: isp_infer's in the stages table is the methods table's ...
    assert stage_table.loc["isp_infer", "memory_source"] == aggregate.ISP_MEMORY
    assert stage_table.loc["isp_infer", "max_rss_mb"] == pytest.approx(methods["peak_rss_mb"].max())
    # ... and the strata without a network (the tiny config skips those under strata.min_cells=90)
    strata = pd.read_csv(res / "aracne" / "strata.tsv", sep="\t", keep_default_na=False)
    without = strata[strata["status"] != "kept"]
    assert len(without) >= 1 and "## Networks" in md
    for r in without.itertuples():
        assert re.search(rf"\| {re.escape(r.cell_type)} \| {r.n_cells} \| [^|]+ \| [^|]+ \| \*\*(not built|empty: skipped)\*\* \|", md), r.stratum
    assert f"- Networks: {len(strata) - len(without)} of {len(strata)} strata have one" in md


def test_report_marks_strata_without_master_regulators(tmp_path):
    """A stratum with no significant regulator keeps its heatmap row (labelled), its table row, and the
    report says it had no perturbation target and why."""
    inputs = make_results(tmp_path)
    MasterRegulatorTable.build(
        pd.DataFrame([{"stratum": "CD14_Monocyte", "regulator": "TF1", "direction": "up", "rank": 1}]),
        pd.DataFrame([
            {"stratum": "CD14_Monocyte", "status": "reported", "n_regulons": 4, "n_tested": 4, "n_candidates_up": 1},
            {"stratum": "Dendritic", "status": "no_significant_regulator", "n_regulons": 5, "n_tested": 5,
             "reason": "no regulator of 5 tested has BH padj < 0.05", "padj_cutoff": 0.05},
            {"stratum": "CD34", "status": "no_network", "reason": "no ARACNe network (stratum not kept)"},
        ])).write(inputs.master_regulators)
    for path in inputs.perf:  # the ISP of Dendritic ran no perturbation
        if path.name.startswith("Dendritic") and read_perf(path).ran:
            write_perf(path, dataclasses.replace(read_perf(path), n_perturbations=0, perturbations_per_s=0.0))
    out = outputs(tmp_path)
    no_umap = dataclasses.replace(OPTIONS, umap=False)
    data = build_report(inputs, out, no_umap, environment=FAKE_ENV)
    assert list(data.mr_activity.index) == ["CD14+ Monocyte", "Dendritic"]  # the row is kept
    assert aggregate.mr_row_notes(data.mr_strata, data.strata) == {"Dendritic": "no significant regulator",
                                                                  "CD34+": "no network"}
    table = aggregate.mr_strata_table(data.mr_strata, data.strata, data.perf, data.master_regulators).set_index("stratum")
    assert table.loc["Dendritic", "label"] == "no significant regulator" and table.loc["Dendritic", "isp_perturbations"] == 0
    assert table.loc["Dendritic", "isp_note"].startswith("no significant regulator: no regulator of 5 tested")
    assert table.loc["CD14_Monocyte", "isp_note"] == "" and table.loc["CD14_Monocyte", "up"] == "TF1"
    md = out.markdown.read_text()
    assert "| Dendritic | no significant regulator | 5 | 5 |" in md and "| CD34+ | no network |" in md
    assert "no ISP perturbation ran in Dendritic (no significant regulator: no regulator of 5 tested" in md
    assert "- no network (no ARACNe network (stratum not kept)): CD34+" in md
    assert "Rows in brackets have no master regulator: Dendritic (no significant regulator), CD34+ (no network)" in md
    assert_png_with_content(out.figures / "viper__master_regulators.png")
    # no master regulator anywhere: the figure is not drawn and says why
    MasterRegulatorTable.build(pd.DataFrame(columns=["stratum", "regulator", "direction", "rank"]),
                               pd.DataFrame([{"stratum": s, "status": "no_significant_regulator"} for s in STRATA])
                               ).write(inputs.master_regulators)
    build_report(inputs, out, no_umap, environment=FAKE_ENV)
    md = out.markdown.read_text()
    assert "`viper__master_regulators.png`: no stratum has a master regulator" in md
    assert "Master regulators in 0 of 2 strata with a network" in md


def test_counts_in_sentences_take_the_singular_for_one():
    assert markdown.count(1, "edge") == "1 edge"
    assert markdown.count(0, "edge") == "0 edges"
    assert markdown.count(556, "edge") == "556 edges"
    assert markdown.count(float("nan"), "regulon") == "n/a regulons"

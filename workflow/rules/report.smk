# The benchmark report: aggregation of every stage's outputs and Snakemake benchmarks (netpert.report).
# The methods that did not run come from isp/metrics.tsv (isp_evaluate lists them); the report
# reads no config: the few settings it needs are its params.
import os


rule report:
    input:
        strata=out("aracne/strata.tsv"),
        regulons=lambda wc: expand(
            out("aracne/{stratum}/regulon.tsv"), stratum=kept_strata()
        ),
        networks=lambda wc: expand(
            out("aracne/{stratum}/network.tsv"), stratum=kept_strata()
        ),
        activity=out("viper/activity.h5ad"),
        master_regulators=out("viper/master_regulators.tsv"),
        metrics=out("isp/metrics.tsv"),
        model=out("isp/model"),
        npz=lambda wc: expand(
            out("isp/{method}/{stratum}.npz"),
            method=ISP_METHODS,
            stratum=kept_strata(),
        ),
        perf=lambda wc: expand(
            out("isp/{method}/{stratum}.perf.json"),
            method=ISP_METHODS,
            stratum=kept_strata(),
        ),
        artifacts=[ISP_ARTIFACTS[m] for m in ISP_METHODS if m in ISP_ARTIFACTS],
    output:
        methods=report(
            out("report/methods.csv"),
            caption="../report/methods_csv.rst",
            category="Report",
        ),
        stages=report(
            out("report/stages.csv"),
            caption="../report/stages_csv.rst",
            category="Report",
        ),
        markdown=report(
            out("report/benchmark_report.md"),
            caption="../report/benchmark_md.rst",
            category="Report",
        ),
        figures=report(
            directory(out("report/figures")),
            patterns=["{stage}__{name}.png"],
            caption="../report/figures.rst",
            category="Figures",
            subcategory="{stage}",
        ),
    log:
        log_path("report"),
    benchmark:
        bench_path("report")
    params:
        benchmarks=out("benchmarks"),
        # the benchmark files of the jobs planned now (JOB_BENCHMARKS): only those are read
        benchmark_files=lambda wc: planned_benchmarks(),
        # results/: the wandb run goes to results/wandb/ (offline-run-*)
        wandb_dir=lambda wc, output: os.path.dirname(os.path.dirname(output.methods)),
        input=config["input"],
        cell_type_key=config["data"]["cell_type_key"],
        seed=ISP["seed"],
        bar=ISP["bar"],
        umap=config["report"]["umap"],
        formats=config["report"]["formats"],
        wandb=config["report"]["wandb"],
        wandb_project=config["report"]["wandb_project"],
        wandb_mode=config["report"]["wandb_mode"],
    threads: 1
    resources:
        mem_mb=lambda wc, attempt: 4000 * attempt,
        runtime=30,
    conda:
        f"{ENVS}/report.yaml"
    script:
        "../../scripts/report.py"


STAGE_TARGETS["report"].append(out("report/benchmark_report.md"))

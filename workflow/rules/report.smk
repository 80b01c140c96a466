# The benchmark report: aggregation of every stage's outputs and Snakemake benchmarks (netpert.report).
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
        csv=report(
            out("report/benchmark.csv"),
            caption="../report/benchmark_csv.rst",
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
        results=lambda wc, input: os.path.dirname(input.strata),
        benchmarks=out("benchmarks"),
        skipped=ISP_PLAN.not_planned,
        methods=ISP_METHODS,
        bar=ISP["bar"],
        umap=config["report"]["umap"],
        wandb=config["report"]["wandb"],
        wandb_project=config["report"]["wandb_project"],
        wandb_mode=config["report"]["wandb_mode"],
        config=config,
    threads: 1
    resources:
        mem_mb=lambda wc, attempt: 4000 * attempt,
        runtime=30,
    conda:
        f"{ENVS}/report.yaml"
    script:
        "../../scripts/report.py"


STAGE_TARGETS["report"].append(out("report/benchmark_report.md"))

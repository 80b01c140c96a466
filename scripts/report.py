"""Rule report: benchmark.csv, benchmark_report.md and figures/ from every stage's outputs."""

from pathlib import Path

from netpert.report import build_report
from netpert.workflow import script_logging

with script_logging(snakemake):  # noqa: F821
    i, o, p = snakemake.input, snakemake.output, snakemake.params  # noqa: F821
    build_report(
        strata=i.strata,
        out_csv=o.csv,
        out_markdown=o.markdown,
        out_figures=o.figures,
        networks=list(i.networks),
        regulons=list(i.regulons),
        activity=i.activity,
        master_regulators=i.master_regulators,
        metrics=i.metrics,
        model=i.model,
        npz=list(i.npz),
        perf=list(i.perf),
        artifacts=list(i.artifacts),
        benchmarks=p.benchmarks,
        skipped=dict(p.skipped),
        bar=dict(p.bar),
        umap=bool(p.umap),
        config=dict(p.config),
        wandb=bool(p.wandb),
        wandb_project=p.wandb_project,
        wandb_mode=p.wandb_mode,
        wandb_dir=Path(p.results),
        seed=int(p.config.get("isp", {}).get("seed", 0)),
    )

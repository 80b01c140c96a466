"""Rule report: methods.csv, stages.csv, benchmark_report.md and figures/ from every stage's outputs."""

from netpert.report import ReportInputs, ReportOptions, ReportOutputs, build_report
from netpert.workflow import script_logging

with script_logging(snakemake):  # noqa: F821
    i, o, p = snakemake.input, snakemake.output, snakemake.params  # noqa: F821
    build_report(
        ReportInputs(
            strata=i.strata,
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
            benchmark_files=list(p.benchmark_files),
        ),
        ReportOutputs(methods=o.methods, stages=o.stages, markdown=o.markdown, figures=o.figures),
        ReportOptions(
            bar=dict(p.bar),
            umap=bool(p.umap),
            formats=tuple(p.formats),
            seed=int(p.seed),
            input=p.input,
            cell_type_key=p.cell_type_key,
            wandb=bool(p.wandb),
            wandb_project=p.wandb_project,
            wandb_mode=p.wandb_mode,
            wandb_dir=p.wandb_dir,
        ),
    )

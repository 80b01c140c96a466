"""Rule isp_evaluate: consistency of every method with baseline and embedding quality -> isp/metrics.tsv."""

from netpert.isp.evaluate import evaluate_run
from netpert.workflow import script_logging

with script_logging(snakemake) as log:  # noqa: F821
    p = snakemake.params  # noqa: F821
    table = evaluate_run(
        list(snakemake.input.npz),  # noqa: F821
        list(snakemake.input.perf),  # noqa: F821
        snakemake.output.metrics,  # noqa: F821
        bar=dict(p.bar),
        seed=p.seed,
        not_planned=dict(p.not_planned),
    )
    log.info("metrics:\n%s", table[table["stratum"] == "all"].to_string(index=False))

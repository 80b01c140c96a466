"""Rule master_regulators: top regulators per stratum (top_k up and top_k down by mean NES, with a
Mann-Whitney test against the other cells, BH-adjusted) -> master_regulators.tsv."""

from netpert.viper import run_master_regulators
from netpert.workflow import script_logging

with script_logging(snakemake):  # noqa: F821
    p = snakemake.params  # noqa: F821
    run_master_regulators(
        snakemake.input.activity,  # noqa: F821
        snakemake.output.tsv,  # noqa: F821
        top_k=int(p.top_k),
        groupby=str(getattr(p, "groupby", "stratum")),
    )

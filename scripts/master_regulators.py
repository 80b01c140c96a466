"""Rule master_regulators: per stratum with its own network, the regulators significantly and
specifically active against the other cells (Mann-Whitney, BH, viper.mr_padj; ranked by
rank-biserial effect size; viper.top_k up and down) -> master_regulators.tsv, with a summary
row for every stratum (netpert.mr_table)."""

from netpert.viper import run_master_regulators
from netpert.workflow import script_logging

with script_logging(snakemake):  # noqa: F821
    p = snakemake.params  # noqa: F821
    run_master_regulators(
        snakemake.input.activity,  # noqa: F821
        snakemake.output.tsv,  # noqa: F821
        list(snakemake.input.regulons),  # noqa: F821
        top_k=int(p.top_k),
        padj=float(p.padj),
        groupby=str(p.groupby),
    )

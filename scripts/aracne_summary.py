"""Rule aracne_summary: strata.tsv with each stratum's network outcome -> results/aracne/strata.tsv."""

from pathlib import Path

from netpert._io import atomic_path
from netpert.aracne import network_summary, read_status
from netpert.data import read_strata_table
from netpert.workflow import script_logging

with script_logging(snakemake) as log:  # noqa: F821
    strata = read_strata_table(Path(snakemake.input.strata) / "strata.tsv")  # noqa: F821
    table = network_summary(strata, [read_status(f) for f in snakemake.input.status])  # noqa: F821
    with atomic_path(snakemake.output.tsv) as tmp:  # noqa: F821
        table.to_csv(tmp, sep="\t", index=False)
    log.info("networks:\n%s", table.to_string(index=False))

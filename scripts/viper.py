"""Rule viper: VIPER / metaVIPER activity of every cell over the strata's regulons -> activity h5ad.

X holds the NES (cells x regulators), layers['pvalue'] the two-sided p-values, layers['padj'] their
Benjamini-Hochberg adjustment per cell, layers['pes'] NaRnEA's PES (viper.enrichment: narnea), obs is copied from the cells, uns['viper'] the parameters.
Empty regulon files are skipped with a warning; none left is an InputError.
Bounded memory: the cells are read, scored and written block by block (viper.block_size cells; see
netpert.viper.run_viper), float64 throughout, equal to the in-memory result.
"""

from netpert.viper import run_viper
from netpert.workflow import script_logging, set_threads

with script_logging(snakemake):  # noqa: F821
    set_threads(snakemake.threads)  # noqa: F821
    p = snakemake.params  # noqa: F821
    run_viper(
        snakemake.input.cells,  # noqa: F821
        list(snakemake.input.regulons),  # noqa: F821
        snakemake.output.activity,  # noqa: F821
        signature=str(p.signature),
        eset_filter=bool(p.eset_filter),
        min_targets=int(p.min_targets),
        mvws=p.mvws,
        pleiotropy=bool(p.pleiotropy),
        network_choice=str(p.network_choice),
        block_size=int(p.block_size),
        enrichment=p.enrichment,
    )

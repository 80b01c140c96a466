"""Rule prepare_data: load, validate and filter the input into results/data/cells.h5ad."""

from netpert.data import prepare_data
from netpert.workflow import script_logging

with script_logging(snakemake):  # noqa: F821
    p = snakemake.params  # noqa: F821
    prepare_data(
        source=p.source,
        out=snakemake.output.cells,  # noqa: F821
        cell_type_key=p.cell_type_key,
        tissue_key=p.tissue_key,
        counts_layer=p.counts_layer,
        gene_symbols=p.gene_symbols,
        min_cells=p.min_cells,
        min_cells_per_gene=p.min_cells_per_gene,
        regulator_lists=list(p.regulators),
        species=p.species,
    )

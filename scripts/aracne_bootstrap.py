"""Rule aracne_bootstrap: the networks of one chunk of bootstraps, long format (bootstrap, regulator, target, mi)."""

import anndata as ad

from netpert.aracne import bootstrap_networks, read_threshold, write_table
from netpert.regulators import regulators_in
from netpert.workflow import script_logging, set_threads

with script_logging(snakemake) as log:  # noqa: F821
    set_threads(snakemake.threads)  # noqa: F821
    p = snakemake.params  # noqa: F821
    cells = ad.read_h5ad(snakemake.input.h5ad)  # noqa: F821
    regulators = regulators_in(cells.var_names, list(p.regulators), p.species)
    log.info("%d regulators of %s in %d genes x %d cells", len(regulators), list(p.regulators), cells.n_vars, cells.n_obs)
    table = bootstrap_networks(
        cells,
        regulators,
        threshold=read_threshold(snakemake.input.threshold),  # noqa: F821
        seeds=[int(s) for s in p.seeds],
        resampling=p.resampling,
        dpi=bool(p.dpi),
        dpi_tolerance=float(p.dpi_tolerance),
        backend=p.backend,
    )
    write_table(table, snakemake.output.tsv)  # noqa: F821

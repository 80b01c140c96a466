"""Rule aracne_bootstrap: the networks of one chunk of bootstraps, long format (bootstrap, regulator, target, mi)."""

import anndata as ad

from netpert.aracne import Calibration, bootstrap_networks, bootstrap_seeds, write_table
from netpert.regulators import regulators_in
from netpert.workflow import script_logging, set_threads

with script_logging(snakemake) as log:  # noqa: F821
    set_threads(snakemake.threads)  # noqa: F821
    p = snakemake.params  # noqa: F821
    cells = ad.read_h5ad(snakemake.input.h5ad)  # noqa: F821
    regulators = regulators_in(cells.var_names, list(p.regulators), p.species)
    first, count = (int(x) for x in p.bootstraps)
    log.info("%d regulators of %s in %d genes x %d cells; bootstraps %d..%d", len(regulators), list(p.regulators),
             cells.n_vars, cells.n_obs, first, first + count - 1)
    i = snakemake.input  # noqa: F821
    calibration = Calibration.load(i.threshold, i.info, i.null)
    table = bootstrap_networks(
        cells,
        regulators,
        seeds=bootstrap_seeds(int(p.seed), count, first),
        resampling=p.resampling,
        dpi=bool(p.dpi),
        dpi_tolerance=float(p.dpi_tolerance),
        backend=p.backend,
        **calibration.cut(),
    )
    write_table(table, snakemake.output.tsv)  # noqa: F821

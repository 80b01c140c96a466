"""Checkpoint stratify: per kept stratum {slug}.h5ad and {slug}.null.h5ad, and strata.tsv listing every stratum."""

import logging

import anndata as ad

from netpert.data import stratify, write_strata
from netpert.workflow import script_logging

with script_logging(snakemake):  # noqa: F821
    p = snakemake.params  # noqa: F821
    cells = ad.read_h5ad(snakemake.input.cells)  # noqa: F821
    kept, table = stratify(
        cells,
        min_cells=p.min_cells,
        max_cells=p.max_cells,
        use_metacells=p.metacells,  # True, False or "auto" (strings from --config are parsed by netpert)
        metacell_method=p.metacell_method,
        metacell_k=p.metacell_k,
        metacell_max_k=p.metacell_max_k,
        metacell_max_cells=p.metacell_max_cells,
        target_umis=p.target_umis,
        n_pcs=p.n_pcs,
        seed=p.seed,
    )
    write_strata(kept, table, snakemake.output[0])  # noqa: F821
    logging.getLogger("netpert").info("strata:\n%s", table.to_string(index=False))

"""Rule aracne_threshold: the calibration of a stratum's networks (null distribution, FDR or MI
threshold) -> threshold.txt (ARACNe-AP format), threshold.json (provenance), null.npz."""

import anndata as ad

from netpert.aracne import calibrate
from netpert.data import uses_null_file
from netpert.regulators import regulators_in
from netpert.workflow import script_logging, set_threads

with script_logging(snakemake) as log:  # noqa: F821
    set_threads(snakemake.threads)  # noqa: F821
    p = snakemake.params  # noqa: F821
    cells = ad.read_h5ad(snakemake.input.h5ad)  # noqa: F821
    # aggregated strata bring their own null (cells permuted, then aggregated the same way);
    # strata of cells are permuted afresh in every null replicate
    aggregated = uses_null_file(cells)
    null_data = ad.read_h5ad(snakemake.input.null) if aggregated else None  # noqa: F821
    log.info("null data: %s", "the stratum's aggregated null file" if aggregated else "the stratum's cells, permuted")
    calibration = calibrate(
        cells,
        regulators_in(cells.var_names, list(p.regulators), p.species),
        method=p.method,
        pvalue=float(p.pvalue),
        fdr=None if p.fdr is None else float(p.fdr),
        seed=int(p.seed),
        resampling=p.resampling,
        null_data=null_data,
        cache_dir=p.cache_dir or None,
        backend=p.backend,
        estimator=p.estimator,
    )
    calibration.save(snakemake.output.threshold, snakemake.output.info, snakemake.output.null)  # noqa: F821

"""Rule aracne_threshold: the MI threshold of a stratum (ARACNe-AP format) and its provenance JSON."""

import anndata as ad

from netpert.aracne import threshold_for_data, write_threshold
from netpert.workflow import script_logging, set_threads

with script_logging(snakemake):  # noqa: F821
    set_threads(snakemake.threads)  # noqa: F821
    p = snakemake.params  # noqa: F821
    cells = ad.read_h5ad(snakemake.input.h5ad, backed="r")  # noqa: F821  (only the cell count is needed)
    threshold, info = threshold_for_data(
        cells,
        pvalue=float(p.pvalue),
        seed=int(p.seed),
        method=p.method,
        cache_dir=p.cache_dir or None,
        # the null must be for the sample count of one network: the subsample size when subsampling
        resampling=getattr(p, "resampling", "bootstrap"),
    )
    cells.file.close()
    write_threshold(threshold, info, snakemake.output.threshold, snakemake.output.info)  # noqa: F821

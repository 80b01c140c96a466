"""Rule isp_merge: one method's shards of one stratum joined into {method}/{stratum}.npz + .perf.json."""

from netpert.isp.shards import merge_shards
from netpert.workflow import script_logging

with script_logging(snakemake) as log:  # noqa: F821
    perf = merge_shards(
        snakemake.input.tokens,  # noqa: F821
        list(snakemake.input.npz),  # noqa: F821
        list(snakemake.input.perf),  # noqa: F821
        snakemake.output.npz,  # noqa: F821
        snakemake.output.perf,  # noqa: F821
    )
    log.info("merged: %s", {k: getattr(perf, k) for k in ("status", "reason", "n_cells", "n_perturbations", "wall_s", "peak_rss_mb")})

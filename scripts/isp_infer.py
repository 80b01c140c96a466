"""Rule isp_infer: one ISP method over one stratum -> {method}/{stratum}.npz + .perf.json."""

from netpert.isp.runner import infer_stratum
from netpert.workflow import script_logging, set_threads

with script_logging(snakemake) as log:  # noqa: F821
    p = snakemake.params  # noqa: F821
    set_threads(snakemake.threads)  # noqa: F821
    artifacts = [str(a) for a in getattr(snakemake.input, "artifacts", [])]  # noqa: F821
    perf = infer_stratum(
        snakemake.input.tokens,  # noqa: F821
        snakemake.input.model,  # noqa: F821
        snakemake.output.npz,  # noqa: F821
        snakemake.output.perf,  # noqa: F821
        method=p.method,
        layer=p.layer,
        batch_size=getattr(p, "batch_size", None),
        batching=getattr(p, "batching", None),
        device=getattr(p, "device", "auto"),
        threads=snakemake.threads,  # noqa: F821
        artifacts=artifacts or None,
        stratum=getattr(snakemake.wildcards, "stratum", None),  # noqa: F821
    )
    log.info("perf: %s", {k: perf[k] for k in ("wall_s", "perturbations_per_s", "cells_per_s", "peak_rss_mb", "note")})

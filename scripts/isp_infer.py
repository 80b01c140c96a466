"""Rule isp_infer: one ISP method over one stratum -> {method}/{stratum}.npz + .perf.json
(or "not run" records where the method cannot run on this machine)."""

from netpert.isp.runner import infer_stratum
from netpert.workflow import script_logging, set_threads

with script_logging(snakemake) as log:  # noqa: F821
    p = snakemake.params  # noqa: F821
    set_threads(snakemake.threads)  # noqa: F821
    perf = infer_stratum(
        snakemake.input.tokens,  # noqa: F821
        snakemake.input.model,  # noqa: F821
        snakemake.output.npz,  # noqa: F821
        snakemake.output.perf,  # noqa: F821
        method=p.method,
        layer=p.layer,
        repeats=p.repeats,
        batch_size=p.batch_size,
        batching=p.batching,
        device=p.device,
        explicit=p.explicit,
        threads=snakemake.threads,  # noqa: F821
        artifacts=[str(a) for a in snakemake.input.artifacts] or None,  # noqa: F821
        stratum=snakemake.wildcards.stratum,  # noqa: F821
        cells_per_job=p.cells_per_job,
        shard=p.shard,
    )
    log.info("perf: %s", {k: getattr(perf, k) for k in ("status", "reason", "wall_s", "perturbations_per_s", "peak_rss_mb", "note")})

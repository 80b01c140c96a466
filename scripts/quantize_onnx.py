"""Rule quantize_onnx: int8 candidates of the fp32 export, scored and timed on tokenized cells and
their perturbations; keeps the fastest meeting the bar, tuned for this machine."""

from netpert.isp.export import write_report
from netpert.isp.quantize import quantize_onnx, screen_groups, token_batches
from netpert.workflow import script_logging, set_threads

with script_logging(snakemake) as log:  # noqa: F821
    p = snakemake.params  # noqa: F821
    set_threads(snakemake.threads)  # noqa: F821
    tokens = snakemake.input.tokens  # noqa: F821
    tokens = [tokens] if isinstance(tokens, str) else list(tokens)
    calibration, evaluation, info = token_batches(tokens, n_calibration=p.n_calibration, seed=p.seed)
    screens, info["screens"] = screen_groups(tokens, n_calibration=p.n_calibration, seed=p.seed)
    log.info("calibration / evaluation cells: %s", info)
    report = quantize_onnx(
        snakemake.input.onnx,  # noqa: F821
        snakemake.output.onnx,  # noqa: F821
        calibration,
        evaluation,
        candidates=list(p.candidates),
        bar={k: p.bar[k] for k in ("mean_cosine", "min_cosine", "spearman")},
        threads=snakemake.threads,  # noqa: F821
        seed=p.seed,
        screens=screens,
    )
    report["tokens"] = info
    write_report(report, snakemake.output.report)  # noqa: F821
    log.info("kept %s: %s", report["chosen"], report["why"])
    log.info("tuning: %s", report.get("tuning", {}).get("why"))

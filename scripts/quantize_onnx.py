"""Rule quantize_onnx: int8 candidates of the fp32 export, scored on tokenized cells; keeps the best passing one."""

from netpert.isp.export import write_report
from netpert.isp.quantize import quantize_onnx, token_batches
from netpert.workflow import script_logging, set_threads

with script_logging(snakemake) as log:  # noqa: F821
    p = snakemake.params  # noqa: F821
    set_threads(snakemake.threads)  # noqa: F821
    tokens = snakemake.input.tokens  # noqa: F821
    calibration, evaluation, info = token_batches(
        [tokens] if isinstance(tokens, str) else list(tokens), n_calibration=p.n_calibration, seed=p.seed
    )
    log.info("calibration / evaluation cells: %s", info)
    report = quantize_onnx(
        snakemake.input.onnx,  # noqa: F821
        snakemake.output.onnx,  # noqa: F821
        calibration,
        evaluation,
        candidates=list(p.candidates),
        bar={"mean_cosine": p.bar["mean_cosine"], "min_cosine": p.bar["min_cosine"]},
        threads=snakemake.threads,  # noqa: F821
        seed=p.seed,
    )
    report["tokens"] = info
    write_report(report, snakemake.output.report)  # noqa: F821
    log.info("kept %s", report["chosen"])

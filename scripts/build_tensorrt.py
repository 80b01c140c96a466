"""Rule build_tensorrt: a TensorRT engine (model.plan) of the ONNX encoder, FP16, profiles over batch and length."""

from netpert.isp.backends.tensorrt import build_engine
from netpert.isp.export import write_report
from netpert.workflow import script_logging

with script_logging(snakemake) as log:  # noqa: F821
    p = snakemake.params  # noqa: F821
    report = build_engine(
        snakemake.input.onnx,  # noqa: F821
        snakemake.output.plan,  # noqa: F821
        max_batch=p.max_batch,
        max_len=p.max_len,
        fp16=p.fp16,
    )
    write_report(report, snakemake.output.report)  # noqa: F821
    log.info("built %s (%s, %.1f MB) in %.0f s", report["plan"], report["settings"]["precision"],
             report["file_size_bytes"] / 1e6, report["build_seconds"])

"""Rule build_tensorrt: a TensorRT engine (model.plan) of the ONNX encoder, FP16, profiles over
batch and length; where the job has no CUDA device or TensorRT, an empty plan and a "not built" report."""

from netpert.isp.backends.tensorrt import build_or_record
from netpert.workflow import script_logging

with script_logging(snakemake) as log:  # noqa: F821
    p = snakemake.params  # noqa: F821
    report = build_or_record(
        snakemake.input.onnx,  # noqa: F821
        snakemake.output.plan,  # noqa: F821
        snakemake.output.report,  # noqa: F821
        max_batch=p.max_batch,
        max_len=p.max_len,
        fp16=p.fp16,
    )
    if report["status"] == "built":
        log.info("built %s (%s, %.1f MB) in %.0f s", report["plan"], report["settings"]["precision"],
                 report["file_size_bytes"] / 1e6, report["build_seconds"])
    else:
        log.warning("TensorRT engine not built here: %s", report["reason"])

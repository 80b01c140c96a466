"""Rule export_onnx: the Geneformer encoder up to isp.layer as one .onnx file, checked against PyTorch.

Fails (and leaves no output) when ONNX Runtime and PyTorch differ by more than params.atol.
"""

from netpert.isp.export import export_onnx, write_report
from netpert.isp.model import load_bundle
from netpert.workflow import script_logging, set_threads

with script_logging(snakemake) as log:  # noqa: F821
    p = snakemake.params  # noqa: F821
    set_threads(snakemake.threads)  # noqa: F821
    bundle = load_bundle(snakemake.input.model)  # noqa: F821
    report = export_onnx(
        bundle.model,
        snakemake.output.onnx,  # noqa: F821
        layer=p.layer,
        opset=p.opset,
        check=True,
        atol=p.atol,
        threads=snakemake.threads,  # noqa: F821
    )
    write_report(report, snakemake.output.report)  # noqa: F821
    log.info(
        "exported with %s (opset %s, %.1f MB); max |ORT - PyTorch| = %.3g <= %g",
        report["exporter"],
        report["opset"],
        report["file_size_bytes"] / 1e6,
        report["max_abs_diff"],
        p.atol,
    )

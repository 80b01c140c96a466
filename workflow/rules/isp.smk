# In-silico perturbation in Geneformer: model, tokens, ONNX / int8 / TensorRT artifacts,
# one inference job per method x stratum, evaluation (netpert.isp).
from netpert.isp.backends import resolve_device, resolve_methods

ISP = config["isp"]
ISP_DEVICE = resolve_device(ISP["device"])
ISP_METHODS, ISP_SKIPPED = resolve_methods(ISP["methods"], ISP_DEVICE)
ISP_ARTIFACTS = {
    "onnx": out("isp/model.onnx"),
    "onnx_int8": out("isp/model.int8.onnx"),
    "tensorrt": out("isp/model.plan"),
}
ISP_GPU = {"gpu": 1} if ISP_DEVICE == "cuda" else {}


rule isp_model:
    input:
        cells=out("data/cells.h5ad"),
    output:
        model=directory(out("isp/model")),
    log:
        log_path("isp_model"),
    benchmark:
        bench_path("isp_model")
    params:
        spec=ISP["model"],
        seed=ISP["seed"],
        gene_id_column=None,
    threads: 1
    resources:
        mem_mb=lambda wc, attempt: 4000 * attempt,
        runtime=30,
    conda:
        f"{ENVS}/isp-cpu.yaml"
    script:
        "../../scripts/isp_model.py"


rule isp_tokenize:
    input:
        h5ad=out("strata/{stratum}.h5ad"),
        model=out("isp/model"),
        targets=(
            out("viper/master_regulators.tsv")
            if ISP["targets"]["source"] == "master_regulators"
            else []
        ),
    output:
        tokens=out("isp/tokens/{stratum}.parquet"),
    log:
        log_path("isp_tokenize/{stratum}"),
    benchmark:
        bench_path("isp_tokenize/{stratum}")
    params:
        targets_source=ISP["targets"]["source"],
        genes=ISP["targets"]["genes"],
        top_k=ISP["targets"]["top_k"],
        pairs=ISP["targets"]["pairs"],
        anchor=ISP["targets"]["anchor"],
        perturbation=ISP["perturbation"],
        shift_fraction=ISP["shift_fraction"],
        cells_per_stratum=ISP["cells_per_stratum"],
        seed=ISP["seed"],
        max_len=ISP["max_len"],
    threads: 1
    resources:
        mem_mb=lambda wc, attempt: 4000 * attempt,
        runtime=30,
    conda:
        f"{ENVS}/isp-cpu.yaml"
    script:
        "../../scripts/isp_tokenize.py"


rule export_onnx:
    input:
        model=out("isp/model"),
    output:
        onnx=out("isp/model.onnx"),
        report=out("isp/model.onnx.json"),
    log:
        log_path("export_onnx"),
    benchmark:
        bench_path("export_onnx")
    params:
        layer=ISP["layer"],
        opset=ISP["onnx"]["opset"],
        atol=ISP["onnx"]["atol"],
    threads: ISP["threads"]
    resources:
        mem_mb=lambda wc, attempt: 8000 * attempt,
        runtime=30,
    conda:
        f"{ENVS}/isp-cpu.yaml"
    script:
        "../../scripts/export_onnx.py"


rule quantize_onnx:
    input:
        onnx=out("isp/model.onnx"),
        tokens=lambda wc: expand(
            out("isp/tokens/{stratum}.parquet"), stratum=kept_strata()
        ),
    output:
        onnx=out("isp/model.int8.onnx"),
        report=out("isp/model.int8.onnx.json"),
    log:
        log_path("quantize_onnx"),
    benchmark:
        bench_path("quantize_onnx")
    params:
        candidates=ISP["onnx"]["int8_candidates"],
        n_calibration=ISP["onnx"]["n_calibration"],
        seed=ISP["seed"],
        bar=ISP["bar"],
    threads: ISP["threads"]
    resources:
        mem_mb=lambda wc, attempt: 8000 * attempt,
        runtime=60,
    conda:
        f"{ENVS}/isp-cpu.yaml"
    script:
        "../../scripts/quantize_onnx.py"


rule build_tensorrt:
    input:
        onnx=out("isp/model.onnx"),
    output:
        plan=out("isp/model.plan"),
        report=out("isp/model.plan.json"),
    log:
        log_path("build_tensorrt"),
    benchmark:
        bench_path("build_tensorrt")
    params:
        max_batch=ISP["batch_size"]["tensorrt"],
        max_len=ISP["max_len"],
        fp16=True,
    threads: 2
    resources:
        mem_mb=lambda wc, attempt: 16000 * attempt,
        runtime=60,
        gpu=1,
    conda:
        f"{ENVS}/isp-gpu.yaml"
    script:
        "../../scripts/build_tensorrt.py"


rule isp_infer:
    input:
        tokens=out("isp/tokens/{stratum}.parquet"),
        model=out("isp/model"),
        artifacts=lambda wc: (
            [ISP_ARTIFACTS[wc.method]] if wc.method in ISP_ARTIFACTS else []
        ),
    output:
        npz=out("isp/{method}/{stratum}.npz"),
        perf=out("isp/{method}/{stratum}.perf.json"),
    log:
        log_path("isp_infer/{method}/{stratum}"),
    benchmark:
        bench_path("isp_infer/{method}/{stratum}")
    params:
        method=lambda wc: wc.method,
        layer=ISP["layer"],
        batch_size=lambda wc: ISP["batch_size"][wc.method],
        device=ISP_DEVICE,
    threads: ISP["threads"]
    resources:
        **ISP_GPU,
        mem_mb=lambda wc, attempt: 8000 * attempt,
        runtime=lambda wc, attempt: 120 * attempt,
    conda:
        f"{ENVS}/isp-gpu.yaml" if ISP_DEVICE == "cuda" else f"{ENVS}/isp-cpu.yaml"
    script:
        "../../scripts/isp_infer.py"


rule isp_evaluate:
    input:
        npz=lambda wc: expand(
            out("isp/{method}/{stratum}.npz"),
            method=ISP_METHODS,
            stratum=kept_strata(),
        ),
        perf=lambda wc: expand(
            out("isp/{method}/{stratum}.perf.json"),
            method=ISP_METHODS,
            stratum=kept_strata(),
        ),
    output:
        metrics=out("isp/metrics.tsv"),
    log:
        log_path("isp_evaluate"),
    benchmark:
        bench_path("isp_evaluate")
    params:
        bar=ISP["bar"],
        seed=ISP["seed"],
        skipped=ISP_SKIPPED,
    threads: 1
    resources:
        mem_mb=lambda wc, attempt: 4000 * attempt,
        runtime=30,
    conda:
        f"{ENVS}/isp-cpu.yaml"
    script:
        "../../scripts/isp_evaluate.py"


STAGE_TARGETS["perturbation"].append(out("isp/metrics.tsv"))

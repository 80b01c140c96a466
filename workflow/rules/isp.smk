# In-silico perturbation in Geneformer: model, tokens, ONNX / int8 / TensorRT artifacts,
# one inference job per method x stratum (x shard of cells with isp.cells_per_job), evaluation
# (netpert.isp). The jobs are planned from the config alone (netpert.isp.methods: no torch, no
# device probe here) and, for the shards, the strata checkpoint's cell counts; each isp_infer job
# checks where it runs whether its method can run there.
from netpert.isp.methods import METHODS, REGISTRY, plan_methods

ISP = config["isp"]
ISP_PLAN = plan_methods(ISP["methods"], ISP["device"])
ISP_METHODS = list(ISP_PLAN.methods)
#: method -> the artifact file it runs from (the registry's names, under results/isp/)
ISP_ARTIFACTS = {
    m.name: out(f"isp/{m.artifact}") for m in REGISTRY.values() if m.artifact
}
ISP_GPU = {"gpu": 1} if ISP_PLAN.wants_gpu else {}
ISP_ENV = f"{ENVS}/isp-gpu.yaml" if ISP_PLAN.wants_gpu else f"{ENVS}/isp-cpu.yaml"
#: isp.cells_per_job: None runs a stratum's screen in one job per method; a number splits it into
#: shards of that many cells (with their perturbations), one isp_infer job each, joined by isp_merge
ISP_CELLS_PER_JOB = ISP["cells_per_job"]
#: minutes an isp_infer job asks for a stratum's whole screen (doubled on the retry); a shard asks
#: its cells' share of it, at least ISP_INFER_MIN_RUNTIME (model loading, warm-up, repeats):
#: isp_infer_runtime
ISP_INFER_RUNTIME = 120
ISP_INFER_MIN_RUNTIME = 15
#: the files of one isp_infer job: a stratum's, or one shard's
ISP_JOB = (
    "{method}/{stratum}/shard_{shard}" if ISP_CELLS_PER_JOB else "{method}/{stratum}"
)


wildcard_constraints:
    method="|".join(METHODS),
    shard="[0-9]+",


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
        onnx=ISP_ARTIFACTS["onnx"],
        report=ISP_ARTIFACTS["onnx"] + ".json",
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
        onnx=ISP_ARTIFACTS["onnx"],
        tokens=lambda wc: expand(
            out("isp/tokens/{stratum}.parquet"), stratum=kept_strata()
        ),
    output:
        onnx=ISP_ARTIFACTS["onnx_int8"],
        report=ISP_ARTIFACTS["onnx_int8"] + ".json",
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
        onnx=ISP_ARTIFACTS["onnx"],
    output:
        plan=ISP_ARTIFACTS["tensorrt"],
        report=ISP_ARTIFACTS["tensorrt"] + ".json",
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
        npz=out(f"isp/{ISP_JOB}.npz"),
        perf=out(f"isp/{ISP_JOB}.perf.json"),
    log:
        log_path(f"isp_infer/{ISP_JOB}"),
    benchmark:
        bench_path(f"isp_infer/{ISP_JOB}")
    params:
        method=lambda wc: wc.method,
        cells_per_job=ISP_CELLS_PER_JOB,
        shard=lambda wc: int(wc.shard) if ISP_CELLS_PER_JOB else None,
        layer=ISP["layer"],
        repeats=ISP["repeats"],
        batch_size=lambda wc: ISP["batch_size"][wc.method],
        batching=lambda wc: REGISTRY[wc.method].batching,
        device=ISP["device"],
        explicit=ISP_PLAN.explicit,
    threads: ISP["threads"]
    resources:
        **ISP_GPU,
        mem_mb=lambda wc, attempt: 8000 * attempt,
        runtime=lambda wc, attempt: isp_infer_runtime(wc) * attempt,
    conda:
        ISP_ENV
    script:
        "../../scripts/isp_infer.py"


if ISP_CELLS_PER_JOB:

    # a stratum's shards joined into its own records (netpert.isp.shards.merge_shards): the arrays
    # in the unsplit order, times summed over the shards, memory the largest shard's
    rule isp_merge:
        input:
            tokens=out("isp/tokens/{stratum}.parquet"),
            npz=lambda wc: [
                out(f"isp/{wc.method}/{wc.stratum}/shard_{k}.npz")
                for k in isp_shards(wc.stratum)
            ],
            perf=lambda wc: [
                out(f"isp/{wc.method}/{wc.stratum}/shard_{k}.perf.json")
                for k in isp_shards(wc.stratum)
            ],
        output:
            npz=out("isp/{method}/{stratum}.npz"),
            perf=out("isp/{method}/{stratum}.perf.json"),
        log:
            log_path("isp_merge/{method}/{stratum}"),
        benchmark:
            bench_path("isp_merge/{method}/{stratum}")
        threads: 1
        resources:
            mem_mb=lambda wc, attempt: 2000 * attempt,
            runtime=lambda wc, attempt: 10 * attempt,
        conda:
            f"{ENVS}/isp-cpu.yaml"
        script:
            "../../scripts/isp_merge.py"


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
        not_planned=ISP_PLAN.not_planned,
    threads: 1
    resources:
        mem_mb=lambda wc, attempt: 4000 * attempt,
        runtime=30,
    conda:
        f"{ENVS}/isp-cpu.yaml"
    script:
        "../../scripts/isp_evaluate.py"


STAGE_TARGETS["perturbation"].append(out("isp/metrics.tsv"))

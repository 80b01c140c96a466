# Helpers shared by every stage file (paths under the results folder, the strata checkpoint).
import math
import re

import pandas as pd

RESULTS = config["results"].rstrip("/")
ENVS = "../../envs"


def out(path):
    """A path under the results folder."""
    return f"{RESULTS}/{path}"


def log_path(name):
    return f"{RESULTS}/logs/{name}.log"


def bench_path(name):
    return f"{RESULTS}/benchmarks/{name}.tsv"


def input_file(wildcards):
    """The input .h5ad as a dependency (nothing for an embedded data set)."""
    src = config["input"]
    return [] if src.startswith("embedded:") else [src]


def kept_strata(wildcards=None):
    """Slugs of the strata the stratify checkpoint kept (evaluated after it ran)."""
    folder = checkpoints.stratify.get().output[0]
    table = pd.read_csv(f"{folder}/strata.tsv", sep="\t", keep_default_na=False)
    return table.loc[table["status"] == "kept", "slug"].tolist()


def stratum_cells(stratum):
    """The cells of a stratum (the strata checkpoint's count, n_output): known once the strata are."""
    folder = checkpoints.stratify.get().output[0]
    table = pd.read_csv(f"{folder}/strata.tsv", sep="\t", keep_default_na=False)
    cells = table.loc[table["slug"] == stratum, "n_output"]
    if len(cells) != 1:
        raise ValueError(f"stratum {stratum} is not once in {folder}/strata.tsv")
    return int(cells.iloc[0])


def isp_shards(stratum):
    """The shard indices of a stratum's ISP screen (isp.cells_per_job): its token file holds
    min(cells, isp.cells_per_stratum) of its cells (netpert.isp.shards), so the shards are known
    once the strata are."""
    from netpert.isp.shards import planned_shards

    isp = config["isp"]
    count = planned_shards(
        stratum_cells(stratum), isp["cells_per_stratum"], isp["cells_per_job"]
    )
    return list(range(count))


def isp_infer_runtime(wildcards):
    """Minutes an isp_infer job asks for: ISP_INFER_RUNTIME for a stratum's screen; a shard
    (isp.cells_per_job) its share of the stratum's token file's cells of that, rounded up, at
    least ISP_INFER_MIN_RUNTIME (netpert.isp.shards.shard_share)."""
    if not ISP_CELLS_PER_JOB:
        return ISP_INFER_RUNTIME
    from netpert.isp.shards import shard_share

    isp = config["isp"]
    share = shard_share(
        stratum_cells(wildcards.stratum),
        isp["cells_per_stratum"],
        ISP_CELLS_PER_JOB,
        int(wildcards.shard),
    )
    return max(ISP_INFER_MIN_RUNTIME, math.ceil(ISP_INFER_RUNTIME * share))


def stage_outputs(stage, wildcards):
    """The final targets of one stage (``networks``, ``activity``, ``perturbation``, ``report``)."""
    targets = []
    for target in STAGE_TARGETS[stage]:
        targets += target(wildcards) if callable(target) else [target]
    return targets


def final_outputs(wildcards):
    """The final targets of the workflow, stage by stage."""
    targets = [out("data/cells.h5ad"), out("strata")]
    for stage in STAGE_TARGETS:
        targets += stage_outputs(stage, wildcards)
    return targets


# each stage file adds its final targets (paths or functions of wildcards) to its stage here
STAGE_TARGETS = {"networks": [], "activity": [], "perturbation": [], "report": []}


wildcard_constraints:
    stratum="[A-Za-z0-9_]+",
    chunk="[0-9]+",
    method="[a-z0-9_]+",


def n_bootstrap_chunks():
    a = config["aracne"]
    return -(-a["bootstraps"] // a["bootstraps_per_job"])


def bootstrap_range(chunk):
    """``[first, count]``: the bootstraps of one chunk. Their seeds come from netpert.seeds in the
    job, by bootstrap index, so the networks do not depend on how bootstraps are spread over jobs.
    """
    a = config["aracne"]
    first = chunk * a["bootstraps_per_job"]
    return [first, min(a["bootstraps_per_job"], a["bootstraps"] - first)]


def aracne_mem_mb(input_mb, attempt):
    """Memory of an ARACNe job from its stratum's file size (dense ranks of every gene), doubled on retry."""
    return int(max(2000, 40 * input_mb + 500) * attempt)


# --- the jobs the workflow plans, as their benchmark files (read by the report) -------------------
# Built from the helpers that plan the jobs (kept_strata, n_bootstrap_chunks, isp_shards, the ISP
# plan, the imported networks) and each rule's own benchmark: pattern. The report reads only these
# files, so benchmark files an earlier plan left (another isp.cells_per_job, a method or a stratum
# since dropped) are not counted as jobs of this run. tests/test_workflow_plan.py holds this list
# to the jobs of Snakemake's own DAG.


def job_benchmarks(proxy, jobs=({},)):
    """The benchmark files of a rule's jobs (``proxy``: rules.<name>; one dict of wildcards per job)."""
    pattern = str(proxy.benchmark)
    return [pattern.format(**wildcards) for wildcards in jobs]


def imports_network(stratum):
    """Whether aracne_import (not netpert's ARACNe) makes this stratum's network (its constraint)."""
    return re.fullmatch(IMPORTED_STRATA, stratum) is not None


def isp_artifact_rules():
    """The rules that make the planned methods' artifacts (ONNX export, int8 model, TensorRT
    engine), and the artifact rules their own inputs need, found from the rules' files.
    """
    makers = {
        str(r.output[0]): r
        for r in (rules.export_onnx, rules.quantize_onnx, rules.build_tensorrt)
    }
    todo = [ISP_ARTIFACTS[m] for m in ISP_METHODS if m in ISP_ARTIFACTS]
    planned = []
    while todo:
        maker = makers.get(todo.pop())
        if maker is not None and maker not in planned:
            planned.append(maker)
            todo += [f for f in maker.input if isinstance(f, str)]
    return planned


def planned_benchmarks(wildcards=None):
    """The benchmark files of every job the workflow plans for the report (the report's own aside:
    it cannot time itself)."""
    strata = [{"stratum": s} for s in kept_strata()]
    built = [s for s in strata if not imports_network(s["stratum"])]
    chunks = [{**s, "chunk": c} for s in built for c in range(n_bootstrap_chunks())]
    methods = [{**s, "method": m} for m in ISP_METHODS for s in strata]
    files = job_benchmarks(rules.prepare_data) + job_benchmarks(rules.stratify)
    files += job_benchmarks(rules.aracne_threshold, built)
    files += job_benchmarks(rules.aracne_bootstrap, chunks)
    files += job_benchmarks(rules.aracne_consensus, built)
    files += job_benchmarks(
        rules.aracne_import, [s for s in strata if imports_network(s["stratum"])]
    )
    files += job_benchmarks(rules.aracne_summary)
    files += job_benchmarks(rules.viper) + job_benchmarks(rules.master_regulators)
    files += job_benchmarks(rules.isp_model)
    files += job_benchmarks(rules.isp_tokenize, strata)
    for maker in isp_artifact_rules():
        files += job_benchmarks(maker)
    if ISP_CELLS_PER_JOB:
        shards = [{**j, "shard": k} for j in methods for k in isp_shards(j["stratum"])]
        files += job_benchmarks(rules.isp_infer, shards)
        files += job_benchmarks(rules.isp_merge, methods)
    else:
        files += job_benchmarks(rules.isp_infer, methods)
    return files + job_benchmarks(rules.isp_evaluate)

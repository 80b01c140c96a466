# Helpers shared by every stage file (paths under the results folder, the strata checkpoint).
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


def isp_shards(stratum):
    """The shard indices of a stratum's ISP screen (isp.cells_per_job): its token file holds
    min(cells, isp.cells_per_stratum) cells, the cells being the strata checkpoint's count
    (n_output), so the shards are known once the strata are (netpert.isp.shards)."""
    from netpert.isp.shards import planned_shards

    folder = checkpoints.stratify.get().output[0]
    table = pd.read_csv(f"{folder}/strata.tsv", sep="\t", keep_default_na=False)
    cells = table.loc[table["slug"] == stratum, "n_output"]
    if len(cells) != 1:
        raise ValueError(f"stratum {stratum} is not once in {folder}/strata.tsv")
    isp = config["isp"]
    count = planned_shards(
        int(cells.iloc[0]), isp["cells_per_stratum"], isp["cells_per_job"]
    )
    return list(range(count))


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

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


def final_outputs(wildcards):
    """The final targets of the workflow, stage by stage as their files exist."""
    targets = [out("data/cells.h5ad"), out("strata")]
    targets += STAGE_TARGETS
    return targets


# each stage file appends its final targets (paths or functions of wildcards) here
STAGE_TARGETS = []

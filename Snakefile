# netpert: ARACNe networks -> VIPER activity and master regulators -> Geneformer in-silico
# perturbation benchmark, per cell type. Run: snakemake --cores all (README.md).
from snakemake.utils import min_version, validate

from netpert.config import coerce_config

min_version("9.0")


configfile: "config/config.yaml"


# nested --config values (aracne='{bootstraps: 200}') arrive as strings: the schema's types first
coerce_config(config, workflow.source_path("workflow/schemas/config.schema.yaml"))
validate(config, "workflow/schemas/config.schema.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/aracne.smk"
include: "workflow/rules/aracne_import.smk"
include: "workflow/rules/viper.smk"
include: "workflow/rules/isp.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        final_outputs,
    default_target: True


# stage targets (README): each runs its stage and what it needs, the strata checkpoint included
localrules:
    all,
    networks,
    activity,
    perturbation,


rule networks:
    input:
        lambda wc: stage_outputs("networks", wc),


rule activity:
    input:
        lambda wc: stage_outputs("activity", wc),


rule perturbation:
    input:
        lambda wc: stage_outputs("perturbation", wc),

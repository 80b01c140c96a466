# netpert: ARACNe networks -> VIPER activity and master regulators -> Geneformer in-silico
# perturbation benchmark, per cell type. Run: snakemake --cores all (README.md).
from snakemake.utils import min_version

from netpert.config import check_input, coerce_config, config_sources, validate_config
from netpert.errors import ConfigError

min_version("9.0")


configfile: "config/config.yaml"


# Before any rule: nested --config values (aracne='{bootstraps: 200}') arrive as strings, so the
# schema's types first; then netpert's validation (the schema's defaults filled in, as snakemake's
# validate(set_default=True)) and the input file. A wrong config stops here with netpert's one or
# two lines (key, what is wrong, where it came from) and nothing else (config/README.md).
SCHEMA = workflow.source_path("workflow/schemas/config.schema.yaml")
try:
    coerce_config(config, SCHEMA)
    if not workflow.modifier.skip_validation:
        # where each value came from: the configfile: above (unless --replace-workflow-config),
        # --configfile files, --config
        layers = config_sources(
            (
                []
                if workflow.config_settings.replace_workflow_config
                else workflow.configfiles
            ),
            workflow.config_settings.config,
            given=workflow.config_settings.configfiles,
        )
        validate_config(config, SCHEMA, layers)
    if "input" in config:
        check_input(config["input"])
except ConfigError as exc:
    raise SystemExit(f"netpert: {exc}")


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

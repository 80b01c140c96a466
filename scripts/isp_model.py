"""Rule isp_model: the Geneformer model folder (HF config + safetensors weights, token and
gene-median dictionaries, netpert_model.json provenance) for the workflow's cells."""

from netpert.isp.model import write_model
from netpert.workflow import script_logging

with script_logging(snakemake) as log:  # noqa: F821
    p = snakemake.params  # noqa: F821
    bundle = write_model(
        snakemake.input.cells,  # noqa: F821
        snakemake.output.model,  # noqa: F821
        spec=p.spec,
        seed=p.seed,
        gene_id_column=getattr(p, "gene_id_column", None),
    )
    log.info("model %s: %s", p.spec, bundle.describe())
    if not bundle.trained:
        log.warning("random weights: %s", bundle.note)

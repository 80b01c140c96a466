"""Rule isp_tokenize: one stratum's cells as Geneformer rank-value encodings + the perturbation plan (parquet)."""

import anndata as ad

from netpert.isp.tokens import tokenize_stratum
from netpert.workflow import script_logging

with script_logging(snakemake) as log:  # noqa: F821
    p = snakemake.params  # noqa: F821
    targets = getattr(snakemake.input, "targets", None)  # noqa: F821
    if targets is not None and not isinstance(targets, str):  # [] when isp.targets.source is 'list'
        targets = str(list(targets)[0]) if len(targets) else None
    meta = tokenize_stratum(
        ad.read_h5ad(snakemake.input.h5ad),  # noqa: F821
        snakemake.input.model,  # noqa: F821
        snakemake.output.tokens,  # noqa: F821
        targets_source=p.targets_source,
        targets_path=targets,
        genes=list(p.genes or []),
        top_k=p.top_k,
        perturbation=p.perturbation,
        shift_fraction=p.shift_fraction,
        pairs=bool(p.pairs),
        anchor=p.anchor,
        cells_per_stratum=p.cells_per_stratum,
        seed=p.seed,
        max_len=p.max_len,
        gene_id_column=getattr(p, "gene_id_column", None),
        source=str(snakemake.input.h5ad),  # noqa: F821
    )
    log.info(
        "stratum %s: %d of %d cells, targets %s (%s), applicable cells per perturbation %s; tokenizer %s",
        meta["stratum"],
        meta["n_cells"],
        meta["n_cells_in_stratum"],
        ", ".join(meta["targets"]),
        meta["perturbation"],
        meta["applicable"],
        meta["tokenizer"],
    )

"""Rule aracne_consensus: Poisson consensus of a stratum's bootstraps (ARACNe-AP network TSV) and its regulons."""

import anndata as ad

from netpert.aracne import build_regulons, consensus_files, write_network, write_table
from netpert.workflow import script_logging

with script_logging(snakemake):  # noqa: F821
    p = snakemake.params  # noqa: F821
    network = consensus_files(
        list(snakemake.input.boots),  # noqa: F821
        pvalue=float(p.consensus_pvalue),
        bonferroni=bool(p.bonferroni),
        expected_bootstraps=getattr(p, "n_bootstraps", None),
    )
    write_network(network, snakemake.output.network)  # noqa: F821  (header only when empty)
    regulons = build_regulons(
        network,
        ad.read_h5ad(snakemake.input.h5ad),  # noqa: F821
        max_targets=int(p.max_targets),
        min_targets=int(p.min_targets),
    )
    write_table(regulons, snakemake.output.regulon)  # noqa: F821  (header only when empty)

"""Rule aracne_consensus: Poisson consensus of a stratum's bootstraps (ARACNe-AP network TSV), its
regulons and its status (an empty network fails here, or is marked skipped with strata.skip_empty)."""

import anndata as ad

from netpert.aracne import stratum_consensus, write_network, write_status, write_table
from netpert.workflow import script_logging

with script_logging(snakemake):  # noqa: F821
    p = snakemake.params  # noqa: F821
    network, regulons, status = stratum_consensus(
        list(snakemake.input.boots),  # noqa: F821
        ad.read_h5ad(snakemake.input.h5ad),  # noqa: F821
        stratum=str(p.stratum),
        consensus_pvalue=float(p.consensus_pvalue),
        bonferroni=bool(p.bonferroni),
        max_targets=int(p.max_targets),
        min_targets=int(p.min_targets),
        expected_bootstraps=int(p.n_bootstraps),
        skip_empty=bool(p.skip_empty),
    )
    write_network(network, snakemake.output.network)  # noqa: F821
    write_table(regulons, snakemake.output.regulon)  # noqa: F821  (header only when skipped)
    write_status(status, snakemake.output.status)  # noqa: F821

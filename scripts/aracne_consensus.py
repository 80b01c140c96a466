"""Rule aracne_consensus: Poisson consensus of a stratum's bootstraps, the full-data gate (ARACNe-AP
network TSV), its regulons and its status (an empty network fails here, or is marked skipped with
strata.skip_empty)."""

import anndata as ad

from netpert.aracne import Calibration, stratum_consensus, write_network, write_status, write_table
from netpert.regulators import regulators_in
from netpert.workflow import script_logging

with script_logging(snakemake):  # noqa: F821
    p = snakemake.params  # noqa: F821
    i = snakemake.input  # noqa: F821
    cells = ad.read_h5ad(i.h5ad)
    network, regulons, status = stratum_consensus(
        list(i.boots),
        cells,
        stratum=str(p.stratum),
        consensus_pvalue=float(p.consensus_pvalue),
        bonferroni=bool(p.bonferroni),
        max_targets=int(p.max_targets),
        min_targets=int(p.min_targets),
        expected_bootstraps=int(p.n_bootstraps),
        skip_empty=bool(p.skip_empty),
        calibration=Calibration.load(i.threshold, i.info, i.null),
        regulators=regulators_in(cells.var_names, list(p.regulators), p.species),
        seed=int(p.seed),
        backend=p.backend,
    )
    write_network(network, snakemake.output.network)  # noqa: F821
    write_table(regulons, snakemake.output.regulon)  # noqa: F821  (header only when skipped)
    write_status(status, snakemake.output.status)  # noqa: F821

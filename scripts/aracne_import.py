"""Rule aracne_import: a stratum's network from a file (aracne.networks: ARACNe-AP, ARACNe3 or
regulon TSV) -> network.tsv, regulon.tsv and status.json, as aracne_consensus writes them."""

import anndata as ad

from netpert.aracne import write_network, write_status, write_table
from netpert.aracne.imported import import_status, regulons_from_file
from netpert.workflow import script_logging

with script_logging(snakemake) as log:  # noqa: F821
    p, i, o = snakemake.params, snakemake.input, snakemake.output  # noqa: F821
    cells = ad.read_h5ad(i.h5ad)
    network, regulons, fmt = regulons_from_file(i.network, cells, max_targets=p.max_targets, min_targets=p.min_targets)
    status = import_status(p.stratum, network, regulons, fmt, i.network, cells.n_obs, p.min_targets, p.skip_empty)
    write_network(network, o.network)
    write_table(regulons, o.regulon)
    write_status(status, o.status)
    log.info("%s: %s network, %d edges, %d regulons", p.stratum, fmt, status["edges"], status["regulons"])

"""ARACNe engine: ARACNe-AP's adaptive-partitioning MI, threshold, DPI, bootstraps, consensus, regulons.

Held to ARACNe-AP's own outputs by ``fixtures/aracne`` (see its README). Main entry points:

- :func:`mutual_information` -- APMI of every regulator x gene pair (numba or plain Python).
- :func:`calibrate` / :func:`calibrated_null` / :func:`calibrated_nulls` -- the calibrated null (the data permuted and resampled as the
  networks are) and per-network FDR control; :func:`compute_threshold` / :func:`threshold_for_data` -- the
  rank-permutation null and MI threshold for a p-value (ARACNe-AP's design).
- :func:`network` / :func:`bootstrap_networks` -- one or several networks (MI + threshold + DPI).
- :func:`consensus` -- Poisson consensus of bootstrap networks.
- :func:`build_regulons` -- ``regulator, target, mor, likelihood`` regulons for VIPER.
- :func:`aracne` -- all of it in one call.
- :func:`read_network` / :func:`write_network` -- ARACNe-AP network TSV.
- :func:`simulate_network` -- planted network for tests and benchmarks.
"""

from netpert.aracne.consensus import ConsensusAccumulator, consensus, consensus_files
from netpert.aracne.dpi import dpi_keep
from netpert.aracne.io import (
    read_bootstraps,
    read_network,
    read_table,
    read_threshold,
    write_network,
    write_table,
    write_threshold,
)
from netpert.aracne.mi import apmi_numba, apmi_python, mi_block
from netpert.aracne.bootstrap import bootstrap_networks, iter_mi_chunks, mutual_information, network
from netpert.aracne.calibration import calibrated_null, calibrated_nulls
from netpert.aracne.pipeline import (
    THRESHOLD_METHODS,
    Calibration,
    aracne,
    bootstrap_seeds,
    calibrate,
    network_summary,
    read_status,
    stratum_consensus,
    threshold_for_data,
    write_status,
)
from netpert.aracne.prepare import Expression, prepare_expression, rank_matrix, subsample_size
from netpert.aracne.regulon import build_regulons, spearman_edges
from netpert.aracne.simulate import simulate_network
from netpert.aracne.threshold import NullModel, aracne_ap_fit, bh_select, compute_threshold, fit_tail, null_distribution

__all__ = [
    "THRESHOLD_METHODS",
    "Calibration",
    "NullModel",
    "bh_select",
    "calibrate",
    "calibrated_null",
    "calibrated_nulls",
    "ConsensusAccumulator",
    "Expression",
    "apmi_numba",
    "apmi_python",
    "aracne",
    "aracne_ap_fit",
    "bootstrap_networks",
    "bootstrap_seeds",
    "build_regulons",
    "compute_threshold",
    "consensus",
    "consensus_files",
    "dpi_keep",
    "fit_tail",
    "iter_mi_chunks",
    "mi_block",
    "mutual_information",
    "network_summary",
    "read_status",
    "stratum_consensus",
    "write_status",
    "network",
    "null_distribution",
    "prepare_expression",
    "rank_matrix",
    "read_bootstraps",
    "read_network",
    "read_table",
    "read_threshold",
    "simulate_network",
    "spearman_edges",
    "subsample_size",
    "threshold_for_data",
    "write_network",
    "write_table",
    "write_threshold",
]

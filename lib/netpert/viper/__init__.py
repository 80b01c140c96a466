"""VIPER engine: per-cell protein activity from regulons, as R/Bioconductor viper computes it.

Held to R viper 1.41's outputs by ``fixtures/viper`` (see its README). Main entry points:

- :func:`viper` -- NES of every regulator in every cell (signatures, aREA, metaVIPER over several
  networks, pleiotropy correction), in blocks of cells, dense or sparse input.
- :func:`compute_signature` / :class:`Signature` -- the per-cell signatures (none, scale, rank, mad, ttest,
  doublerank).
- :func:`area_block` / :func:`prepare_network` -- the aREA kernel (numba and plain Python).
- :func:`msviper`, :func:`ttest_null`, :func:`row_ttest`, :func:`aecdf_nes` -- msVIPER with a
  sample-permutation null model.
- :func:`nes_pvalues` -- per-cell two-sided p-values and Benjamini-Hochberg adjustment.
- :func:`master_regulators` -- top regulators per stratum (both directions) with a test.
- :func:`read_regulons` / :func:`validate_regulons` -- regulon tables.
- :func:`activity_anndata`, :func:`run_viper`, :func:`run_master_regulators` -- workflow steps.
"""

from netpert.viper.area import Network, area_block, prepare_network
from netpert.viper.io import REGULON_COLUMNS, read_regulons, validate_regulons
from netpert.viper.master import master_regulators
from netpert.viper.meta import choose_network, combine, integrate
from netpert.viper.null import aecdf_nes, msviper, nes_pvalues, row_ttest, ttest_null
from netpert.viper.pipeline import activity_anndata, run_master_regulators, run_viper, viper
from netpert.viper.pleiotropy import PleiotropyArgs, shadow_regulon
from netpert.viper.signature import METHODS, Signature, compute_signature

__all__ = [
    "METHODS",
    "REGULON_COLUMNS",
    "Network",
    "PleiotropyArgs",
    "Signature",
    "activity_anndata",
    "aecdf_nes",
    "area_block",
    "choose_network",
    "combine",
    "compute_signature",
    "integrate",
    "master_regulators",
    "msviper",
    "nes_pvalues",
    "prepare_network",
    "read_regulons",
    "row_ttest",
    "run_master_regulators",
    "run_viper",
    "shadow_regulon",
    "ttest_null",
    "validate_regulons",
    "viper",
]

"""NaRnEA (netpert.viper.narnea) against pyviper's outputs (fixtures/narnea), and its own checks."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from scipy.special import ndtri

from netpert.errors import InputError
from netpert.viper import activity_anndata, viper
from netpert.viper.area import prepare_network
from netpert.viper.narnea import MOR_CAP, narnea_block, ppnd7_upper

FIX = Path(__file__).parent / "data" / "fixtures" / "narnea"
EXPR = pd.read_csv(FIX / "expr.tsv.gz", sep="\t", index_col=0)
NET1 = pd.read_csv(FIX / "network1.tsv", sep="\t")
NET2 = pd.read_csv(FIX / "network2.tsv", sep="\t")
CASES = {
    "none": ("none", False, NET1),
    "scale": ("scale", False, NET1),
    "mad": ("mad", False, NET1),
    "ttest": ("ttest", False, NET1),
    "scale_eset": ("scale", True, NET1),
    "scale_meta": ("scale", False, {"net1": NET1, "net2": NET2}),
}


def _ref(case: str, key: str) -> pd.DataFrame:
    return pd.read_csv(FIX / f"{case}.{key}.tsv.gz", sep="\t", index_col=0)


@pytest.mark.parametrize("backend", ["numba", "python"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_nes_and_pes_equal_pyviper(case, backend):
    method, eset, nets = CASES[case]
    nes = viper(EXPR, nets, method=method, eset_filter=eset, min_targets=30, enrichment="narnea", backend=backend)
    ref_nes, ref_pes = _ref(case, "nes"), _ref(case, "pes")
    assert set(nes.columns) == set(ref_nes.columns) and set(nes.index) == set(ref_nes.index)
    np.testing.assert_allclose(nes.loc[ref_nes.index, ref_nes.columns], ref_nes, rtol=0, atol=1e-9)
    pes = nes.attrs["pes"]
    np.testing.assert_allclose(pes.loc[ref_pes.index, ref_pes.columns], ref_pes, rtol=0, atol=1e-9)
    assert (pes.abs().to_numpy() <= 1 + 1e-12).all()


def test_blocks_do_not_change_results():
    whole = viper(EXPR, {"a": NET1, "b": NET2}, method="scale", min_targets=30, enrichment="narnea")
    blocks = viper(EXPR, {"a": NET1, "b": NET2}, method="scale", min_targets=30, enrichment="narnea", block_size=7)
    np.testing.assert_allclose(blocks, whole, atol=1e-12)
    np.testing.assert_allclose(blocks.attrs["pes"], whole.attrs["pes"], atol=1e-12)


def test_zeros_and_modes_are_deterministic():
    rng = np.random.default_rng(1)
    x = EXPR.to_numpy().copy()
    x[rng.random(x.shape) < 0.3] = 0.0  # exact zeros: tied ranks, sign 0
    net = NET1.copy()
    net.loc[net.index[::7], "mor"] = 0.0  # purely undirected edges
    net_obj = prepare_network(net, EXPR.columns, min_targets=30)
    a = narnea_block(x, net_obj, "numba")
    b = narnea_block(x, net_obj, "python")
    np.testing.assert_allclose(a[0], b[0], atol=1e-10)
    np.testing.assert_allclose(a[1], b[1], atol=1e-10)
    np.testing.assert_array_equal(narnea_block(x, net_obj)[0], a[0])  # no randomness
    # a mode of exactly +-1 is +-0.999, as pyviper; modes between 0.999 and 1 stay as they are
    # (clipping them too was the cause of a 0.42 disagreement with pyviper on large regulons)
    exact = NET1["mor"].abs() == 1
    near = (NET1["mor"].abs() > MOR_CAP) & ~exact
    assert exact.any() and near.any()
    capped = NET1.assign(mor=NET1["mor"].where(~exact, np.sign(NET1["mor"]) * MOR_CAP))
    clipped = NET1.assign(mor=NET1["mor"].clip(-MOR_CAP, MOR_CAP))
    ours = narnea_block(x, prepare_network(NET1, EXPR.columns, min_targets=30))[0]
    np.testing.assert_array_equal(narnea_block(x, prepare_network(capped, EXPR.columns, min_targets=30))[0], ours)
    assert np.abs(narnea_block(x, prepare_network(clipped, EXPR.columns, min_targets=30))[0] - ours).max() > 1e-6


def test_ppnd7_is_the_normal_quantile_to_seven_digits():
    p = np.concatenate([np.logspace(-300, -1, 400), np.linspace(0.1, 0.5, 50)])
    z = ppnd7_upper(np.log(p))
    np.testing.assert_allclose(z, -ndtri(p), rtol=2e-7, atol=1e-7)


def test_activity_layers_and_errors():
    cells = ad.AnnData(EXPR.to_numpy(), obs=pd.DataFrame(index=EXPR.index), var=pd.DataFrame(index=EXPR.columns))
    act = activity_anndata(cells, NET1, method="scale", min_targets=30, enrichment="narnea")
    assert act.layers["pes"].shape == act.shape and np.isfinite(act.layers["pes"]).all()
    assert act.uns["viper"]["enrichment"] == "narnea"
    area = activity_anndata(cells, NET1, method="scale", min_targets=30)
    assert "pes" not in area.layers
    with pytest.raises(InputError, match="unknown enrichment 'gsea'"):
        viper(EXPR, NET1, enrichment="gsea")
    with pytest.raises(InputError, match="pleiotropy correction is aREA's"):
        viper(EXPR, NET1, enrichment="narnea", pleiotropy=True, min_targets=30)
    with pytest.raises(InputError, match="integrates networks by their PES"):
        viper(EXPR, {"a": NET1, "b": NET2}, enrichment="narnea", network_choice="auto", min_targets=30)


def test_fused_scores_kernel_equals_the_numpy_expressions():
    from scipy.special import log_ndtr

    from netpert.viper.narnea import _combine_nb, _log_ndtr_nb, combine_nes

    a = np.concatenate([-np.logspace(-3, 3, 300), np.logspace(-3, 1.6, 200), [0.0, -20.0, -19.999, 6.0, 6.001]])
    np.testing.assert_allclose([_log_ndtr_nb(x) for x in a], log_ndtr(a), rtol=1e-13, atol=1e-300)
    rng = np.random.default_rng(3)
    d, u = rng.normal(0, 15, 2000), rng.normal(0, 15, 2000)
    cov = rng.uniform(-0.9, 0.9, 2000)
    np.testing.assert_allclose([_combine_nb(*t) for t in zip(d, u, cov)], combine_nes(d, u, cov), rtol=1e-12, atol=1e-12)

"""netpert.aracne.estimators: the copula estimator, its depth conditioning, the registry, and the
full-data gate of the consensus."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy.special import ndtri
from scipy.stats import rankdata

import netpert.aracne as A
from netpert.aracne.estimators import COPULA_MIN_NONZERO, depth_basis, gaussian_mi, resolve_estimator, transform
from netpert.aracne.pipeline import DEFAULT_FDR
from netpert.errors import InputError

ROOT = Path(__file__).resolve().parents[1]


def _corr(z):
    return z @ z.T


def test_copula_without_zeros_is_the_normal_score_correlation():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 200))
    x[1] = x[0] + 0.5 * rng.normal(size=200)
    x[2] = np.exp(x[0]) + rng.normal(size=200)  # monotone: the copula does not care about the margins
    z = transform("copula", x, np.arange(200), rng)
    ns = ndtri(rankdata(x, axis=1) / 201.0)
    np.testing.assert_allclose(_corr(z), np.corrcoef(ns), atol=1e-12)
    assert depth_basis(x).shape == (200, 0)  # no zeros: no depth to remove
    mi = A.mutual_information(pd.DataFrame(x.T, columns=[f"g{i}" for i in range(6)]), ["g0"], estimator="copula", progress=False)
    got = dict(zip(mi["target"].astype(str), mi["mi"]))
    r01 = np.corrcoef(ns)[0, 1]
    assert got["g1"] == pytest.approx(-0.5 * np.log(1 - r01**2), rel=1e-12)
    assert got["g1"] > 0.3 and got["g2"] > 0.3 and max(got["g3"], got["g4"], got["g5"]) < 0.05


def test_gaussian_mi():
    np.testing.assert_allclose(gaussian_mi(np.array([0.0, 0.5, -0.5])), [0.0, -0.5 * np.log(0.75), -0.5 * np.log(0.75)])
    assert np.isfinite(gaussian_mi(np.array([1.0]))).all()


def test_copula_removes_what_genes_share_with_depth():
    # genes that depend on each other only through the cell's library size (Poisson around a size factor)
    rng = np.random.default_rng(1)
    size = np.exp(rng.normal(0, 0.5, 400))
    X = rng.poisson(size[None, :] * rng.uniform(0.2, 3.0, 60)[:, None]).astype(float)  # genes x cells
    plain = np.corrcoef(rankdata(X, axis=1))
    z = transform("copula", X, np.arange(400), rng)
    cond = _corr(z)
    off = ~np.eye(60, dtype=bool)
    assert plain[off].mean() > 0.15  # depth makes unrelated genes look dependent
    assert abs(cond[off].mean()) < 0.02 and np.abs(cond[off]).max() < 0.3
    # a real dependence survives the conditioning
    X[1] = X[0] + rng.poisson(1.0, 400)
    z = transform("copula", X, np.arange(400), rng)
    assert _corr(z)[0, 1] > 0.5


def test_copula_leaves_out_genes_seen_in_too_few_samples():
    rng = np.random.default_rng(2)
    X = rng.poisson(2.0, size=(3, 100)).astype(float)
    X[2] = 0
    X[2, : COPULA_MIN_NONZERO - 1] = 1  # nonzero in too few cells
    z = transform("copula", X, np.arange(100), rng)
    assert np.all(z[2] == 0) and np.linalg.norm(z[0]) == pytest.approx(1.0)
    X[2, COPULA_MIN_NONZERO - 1] = 1
    assert np.linalg.norm(transform("copula", X, np.arange(100), rng)[2]) == pytest.approx(1.0)


def test_resolve_estimator():
    assert resolve_estimator("auto", "calibrated")[0] == "copula"
    assert resolve_estimator("auto", "aracne-ap")[0] == "apmi" and resolve_estimator("AUTO", "fit")[0] == "apmi"
    assert resolve_estimator("apmi", "aracne-ap")[0] == "apmi"
    with pytest.raises(InputError, match="threshold_method 'aracne-ap'.*copula.*calibrated"):
        resolve_estimator("copula", "aracne-ap")
    with pytest.raises(InputError, match="aracne.estimator"):
        resolve_estimator("kendall")
    with pytest.raises(InputError, match="unknown MI estimator"):
        A.network(pd.DataFrame(np.ones((20, 3)), columns=list("abc")), ["a"], 0.1, estimator="auto")


def test_schema_defaults_are_the_library_defaults():
    schema = yaml.safe_load((ROOT / "workflow" / "schemas" / "config.schema.yaml").read_text())
    aracne = schema["properties"]["aracne"]["properties"]
    assert aracne["fdr"]["default"] == DEFAULT_FDR
    assert aracne["estimator"]["default"] == "auto" and aracne["estimator"]["enum"] == ["auto", "apmi", "copula"]
    assert schema["properties"]["strata"]["properties"]["metacells"]["properties"]["enabled"]["default"] is False
    import inspect

    for fn in (A.aracne, A.calibrate):
        sig = inspect.signature(fn).parameters
        assert sig["fdr"].default == DEFAULT_FDR and sig["estimator"].default == "auto"


def test_calibration_records_the_estimator_and_the_full_null(tmp_path):
    data, _ = A.simulate_network(n_cells=200, n_regulators=4, n_targets=30, seed=4, counts=True)
    regs = [g for g in data.var_names if g.startswith("TF")]
    cal = A.calibrate(data, regs, seed=2)
    assert cal.estimator == "copula" and cal.full is not None and cal.info["full_data_gate"] is True
    assert cal.full.info["resampling"] == "none" and cal.null.info["resampling"] == "subsample"
    # the full-data null is of more samples: its upper tail sits lower
    assert cal.full.threshold(1e-3) < cal.null.threshold(1e-3)
    cal.save(tmp_path / "t.txt", tmp_path / "t.json", tmp_path / "n.npz")
    back = A.Calibration.load(tmp_path / "t.txt", tmp_path / "t.json", tmp_path / "n.npz")
    assert back.estimator == "copula" and back.fdr == cal.fdr
    np.testing.assert_array_equal(back.full.top, cal.full.top)
    np.testing.assert_array_equal(back.null.top, cal.null.top)
    assert back.cut()["estimator"] == "copula"
    ap = A.calibrate(data, regs, method="aracne-ap", fdr=None)
    assert ap.estimator == "apmi" and ap.full is None


def test_full_data_gate_drops_edges_the_whole_data_does_not_hold():
    data, _ = A.simulate_network(n_cells=200, n_regulators=4, n_targets=30, seed=5, counts=True)
    regs = [g for g in data.var_names if g.startswith("TF")]
    cal = A.calibrate(data, regs, seed=1)
    full = A.network(data, regs, seed=1, resampling=None, dpi=False, progress=False,
                     **dict(cal.cut(), null=cal.full, threshold=None))
    assert len(full) > 5
    fake = pd.DataFrame({"regulator": [str(full["regulator"].iloc[0]), regs[0]],
                         "target": [str(full["target"].iloc[0]), "not-an-edge"], "mi": [0.5, 0.5], "pvalue": [0.0, 0.0],
                         "count": [9, 9]})
    kept = cal.gate(fake, data, regs, seed=1)
    assert list(kept["target"]) == [str(full["target"].iloc[0])]
    # without a full-data null (ARACNe-AP's threshold) the consensus passes unchanged
    ap = A.calibrate(data, regs, method="aracne-ap", fdr=None)
    assert len(ap.gate(fake, data, regs, seed=1)) == 2


def test_permuted_counts_give_an_empty_consensus():
    """The calibration on a small permuted null of counts: nothing survives the consensus and the gate."""
    data, _ = A.simulate_network(n_cells=300, n_regulators=6, n_targets=60, seed=6, counts=True)
    null = data.copy()
    rng = np.random.default_rng(0)
    X = null.X.toarray()
    null.X = np.stack([rng.permutation(X[:, j]) for j in range(X.shape[1])], axis=1)
    regs = [g for g in data.var_names if g.startswith("TF")]
    net = A.aracne(null, regs, bootstraps=20, seed=3, progress=False)
    assert len(net) <= 1
    real = A.aracne(data, regs, bootstraps=20, seed=3, progress=False)
    assert len(real) > 20


@pytest.mark.parametrize("case", range(18))
def test_normal_scores_numba_equals_rankdata_bit_for_bit(case):
    """The copula transform's fast normal scores (read off the rows' sorted samples, ties averaged)
    equal scipy's rankdata + ndtri exactly, for bootstraps, subsamples and permuted genes."""
    from netpert.aracne.estimators import normal_scores

    rng = np.random.default_rng(case)
    genes, n = int(rng.integers(1, 30)), int(rng.integers(2, 120))
    if case % 3 == 0:
        values = rng.normal(size=(genes, n))
    else:
        values = rng.poisson(rng.uniform(0.05, 3.0), size=(genes, n)).astype(np.float32 if case % 2 else np.float64)
    idx = [rng.integers(0, n, n), np.sort(rng.choice(n, max(2, n // 2), replace=False)), np.arange(n)][case % 3]
    perm = None if case % 4 == 0 else np.argsort(rng.random((genes, n)), axis=1)
    z, sub = normal_scores(values, idx, "numba", perm)
    z_ref, sub_ref = normal_scores(values, idx, "python", perm)
    assert np.array_equal(z, z_ref) and np.array_equal(sub, sub_ref) and sub.dtype == sub_ref.dtype
    rows = values if perm is None else np.take_along_axis(values, perm, axis=1)
    assert np.array_equal(z_ref, ndtri(rankdata(rows[:, idx], axis=1) / (len(idx) + 1.0)))
    a = transform("copula", values, idx, rng, "numba", perm=perm)
    assert np.array_equal(a, transform("copula", values, idx, rng, "python", perm=perm))

"""Calibrated thresholds: the null built from permuted, resampled data; per-network FDR; the seed scheme."""

import numpy as np
import pandas as pd
import pytest
from scipy.stats import false_discovery_control

import netpert.aracne as A
from netpert import InputError, seeds
from netpert.aracne.prepare import ensure_expression


def noise_frame(n=120, genes=150, seed=0):
    rng = np.random.default_rng(seed)
    return pd.DataFrame(rng.standard_normal((n, genes)), columns=[f"g{i:03d}" for i in range(genes)])


REGS = [f"g{i:03d}" for i in range(15)]


def union_edges(data, regs, **kw):
    """Every edge of any bootstrap (no consensus filter): what the bootstraps let through."""
    return A.aracne(data, regs, seed=3, progress=False, consensus_pvalue=1.0, bonferroni=False, **kw)


def test_calibrated_null_holds_subsampled_noise_networks_empty():
    """Subsampling (the default) draws distinct samples, so every network has the null's distribution:
    BH on a complete null lets through any edge with probability <= fdr per network."""
    union = union_edges(noise_frame(), REGS, bootstraps=10, resampling="subsample", fdr=0.05)
    assert len(union) <= 4


def test_calibrated_null_bootstrap_consensus_on_noise(tmp_path):
    """With bootstraps, duplicated samples raise the MI of a whole network at once (the null mixes
    over draws), so single networks can pass false pairs; the consensus keeps none of them, while the
    rank-permutation null ("fit", ARACNe-AP's design) lets many more through (the test can fail)."""
    data = noise_frame()
    kw = dict(bootstraps=10, resampling="bootstrap")
    cal = union_edges(data, REGS, fdr=0.05, **kw)
    old = union_edges(data, REGS, threshold_method="fit", pvalue=1e-6, fdr=None, cache_dir=tmp_path, **kw)
    assert len(old) > 3 * max(len(cal), 1)
    consensus = A.aracne(data, REGS, seed=3, progress=False, fdr=0.05, **kw)
    assert len(consensus) == 0


def test_calibrated_null_is_calibrated_at_a_pvalue():
    """On independent null data, the fraction of pairs above the null's p-quantile is about p."""
    data = noise_frame(n=100, genes=120, seed=1)
    null = A.calibrated_null(data, REGS, resampling="bootstrap", seed=5)
    fresh = noise_frame(n=100, genes=120, seed=2)
    expr = ensure_expression(fresh, REGS)
    hits, tests = 0, 0
    thr = null.threshold(1e-3)
    for s in A.bootstrap_seeds(11, 30):
        net = A.network(expr, None, thr, seed=s, resampling="bootstrap", dpi=False, progress=False)
        hits += len(net)
        tests += len(expr.reg_rows) * (expr.n_genes - 1)
    rate = hits / tests
    assert 0.4e-3 < rate < 2.0e-3, rate
    # p-values are monotone and consistent with the threshold
    mi = np.linspace(0.0, 2 * null.top[0], 50)
    p = null.pvalues(mi)
    assert np.all(np.diff(p) <= 1e-12) and p[0] == pytest.approx(1.0, abs=1e-3)
    assert null.pvalues([thr])[0] == pytest.approx(1e-3, rel=0.1)


def test_null_model_save_load(tmp_path):
    null = A.calibrated_null(noise_frame(60, 40), REGS[:5], seed=1, target_pairs=20_000)
    null.save(tmp_path / "null.npz")
    back = A.NullModel.load(tmp_path / "null.npz")
    assert np.array_equal(back.top, null.top) and back.n_total == null.n_total and back.info == null.info
    with pytest.raises(InputError, match="does not exist"):
        A.NullModel.load(tmp_path / "missing.npz")


def test_given_null_data_is_used_and_checked():
    data = noise_frame(80, 60)
    permuted = pd.DataFrame(np.random.default_rng(0).permuted(data.to_numpy(), axis=0), columns=data.columns)
    null = A.calibrated_null(data, REGS[:5], null_data=permuted, seed=1, target_pairs=50_000)
    assert null.info["source"].startswith("the given null data") and null.info["null_samples"] == 80
    with pytest.raises(InputError, match="null data do not fit"):
        A.calibrated_null(data, REGS[:5], null_data=permuted.rename(columns=lambda c: c + "x"), seed=1)
    with pytest.raises(InputError, match="fewer than the"):
        A.calibrated_null(data, REGS[:5], null_data=permuted.iloc[:30], resampling="subsample", seed=1)


def test_bh_select_matches_scipy():
    rng = np.random.default_rng(0)
    p = np.concatenate([rng.uniform(0, 1, 900), rng.uniform(0, 1e-4, 100)])
    expected = np.flatnonzero(false_discovery_control(p, method="bh") <= 0.05)
    assert np.array_equal(A.bh_select(p, len(p), 0.05), expected)
    # only the candidates (p <= fdr) need to be passed, with m counting every test
    cand = np.flatnonzero(p <= 0.05)
    assert np.array_equal(cand[A.bh_select(p[cand], len(p), 0.05)], expected)
    with pytest.raises(InputError):
        A.bh_select(p, len(p), 0.0)


def test_calibrate_errors():
    data = noise_frame(60, 40)
    with pytest.raises(InputError, match="needs aracne.fdr: null|set aracne.fdr: null"):
        A.calibrate(data, REGS[:5], method="aracne-ap", fdr=0.05)
    with pytest.raises(InputError, match="unknown threshold method"):
        A.calibrate(data, REGS[:5], method="exact")
    with pytest.raises(InputError, match=r"\(0, 1\)"):
        A.calibrate(data, REGS[:5], fdr=1.0)
    with pytest.raises(InputError, match="FDR threshold needs the null"):
        A.network(data, REGS[:5], None, fdr=0.05)


def test_calibration_files_round_trip(tmp_path):
    data = noise_frame(60, 40)
    cal = A.calibrate(data, REGS[:5], fdr=0.1, seed=2)
    files = [tmp_path / "threshold.txt", tmp_path / "threshold.json", tmp_path / "null.npz"]
    cal.save(*files)
    back = A.Calibration.load(*files)
    assert back.fdr == 0.1 and back.threshold == cal.threshold and np.array_equal(back.null.top, cal.null.top)


# ------------------------------------------------------------------------------------------- seeds
def test_bootstrap_seeds_do_not_depend_on_chunks_and_differ_between_seeds():
    whole = A.bootstrap_seeds(7, 10)
    assert A.bootstrap_seeds(7, 4) + A.bootstrap_seeds(7, 6, start=4) == whole
    assert len(set(whole)) == 10
    assert not set(A.bootstrap_seeds(1, 100)) & set(A.bootstrap_seeds(2, 100))
    assert seeds.derive(1, "null", 0) != seeds.derive(1, "bootstrap", 0)
    with pytest.raises(ValueError):
        seeds.derive(1, "nonsense")


def test_different_seeds_give_independent_networks():
    data, truth = A.simulate_network(n_cells=120, n_regulators=5, n_targets=40, seed=2)
    regs = [g for g in data.var_names if g.startswith("TF")]
    expr = ensure_expression(data, regs)
    cal = A.calibrate(expr, None, fdr=0.05, seed=1)
    a = A.network(expr, None, seed=A.bootstrap_seeds(1, 1)[0], progress=False, **cal.cut())
    b = A.network(expr, None, seed=A.bootstrap_seeds(2, 1)[0], progress=False, **cal.cut())
    c = A.network(expr, None, seed=A.bootstrap_seeds(1, 1)[0], progress=False, **cal.cut())
    assert a.equals(c) and not a.equals(b)


def test_null_summary_equals_partition_and_quantile():
    from netpert.aracne.threshold import GRID_PROBABILITIES, summarize_null

    rng = np.random.default_rng(0)
    for n in (1, 7, 1000, 12_345, 200_001):
        values = np.round(rng.exponential(size=n), 3)  # ties
        k = min(n, 50)
        top, grid = summarize_null(values, k)
        np.testing.assert_array_equal(top, -np.sort(-np.partition(values, n - k)[n - k:]))
        np.testing.assert_array_equal(grid, np.quantile(values, GRID_PROBABILITIES, method="inverted_cdf"))


@pytest.mark.parametrize("estimator", ["copula", "apmi"])
def test_calibrated_nulls_in_one_pass_equal_each_alone_and_the_reference(estimator):
    """calibrate draws the networks' null and the full-data gate's null in one pass; each equals the
    null drawn alone, and the numba path (permutations read off the sorted data, never applied)
    equals the plain reference that permutes the data."""
    rng = np.random.default_rng(3)
    data = pd.DataFrame(rng.poisson(rng.uniform(0.1, 3.0, 12), size=(40, 12)).astype(float), columns=[f"g{i:03d}" for i in range(12)])
    regs = [f"g{i:03d}" for i in range(3)]
    kw = dict(seed=2, target_pairs=150, estimator=estimator)
    both = A.calibrated_nulls(data, regs, ("subsample", None, "bootstrap"), **kw)
    for resampling, null in zip(("subsample", None, "bootstrap"), both):
        alone = A.calibrated_null(data, regs, resampling, **kw)
        ref = A.calibrated_null(data, regs, resampling, backend="python", **kw)
        for other in (alone, ref):
            np.testing.assert_array_equal(null.top, other.top)
            np.testing.assert_array_equal(null.grid, other.grid)
            assert null.n_total == other.n_total and null.info == other.info


def test_fit_calibration_draws_its_null_once(monkeypatch):
    import netpert.aracne.pipeline as P

    calls = []
    real = P.null_distribution
    monkeypatch.setattr(P, "null_distribution", lambda *a, **k: calls.append(a) or real(*a, **k))
    cal = A.calibrate(noise_frame(40, 20), REGS[:3], method="fit", fdr=0.1, resampling="bootstrap")
    assert len(calls) == 1
    thr, _ = A.compute_threshold(40, 1e-8)
    assert cal.threshold == thr and cal.null.n_total == 3000 * 2999 // 2


def test_radix_sort_of_null_values_equals_numpy():
    from netpert.aracne.threshold import sort_values

    rng = np.random.default_rng(1)
    for n in (0, 5, 5000, 300_001):
        x = rng.exponential(size=n) - 0.01  # a few negative values, as APMI can give
        x[: n // 10] = np.round(x[: n // 10], 2)  # ties
        x[n // 10 : n // 10 + 50] = -0.0
        x[n // 5 : n // 5 + 50] = 0.0
        np.testing.assert_array_equal(sort_values(x), np.sort(x))
        np.testing.assert_array_equal(sort_values(x, backend="python"), np.sort(x))


def test_bh_select_prefilter_equals_plain_benjamini_hochberg():
    """bh_select drops candidates that cannot be rejected before sorting; the rejections are BH's."""

    def plain(p, m, fdr):
        order = np.argsort(p, kind="mergesort")
        ok = np.flatnonzero(p[order] <= fdr * np.arange(1, len(p) + 1) / m)
        return np.sort(order[: ok[-1] + 1]) if len(ok) else np.zeros(0, np.int64)

    rng = np.random.default_rng(2)
    for case in range(200):
        k = int(rng.integers(1, 400))
        m = k + int(rng.integers(0, 5000))
        p = np.where(rng.random(k) < 0.3, rng.random(k) * 1e-4, rng.random(k))
        p[rng.random(k) < 0.2] = p[0]  # ties
        fdr = float(rng.choice([0.01, 0.05, 0.15, 0.5]))
        np.testing.assert_array_equal(A.bh_select(p, m, fdr), plain(p, m, fdr))

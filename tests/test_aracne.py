"""netpert.aracne held to ARACNe-AP's own outputs (fixtures/aracne) and its kernels to their references."""

import math

import numpy as np
import pandas as pd
import pytest

import netpert.aracne as A
from netpert.aracne.dpi import dpi_keep
from netpert.aracne.mi import apmi_numba, apmi_python, mi_pairs_numba, mi_pairs_python
from netpert.aracne.prepare import rank_matrix
from netpert.aracne.threshold import (
    aracne_ap_null_vectors,
    all_pairs_mi,
    fit_null_vectors,
    fit_tail,
    null_distribution,
    tail_probability,
)


@pytest.fixture(scope="module")
def fx(fixtures_dir):
    d = fixtures_dir / "aracne"
    expr = pd.read_csv(d / "expr.tsv", sep="\t", index_col=0, float_precision="round_trip").T  # samples x genes
    tfs = [line.strip() for line in (d / "tfs.txt").read_text().splitlines() if line.strip()]
    threshold = float((d / "threshold.txt").read_text())
    return {"dir": d, "expr": expr, "tfs": tfs, "threshold": threshold}


def edge_set(df):
    return set(zip(df["regulator"].astype(str), df["target"].astype(str)))


def merged(ours, ref):
    m = ours.astype({"regulator": str, "target": str}).merge(ref, on=["regulator", "target"], suffixes=("", "_ref"))
    return m


# ----------------------------------------------------------------------------------------- MI


def test_ranks_match_aracne_ap(fx):
    ranks = A.rank_matrix(fx["expr"].to_numpy().T, None, 0)
    ref = pd.read_csv(fx["dir"] / "ranks.tsv", sep="\t", index_col=0)
    assert list(ref.index) == list(fx["expr"].columns)
    np.testing.assert_array_equal(ranks, ref.to_numpy())


@pytest.mark.parametrize("backend", ["numba", "python"])
def test_mi_matches_fixture(fx, backend):
    mi = A.mutual_information(fx["expr"], fx["tfs"], backend=backend, progress=False)
    ref = pd.read_csv(fx["dir"] / "mi.tsv", sep="\t", float_precision="round_trip")
    assert len(mi) == len(ref) == 20 * 299
    m = merged(mi, ref)
    assert len(m) == len(ref)
    assert np.max(np.abs(m["mi"] - m["mi_ref"])) <= 1e-12
    # in fact the arithmetic is ARACNe-AP's: bit-identical on this fixture
    assert (m["mi"] == m["mi_ref"]).mean() > 0.99


def test_mi_numba_equals_python_random():
    rng = np.random.default_rng(7)
    for n in (10, 11, 37, 64, 129, 200):
        # counts-like data with ties, plus strong (monotone and non-monotone) dependence
        base = rng.normal(size=n)
        cols = [rng.poisson(1.0, n), base, base**2 + 0.1 * rng.normal(size=n), -base + 0.3 * rng.normal(size=n)]
        cols += [rng.normal(size=n) for _ in range(8)]
        values = np.array(cols, dtype=np.float64)
        ranks = rank_matrix(values, None, n)
        reg = np.arange(4)
        a = A.mi_block(ranks, reg, backend="numba")
        b = A.mi_block(ranks, reg, backend="python")
        np.testing.assert_array_equal(a, b)
    # 0-based ranks (ARACNe-AP's null) and single pairs
    vec = aracne_ap_null_vectors(23, 6, 3)
    np.testing.assert_array_equal(all_pairs_mi(vec, "numba"), all_pairs_mi(vec, "python"))
    x, y = vec[0], vec[1]
    assert apmi_numba(x, y) == apmi_python(x, y)
    rows_a, rows_b = np.array([0, 1, 2]), np.array([3, 4, 5])
    np.testing.assert_array_equal(mi_pairs_numba(vec, rows_a, rows_b), mi_pairs_python(vec, rows_a, rows_b))


def test_mi_definition_by_hand():
    # identical vectors of n = 4: the top cell splits into 2 diagonal quadrants of 2 points each
    x = np.array([1, 2, 3, 4], dtype=np.int32)
    expected = (2 * math.log(2 / 4) * 2) / 4 + math.log(4)  # = ln 2
    assert apmi_python(x, x) == pytest.approx(expected, abs=1e-15)
    assert apmi_numba(x, x) == apmi_python(x, x)
    with pytest.raises(ValueError, match="permutation"):  # tied ranks would never end the partition
        apmi_numba([1, 1, 2, 3], [1, 2, 3, 4])


def test_rank_ties_numba_equals_python_and_are_permutations():
    rng = np.random.default_rng(0)
    values = rng.poisson(0.7, size=(30, 50)).astype(np.float32)
    idx = rng.integers(0, 50, 50)  # a bootstrap: duplicated samples tie
    a = rank_matrix(values, idx, np.random.default_rng(5), backend="numba")
    b = rank_matrix(values, idx, np.random.default_rng(5), backend="python")
    np.testing.assert_array_equal(a, b)
    assert all(sorted(r) == list(range(1, 51)) for r in a.tolist())
    # larger values get smaller ranks
    g = values[0, idx]
    assert np.all((g[:, None] > g[None, :]) <= (a[0][:, None] < a[0][None, :]))
    c = rank_matrix(values, idx, np.random.default_rng(6))
    assert not np.array_equal(a, c)  # ties broken differently for another seed


@pytest.mark.parametrize("case", range(24))
def test_rank_from_sorted_order_equals_python(case):
    """The fast ranking reads every resample (bootstrap, subsample, all; each gene permuted or not)
    off the rows' sorted samples; it equals the reference that sorts each resampled gene."""
    from netpert.aracne.prepare import sort_rows

    rng = np.random.default_rng(case)
    genes, n = int(rng.integers(1, 40)), int(rng.integers(2, 90))
    if case % 3 == 0:
        values = rng.normal(size=(genes, n))
    else:  # counts: long runs of zeros and other ties
        values = rng.poisson(rng.uniform(0.05, 3.0), size=(genes, n)).astype(np.float32 if case % 2 else np.float64)
    idx = [rng.integers(0, n, n), np.sort(rng.choice(n, max(2, n // 2), replace=False)), np.arange(n)][case % 3]
    perm = None if case % 4 == 0 else np.argsort(rng.random((genes, n)), axis=1)
    order = sort_rows(values) if case % 2 else None
    a = rank_matrix(values, idx, np.random.default_rng(case), backend="numba", perm=perm, order=order)
    b = rank_matrix(values, idx, np.random.default_rng(case), backend="python", perm=perm)
    np.testing.assert_array_equal(a, b)
    assert all(sorted(r) == list(range(1, len(idx) + 1)) for r in a.tolist())


# ----------------------------------------------------------------------------------------- DPI


@pytest.mark.parametrize("backend", ["numba", "python"])
def test_dpi_on_fixture_network(fx, backend):
    nodpi = A.read_network(fx["dir"] / "network_nodpi.tsv")
    dpi = A.read_network(fx["dir"] / "network_dpi.tsv")
    genes = sorted(set(nodpi["regulator"]) | set(nodpi["target"]))
    gi = {g: i for i, g in enumerate(genes)}
    keep = dpi_keep(nodpi["regulator"].map(gi), nodpi["target"].map(gi), nodpi["mi"], len(genes),
                    [gi[t] for t in fx["tfs"] if t in gi], backend=backend)
    assert edge_set(nodpi[keep]) == edge_set(dpi)
    assert len(dpi) == 189 and len(nodpi) == 292


@pytest.mark.parametrize("dpi,name", [(False, "network_nodpi.tsv"), (True, "network_dpi.tsv")])
def test_network_from_expression_matches_fixture(fx, dpi, name):
    net = A.network(fx["expr"], fx["tfs"], threshold=fx["threshold"], resampling=None, dpi=dpi, progress=False)
    ref = A.read_network(fx["dir"] / name)
    assert edge_set(net) == edge_set(ref)
    m = merged(net, ref)
    np.testing.assert_array_equal(m["mi"], m["mi_ref"])


def test_dpi_rule_and_tolerance():
    # genes 0 and 1 are regulators joined by an edge; gene 2 is their common target
    def kept(mi_ab, mi_a2, mi_b2, tol=0.0, backend="numba"):
        src, dst, mi = [0, 0, 1], [1, 2, 2], [mi_ab, mi_a2, mi_b2]
        return dpi_keep(src, dst, mi, 3, [0, 1], tolerance=tol, backend=backend).tolist()

    for be in ("numba", "python"):
        assert kept(0.5, 0.2, 0.4, backend=be) == [True, False, True]  # weakest edge removed
        assert kept(0.5, 0.4, 0.2, backend=be) == [True, True, False]
        assert kept(0.3, 0.4, 0.5, backend=be) == [True, True, True]  # the regulator edge is the weakest
        assert kept(0.5, 0.3, 0.3, backend=be) == [True, True, True]  # ties remove nothing
        assert kept(0.5, 0.38, 0.4, tol=0.1, backend=be) == [True, True, True]  # within 10 %
        assert kept(0.5, 0.3, 0.4, tol=0.1, backend=be) == [True, False, True]  # weaker by more than 10 %


def test_dpi_numba_equals_python_random():
    rng = np.random.default_rng(3)
    n_genes, regs = 60, list(range(12))
    pairs = {(int(a), int(b)) for a, b in zip(rng.choice(regs, 500), rng.integers(0, n_genes, 500)) if a != b}
    src, dst = np.array(sorted(pairs)).T
    mi = rng.random(len(src)).round(2)  # rounding makes ties
    for tol in (0.0, 0.15):
        a = dpi_keep(src, dst, mi, n_genes, regs, tolerance=tol, backend="numba")
        b = dpi_keep(src, dst, mi, n_genes, regs, tolerance=tol, backend="python")
        np.testing.assert_array_equal(a, b)
        assert 0 < a.sum() < len(a)


# ----------------------------------------------------------------------------------- consensus


@pytest.mark.parametrize("bonferroni,name", [(True, "consolidated.tsv"), (False, "consolidated_nobonferroni.tsv")])
def test_consensus_matches_fixture(fx, bonferroni, name):
    files = sorted((fx["dir"] / "bootstraps").glob("bootstrapNetwork_*.txt"))
    assert len(files) == 10
    ours = A.consensus([A.read_network(f) for f in files], pvalue=0.05, bonferroni=bonferroni)
    ref = A.read_network(fx["dir"] / name)
    assert edge_set(ours) == edge_set(ref)
    m = merged(ours, ref)
    assert np.max(np.abs(m["mi"] - m["mi_ref"])) <= 4.5e-16
    # ARACNe-AP computes 1 - cdf (absolute error ~1e-16 before the correction); scipy's sf is exact
    n_tests = 20 * 300 if bonferroni else 1
    assert np.max(np.abs(m["pvalue"] - m["pvalue_ref"])) <= 1e-15 * n_tests
    np.testing.assert_allclose(m["pvalue"], m["pvalue_ref"], rtol=1e-6)
    # streaming the files one by one (in any grouping) gives the same result
    acc = A.ConsensusAccumulator()
    acc.add(pd.concat([A.read_network(f) for f in files[:4]]))
    for f in files[4:]:
        acc.add(A.read_network(f))
    pd.testing.assert_frame_equal(acc.result(0.05, bonferroni), ours)


def test_consensus_empty_and_counts():
    assert len(A.consensus([pd.DataFrame({"regulator": [], "target": [], "mi": []})])) == 0
    nets = [pd.DataFrame({"regulator": ["A", "A"], "target": ["x", "y"], "mi": [0.5, 0.1]}) for _ in range(3)]
    nets.append(pd.DataFrame({"regulator": ["B"], "target": ["z"], "mi": [0.3]}))
    out = A.consensus(nets, pvalue=1.0, bonferroni=False)
    assert dict(zip(out["target"], out["count"])) == {"x": 3, "y": 3, "z": 1}
    assert out.loc[out["target"] == "x", "mi"].item() == pytest.approx(0.5)


# ----------------------------------------------------------------------------------- threshold


def test_threshold_compat_reproduces_thresholds_tsv(fx):
    top = pd.read_csv(fx["dir"] / "threshold_null_top100.tsv", sep="\t", float_precision="round_trip")["mi"].to_numpy()
    table = pd.read_csv(fx["dir"] / "thresholds.tsv", sep="\t", dtype={"pvalue": str}, float_precision="round_trip")
    for p, expected in zip(table["pvalue"], table["threshold"]):
        thr, b0, b1 = A.aracne_ap_fit(top, 4_498_500, float(p))
        assert thr == expected, p
        assert b1 == pytest.approx(1.507033e-6, rel=1e-6)  # the bug: a data-independent slope
    assert float(table.loc[table["pvalue"] == "1E-8", "threshold"].item()) == fx["threshold"]


def test_threshold_compat_null_is_aracne_aps(fx, tmp_path):
    """Our port of ARACNe-AP's null (java.util.Random, 0-based ranks, 4.5M pairs) and its fit."""
    null = null_distribution(150, seed=1, method="aracne-ap", cache_dir=tmp_path)
    assert null.n_total == 4_498_500
    top = pd.read_csv(fx["dir"] / "threshold_null_top100.tsv", sep="\t", float_precision="round_trip")["mi"].to_numpy()
    np.testing.assert_allclose(null.top[:100], top, rtol=0, atol=1e-15)
    thr, info = A.compute_threshold(150, 1e-8, seed=1, method="aracne-ap", cache_dir=tmp_path)  # from the cache
    assert thr == pytest.approx(fx["threshold"], abs=1e-15)
    assert info["method"] == "aracne-ap" and info["null_size"] == 4_498_500
    assert len(list(tmp_path.glob("*.npz"))) == 1


def test_fit_threshold_is_calibrated():
    """The tail fit of a small null predicts the tail probability of a larger independent null."""
    n, p = 40, 2e-4
    small = all_pairs_mi(fit_null_vectors(n, 500, seed=11))  # 124,750 pairs: p is beyond its top 0.1 %
    thr, params = fit_tail(-np.sort(-small), p)
    assert params["used"] == "fitted tail"
    assert tail_probability(thr, params) == pytest.approx(p)
    big = all_pairs_mi(fit_null_vectors(n, 1500, seed=12))  # 1,124,250 independent pairs
    observed = np.mean(big >= thr)
    assert p / 1.6 <= observed <= p * 1.6, (observed, p)
    # unlike ARACNe-AP's fit, the threshold moves with the p-value, in the right direction
    thresholds = [fit_tail(-np.sort(-small), q)[0] for q in (1e-2, 1e-4, 1e-8, 1e-12)]
    assert all(a < b for a, b in zip(thresholds, thresholds[1:]))
    # empirical quantile above the fitted range
    t_emp, params = fit_tail(-np.sort(-small), 0.01)
    assert params["used"] == "empirical quantile"
    assert np.mean(small >= t_emp) == pytest.approx(0.01, rel=0.01)


def test_compute_threshold_cache_and_info(tmp_path):
    thr, info = A.compute_threshold(30, 1e-6, seed=3, cache_dir=tmp_path)
    files = list(tmp_path.glob("*.npz"))
    assert len(files) == 1
    thr2, info2 = A.compute_threshold(30, 1e-6, seed=3, cache_dir=tmp_path)
    assert thr2 == thr and info2 == info
    thr3, _ = A.compute_threshold(30, 1e-6, seed=4, n_vectors=500, cache_dir=tmp_path)
    assert thr3 != thr and len(list(tmp_path.glob("*.npz"))) == 2
    assert info["threshold"] == thr and info["pvalue"] == 1e-6 and info["n_samples"] == 30
    assert info["null_size"] == 3000 * 2999 // 2 and info["method"] == "fit" and info["seed"] == 3
    assert {"u", "sigma", "k", "tail_probability_at_threshold"} <= set(info["fit"]) and info["fit"]["k"] == 900
    assert info["fit"]["tail_probability_at_threshold"] == pytest.approx(1e-6)
    t3, i3 = A.compute_threshold(30, 1e-3, seed=3, cache_dir=tmp_path)  # inside the stored top 1 %
    t5, i5 = A.compute_threshold(30, 0.2, seed=3, cache_dir=tmp_path)  # from the quantile grid
    assert t5 < t3 < thr and i3["fit"]["used"] == "empirical quantile" and i5["fit"]["used"] == "empirical quantile (grid)"
    null = null_distribution(30, seed=3, cache_dir=tmp_path)
    assert len(null.top) == 44985 and len(null.grid) == 1001

"""netpert.viper against R viper's fixtures, numba == reference, signatures, metaVIPER, msviper, p-values."""

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from scipy.special import ndtri
from scipy.stats import norm, rankdata, ttest_1samp

import netpert.viper as V
from netpert import InputError
from netpert.viper._kernels import ndtri_nb, rank_codes_numba

TOL = 1e-9


# --------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def fx(fixtures_dir):
    d = fixtures_dir / "viper"

    def read(name):
        return pd.read_csv(d / name, sep="\t", index_col=0, float_precision="round_trip")

    return {
        "expr": read("expr.tsv").T,  # files are genes x samples
        "net1": V.read_regulons(d / "network.tsv"),
        "net2": V.read_regulons(d / "network2.tsv"),
        "read": read,
        "dir": d,
    }


CASES = {
    "nes_none_nofilter.tsv": dict(method="none"),
    "nes_none_filter.tsv": dict(method="none", eset_filter=True),
    "nes_scale_nofilter.tsv": dict(method="scale"),
    "nes_meta.tsv": dict(method="none", meta=True),
    "nes_pleiotropy.tsv": dict(method="none", pleiotropy=True),
}


@pytest.mark.parametrize("backend", ["numba", "python"])
@pytest.mark.parametrize("name", list(CASES))
def test_fixture_nes(fx, name, backend):
    kw = dict(CASES[name])
    regs = [fx["net1"], fx["net2"]] if kw.pop("meta", False) else fx["net1"]
    out = V.viper(fx["expr"], regs, min_targets=10, backend=backend, **kw)
    ref = fx["read"](name).T
    assert list(out.columns) == list(ref.columns)  # regulator order (TF30 dropped / appended)
    assert list(out.index) == list(ref.index)
    np.testing.assert_allclose(out.to_numpy(), ref.to_numpy(), rtol=0, atol=TOL)


def test_fixture_filter_and_pleiotropy_change_things(fx):
    # the fixture's edge cases are exercised: eset.filter changes ranks, pleiotropy changes 261 entries
    base = fx["read"]("nes_none_nofilter.tsv").to_numpy()
    assert np.abs(fx["read"]("nes_none_filter.tsv").to_numpy() - base).max() > 1
    assert (np.abs(fx["read"]("nes_pleiotropy.tsv").to_numpy() - base) > 1e-9).sum() == 261


def test_fixture_msviper(fx):
    d = fx["dir"]
    sig = pd.read_csv(d / "signature.tsv", sep="\t", index_col=0, float_precision="round_trip")
    null = pd.read_csv(d / "null.tsv.gz", sep="\t", index_col=0, float_precision="round_trip")
    ref = pd.read_csv(d / "msviper.tsv", sep="\t", float_precision="round_trip")
    res = V.msviper(sig, fx["net1"], null, min_targets=10)
    assert list(res["regulator"]) == list(ref["regulator"])
    np.testing.assert_allclose(res["nes"], ref["nes"], rtol=0, atol=TOL)
    np.testing.assert_allclose(res["pvalue"], ref["pvalue"], rtol=1e-9, atol=1e-15)
    # the signature is R's rowTtest of S01-S20 against S21-S40
    t = V.row_ttest(fx["expr"].iloc[:20], fx["expr"].iloc[20:])
    np.testing.assert_allclose(t.loc[sig.index], sig.iloc[:, 0], rtol=1e-12, atol=1e-12)


def test_ttest_null_and_msviper_find_planted_regulators(fx):
    expr = fx["expr"]
    null = V.ttest_null(expr.iloc[:20], expr.iloc[20:], per=300, seed=3)
    assert null.shape == (expr.shape[1], 300)
    again = V.ttest_null(expr.iloc[:20], expr.iloc[20:], per=300, seed=3)
    pd.testing.assert_frame_equal(null, again)
    sig = V.row_ttest(expr.iloc[:20], expr.iloc[20:])
    res = V.msviper(sig, fx["net1"], null, min_targets=10).set_index("regulator")
    # README: group shifts TF01 +2.0 and TF03 -2.0 (S01-S20 vs S21-S40)
    assert res.loc["TF01", "nes"] > 2 and res.loc["TF01", "pvalue"] < 0.05
    assert res.loc["TF03", "nes"] < -2 and res.loc["TF03", "pvalue"] < 0.05


# --------------------------------------------------------------------------------------------- kernels
def test_ndtri_and_rank_codes_match_scipy():
    p = np.concatenate([np.linspace(1e-7, 1 - 1e-7, 5001), [0.5, 1e-12, 0.25]])
    got = np.array([ndtri_nb(x) for x in p])
    np.testing.assert_allclose(got, ndtri(p), rtol=0, atol=1e-13)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 4, (30, 50)).astype(float)  # many ties
    np.testing.assert_array_equal(rank_codes_numba(x), np.rint(rankdata(x, axis=1) * 2).astype(np.int64))
    # the radix sort: signs, -0.0 == 0.0, infinities, tiny and huge magnitudes
    y = rng.normal(size=(20, 300)) * 10.0 ** rng.integers(-300, 300, (20, 300))
    y[:, :5] = [0.0, -0.0, np.inf, -np.inf, 5e-324]
    np.testing.assert_array_equal(rank_codes_numba(y), np.rint(rankdata(y, axis=1) * 2).astype(np.int64))


def _random_case(seed=0, n_cells=60, n_genes=300, n_regs=8, counts=True):
    rng = np.random.default_rng(seed)
    genes = [f"g{i}" for i in range(n_genes)]
    if counts:
        X = rng.poisson(rng.gamma(0.6, 1.5, n_genes), size=(n_cells, n_genes)).astype(float)  # ties and zeros
    else:
        X = rng.normal(size=(n_cells, n_genes))
    rows = []
    for r in range(n_regs):
        tg = rng.choice(n_genes, size=int(rng.integers(20, 60)), replace=False)
        rows.append(pd.DataFrame({"regulator": f"g{r}", "target": [genes[i] for i in tg], "mor": rng.uniform(-1, 1, len(tg)),
                                  "likelihood": rng.uniform(0.05, 1, len(tg))}))
    return pd.DataFrame(X, index=[f"c{i}" for i in range(n_cells)], columns=genes), pd.concat(rows, ignore_index=True)


@pytest.mark.parametrize("tail", ["global", "column"])
@pytest.mark.parametrize("eset_filter", [False, True])
def test_numba_equals_reference(tail, eset_filter):
    expr, net = _random_case(1)
    a = V.viper(expr, net, min_targets=10, eset_filter=eset_filter, tail=tail, backend="numba")
    b = V.viper(expr, net, min_targets=10, eset_filter=eset_filter, tail=tail, backend="python")
    np.testing.assert_allclose(a.to_numpy(), b.to_numpy(), rtol=0, atol=1e-12)
    if tail == "column":  # ties at both ends in some cells: per-cell maxima differ from the global one
        g = V.viper(expr, net, min_targets=10, eset_filter=eset_filter, tail="global")
        assert np.abs(g.to_numpy() - a.to_numpy()).max() > 1e-6


def test_numba_equals_reference_with_dropped_genes():
    expr, net = _random_case(2, counts=False)
    expr["g250"] = 3.0  # constant gene: NaN under scale -> R's loop path, dropped from the ranking
    net = pd.concat([net, pd.DataFrame({"regulator": "g0", "target": ["g250"], "mor": [1.0], "likelihood": [1.0]})])
    a = V.viper(expr, net, method="scale", min_targets=10, backend="numba")
    b = V.viper(expr, net, method="scale", min_targets=10, backend="python")
    np.testing.assert_allclose(a.to_numpy(), b.to_numpy(), rtol=0, atol=1e-12)
    ref = V.viper(expr.drop(columns="g250"), net.loc[net["target"] != "g250"], method="scale", min_targets=10, tail="column")
    np.testing.assert_allclose(a.to_numpy(), ref.to_numpy(), rtol=0, atol=1e-12)


# --------------------------------------------------------------------------------------------- signatures
@pytest.fixture(scope="module")
def small():
    rng = np.random.default_rng(5)
    X = rng.poisson(2.0, size=(25, 12)).astype(float)
    X[:, 3] += np.arange(25)  # no zero spread
    return pd.DataFrame(X, index=[f"c{i}" for i in range(25)], columns=[f"g{j}" for j in range(12)])


def test_signature_scale_rank_mad_none(small):
    X = small.to_numpy()
    np.testing.assert_allclose(V.compute_signature(small, "scale"), (X - X.mean(0)) / X.std(0, ddof=1), rtol=1e-12)
    np.testing.assert_allclose(V.compute_signature(small, "rank", block_size=4), rankdata(X, axis=0), rtol=0, atol=0)
    med = np.median(X, axis=0)
    mad = 1.4826 * np.median(np.abs(X - med), axis=0)
    got = V.compute_signature(small, "mad", block_size=3).to_numpy()
    keep = mad > 0
    np.testing.assert_allclose(got[:, keep], ((X - med) / mad)[:, keep], rtol=1e-12)
    assert np.isnan(got[:, ~keep]).all()
    np.testing.assert_array_equal(V.compute_signature(small, "none").to_numpy(), X)


def test_signature_ttest(small):
    X = small.to_numpy()
    got = V.compute_signature(small, "ttest", block_size=7).to_numpy()
    for i in (0, 11, 24):  # R: rowTtest(eset[, i] - eset[, -i])
        ref = ttest_1samp(X[i] - np.delete(X, i, axis=0), 0, axis=0).statistic
        np.testing.assert_allclose(got[i], ref, rtol=1e-10)
    ref_cells = np.zeros(25, dtype=bool)
    ref_cells[:10] = True
    got = V.compute_signature(small, "ttest", reference=ref_cells).to_numpy()
    for i in (3, 20):  # viperSignature: rowTtest(x - ref)
        ref = ttest_1samp(X[i] - X[:10], 0, axis=0).statistic
        np.testing.assert_allclose(got[i], ref, rtol=1e-10)
    by_name = V.compute_signature(small, "ttest", reference=list(small.index[:10])).to_numpy()
    np.testing.assert_array_equal(got, by_name)


@pytest.mark.parametrize("n_cells", [25, 24])  # odd and even numbers of cells (median of two middles)
def test_signature_doublerank(small, n_cells):
    data = small.iloc[:n_cells]
    X = data.to_numpy()
    r = rankdata(X, axis=1)
    med = np.median(r, axis=0)
    mad = 1.4826 * np.median(np.abs(r - med), axis=0)
    keep = mad > 0
    for bs in (4, 100):  # streamed two-level histograms vs one block
        got = V.compute_signature(data, "doublerank", block_size=bs).to_numpy()
        np.testing.assert_allclose(got[:, keep], (r[:, keep] - med[keep]) / mad[keep], rtol=1e-12)
        np.testing.assert_allclose(V.compute_signature(data, "doublerank", block_size=bs, backend="python").to_numpy(), got, equal_nan=True)


@pytest.mark.parametrize("method", ["scale", "rank", "mad", "ttest", "doublerank"])
def test_viper_method_equals_aREA_of_its_signature(method):
    expr, net = _random_case(3, n_cells=40, counts=False)
    sig = V.compute_signature(expr, method)
    a = V.viper(expr, net, method=method, min_targets=10)
    keep = ~sig.isna().any(axis=0)
    b = V.viper(sig.loc[:, keep], net, method="none", min_targets=10, tail="column" if not keep.all() else "auto")
    np.testing.assert_allclose(a.to_numpy(), b.to_numpy(), rtol=0, atol=1e-12)


def test_sparse_and_dense_inputs_agree():
    import anndata as ad

    # continuous values with zeros: z-scores of different genes never tie. (With low counts, genes
    # whose z-scores are mathematically equal differ in the last bit depending on the order of
    # summation, as in R, which breaks such ties arbitrarily.)
    expr, net = _random_case(4, counts=False)
    rng = np.random.default_rng(0)
    values = (np.exp(expr.to_numpy()) * (rng.random(expr.shape) < 0.6)).astype(np.float32)
    dense = ad.AnnData(values, obs=pd.DataFrame(index=expr.index), var=pd.DataFrame(index=expr.columns))
    sparse = dense.copy()
    sparse.X = sp.csr_matrix(sparse.X)
    for method in ("none", "scale", "ttest", "mad", "rank", "doublerank"):
        a = V.viper(dense, net, method=method, min_targets=10, block_size=17)
        b = V.viper(sparse, net, method=method, min_targets=10, block_size=17)
        np.testing.assert_allclose(a.to_numpy(), b.to_numpy(), rtol=0, atol=1e-12)


# --------------------------------------------------------------------------------------------- metaVIPER
def _two_network_case():
    """Cells 0-9 carry network 1's programme (genes a*), cells 10-19 network 2's (genes b*)."""
    rng = np.random.default_rng(11)
    ga = [f"a{i}" for i in range(150)]
    gb = [f"b{i}" for i in range(150)]
    genes = ga + gb
    X = pd.DataFrame(rng.normal(size=(20, 300)), columns=genes, index=[f"c{i}" for i in range(20)])

    def net(prefix, names):
        rows = []
        for k, r in enumerate(names):
            tg = [f"{prefix}{i}" for i in range(30 * k, 30 * k + 30)]
            rows.append(pd.DataFrame({"regulator": r, "target": tg, "mor": 1.0, "likelihood": 1.0}))
        return pd.concat(rows, ignore_index=True)

    net1 = net("a", ["R1", "R2", "R3", "R4", "R5"])
    net2 = net("b", ["Q1", "Q2", "Q3", "Q4", "Q5"])
    for k in range(5):
        sign = 1 if k % 2 == 0 else -1
        X.iloc[:10, 30 * k:30 * k + 30] += sign * 4.0        # programme of network 1 in cells 0-9
        X.iloc[10:, 150 + 30 * k:150 + 30 * k + 30] += sign * 4.0  # network 2 in cells 10-19
    return X, net1, net2


def test_metaviper_auto_picks_the_right_network():
    X, net1, net2 = _two_network_case()
    out = V.viper(X, {"n1": net1, "n2": net2}, min_targets=10, network_choice="auto")
    assert list(out.attrs["network"]) == ["n1"] * 10 + ["n2"] * 10
    one = V.viper(X, net1, min_targets=10)
    two = V.viper(X, net2, min_targets=10)
    np.testing.assert_allclose(out.loc[X.index[:10], one.columns], one.iloc[:10], atol=1e-12)
    assert (out.loc[X.index[:10], two.columns] == 0).all().all()
    np.testing.assert_allclose(out.loc[X.index[10:], two.columns], two.iloc[10:], atol=1e-12)
    assert (out.iloc[:10]["R1"] > 2).all() and (out.iloc[:10]["R2"] < -2).all()


def test_metaviper_integrate_weights():
    X, net1, net2 = _two_network_case()
    shared = net2.assign(regulator=net2["regulator"].replace({"Q1": "R1"}))  # R1 in both networks
    a = V.viper(X, net1, min_targets=10)
    b = V.viper(X, shared, min_targets=10)
    for mvws in (1, 2, (1.5, 4.0)):
        out = V.viper(X, [net1, shared], min_targets=10, mvws=mvws)
        assert list(out.columns) == ["R1", "R2", "R3", "R4", "R5", "Q2", "Q3", "Q4", "Q5"]
        x, y = a["R1"].to_numpy(), b["R1"].to_numpy()
        if np.ndim(mvws) == 0:
            wx, wy = np.abs(x) ** mvws, np.abs(y) ** mvws
        else:
            wx, wy = (1 - 1 / (1 + np.exp(mvws[1] * (np.abs(v) - mvws[0]))) for v in (x, y))
        np.testing.assert_allclose(out["R1"], (x * wx + y * wy) / (wx + wy), rtol=1e-12)
        # a regulator of one network only is combined with a NES of 0 (weight 0 for a power mvws > 0)
        x = a["R2"].to_numpy()
        if np.ndim(mvws) == 0:
            np.testing.assert_allclose(out["R2"], x, rtol=1e-12)
        else:
            w = 1 - 1 / (1 + np.exp(mvws[1] * (np.abs(x) - mvws[0])))
            w0 = 1 - 1 / (1 + np.exp(mvws[1] * (0 - mvws[0])))
            np.testing.assert_allclose(out["R2"], x * w / (w + w0), rtol=1e-12)


# --------------------------------------------------------------------------------------------- p-values
def test_bh_against_hand_example():
    p = np.array([0.01, 0.04, 0.03, 0.20])
    nes = pd.DataFrame([norm.isf(p / 2) * np.array([1, -1, 1, -1])], columns=list("abcd"))
    pv, padj = V.nes_pvalues(nes)
    np.testing.assert_allclose(pv.to_numpy()[0], p, rtol=1e-12)
    # by hand: ranks 1,3,2,4 -> p*m/rank = 0.04, 0.0533, 0.06, 0.2 -> cumulative minimum from the top
    np.testing.assert_allclose(padj.to_numpy()[0], [0.04, 0.04 * 4 / 3, 0.04 * 4 / 3, 0.20], rtol=1e-12)


def test_pleiotropy_absolute_method_runs_and_penalises(fx):
    base = V.viper(fx["expr"], fx["net1"], min_targets=10)
    out = V.viper(fx["expr"], fx["net1"], min_targets=10, pleiotropy=True,
                  pleiotropy_args={"method": "absolute", "penalty": 20})
    assert out.shape == base.shape
    assert (np.abs(out.to_numpy() - base.to_numpy()) > 1e-9).any()
    with pytest.raises(InputError, match="adaptive"):
        V.viper(fx["expr"], fx["net1"], min_targets=10, pleiotropy=True, pleiotropy_args={"method": "other"})

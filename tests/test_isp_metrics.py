"""netpert.isp.metrics and netpert.isp.evaluate on cases with a known answer."""

from __future__ import annotations


import numpy as np
import pandas as pd
import pytest

from netpert.errors import InputError
from netpert.isp import metrics as M
from netpert.isp.evaluate import evaluate, evaluate_run
from netpert.isp.records import METRICS_COLUMNS, PerfRecord, read_metrics


def test_cosine_rows_known_values():
    a = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0], [2.0, 0.0]])
    b = np.array([[0.0, 1.0], [2.0, 2.0], [0.0, 0.0], [-1.0, 0.0]])
    np.testing.assert_allclose(M.cosine_rows(a, b), [0.0, 1.0, 1.0, -1.0])
    with pytest.raises(ValueError, match="shapes differ"):
        M.cosine_rows(a, b[:2])


def test_gene_shifts_match_genes_by_id_and_leave_out_the_perturbed_and_the_truncated():
    # original: genes 10, 11, 12, 13; perturbed: 12 moved to the front, 13 truncated away
    orig_ids = np.array([10, 11, 12, 13])
    pert_ids = np.array([12, 10, 11])
    orig = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [5.0, 5.0]])
    pert = np.array([[9.0, 9.0], [1.0, 1.0], [0.0, 2.0]])  # 12, 10, 11
    genes, cos = M.gene_shifts(orig, pert, orig_ids, pert_ids, exclude=[12])
    assert genes.tolist() == [10, 11]
    np.testing.assert_allclose(cos, [np.sqrt(0.5), 1.0])
    top = M.top_affected_genes(genes, cos, top_n=1)
    assert top == [(10, pytest.approx(np.sqrt(0.5)))]
    # nothing in common: empty
    g, c = M.gene_shifts(orig, pert, orig_ids, np.array([99, 98, 97]))
    assert len(g) == 0 and len(c) == 0


def test_spearman_edge_cases():
    assert M.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert M.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert np.isnan(M.spearman([1, 2], [1, 2]))
    assert np.isnan(M.spearman([1, 1, 1], [1, 2, 3]))


def screen(rng, n_cells=6, n_targets=3, hidden=8, noise=0.0):
    original = rng.normal(size=(n_cells, hidden))
    cell_index = np.repeat(np.arange(n_cells), n_targets)
    perturbed = original[cell_index] + rng.normal(scale=0.3, size=(len(cell_index), hidden))
    labels = np.tile([f"delete:T{k}" for k in range(n_targets)], n_cells)
    r = {
        "cell_ids": np.array([f"c{i}" for i in range(n_cells)]),
        "original": original,
        "perturbed": perturbed,
        "cell_index": cell_index,
        "perturbation": labels,
        "cosine": M.cosine_rows(original[cell_index], perturbed),
        "cell_shift": rng.uniform(0.9, 1.0, size=len(cell_index)),
    }
    if noise:
        r = dict(r)
        r["original"] = original + rng.normal(scale=noise, size=original.shape)
        r["perturbed"] = perturbed + rng.normal(scale=noise, size=perturbed.shape)
        r["cosine"] = M.cosine_rows(r["original"][cell_index], r["perturbed"])
        r["cell_shift"] = r["cell_shift"] + 0.01
    return r


def test_consistency_of_a_screen_with_itself_and_with_a_noisy_copy():
    rng = np.random.default_rng(0)
    base = screen(rng)
    same = M.consistency(base, base)
    assert same["mean_cosine"] == pytest.approx(1.0) and same["min_cosine"] == pytest.approx(1.0)
    assert same["spearman"] == pytest.approx(1.0) and same["max_shift_diff"] == 0.0 and same["passes_bar"]
    noisy = screen(np.random.default_rng(0), noise=0.5)
    c = M.consistency(noisy, base)
    emb = M.cosine_rows(np.concatenate([noisy["original"], noisy["perturbed"]]),
                        np.concatenate([base["original"], base["perturbed"]]))
    assert c["mean_cosine"] == pytest.approx(emb.mean()) and c["min_cosine"] == pytest.approx(emb.min())
    assert c["max_shift_diff"] == pytest.approx(0.01)
    assert not c["passes_bar"] and "mean_cosine" in c["failed_criteria"]
    other = dict(base, perturbation=base["perturbation"][::-1])
    with pytest.raises(InputError, match="same token file"):
        M.consistency(other, base)


def test_embedding_quality_separates_well_separated_labels_perfectly():
    rng = np.random.default_rng(1)
    centres = np.eye(3) * 20
    y = np.repeat(["a", "b", "c"], 20)
    X = centres[np.repeat(np.arange(3), 20)] + rng.normal(scale=0.1, size=(60, 3))
    q = M.embedding_quality(X, y, seed=0, prefix="p_")
    assert q["p_ridge_accuracy"] == 1.0 and q["p_ridge_f1"] == 1.0
    assert q["p_knn_consistency"] == 1.0 and q["p_kmeans_ari"] == pytest.approx(1.0)
    assert q["p_kmeans_nmi"] == pytest.approx(1.0) and q["p_silhouette"] > 0.9
    assert q["p_separation_ratio"] > 50 and q["p_davies_bouldin"] < 0.1
    # random labels on noise: nothing to find
    Z = rng.normal(size=(60, 3))
    r = M.embedding_quality(Z, rng.permutation(y), seed=0)
    assert r["kmeans_ari"] < 0.2 and r["silhouette"] < 0.1
    # one label only: undefined
    assert np.isnan(M.embedding_quality(Z, ["a"] * 60)["silhouette"])


def test_evaluate_rows_per_stratum_and_overall(tmp_path):
    rng = np.random.default_rng(2)
    results, perfs = {}, {}
    for s in ("A", "B"):
        base = screen(rng)
        results[("baseline", s)] = base
        results[("fast", s)] = dict(base, original=base["original"] * 1.0001)
        perfs[("baseline", s)] = PerfRecord("baseline", s, wall_s=2.0, n_perturbations=18, n_cells=6, peak_rss_mb=100, trained=False)
        perfs[("fast", s)] = PerfRecord("fast", s, wall_s=0.5, n_perturbations=18, n_cells=6, peak_rss_mb=90, trained=False)
    t = evaluate(results, perfs, seed=0).set_index(["method", "stratum"])
    assert set(t.index) == {(m, s) for m in ("baseline", "fast") for s in ("A", "B", "all")}
    assert t.loc[("fast", "all"), "speedup"] == pytest.approx(4.0)
    assert t.loc[("fast", "all"), "perturbations_per_s"] == pytest.approx(36.0)
    assert t.loc[("fast", "all"), "passes_bar"] and t.loc[("fast", "A"), "mean_cosine"] == pytest.approx(1.0)
    assert np.isfinite(t.loc[("baseline", "all"), "cell_type_silhouette"])
    assert np.isnan(t.loc[("baseline", "A"), "cell_type_silhouette"])  # one cell type per stratum
    # repeats: medians in wall_s, ranges pair by pair against the baseline on the same stratum
    reps = {("baseline", "A"): [2.0, 1.8, 2.4], ("fast", "A"): [0.5, 0.4, 0.6],
            ("baseline", "B"): [2.0, 2.0, 2.0], ("fast", "B"): [0.25, 0.25, 0.25]}
    for key, walls in reps.items():
        perfs[key] = PerfRecord(key[0], key[1], wall_s=float(np.median(walls)), wall_repeats_s=walls, repeats=3,
                                n_perturbations=18, n_cells=6, other_load_cores=0.1 if key == ("fast", "B") else 0.0)
    t = evaluate(results, perfs, seed=0).set_index(["method", "stratum"])
    assert t.loc[("fast", "A"), "speedup"] == pytest.approx(4.0)
    assert t.loc[("fast", "A"), "speedup_min"] == pytest.approx(1.8 / 0.6)
    assert t.loc[("fast", "A"), "speedup_max"] == pytest.approx(2.4 / 0.4)
    assert t.loc[("fast", "all"), "speedup"] == pytest.approx(4.0 / 0.75)
    assert (t.loc[("fast", "all"), "speedup_min"], t.loc[("fast", "all"), "speedup_max"]) == (pytest.approx(4.0), pytest.approx(8.0))
    assert t.loc[("fast", "all"), "wall_min_s"] == pytest.approx(0.65) and t.loc[("fast", "all"), "wall_max_s"] == pytest.approx(0.85)
    assert t.loc[("fast", "all"), "repeats"] == 3 and t.loc[("fast", "all"), "other_load_cores"] == pytest.approx(0.1)
    del results[("fast", "B")]
    with pytest.raises(InputError, match="no result for strata"):
        evaluate(results, perfs)
    with pytest.raises(ValueError, match="no ISP results"):
        evaluate({}, {})


def test_evaluate_run_writes_metrics_atomically_and_reports_bad_timing_files(tmp_path):
    from netpert.isp.records import RESULT_ARRAYS, write_perf, write_result

    rng = np.random.default_rng(3)
    base = screen(rng)
    npz, perf = [], []
    for method in ("baseline", "batched"):
        d = tmp_path / method
        d.mkdir()
        arrays = {k: np.asarray(base.get(k, np.zeros(0))) for k in RESULT_ARRAYS}
        write_result(d / "S.npz", arrays, {"method": method, "stratum": "S"})
        write_perf(d / "S.perf.json", PerfRecord(method, "S", wall_s=1.0, n_perturbations=18, n_cells=6))
        npz.append(d / "S.npz")
        perf.append(d / "S.perf.json")
    out = tmp_path / "metrics.tsv"
    table = evaluate_run(npz, perf, out, seed=0)
    back = pd.read_csv(out, sep="\t")
    assert len(back) == len(table) == 4 and set(back["stratum"]) == {"S", "all"}
    assert list(back.columns[: len(METRICS_COLUMNS)]) == list(METRICS_COLUMNS)
    assert read_metrics(out)["passes_bar"].map(lambda v: v in (True, False)).all()
    perf[1].write_text("{not json")
    out2 = tmp_path / "m2.tsv"
    with pytest.raises(InputError, match="cannot read ISP timing"):
        evaluate_run(npz, perf, out2)
    assert not out2.exists()


def test_speedup_of_a_stratum_without_perturbations_counts_and_keeps_the_overall_inside_its_range():
    """A stratum whose cells are embedded but have no perturbations (no master regulators there) is
    timed too: its speedup is the ratio of times, and the row over all strata, whose times include
    it, lies inside the range over the strata (the default run showed 7.7x [7.77-9.03x] before)."""
    rng = np.random.default_rng(3)
    results, perfs = {}, {}
    walls = {"A": (9.0, 1.0), "B": (10.0, 1.1), "C": (14.0, 2.2)}  # baseline, fast
    for s, (b, f) in walls.items():
        base = screen(rng, n_targets=0 if s == "C" else 3)
        n_p = len(base["perturbation"])
        results[("baseline", s)] = base
        results[("fast", s)] = dict(base, original=base["original"] * 1.0001)
        perfs[("baseline", s)] = PerfRecord("baseline", s, wall_s=b, n_perturbations=n_p, n_cells=6, trained=False)
        perfs[("fast", s)] = PerfRecord("fast", s, wall_s=f, n_perturbations=n_p, n_cells=6, trained=False)
    t = evaluate(results, perfs, seed=0).set_index(["method", "stratum"])
    assert t.loc[("fast", "C"), "n_perturbations"] == 0
    assert t.loc[("fast", "C"), "speedup"] == pytest.approx(14.0 / 2.2)
    assert t.loc[("fast", "A"), "speedup"] == pytest.approx(9.0)
    overall = t.loc[("fast", "all")]
    assert overall["speedup"] == pytest.approx(33.0 / 4.3)
    assert overall["speedup"] == pytest.approx(overall["perturbations_per_s"] / t.loc[("baseline", "all"), "perturbations_per_s"])
    assert overall["speedup_min"] <= overall["speedup"] <= overall["speedup_max"]
    assert overall["speedup_min"] == pytest.approx(14.0 / 2.2) and overall["speedup_max"] == pytest.approx(10.0 / 1.1)

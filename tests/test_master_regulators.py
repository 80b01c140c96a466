"""Master regulators (netpert.viper.master, netpert.mr_table): significant, specific, only for
strata with a network; the table's layout round-trips; the ISP lookup of a stratum without any."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from netpert import InputError
from netpert.isp.tokens import master_regulator_targets
from netpert.mr_table import (
    FILE_COLUMNS, NO_NETWORK, NO_SIGNIFICANT, REPORTED, MasterRegulatorTable, read_master_regulators,
)
from netpert.viper.master import master_regulators, specificity_test


def _activity(sizes=None, effects=None, n_regs=6, seed=0, scale=0.3):
    """NES ~ N(0, scale) per cell and regulator, plus ``effects[stratum][regulator]``."""
    sizes = sizes or {"A": 30, "B": 30, "C": 30}
    rng = np.random.default_rng(seed)
    regs = [f"R{i}" for i in range(n_regs)]
    groups = np.repeat(list(sizes), list(sizes.values()))
    nes = rng.normal(scale=scale, size=(len(groups), n_regs))
    for s, eff in (effects or {}).items():
        for r, v in eff.items():
            nes[groups == s, regs.index(r)] += v
    obs = pd.DataFrame({"stratum": groups}, index=[f"c{i}" for i in range(len(groups))])
    return ad.AnnData(nes, obs=obs, var=pd.DataFrame(index=regs))


def test_high_mean_but_higher_elsewhere_is_not_up():
    # R0: NES +2 in A (the largest positive mean in A) but +4 in B: not specific to A
    act = _activity({"A": 30, "B": 30}, {"A": {"R0": 2.0, "R1": 1.0}, "B": {"R0": 4.0}})
    t = master_regulators(act, top_k=3)
    a = t.of("A")
    assert a.loc[a.regulator == "R0", "direction"].tolist() == ["down"]  # lower than the rest
    assert a.loc[a.direction == "up", "regulator"].tolist() == ["R1"]
    b = t.of("B")
    assert b.loc[(b.direction == "up") & (b["rank"] == 1), "regulator"].item() == "R0"
    row = a.set_index("regulator").loc["R0"]
    assert row["mean_nes"] > 1.5 and row["delta_nes"] < 0 and row["rank_biserial"] < 0 and row["auc"] < 0.5


def test_specificity_ranks_not_the_mean():
    # R0 has the larger mean in A, R1 the cleaner separation from the rest: R1 ranks first
    rng = np.random.default_rng(3)
    act = _activity({"A": 40, "B": 40}, {"A": {"R1": 1.5}})
    X = act.X.copy()
    inside = act.obs["stratum"].to_numpy() == "A"
    X[inside, 0] = np.where(rng.random(inside.sum()) < 0.5, 8.0, 0.0)  # a large mean, half the cells
    act.X = X
    up = master_regulators(act, top_k=2).of("A").query("direction == 'up'")
    assert up["regulator"].tolist() == ["R1", "R0"]
    assert up["mean_nes"].iloc[0] < up["mean_nes"].iloc[1]
    assert up["rank_biserial"].iloc[0] > up["rank_biserial"].iloc[1]


def test_non_significant_regulators_are_not_reported_and_never_padded():
    # A: R0 up; B and C are noise on the regulators of their networks (R0, lower than in A, is not one)
    act = _activity({"A": 30, "B": 30, "C": 30}, {"A": {"R0": 3.0}})
    others = ["R1", "R2", "R3", "R4", "R5"]
    t = master_regulators(act, top_k=5, padj=0.05, networks={"A": ["R0", *others], "B": others, "C": others})
    a = t.of("A")
    assert a["regulator"].tolist() == ["R0"] and (a["padj"] < 0.05).all()  # 1 < top_k: not padded
    s = t.status("A")
    assert s["status"] == REPORTED and s["n_reported"] == 1 and s["n_candidates_up"] == 1 and s["n_tested"] == 6
    # pure noise in B: nothing passes; B still has its summary row
    assert t.of("B").empty and t.status("B")["status"] == NO_SIGNIFICANT
    assert "padj < 0.05" in t.status("B")["reason"]
    assert (t.regulators["padj"] < 0.05).all()
    # a stricter cut-off drops the weaker ones (fewer reported than pass at 0.05)
    weak = _activity({"A": 12, "B": 12}, {"A": {"R0": 3.0, "R1": 0.25}}, seed=1)
    loose, strict = master_regulators(weak, top_k=5, padj=0.5), master_regulators(weak, top_k=5, padj=1e-4)
    assert len(strict.of("A")) < len(loose.of("A"))


def test_strata_without_a_network_get_none_but_are_listed_and_background():
    act = _activity({"A": 30, "B": 30, "skipped": 60}, {"A": {"R0": 3.0}, "B": {"R2": 3.0}, "skipped": {"R0": 6.0}})
    nets = {"A": ["R0", "R1", "R2"], "B": []}
    t = master_regulators(act, top_k=2, networks=nets)
    st = t.strata.set_index("stratum")
    assert st.loc["B", "status"] == NO_NETWORK and "no regulon" in st.loc["B", "reason"]
    assert st.loc["skipped", "status"] == NO_NETWORK and "not kept" in st.loc["skipped", "reason"]
    assert not st.loc["skipped", "has_network"] and st.loc["A", "n_regulons"] == 3 and st.loc["A", "n_tested"] == 3
    assert set(t.regulators["stratum"]) == {"A"}
    # only A's own regulators are tested, against all other cells (skipped's R0 of +6 is background)
    a = t.of("A")
    assert set(a["regulator"]) <= {"R0", "R1", "R2"}
    assert a.loc[a.regulator == "R0", "direction"].tolist() == ["down"]
    assert st.loc["A", "n_cells_rest"] == 90
    # a network whose regulators VIPER did not score, and one for a stratum with no cells
    t2 = master_regulators(act, networks={"A": ["TFX"]})
    assert t2.status("A")["status"] == NO_NETWORK and "scored by VIPER" in t2.status("A")["reason"]
    with pytest.raises(InputError, match="no cells in the activity"):
        master_regulators(act, networks={"Z": ["R0"]})


def test_single_stratum_uses_a_signed_rank_test():
    act = _activity({"A": 30}, {"A": {"R0": 3.0, "R1": -2.5}})
    t = master_regulators(act, top_k=1)
    assert t.of("A")["regulator"].tolist() == ["R0", "R1"] and t.status("A")["test"] == "wilcoxon"
    assert t.regulators["auc"].isna().all() and t.regulators["mean_nes_rest"].isna().all()
    r = specificity_test(np.array([[1.0], [2.0], [-0.5]]), np.empty((0, 1)))
    assert r["rank_biserial"][0] == pytest.approx((2 + 3 - 1) / 6)


def test_effect_sizes_follow_the_mann_whitney_u():
    inside = np.array([[3.0], [4.0], [5.0]])
    rest = np.array([[1.0], [2.0], [3.5], [0.0]])
    r = specificity_test(inside, rest)
    assert r["statistic"][0] == 11.0  # pairs inside > rest: 4 + 4 + 3
    assert r["auc"][0] == pytest.approx(11 / 12) and r["rank_biserial"][0] == pytest.approx(2 * 11 / 12 - 1)
    assert r["delta_nes"][0] == pytest.approx(4.0 - 1.625)


def test_table_round_trips_through_its_reader(tmp_path):
    act = _activity({"A": 30, "B": 30, "C": 20}, {"A": {"R0": 3.0, "R1": -2.0}})
    t = master_regulators(act, top_k=2, networks={"A": ["R0", "R1", "R3"], "B": ["R2"]})
    path = tmp_path / "viper" / "master_regulators.tsv"
    t.write(path)
    raw = pd.read_csv(path, sep="\t", keep_default_na=False)
    assert list(raw.columns) == FILE_COLUMNS
    # every stratum appears, those without a regulator in one row with an empty regulator
    assert set(raw["stratum"]) == {"A", "B", "C"}
    assert (raw.loc[raw.stratum != "A", "regulator"] == "").all() and (raw.stratum == "B").sum() == 1
    back = read_master_regulators(path)
    pd.testing.assert_frame_equal(back.regulators, t.regulators)
    pd.testing.assert_frame_equal(back.strata, t.strata)
    # gene names that pandas would read as missing stay names
    odd = MasterRegulatorTable.build(
        pd.DataFrame({"stratum": ["NA"], "regulator": ["NAN"], "direction": ["up"], "rank": [1]}),
        pd.DataFrame({"stratum": ["NA", "None"], "status": [REPORTED, NO_SIGNIFICANT]}))
    odd.write(tmp_path / "odd.tsv")
    assert read_master_regulators(tmp_path / "odd.tsv").targets("NA", 5) == ["NAN"]


def test_reader_refuses_old_or_inconsistent_files(tmp_path):
    old = tmp_path / "old.tsv"
    pd.DataFrame({"stratum": ["A"], "regulator": ["R0"], "mean_nes": [1.0], "rank": [1]}).to_csv(old, sep="\t", index=False)
    with pytest.raises(InputError, match="older netpert"):
        read_master_regulators(old)
    with pytest.raises(InputError, match="not found"):
        read_master_regulators(tmp_path / "absent.tsv")
    t = MasterRegulatorTable.build(
        pd.DataFrame({"stratum": ["A"], "regulator": ["R0"], "direction": ["up"], "rank": [1]}),
        pd.DataFrame({"stratum": ["A"], "status": [REPORTED]}))
    frame = t.to_frame()
    frame.loc[0, "status"] = NO_SIGNIFICANT  # a regulator in a stratum that says it has none
    frame.to_csv(tmp_path / "bad.tsv", sep="\t", index=False)
    with pytest.raises(InputError, match="disagree"):
        read_master_regulators(tmp_path / "bad.tsv")


def test_isp_target_lookup(tmp_path):
    act = _activity({"A": 30, "B": 30, "skipped": 10}, {"A": {"R0": 3.0, "R1": -2.5, "R2": 1.5}})
    t = master_regulators(act, top_k=2, networks={"A": ["R0", "R1", "R2"], "B": ["R3"]})
    path = tmp_path / "master_regulators.tsv"
    t.write(path)
    # best first: rank 1 up, rank 1 down, rank 2 up
    assert master_regulator_targets(path, "A", top_k=3) == ["R0", "R1", "R2"]
    assert master_regulator_targets(path, "A", top_k=1) == ["R0"]
    # listed without master regulators: no target (the stratum is tokenised with no perturbation)
    assert master_regulator_targets(path, "B", top_k=3) == []
    assert master_regulator_targets(path, "skipped", top_k=3) == []
    # by cell type when the slug is not listed; an unlisted stratum is an error
    assert master_regulator_targets(path, "A_blood", top_k=1, cell_type="A") == ["R0"]
    with pytest.raises(InputError, match="does not list stratum 'Z'"):
        master_regulator_targets(path, "Z")


def test_tokenize_a_stratum_without_master_regulators(tmp_path):
    from test_isp_runner import stratum_cells

    from netpert.isp.model import write_model
    from netpert.isp.tokens import read_tokens, tokenize_stratum

    model = tmp_path / "model"
    write_model(stratum_cells(20, seed=1), model, spec="random-init:tiny", seed=0)
    path = tmp_path / "master_regulators.tsv"
    MasterRegulatorTable.build(
        pd.DataFrame({"stratum": ["B_cell"], "regulator": ["G5"], "direction": ["up"], "rank": [1]}),
        pd.DataFrame({"stratum": ["T_cell", "B_cell"], "status": [NO_SIGNIFICANT, REPORTED],
                      "reason": ["no regulator of 4 tested has BH padj < 0.05", ""]}),
    ).write(path)
    tok = tmp_path / "T_cell.parquet"
    meta = tokenize_stratum(stratum_cells(6), model, tok, targets_path=path, top_k=2, cells_per_stratum=4, stratum="T_cell")
    assert meta["targets"] == [] and meta["applicable"] == {}
    assert meta["no_targets"].startswith("no significant regulator: no regulator of 4 tested")
    tf = read_tokens(tok)
    assert tf.specs == [] and len(tf.cell_ids) == 4

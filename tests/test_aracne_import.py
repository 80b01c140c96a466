"""Networks brought in (netpert.aracne.imported; aracne.networks): each format gives the regulon it must."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from netpert.aracne.imported import import_status, regulons_from_file
from netpert.aracne.regulon import build_regulons
from netpert.errors import InputError

FIX = Path(__file__).parent / "data" / "fixtures" / "aracne"
EXPR = pd.read_csv(FIX / "expr.tsv", sep="\t", index_col=0).T  # samples x genes


def test_aracne_ap_network_txt_is_aracne2regulon(tmp_path):
    """ARACNe-AP's consolidated network (the fixture, as ARACNe-AP wrote it) -> Spearman modes from
    the data, likelihood MI over the regulon's largest, the strongest targets kept."""
    net, reg, fmt = regulons_from_file(FIX / "consolidated_nobonferroni.tsv", EXPR, max_targets=20, min_targets=5)
    assert fmt == "aracne-ap" and list(net.columns) == ["regulator", "target", "mi", "pvalue"]
    ap = pd.read_csv(FIX / "consolidated_nobonferroni.tsv", sep="\t")
    assert len(net) == len(ap)
    expected = build_regulons(net, EXPR, max_targets=20, min_targets=5)
    pd.testing.assert_frame_equal(reg, expected)
    row = reg.iloc[0]
    assert row["mor"] == pytest.approx(spearmanr(EXPR[row["regulator"]], EXPR[row["target"]])[0], abs=1e-12)
    assert reg.groupby("regulator")["likelihood"].max().eq(1.0).all()
    assert reg.groupby("regulator").size().between(5, 20).all()


def _aracne3(tmp_path, rows) -> Path:
    path = tmp_path / "consolidated-net_defaultid.tsv"
    pd.DataFrame(rows, columns=["regulator.values", "target.values", "mi.values", "scc.values", "count.values",
                                "log.p.values"]).to_csv(path, sep="\t", index=False)
    return path


def test_aracne3_consolidated_net_is_pyvipers_conversion(tmp_path):
    genes = EXPR.columns
    rows = [("TF01", genes[10 + k], 0.1 * (k + 1), 0.5 - 0.1 * k, 10 - k % 3, -5.0) for k in range(8)]
    rows += [("TF01", genes[30], 0.0, 0.2, 9, -1.0)]  # MI 0: dropped, as pyviper's MI_thres=0
    rows += [("TF02", genes[40 + k], 0.3, -0.4, 5, -3.0) for k in range(3)]  # too small: dropped
    _, reg, fmt = regulons_from_file(_aracne3(tmp_path, rows), EXPR, max_targets=5, min_targets=4)
    assert fmt == "aracne3" and list(reg["regulator"].unique()) == ["TF01"]
    # highest count first, then MI; the top 5; mor = scc, likelihood = MI / max MI
    t = pd.DataFrame(rows[:8], columns=["r", "t", "mi", "scc", "count", "lp"])
    t = t.sort_values(["count", "mi"], ascending=[False, False], kind="mergesort").head(5)
    assert list(reg["target"]) == list(t["t"])
    np.testing.assert_allclose(reg["mor"], t["scc"])
    np.testing.assert_allclose(reg["likelihood"], t["mi"] / t["mi"].max())


def test_regulon_tsv_is_used_as_it_is(tmp_path):
    genes = EXPR.columns
    table = pd.DataFrame({"regulator": "TF03", "target": genes[50:62], "mor": np.linspace(-0.9, 0.9, 12),
                          "likelihood": np.linspace(1, 0.45, 12)})
    path = tmp_path / "regulon.tsv"
    table.to_csv(path, sep="\t", index=False)
    _, reg, fmt = regulons_from_file(path, EXPR, max_targets=10, min_targets=5)
    assert fmt == "regulon"
    pd.testing.assert_frame_equal(reg, table.head(10).reset_index(drop=True))


def test_bad_files_are_input_errors(tmp_path):
    genes = EXPR.columns
    bad = tmp_path / "bad.tsv"
    bad.write_text("source\tdest\tweight\nA\tB\t1\n")
    with pytest.raises(InputError, match="bad.tsv' has the columns .* none of the known formats"):
        regulons_from_file(bad, EXPR)
    empty = tmp_path / "empty.tsv"
    empty.write_text("Regulator\tTarget\tMI\tpvalue\n")
    with pytest.raises(InputError, match="empty.tsv' .aracne-ap. has a header but no edge"):
        regulons_from_file(empty, EXPR)
    nothing = tmp_path / "nothing.tsv"
    nothing.write_text("")
    with pytest.raises(InputError, match="nothing.tsv"):
        regulons_from_file(nothing, EXPR)
    with pytest.raises(InputError, match="does not exist"):
        regulons_from_file(tmp_path / "missing.txt", EXPR)
    other_ids = tmp_path / "ensembl.txt"
    other_ids.write_text("Regulator\tTarget\tMI\n" + "".join(f"ENSG{k}\tENSG{k + 1}\t0.5\n" for k in range(10)))
    with pytest.raises(InputError, match="10 of 10 edges name genes absent.*gene identifiers"):
        regulons_from_file(other_ids, EXPR)
    text_mi = tmp_path / "text.txt"
    text_mi.write_text(f"Regulator\tTarget\tMI\nTF01\t{genes[20]}\thigh\n")
    with pytest.raises(InputError, match="column mi holds non-numbers"):
        regulons_from_file(text_mi, EXPR)
    # a few absent genes are dropped with a warning
    some = tmp_path / "some.txt"
    some.write_text("Regulator\tTarget\tMI\n" + "".join(f"TF01\t{g}\t0.5\n" for g in genes[20:30]) + "TF01\tNOPE\t0.4\n")
    net, _, _ = regulons_from_file(some, EXPR, min_targets=5)
    assert len(net) == 10
    # no regulon: an InputError unless skip_empty
    net, reg, fmt = regulons_from_file(some, EXPR, min_targets=50)
    with pytest.raises(InputError, match="no regulon of 50 targets"):
        import_status("s", net, reg, fmt, some, len(EXPR), 50, skip_empty=False)
    status = import_status("s", net, reg, fmt, some, len(EXPR), 50, skip_empty=True)
    assert status["status"] == "skipped" and status["source"] == "aracne-ap file some.txt"

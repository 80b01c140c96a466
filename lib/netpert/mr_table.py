"""The master-regulator table (``viper/master_regulators.tsv``): its layout, writer and reader.

One record type owns the file: :class:`MasterRegulatorTable` holds two frames,

* ``regulators`` -- one row per **reported** master regulator (:data:`REGULATOR_COLUMNS`):
  ``stratum, regulator, direction (up|down), rank`` (1 = most specific, per stratum and
  direction), the stratum's and the other cells' mean NES, the effect sizes ``delta_nes``
  (mean NES stratum - rest), ``auc`` (U / (n_stratum x n_rest): the probability that a cell of
  the stratum has a higher NES than another cell) and ``rank_biserial`` (2 auc - 1, in [-1, 1]),
  and the test (``statistic, pvalue, padj``; BH over the regulators tested in the stratum);
* ``strata`` -- one row per stratum of the activity (:data:`STRATUM_COLUMNS`): ``status``
  (:data:`STATUSES`), a ``reason`` in words, whether it has its own network, how many regulons
  it has, how many of them were tested (scored by VIPER), how many passed the test in each
  direction (``n_candidates_up`` / ``n_candidates_down``), how many are reported, the cut-off.

The TSV is both joined (:data:`FILE_COLUMNS`): each regulator row carries its stratum's
columns, and a stratum without a reported regulator is one row with an empty ``regulator``,
``direction`` and ``rank``, so the file says for every stratum what it had. Read it with
:func:`read_master_regulators` (or :meth:`MasterRegulatorTable.read`); write it with
:meth:`MasterRegulatorTable.write`. This module needs only pandas (the ISP and report
environments read the file too).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from netpert._io import read_tsv
from netpert.errors import InputError

#: a stratum's status: master regulators reported / no network of its own / none significant
REPORTED, NO_NETWORK, NO_SIGNIFICANT = "reported", "no_network", "no_significant_regulator"
STATUSES = (REPORTED, NO_NETWORK, NO_SIGNIFICANT)
#: how the report labels a status
STATUS_LABELS = {REPORTED: "master regulators", NO_NETWORK: "no network", NO_SIGNIFICANT: "no significant regulator"}
DIRECTIONS = ("up", "down")

REGULATOR_COLUMNS = [
    "stratum", "regulator", "direction", "rank", "mean_nes", "mean_nes_rest", "delta_nes", "auc", "rank_biserial",
    "statistic", "pvalue", "padj",
]
STRATUM_COLUMNS = [
    "stratum", "status", "reason", "has_network", "n_cells", "n_cells_rest", "n_regulons", "n_tested",
    "n_candidates_up", "n_candidates_down", "n_reported", "padj_cutoff", "test",
]
FILE_COLUMNS = REGULATOR_COLUMNS + STRATUM_COLUMNS[1:]

_REG_FLOAT = ["mean_nes", "mean_nes_rest", "delta_nes", "auc", "rank_biserial", "statistic", "pvalue", "padj"]
_STRATUM_INT = ["n_cells", "n_cells_rest", "n_regulons", "n_tested", "n_candidates_up", "n_candidates_down", "n_reported"]


def _regulators_frame(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.reindex(columns=REGULATOR_COLUMNS).copy()
    out["stratum"] = out["stratum"].astype(str)
    out["regulator"] = out["regulator"].astype(str)
    out["direction"] = out["direction"].astype(str)
    out["rank"] = pd.to_numeric(out["rank"]).astype(np.int64)
    for c in _REG_FLOAT:
        out[c] = pd.to_numeric(out[c]).astype(np.float64)
    return out.reset_index(drop=True)


def _strata_frame(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.reindex(columns=STRATUM_COLUMNS).copy()
    for c in ("stratum", "status", "test"):
        out[c] = out[c].astype(str)
    out["reason"] = out["reason"].fillna("").astype(str)
    out["has_network"] = out["has_network"].map(lambda v: str(v).lower() in ("true", "1", "1.0")).astype(bool)
    for c in _STRATUM_INT:
        out[c] = pd.to_numeric(out[c]).astype(np.int64)
    out["padj_cutoff"] = pd.to_numeric(out["padj_cutoff"]).astype(np.float64)
    return out.reset_index(drop=True)


@dataclass(frozen=True)
class MasterRegulatorTable:
    """Master regulators per stratum and what every stratum had (see the module docstring)."""

    regulators: pd.DataFrame
    strata: pd.DataFrame

    def __post_init__(self):
        regs, strata = _regulators_frame(self.regulators), _strata_frame(self.strata)
        object.__setattr__(self, "regulators", regs)
        object.__setattr__(self, "strata", strata)
        # built in code: an inconsistency is a bug of the caller, not the user's input
        self._check("the master-regulator table", ValueError)

    # ------------------------------------------------------------------ checks
    def _check(self, source: str, error: type[Exception] = InputError) -> None:
        """Raise ``error`` (InputError for a file: :meth:`read`) when the two frames disagree."""
        s, r = self.strata, self.regulators
        if s["stratum"].duplicated().any():
            raise error(f"{source} lists strata twice: {sorted(set(s.loc[s['stratum'].duplicated(), 'stratum']))}")
        bad = sorted(set(s["status"]) - set(STATUSES))
        if bad:
            raise error(f"{source} has unknown status(es) {bad}; expected {', '.join(STATUSES)}: rerun the master_regulators rule")
        bad = sorted(set(r["direction"]) - set(DIRECTIONS))
        if bad:
            raise error(f"{source} has unknown direction(s) {bad}; expected up or down: rerun the master_regulators rule")
        orphan = sorted(set(r["stratum"]) - set(s["stratum"]))
        if orphan:
            raise error(f"{source} has master regulators of strata without a summary row: {orphan}")
        counts = r.groupby("stratum").size()
        reported = s.set_index("stratum")
        n = counts.reindex(reported.index, fill_value=0)
        wrong = reported.index[(n != reported["n_reported"]) | ((n > 0) != (reported["status"] == REPORTED))]
        if len(wrong):
            raise error(f"{source}: the reported regulators disagree with n_reported / status for strata {list(wrong)}")
        if r.duplicated(["stratum", "direction", "rank"]).any():
            raise error(f"{source} has two regulators with the same stratum, direction and rank")

    # ------------------------------------------------------------------ queries
    def status(self, stratum: str) -> pd.Series:
        """The summary row of ``stratum`` (KeyError when absent)."""
        rows = self.strata[self.strata["stratum"] == str(stratum)]
        if rows.empty:
            raise KeyError(stratum)
        return rows.iloc[0]

    def __contains__(self, stratum) -> bool:
        return str(stratum) in set(self.strata["stratum"])

    def of(self, stratum: str) -> pd.DataFrame:
        """The reported regulators of ``stratum``, best first: rank 1 up, rank 1 down, rank 2 up, ..."""
        rows = self.regulators[self.regulators["stratum"] == str(stratum)]
        order = rows["direction"].map({d: i for i, d in enumerate(DIRECTIONS)})
        return rows.assign(_d=order).sort_values(["rank", "_d"], kind="stable").drop(columns="_d")

    def targets(self, stratum: str, top_k: int) -> list[str]:
        """The first ``top_k`` distinct regulators of ``stratum`` in :meth:`of` order ([] when none)."""
        return list(dict.fromkeys(self.of(stratum)["regulator"]))[: int(top_k)]

    def without_regulators(self) -> pd.DataFrame:
        """The summary rows of the strata with no reported master regulator."""
        return self.strata[self.strata["status"] != REPORTED]

    # ------------------------------------------------------------------ file
    def to_frame(self) -> pd.DataFrame:
        """The file's rows (:data:`FILE_COLUMNS`), in the order of ``strata``."""
        per = self.strata.set_index("stratum")
        parts = []
        for stratum in self.strata["stratum"]:
            regs = self.of(stratum)
            if regs.empty:
                regs = pd.DataFrame({"stratum": [stratum]}).reindex(columns=REGULATOR_COLUMNS)
            else:
                regs = regs.assign(_d=regs["direction"].map({d: i for i, d in enumerate(DIRECTIONS)}))
                regs = regs.sort_values(["_d", "rank"], kind="stable").drop(columns="_d")
            parts.append(regs.assign(**{c: per.at[stratum, c] for c in STRATUM_COLUMNS[1:]}))
        if not parts:
            return pd.DataFrame(columns=FILE_COLUMNS)
        return pd.concat(parts, ignore_index=True)[FILE_COLUMNS]

    def write(self, path) -> None:
        """Write the TSV atomically."""
        from netpert._io import atomic_path

        frame = self.to_frame()
        frame["rank"] = frame["rank"].map(lambda v: "" if pd.isna(v) else str(int(v)))
        with atomic_path(path) as tmp:
            frame.to_csv(tmp, sep="\t", index=False, na_rep="")

    @classmethod
    def read(cls, path) -> "MasterRegulatorTable":
        """Read a file written by :meth:`write` (an InputError when it is missing or malformed)."""
        path = Path(path)
        if not path.is_file():
            raise InputError(f"master-regulator table not found: {path} (run the master_regulators rule)")
        frame = read_tsv(path, "master-regulator table", "rerun the master_regulators rule", dtype=str, keep_default_na=False)
        missing = [c for c in FILE_COLUMNS if c not in frame.columns]
        if missing:
            raise InputError(
                f"{path} lacks the column(s) {', '.join(missing)}: it was written by an older netpert; "
                "rerun the master_regulators rule"
            )
        frame = frame.astype(object).where(frame != "", None)
        has = frame["regulator"].notna()
        try:
            strata = frame.drop_duplicates("stratum")[STRATUM_COLUMNS]
            table = object.__new__(cls)
            object.__setattr__(table, "regulators", _regulators_frame(frame.loc[has, REGULATOR_COLUMNS]))
            object.__setattr__(table, "strata", _strata_frame(strata))
        except (ValueError, TypeError) as exc:
            raise InputError(f"{path} has a malformed value ({exc}): rerun the master_regulators rule") from exc
        per_stratum = frame.drop_duplicates(STRATUM_COLUMNS[:2] + ["n_reported"]).groupby("stratum").size()
        if (per_stratum > 1).any():
            raise InputError(f"{path}: the rows of strata {list(per_stratum[per_stratum > 1].index)} disagree on their summary columns")
        table._check(str(path))
        return table

    # ------------------------------------------------------------------ building
    @classmethod
    def build(cls, regulators: pd.DataFrame, strata: pd.DataFrame) -> "MasterRegulatorTable":
        """A table from partial frames: ``regulators`` needs stratum, regulator, direction, rank;
        ``strata`` needs stratum and status. Missing effect / count columns are left missing
        (counts: n_reported from ``regulators``, others 0); a handy constructor for tests and tools."""
        regs = regulators.reindex(columns=REGULATOR_COLUMNS)
        st = strata.copy()
        counts = regs.groupby("stratum").size() if len(regs) else pd.Series(dtype=np.int64)
        st["n_reported"] = st["stratum"].map(counts).fillna(0).astype(np.int64)
        defaults = {"reason": "", "has_network": st["status"] != NO_NETWORK, "padj_cutoff": np.nan, "test": "mannwhitneyu"}
        for c in STRATUM_COLUMNS:
            if c not in st.columns:
                st[c] = defaults.get(c, 0)
            elif c in _STRATUM_INT:
                st[c] = st[c].fillna(0)
            elif c in defaults:
                st[c] = st[c].where(st[c].notna(), defaults[c])
        return cls(regs, st[STRATUM_COLUMNS])


def read_master_regulators(path) -> MasterRegulatorTable:
    """Read ``master_regulators.tsv`` (see :class:`MasterRegulatorTable`)."""
    return MasterRegulatorTable.read(path)

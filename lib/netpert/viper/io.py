"""Regulon tables for VIPER: reading and validation.

A regulon table has one row per edge and the columns ``regulator, target, mor, likelihood``
(the table :func:`netpert.aracne.build_regulons` writes). ``mor`` is the mode of regulation in
[-1, 1] and ``likelihood`` the interaction weight in [0, 1]. Row order matters: R viper keeps a
regulon's targets in file order, and floating-point sums run in that order.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd

from netpert.errors import InputError

log = logging.getLogger(__name__)

REGULON_COLUMNS = ["regulator", "target", "mor", "likelihood"]


def validate_regulons(regulons: pd.DataFrame, source: str = "regulon table") -> pd.DataFrame:
    """Check a regulon table and return a clean copy (four columns, string names, float values).

    Raises :class:`InputError` when a column is missing, a name is empty, ``mor`` is outside
    [-1, 1] or not finite, or ``likelihood`` is outside [0, 1] or NaN. Repeated
    ``(regulator, target)`` pairs keep their first row (as R viper's matrix path does) with a
    warning; a regulator whose likelihoods are all 0 is an error (its weights would be 0/0).
    """
    if not isinstance(regulons, pd.DataFrame):
        raise InputError(f"{source}: expected a pandas DataFrame with columns {REGULON_COLUMNS}, got {type(regulons).__name__}")
    missing = [c for c in REGULON_COLUMNS if c not in regulons.columns]
    if missing:
        raise InputError(
            f"{source} lacks the column(s) {missing}; a regulon table needs the columns {REGULON_COLUMNS} "
            f"(found {list(regulons.columns)})"
        )
    df = regulons[REGULON_COLUMNS].copy()
    for col in ("regulator", "target"):
        if df[col].isna().any():
            raise InputError(f"{source}: column '{col}' has {int(df[col].isna().sum())} empty value(s); every edge needs a regulator and a target name")
        df[col] = df[col].astype(str)
    for col in ("mor", "likelihood"):
        try:
            df[col] = pd.to_numeric(df[col], errors="raise").astype(np.float64)
        except (TypeError, ValueError) as exc:
            raise InputError(f"{source}: column '{col}' must be numeric ({exc})") from None
    mor = df["mor"].to_numpy()
    bad = ~np.isfinite(mor) | (mor < -1) | (mor > 1)
    if bad.any():
        ex = df.loc[bad].iloc[0]
        raise InputError(
            f"{source}: {int(bad.sum())} edge(s) have a mode of regulation (mor) outside [-1, 1] or NaN "
            f"(e.g. {ex['regulator']} -> {ex['target']}: mor={ex['mor']}); mor must be a number in [-1, 1]"
        )
    lik = df["likelihood"].to_numpy()
    bad = np.isnan(lik) | (lik < 0) | (lik > 1)
    if bad.any():
        ex = df.loc[bad].iloc[0]
        raise InputError(
            f"{source}: {int(bad.sum())} edge(s) have a likelihood outside [0, 1] or NaN "
            f"(e.g. {ex['regulator']} -> {ex['target']}: likelihood={ex['likelihood']}); likelihood must be a number in [0, 1]"
        )
    dup = df.duplicated(["regulator", "target"], keep="first")
    if dup.any():
        log.warning("%s: %d repeated regulator-target pair(s); keeping the first row of each", source, int(dup.sum()))
        df = df.loc[~dup]
    maxlik = df.groupby("regulator", sort=False)["likelihood"].max()
    zero = maxlik.index[maxlik.to_numpy() <= 0]
    if len(zero):
        raise InputError(
            f"{source}: regulator(s) {list(zero[:5])} have only zero likelihoods; give them positive likelihoods or remove them"
        )
    return df.reset_index(drop=True)


def read_regulons(path: str | os.PathLike) -> pd.DataFrame:
    """Read and validate a regulon TSV (``regulator, target, mor, likelihood``).

    Doubles are read exactly (round-trip). An empty file (no rows) gives an empty table with the
    four columns; callers decide whether that is an error.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"regulon file '{path}' does not exist")
    if path.stat().st_size == 0:
        return pd.DataFrame({c: pd.Series([], dtype=object if c in ("regulator", "target") else np.float64) for c in REGULON_COLUMNS})
    try:
        df = pd.read_csv(path, sep="\t", float_precision="round_trip", dtype={"regulator": str, "target": str})
    except pd.errors.EmptyDataError:
        return pd.DataFrame({c: pd.Series([], dtype=object if c in ("regulator", "target") else np.float64) for c in REGULON_COLUMNS})
    except Exception as exc:  # parser errors
        raise InputError(f"regulon file '{path}' could not be read as a TSV: {exc}") from None
    return validate_regulons(df, source=f"regulon file '{path}'")

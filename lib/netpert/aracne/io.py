"""ARACNe-AP network files and the long bootstrap / regulon tables.

ARACNe-AP writes tab-separated networks with a header ``Regulator Target MI`` (bootstrap and
``--nobootstrap`` runs) or ``Regulator Target MI pvalue`` (consolidated), numbers in Java's
shortest round-trip form. :func:`write_network` writes the same header (plus a ``count`` column
for consensus networks, which R viper's ``aracne2regulon(format="3col")`` ignores since it reads
the first three fields of each line) with Python's shortest round-trip floats, so
:func:`read_network` gives back the exact doubles. In memory, columns are lower case:
``regulator, target, mi[, pvalue][, count]``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd

from netpert._io import atomic_path, read_text, read_tsv, reading
from netpert.errors import InputError

_AP_NAMES = {"Regulator": "regulator", "Target": "target", "MI": "mi", "pvalue": "pvalue", "count": "count", "Count": "count"}
_OUT_NAMES = {"regulator": "Regulator", "target": "Target", "mi": "MI", "pvalue": "pvalue", "count": "count"}


def read_network(path: str | os.PathLike) -> pd.DataFrame:
    """Read an ARACNe-AP network TSV (``Regulator, Target, MI[, pvalue]``, extra columns kept).

    Returns lower-case columns ``regulator, target, mi[, pvalue, ...]`` with exact doubles.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"network file '{path}' does not exist")
    df = read_tsv(path, "network file", "expected an ARACNe-AP network TSV (Regulator, Target, MI)", float_precision="round_trip",
                  dtype={"Regulator": str, "Target": str, "regulator": str, "target": str})
    df = df.rename(columns={c: _AP_NAMES.get(c, c) for c in df.columns})
    missing = {"regulator", "target", "mi"} - set(df.columns)
    if missing:
        raise InputError(f"network file '{path}' lacks the column(s) {sorted(missing)}; expected an ARACNe-AP header Regulator, Target, MI")
    return df


def write_network(net: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write a network as an ARACNe-AP TSV (atomically): ``Regulator, Target, MI[, pvalue][, count]``."""
    cols = [c for c in ("regulator", "target", "mi", "pvalue", "count") if c in net.columns]
    if cols[:3] != ["regulator", "target", "mi"]:
        raise ValueError("network needs columns regulator, target, mi")
    out = net[cols].rename(columns=_OUT_NAMES)
    with atomic_path(path) as tmp:
        out.to_csv(tmp, sep="\t", index=False, float_format=None)


def write_table(df: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write a long table (bootstrap networks, regulons) as TSV with exact floats, atomically."""
    with atomic_path(path) as tmp:
        df.to_csv(tmp, sep="\t", index=False)


def read_table(path: str | os.PathLike) -> pd.DataFrame:
    """Read a TSV written by :func:`write_table` with exact doubles."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"table '{path}' does not exist")
    return read_tsv(path, "table", "expected a TSV written by netpert.aracne.write_table", float_precision="round_trip",
                    dtype={"regulator": str, "target": str})


def read_bootstraps(path: str | os.PathLike) -> pd.DataFrame:
    """Read a long bootstrap table (``bootstrap, regulator, target, mi``) or an ARACNe-AP bootstrap network."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"bootstrap table '{path}' does not exist")
    with reading(path, "bootstrap table", "rerun the aracne_bootstrap rule"), open(path, encoding="utf-8") as fh:
        header = fh.readline().rstrip("\n").split("\t")
    if "Regulator" in header:
        return read_network(path)
    df = read_table(path)
    missing = {"regulator", "target", "mi"} - set(df.columns)
    if missing:
        raise InputError(f"bootstrap table '{path}' lacks the column(s) {sorted(missing)}")
    return df


def write_threshold(threshold: float, info: dict | None, threshold_path: str | os.PathLike, info_path: str | os.PathLike | None = None) -> None:
    """Write the threshold as ARACNe-AP does (one number, no newline) and ``info`` as JSON, atomically."""
    with atomic_path(threshold_path) as tmp:
        Path(tmp).write_text(repr(float(threshold)))
    if info_path is not None:
        with atomic_path(info_path) as tmp:
            Path(tmp).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")


def read_threshold(path: str | os.PathLike) -> float:
    """Read a threshold file (one number, as ARACNe-AP's ``miThreshold_*.txt``)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"threshold file '{path}' does not exist")
    text = read_text(path, "threshold file", "rerun the aracne_threshold rule").strip()
    try:
        return float(text)
    except ValueError:
        raise InputError(f"threshold file '{path}' does not hold a number (got {text[:40]!r})") from None

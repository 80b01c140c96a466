"""Candidate regulator lists (packaged data) and their intersection with a data set's genes."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Iterable, Sequence

from netpert._io import read_text
from netpert.errors import InputError

#: packaged list names -> file stem per species
LISTS = {
    "tfs": "transcription factors",
    "cotfs": "co-transcription factors",
    "sig": "signalling proteins",
    "surf": "surface markers",
}
SPECIES = ("human", "mouse")


def _packaged_file(name: str, species: str) -> Path:
    stem = f"{name}-hugo" if species == "human" else f"{name}-hugo-mouse"
    path = resources.files("netpert") / "resources" / "regulators" / f"{stem}.txt"
    if not path.is_file():
        available = sorted(
            p.name for p in (resources.files("netpert") / "resources" / "regulators").iterdir() if p.name.endswith(".txt")
        )
        raise InputError(
            f"regulator list '{name}' is not packaged for species '{species}' (packaged files: {', '.join(available)}); "
            "give another list name or a path to a text file with one gene symbol per line"
        )
    return Path(str(path))


def read_list(path: str | Path) -> list[str]:
    """Read one gene symbol per line (blank lines and '#' comments skipped), order kept, duplicates removed."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"regulator list file '{path}' does not exist; give a packaged list name ({', '.join(LISTS)}) or a file path")
    seen: dict[str, None] = {}
    for line in read_text(path, "regulator list file", "give a text file with one gene symbol per line").splitlines():
        gene = line.strip()
        if gene and not gene.startswith("#"):
            seen.setdefault(gene, None)
    if not seen:
        raise InputError(f"regulator list file '{path}' holds no gene symbol")
    return list(seen)


def load_regulators(lists: Sequence[str] | str = ("tfs", "cotfs"), species: str = "human") -> list[str]:
    """Union of the named regulator lists (packaged names or file paths), in order, without duplicates."""
    if isinstance(lists, str):
        lists = [lists]
    if species not in SPECIES:
        raise InputError(f"unknown species '{species}' for regulator lists; use one of {', '.join(SPECIES)}")
    if not lists:
        raise InputError("no regulator list given (config key regulators.lists); name at least one of " + ", ".join(LISTS))
    out: dict[str, None] = {}
    for item in lists:
        path = _packaged_file(item, species) if item in LISTS else Path(item)
        if item not in LISTS and not path.is_file():
            raise InputError(
                f"regulator list '{item}' is neither a packaged list ({', '.join(LISTS)}) nor an existing file"
            )
        for gene in read_list(path):
            out.setdefault(gene, None)
    return list(out)


def regulators_in(genes: Iterable[str], lists: Sequence[str] | str = ("tfs", "cotfs"), species: str = "human") -> list[str]:
    """The regulators of ``lists`` found among ``genes`` (in the genes' order).

    Raises :class:`InputError` when none is found, naming the lists and a few of the genes seen.
    """
    genes = list(genes)
    regs = set(load_regulators(lists, species))
    found = [g for g in genes if g in regs]
    if not found:
        listed = ", ".join([lists] if isinstance(lists, str) else lists)
        sample = ", ".join(genes[:5])
        raise InputError(
            f"none of the {len(regs)} regulators of the list(s) [{listed}] ({species}) is among the data's "
            f"{len(genes)} genes (e.g. {sample}). Check that the genes are symbols of the same species "
            "(set data.gene_symbols to a var column holding symbols) or choose other regulator lists."
        )
    return found

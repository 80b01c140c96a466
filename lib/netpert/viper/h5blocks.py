"""Block-wise h5ad input and output for the workflow's viper step (bounded memory end to end).

- :func:`open_cells`: the cells of an ``.h5ad`` file without loading its matrix. A CSR ``X``
  (what ``prepare_data`` writes) or a dense ``X`` is read on demand, a block of rows at a time
  (:class:`H5Rows`: scipy CSR blocks / dense arrays, exactly the values ``anndata.read_h5ad``
  would give); other layouts (CSC, ...) and the signatures that need whole genes (``mad``,
  ``rank``: column access) read ``X`` into memory as before.
- :class:`ActivityWriter`: writes the activity h5ad as ``anndata`` lays it out (X and layers as
  dense float64 datasets of the final shape, filled one row block at a time; obs / var / uns /
  obsm / varm / obsp / varp through ``anndata.io.write_elem`` at the end), so
  ``anndata.read_h5ad`` reads back what ``AnnData.write_h5ad`` of the in-memory result gives.

The output stays float64 (as the in-memory :func:`netpert.viper.activity_anndata` gives): the
p-values of |NES| above ~14 are below float32's smallest subnormal (1.4e-45) and would become 0,
and float32 NES (7 digits) could reorder master regulators; the step's memory bound does not
need it (only one block of each array exists at a time).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from netpert.errors import InputError

#: anndata's encoding attributes of a dense array and of a dict (anndata 0.10-0.13)
ARRAY_ATTRS = {"encoding-type": "array", "encoding-version": "0.2.0"}
DICT_ATTRS = {"encoding-type": "dict", "encoding-version": "0.1.0"}
ROOT_ATTRS = {"encoding-type": "anndata", "encoding-version": "0.1.0"}

#: signatures whose per-gene statistics need whole genes (column access): X is read into memory
COLUMN_METHODS = ("mad", "rank")


def _attr(node, key: str) -> str | None:
    v = node.attrs.get(key)
    return v.decode() if isinstance(v, bytes) else (None if v is None else str(v))


class H5Rows:
    """Rows of an h5ad matrix read on demand: ``X[rows]`` gives a scipy CSR block (CSR group) or
    a numpy array (dense dataset). ``rows``: a slice (step 1) or row indices."""

    def __init__(self, node, where: str):
        import h5py

        self.where = where
        if isinstance(node, h5py.Group) and _attr(node, "encoding-type") == "csr_matrix":
            self.sparse_rows = True
            self.shape = tuple(int(s) for s in node.attrs["shape"])
            self._data, self._indices = node["data"], node["indices"]
            self._indptr = np.asarray(node["indptr"][...], dtype=np.int64)
            self.dtype = self._data.dtype
            if len(self._indptr) != self.shape[0] + 1:
                raise InputError(f"{where}: X/indptr has {len(self._indptr)} entries for {self.shape[0]} rows; the file is damaged")
        elif isinstance(node, h5py.Dataset) and node.ndim == 2:
            self.sparse_rows = False
            self.shape = tuple(int(s) for s in node.shape)
            self._ds = node
            self.dtype = node.dtype
        else:
            raise TypeError("not a CSR group or a 2-D dataset")
        self.ndim = 2

    @staticmethod
    def _span(rows, n: int):
        if isinstance(rows, slice):
            start, stop, step = rows.indices(n)
            if step != 1:
                raise ValueError("H5Rows reads row slices of step 1")
            return start, stop, None
        idx = np.asarray(rows, dtype=np.int64)
        if idx.size == 0:
            return 0, 0, idx
        lo, hi = int(idx.min()), int(idx.max()) + 1
        return lo, hi, idx - lo

    def __getitem__(self, rows):
        lo, hi, sub = self._span(rows, self.shape[0])
        if self.sparse_rows:
            a, b = int(self._indptr[lo]), int(self._indptr[hi])
            blk = sp.csr_matrix((self._data[a:b], self._indices[a:b], self._indptr[lo:hi + 1] - a), shape=(hi - lo, self.shape[1]))
        else:
            blk = np.asarray(self._ds[lo:hi])
        return blk if sub is None else blk[sub]


@contextlib.contextmanager
def open_cells(path, in_memory: bool = False) -> Iterator[tuple]:
    """``(X, genes, cells, obs)`` of the h5ad file ``path`` with X read by blocks (:class:`H5Rows`)
    where its layout allows and ``in_memory`` is false; the file stays open inside the block."""
    import h5py
    from anndata.io import read_elem

    path = Path(path)
    if not path.exists():
        raise InputError(f"input file '{path}' does not exist; set config key 'input' to an .h5ad file or embedded:pbmc68k_reduced")
    if path.is_dir():
        raise InputError(f"input '{path}' is a folder, not an .h5ad file")

    def unreadable(exc):
        return InputError(
            f"input file '{path}' could not be read as h5ad ({type(exc).__name__}: {exc}); "
            "check it is a complete AnnData .h5ad file (e.g. re-export it with adata.write_h5ad)"
        )

    try:
        f = h5py.File(path, "r")
    except Exception as exc:
        raise unreadable(exc) from exc
    with f:
        try:
            obs = read_elem(f["obs"])
            var = read_elem(f["var"])
            node = f["X"]
        except Exception as exc:
            raise unreadable(exc) from exc
        X = None
        if not in_memory:
            with contextlib.suppress(TypeError):
                X = H5Rows(node, str(path))
        if X is None:
            try:
                X = read_elem(node)
            except Exception as exc:
                raise unreadable(exc) from exc
        if X is None:
            raise InputError(f"input file '{path}' has no expression matrix X")
        if sp.issparse(X):
            X = sp.csr_matrix(X)
        elif not isinstance(X, H5Rows):
            X = np.asarray(X)
        if np.dtype(X.dtype).kind not in "fiub":
            raise InputError(f"expression values must be numeric, got dtype {X.dtype} in '{path}'")
        genes, cells = pd.Index(var.index.astype(str)), pd.Index(obs.index.astype(str))
        if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
            raise InputError(f"expression matrix must be 2-D with at least one cell and one gene, got shape {X.shape} in '{path}'")
        if X.shape != (len(cells), len(genes)):
            raise InputError(f"'{path}': X is {X.shape} but obs has {len(cells)} and var {len(genes)} entries; the file is damaged")
        if genes.has_duplicates:
            dup = genes[genes.duplicated()].unique()
            raise InputError(f"gene names must be unique; {len(dup)} repeated (e.g. {list(dup[:5])}); make var_names unique first")
        yield X, genes, cells, obs


class ActivityWriter:
    """An activity h5ad filled by row blocks: ``X`` and ``layers[name]`` (float64, final shape)."""

    def __init__(self, f, n_cells: int, n_regulators: int, layers: tuple[str, ...]):
        self.f = f
        f.attrs.update(ROOT_ATTRS)
        self.ds = {"X": f.create_dataset("X", shape=(n_cells, n_regulators), dtype=np.float64)}
        self.ds["X"].attrs.update(ARRAY_ATTRS)
        grp = f.create_group("layers")
        grp.attrs.update(DICT_ATTRS)
        for name in layers:
            self.ds[name] = grp.create_dataset(name, shape=(n_cells, n_regulators), dtype=np.float64)
            self.ds[name].attrs.update(ARRAY_ATTRS)
        self.rows_written = 0

    def write(self, sel: slice, **arrays) -> None:
        """Rows ``sel`` of X (``X=``) and of the layers (their names as keywords)."""
        if set(arrays) != set(self.ds):
            raise ValueError(f"write needs {sorted(self.ds)}, got {sorted(arrays)}")
        for name, values in arrays.items():
            self.ds[name][sel] = np.asarray(values, dtype=np.float64)
        self.rows_written += sel.stop - sel.start

    def finish(self, obs: pd.DataFrame, var: pd.DataFrame, uns: dict) -> None:
        """obs, var, uns and the empty obsm / varm / obsp / varp, as ``write_h5ad`` writes them."""
        import anndata as ad
        from anndata.io import write_elem

        n = self.ds["X"].shape[0]
        if self.rows_written != n:  # pragma: no cover - a bug, not the user's input
            raise RuntimeError(f"activity file: {self.rows_written} of {n} rows written")
        skel = ad.AnnData(obs=obs, var=var, uns=uns)  # no X: anndata's own checks and conversions
        skel.strings_to_categoricals()  # as write_h5ad does
        write_elem(self.f, "obs", skel.obs)
        write_elem(self.f, "var", skel.var)
        for key in ("obsm", "obsp", "varm", "varp"):
            write_elem(self.f, key, {})
        write_elem(self.f, "uns", dict(skel.uns))

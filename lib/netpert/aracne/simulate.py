"""A planted regulatory network to test and benchmark ARACNe (same design as the ARACNe fixture).

* Root regulators are N(0,1) (70%) or standardised Gamma(2,1); about a fifth of the regulators are
  children of an earlier regulator (``std(f(parent)) + 0.35 N(0,1)``), which plants
  regulator-regulator edges and regulator-regulator-target triangles for the DPI.
* Each target gets one regulator (every regulator gets at least one target when possible) and
  10% get a second one; a target is ``std(sum_k std(f_k(reg_k))) + U(0.3, 0.9) sqrt(#regs) N(0,1)``
  with ``f`` monotone (linear, tanh, sigmoid, cube, exp, softplus, their negatives) so the sign
  of each edge is known (``sign`` in the truth table).
* ``n_noise`` genes are pure noise.
* ``counts=False``: continuous values shifted to be positive (float32). ``counts=True``: Poisson
  counts with log-mean ``1 + 0.8 * value`` as a sparse CSR float32 matrix, i.e. the workflow's
  cell data with many ties at zero.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

_FUNCS = {
    "linear": (lambda x: x, 1),
    "neg_linear": (lambda x: -x, -1),
    "tanh": (lambda x: np.tanh(1.5 * x), 1),
    "neg_tanh": (lambda x: -np.tanh(1.5 * x), -1),
    "sigmoid": (lambda x: 1 / (1 + np.exp(-3 * x)), 1),
    "neg_sigmoid": (lambda x: -1 / (1 + np.exp(-3 * x)), -1),
    "cube": (lambda x: x**3, 1),
    "exp": (lambda x: np.exp(0.8 * x), 1),
    "softplus": (lambda x: np.log1p(np.exp(2 * x)), 1),
}


def _std(x: np.ndarray) -> np.ndarray:
    s = x.std()
    return (x - x.mean()) / (s if s > 0 else 1.0)


def simulate_network(
    n_cells: int = 300,
    n_regulators: int = 20,
    n_targets: int = 200,
    seed: int = 0,
    n_noise: int | None = None,
    counts: bool = False,
    return_type: str = "anndata",
):
    """Simulate expression with a planted network.

    Parameters
    ----------
    n_cells, n_regulators, n_targets
        cells, regulators (named ``TF001``...) and regulated target genes (``G0001``...).
    seed
        numpy ``default_rng`` seed; the output is a deterministic function of all arguments.
    n_noise
        extra pure-noise genes (``N0001``...; default ``n_targets // 4``).
    counts
        Poisson counts (sparse, ties at zero) instead of continuous values.
    return_type
        ``"anndata"`` (cells x genes, var index = gene names) or ``"dataframe"`` (cells x genes).

    Returns
    -------
    (data, truth)
        ``truth`` has columns ``regulator, target, relation, sign, type`` ("tf-tf" or "tf-target").
    """
    if n_regulators < 1 or n_targets < 0 or n_cells < 2:
        raise ValueError("need n_regulators >= 1, n_targets >= 0 and n_cells >= 2")
    rng = np.random.default_rng(seed)
    n_noise = n_targets // 4 if n_noise is None else int(n_noise)
    width = max(3, len(str(n_regulators)))
    regs = [f"TF{i + 1:0{width}d}" for i in range(n_regulators)]
    names = list(_FUNCS)
    truth = []
    values: dict[str, np.ndarray] = {}
    for i, r in enumerate(regs):
        if i >= 2 and rng.random() < 0.2:
            parent = regs[int(rng.integers(0, i))]
            rel = names[int(rng.integers(0, len(names)))]
            f, sign = _FUNCS[rel]
            values[r] = _std(_std(f(values[parent])) + 0.35 * rng.standard_normal(n_cells))
            truth.append((parent, r, rel, sign, "tf-tf"))
        elif rng.random() < 0.7:
            values[r] = rng.standard_normal(n_cells)
        else:
            values[r] = _std(rng.gamma(2.0, 1.0, n_cells))
    targets = [f"G{i + 1:04d}" for i in range(n_targets)]
    owners = np.concatenate([rng.permutation(n_regulators), rng.integers(0, n_regulators, max(0, n_targets - n_regulators))])[:n_targets]
    for t, owner in zip(targets, owners):
        parents = [regs[owner]]
        if n_regulators > 1 and rng.random() < 0.1:
            other = regs[int(rng.integers(0, n_regulators))]
            if other != parents[0]:
                parents.append(other)
        signal = np.zeros(n_cells)
        for p in parents:
            rel = names[int(rng.integers(0, len(names)))]
            f, sign = _FUNCS[rel]
            signal += _std(f(values[p]))
            truth.append((p, t, rel, sign, "tf-target"))
        noise_sd = rng.uniform(0.3, 0.9) * np.sqrt(len(parents))
        values[t] = _std(_std(signal) + noise_sd * rng.standard_normal(n_cells))
    noise = [f"N{i + 1:04d}" for i in range(n_noise)]
    for g in noise:
        values[g] = rng.standard_normal(n_cells)
    genes = regs + targets + noise
    mat = np.column_stack([values[g] for g in genes])
    if counts:
        lam = np.exp(1.0 + 0.8 * np.clip(mat, -4, 4))
        X = sp.csr_matrix(rng.poisson(lam).astype(np.float32))
    else:
        X = (mat - mat.min(axis=0) + 1.0).astype(np.float32)
    cells = [f"cell{i + 1:05d}" for i in range(n_cells)]
    truth_df = pd.DataFrame(truth, columns=["regulator", "target", "relation", "sign", "type"])
    if return_type == "dataframe":
        dense = X.toarray() if sp.issparse(X) else X
        return pd.DataFrame(dense, index=cells, columns=genes), truth_df
    if return_type != "anndata":
        raise ValueError("return_type must be 'anndata' or 'dataframe'")
    import anndata as ad

    adata = ad.AnnData(X=X, obs=pd.DataFrame(index=cells), var=pd.DataFrame(index=genes))
    adata.uns["netpert"] = {"simulated": {"n_cells": n_cells, "n_regulators": n_regulators, "n_targets": n_targets, "seed": seed, "counts": counts}}
    return adata, truth_df

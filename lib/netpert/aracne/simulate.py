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
* Single-cell UMI counts (``umis=`` the median library size): ``n_cell_types`` cell types (equal
  blocks of cells, ``obs['cell_type']`` = ``type0``...) that differ by a per-type shift of every
  root regulator (``cell_type_effect`` x N(0,1), propagated down the network); each gene has a
  baseline level ``N(0, gene_sd)`` on the log scale; a cell's expected counts are
  ``size_c * softmax_g(baseline_g + expression_effect * value_cg)`` with lognormal size factors
  ``size_c = umis * exp(size_sd * N(0,1))``; optional dropout zeroes a count with probability
  ``1 / (1 + exp(dropout_shape * (log(mean) - log(dropout_midpoint))))`` (zero inflation of weakly
  expressed genes); counts are Poisson. X is a sparse CSR float32 matrix of integers.
  All randomness of these options comes from a second stream
  (``SeedSequence(seed, spawn_key=(1,))``), so the planted network (the truth table) is that of
  the same seed without them, and the outputs for the other arguments are unchanged.
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
    *,
    n_cell_types: int = 1,
    cell_type_effect: float = 1.0,
    umis: float | None = None,
    size_sd: float = 0.5,
    gene_sd: float = 1.0,
    expression_effect: float = 0.8,
    dropout_midpoint: float | None = None,
    dropout_shape: float = 2.0,
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
    n_cell_types, cell_type_effect
        cell types (equal blocks of cells; ``obs['cell_type']`` in AnnData) and the sd of the
        per-type shift of each root regulator.
    umis, size_sd, gene_sd, expression_effect, dropout_midpoint, dropout_shape
        integer UMI counts (see the module docstring): median expected UMIs per cell (before
        dropout), lognormal sd of the size factors, sd of the genes' baseline log levels, effect of
        the planted value on the log level, the expected count at which half of the values drop
        out (None: no dropout) and the steepness of that logistic. ``umis`` overrides ``counts``.

    Returns
    -------
    (data, truth)
        ``truth`` has columns ``regulator, target, relation, sign, type`` ("tf-tf" or "tf-target").
    """
    if n_regulators < 1 or n_targets < 0 or n_cells < 2:
        raise ValueError("need n_regulators >= 1, n_targets >= 0 and n_cells >= 2")
    if n_cell_types < 1 or n_cell_types > n_cells:
        raise ValueError("need 1 <= n_cell_types <= n_cells")
    if umis is not None and not umis > 0:
        raise ValueError("umis (the median UMIs per cell) must be > 0")
    rng = np.random.default_rng(seed)
    # the options below draw from their own stream so the main stream (network, values) is unchanged
    aux = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1,))) if (n_cell_types > 1 or umis is not None) else None
    labels = (np.arange(n_cells) * n_cell_types) // n_cells
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
        else:
            if rng.random() < 0.7:
                values[r] = rng.standard_normal(n_cells)
            else:
                values[r] = _std(rng.gamma(2.0, 1.0, n_cells))
            if n_cell_types > 1:
                values[r] = values[r] + cell_type_effect * aux.standard_normal(n_cell_types)[labels]
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
    if umis is not None:
        logit = aux.normal(0.0, gene_sd, mat.shape[1])[None, :] + expression_effect * np.clip(mat, -4, 4)
        prob = np.exp(logit - logit.max(axis=1, keepdims=True))
        prob /= prob.sum(axis=1, keepdims=True)
        size = umis * np.exp(size_sd * aux.standard_normal(n_cells))
        lam = size[:, None] * prob
        y = aux.poisson(lam)
        if dropout_midpoint is not None:
            keep = 1.0 / (1.0 + np.exp(-dropout_shape * (np.log(lam) - np.log(dropout_midpoint))))
            y = np.where(aux.random(lam.shape) < keep, y, 0)
        X = sp.csr_matrix(y.astype(np.float32))
    elif counts:
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

    obs = pd.DataFrame(index=cells)
    sim = {"n_cells": n_cells, "n_regulators": n_regulators, "n_targets": n_targets, "seed": seed, "counts": counts}
    if aux is not None:
        obs["cell_type"] = pd.Categorical([f"type{t}" for t in labels])
        sim.update(n_cell_types=n_cell_types, cell_type_effect=cell_type_effect)
    if umis is not None:
        sim.update(umis=umis, size_sd=size_sd, gene_sd=gene_sd, expression_effect=expression_effect,
                   dropout_midpoint=dropout_midpoint, dropout_shape=dropout_shape)
    adata = ad.AnnData(X=X, obs=obs, var=pd.DataFrame(index=genes))
    adata.uns["netpert"] = {"simulated": sim}
    if umis is not None:
        adata.uns["netpert"]["raw_counts"] = True
    return adata, truth_df

"""Effects of a perturbation, consistency of a method with the baseline, and embedding quality.

Three groups:

- per perturbation (used while a screen runs): :func:`cosine_rows`, :func:`gene_shifts`,
  :func:`top_affected_genes`;
- consistency of a fast method with ``baseline`` on the same token file: :func:`consistency`;
- quality of a set of embeddings for a labelling (perturbation or cell type):
  :func:`embedding_quality` (scikit-learn throughout).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: the consistency bar every fast method is held to against ``baseline`` (config ``isp.bar``)
DEFAULT_BAR = {"mean_cosine": 0.999, "min_cosine": 0.99, "spearman": 0.95}


# --------------------------------------------------------------------------- per perturbation


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of each row of ``a`` with the same row of ``b`` (float64; 1.0 for two zero rows)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    if a.ndim == 1:
        a, b = a[None], b[None]
    num = np.einsum("ij,ij->i", a, b)
    na = np.linalg.norm(a, axis=1)
    nb = np.linalg.norm(b, axis=1)
    den = na * nb
    out = np.divide(num, den, out=np.ones_like(num), where=den > 0)
    return np.clip(out, -1.0, 1.0)


def gene_shifts(
    original_states: np.ndarray,
    perturbed_states: np.ndarray,
    original_ids: np.ndarray,
    perturbed_ids: np.ndarray,
    exclude: Sequence[int] = (),
) -> tuple[np.ndarray, np.ndarray]:
    """Per-gene cosine between a cell's original and perturbed token states.

    Genes are matched by token id (a gene occurs once per cell); the perturbed genes, special
    tokens (``exclude``) and genes absent from the perturbed sequence (truncated away) are left
    out. Returns ``(gene_ids, cosines)`` in the original sequence's order: Geneformer's cell
    shift is the mean of these cosines.
    """
    oid = np.asarray(original_ids, dtype=np.int64)
    pid = np.asarray(perturbed_ids, dtype=np.int64)
    n_o, n_p = min(len(oid), len(original_states)), min(len(pid), len(perturbed_states))
    oid, pid = oid[:n_o], pid[:n_p]
    if n_o == 0 or n_p == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    keep = ~np.isin(oid, np.asarray(list(exclude), dtype=np.int64))
    order = np.argsort(pid, kind="stable")
    sorted_p = pid[order]
    pos = np.clip(np.searchsorted(sorted_p, oid), 0, n_p - 1)
    found = sorted_p[pos] == oid
    sel = np.nonzero(keep & found)[0]
    a = np.asarray(original_states, dtype=np.float64)[sel]
    b = np.asarray(perturbed_states, dtype=np.float64)[order[pos[sel]]]
    return oid[sel], cosine_rows(a, b) if len(sel) else np.zeros(0)


def top_affected_genes(gene_ids: np.ndarray, cosines: np.ndarray, top_n: int = 10) -> list[tuple[int, float]]:
    """The ``top_n`` genes whose states moved most (lowest cosine first; ties keep sequence order)."""
    cosines = np.asarray(cosines, dtype=np.float64)
    worst = np.argsort(cosines, kind="stable")[:top_n]
    return [(int(gene_ids[k]), float(cosines[k])) for k in worst]


# --------------------------------------------------------------------------- consistency


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman correlation (nan with fewer than 3 values or a constant side)."""
    from scipy import stats

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    ok = np.isfinite(a) & np.isfinite(b)
    a, b = a[ok], b[ok]
    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(stats.spearmanr(a, b).statistic)


def consistency(method: dict, baseline: dict, bar: dict | None = None) -> dict:
    """Agreement of a method's screen with the baseline's screen of the same cells.

    ``method`` / ``baseline``: the dicts of :func:`netpert.isp.records.read_result` (original and
    perturbed embeddings, per-perturbation cosine and cell shift, perturbation labels). Measures:

    - ``mean_cosine`` / ``min_cosine``: cosine of each embedding (originals and perturbed cells)
      with the baseline's;
    - ``max_shift_diff``: max |difference| of the cell shift (mean per-gene cosine) and
      ``max_cosine_diff``: of the original-vs-perturbed cell cosine;
    - ``spearman``: Spearman of the effect (1 - cosine of original vs perturbed cell) over every
      perturbation of every cell: do both rank the perturbations' effects alike;
    - ``spearman_targets``: Spearman of the mean effect per perturbed gene (set), nan with < 3;
    - ``passes_bar`` and ``failed_criteria`` against ``bar``.
    """
    bar = {**DEFAULT_BAR, **(bar or {})}
    _check_same_screen(method, baseline)
    emb_m = np.concatenate([method["original"], method["perturbed"]])
    emb_b = np.concatenate([baseline["original"], baseline["perturbed"]])
    cos = cosine_rows(emb_m, emb_b)
    eff_m = 1.0 - np.asarray(method["cosine"], dtype=np.float64)
    eff_b = 1.0 - np.asarray(baseline["cosine"], dtype=np.float64)
    labels = np.asarray(baseline["perturbation"]).astype(str)
    out = {
        "n_embeddings": int(len(cos)),
        "n_perturbations": int(len(eff_b)),
        "mean_cosine": float(cos.mean()) if len(cos) else float("nan"),
        "min_cosine": float(cos.min()) if len(cos) else float("nan"),
        "max_cosine_diff": _max_abs(eff_m - eff_b),
        "max_shift_diff": _max_abs(np.asarray(method["cell_shift"], float) - np.asarray(baseline["cell_shift"], float)),
        "spearman": spearman(eff_m, eff_b),
        "spearman_targets": float("nan"),
    }
    if len(labels):
        uniq, inv = np.unique(labels, return_inverse=True)
        if len(uniq) >= 3:
            mean_m = np.bincount(inv, weights=eff_m) / np.bincount(inv)
            mean_b = np.bincount(inv, weights=eff_b) / np.bincount(inv)
            out["spearman_targets"] = spearman(mean_m, mean_b)
    out.update(judge(out, bar))
    return out


def judge(figures: dict, bar: dict) -> dict:
    """``passes_bar`` (all criteria met; nan figures fail) and the criteria missed."""
    failed = []
    for key in ("mean_cosine", "min_cosine", "spearman"):
        if key not in bar:
            continue
        value = figures.get(key, float("nan"))
        if not (np.isfinite(value) and value >= bar[key]):
            failed.append(f"{key} {value:.5g} < {bar[key]}")
    return {"passes_bar": not failed, "failed_criteria": "; ".join(failed)}


def _max_abs(x: np.ndarray) -> float:
    x = np.asarray(x, dtype=np.float64)
    x = x[np.isfinite(x)]
    return float(np.abs(x).max()) if len(x) else float("nan")


def _check_same_screen(method: dict, baseline: dict) -> None:
    from netpert.errors import InputError

    for key in ("cell_ids", "perturbation", "cell_index"):
        a, b = np.asarray(method[key]), np.asarray(baseline[key])
        if a.shape != b.shape or not np.array_equal(a, b):
            raise InputError(
                f"the method's and the baseline's screens differ in '{key}': they must come from the same "
                "token file (rerun isp_infer for both)"
            )


# --------------------------------------------------------------------------- embedding quality


def embedding_quality(embeddings: np.ndarray, labels: Sequence, seed: int = 0, prefix: str = "") -> dict:
    """How well ``embeddings`` separate ``labels`` (scikit-learn metrics; nan where undefined).

    - ``ridge_accuracy`` / ``ridge_f1``: RidgeClassifier trained on 80 % of the points (split
      stratified where every label has two points), accuracy and weighted F1 on the other 20 %;
    - ``silhouette`` (cosine distance), ``davies_bouldin``, ``calinski_harabasz``;
    - ``separation_ratio``: mean distance between label centroids / mean distance of points to
      their own centroid (inter / intra; higher separates better);
    - ``knn_consistency``: share of each point's k nearest neighbours (k = 10 or fewer) that carry
      its label;
    - ``kmeans_ari`` / ``kmeans_nmi``: k-means with one cluster per label against the labels.
    """
    from sklearn import metrics as skm
    from sklearn.cluster import KMeans
    from sklearn.linear_model import RidgeClassifier
    from sklearn.model_selection import train_test_split
    from sklearn.neighbors import NearestNeighbors

    X = np.asarray(embeddings, dtype=np.float64)
    y = np.asarray(labels).astype(str)
    keys = ("ridge_accuracy", "ridge_f1", "silhouette", "davies_bouldin", "calinski_harabasz",
            "separation_ratio", "knn_consistency", "kmeans_ari", "kmeans_nmi")
    out = {f"{prefix}{k}": float("nan") for k in keys}
    classes, inv, counts = np.unique(y, return_inverse=True, return_counts=True)
    n = len(y)
    if len(classes) < 2 or n < 4 or len(classes) >= n:
        return out
    p = prefix
    out[f"{p}silhouette"] = float(skm.silhouette_score(X, y, metric="cosine", random_state=seed))
    out[f"{p}davies_bouldin"] = float(skm.davies_bouldin_score(X, y))
    out[f"{p}calinski_harabasz"] = float(skm.calinski_harabasz_score(X, y))
    centroids = np.stack([X[inv == c].mean(axis=0) for c in range(len(classes))])
    intra = np.linalg.norm(X - centroids[inv], axis=1).mean()
    d = np.linalg.norm(centroids[:, None] - centroids[None], axis=-1)
    inter = d[np.triu_indices(len(classes), 1)].mean()
    out[f"{p}separation_ratio"] = float(inter / intra) if intra > 0 else float("inf")
    k = min(10, n - 1)
    nn = NearestNeighbors(n_neighbors=k + 1).fit(X)
    idx = nn.kneighbors(X, return_distance=False)[:, 1:]
    out[f"{p}knn_consistency"] = float((y[idx] == y[:, None]).mean())
    km = KMeans(n_clusters=len(classes), n_init=10, random_state=seed).fit(X)
    out[f"{p}kmeans_ari"] = float(skm.adjusted_rand_score(y, km.labels_))
    out[f"{p}kmeans_nmi"] = float(skm.normalized_mutual_info_score(y, km.labels_))
    n_test = max(len(classes), int(round(0.2 * n)))
    if n - n_test >= 2:
        strat = y if counts.min() >= 2 and n_test >= len(classes) else None
        X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=n_test, random_state=seed, stratify=strat)
        if len(np.unique(y_tr)) >= 2:
            pred = RidgeClassifier().fit(X_tr, y_tr).predict(X_te)
            out[f"{p}ridge_accuracy"] = float(skm.accuracy_score(y_te, pred))
            out[f"{p}ridge_f1"] = float(skm.f1_score(y_te, pred, average="weighted", zero_division=0))
    return out


def control_separation(original: np.ndarray, perturbed: np.ndarray, seed: int = 0) -> dict:
    """Control-vs-perturbed separation: the two-group silhouette (cosine) and the centroid
    separation ratio of the original cells against all their perturbed versions."""
    X = np.concatenate([original, perturbed])
    y = np.array(["control"] * len(original) + ["perturbed"] * len(perturbed))
    q = embedding_quality(X, y, seed=seed)
    return {
        "control_silhouette": q["silhouette"],
        "control_separation_ratio": q["separation_ratio"],
    }

"""Local neighbourhoods of SAE features by decoder cosine, across the widths of SAEs at one site.

The recipe: take a feature of interest (the *anchor*) at one width, its ``n`` most similar decoder
directions pooled over the decoders of every width (:func:`neighbourhood_points`), lay them out in
2-D with UMAP under the cosine metric (:func:`umap_layout`); then take the directions that stand for
the same concept at each width (a parent at 512, its children at 2048, ...:
:func:`concept_vectors`), centre them at the origin and project them to 2-D
(:func:`centred_projection`). The figures are in :mod:`helpers.notebook.neighbourhood_plots`.

Every decoder is a ``W_dec`` of shape ``[width, d_model]`` (numpy or torch); cosines are between
its unit-normalised rows (:func:`unit_directions`). Ties in cosine are broken by width, then by
feature index, so that every result is deterministic. ``umap-learn`` is imported only when a UMAP
layout is asked for.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import ConfigError

__all__ = [
    "MIN_UMAP_POINTS",
    "centred_projection",
    "concept_vectors",
    "nearest_neighbours",
    "neighbourhood_points",
    "umap_layout",
    "unit_directions",
]

log = logging.getLogger(__name__)

#: below this many points :func:`umap_layout` falls back to PCA (UMAP needs a neighbour graph)
MIN_UMAP_POINTS = 5

_CHUNK = 65536  # rows of a decoder multiplied at a time (float64 copies of at most 65536 x d_model)


def _as_numpy(W: Any) -> np.ndarray:
    """A numpy array of a numpy array, a torch tensor (detached, on the CPU) or a nested list."""
    if hasattr(W, "detach"):  # a torch tensor, without importing torch
        W = W.detach().cpu().float().numpy()
    return np.asarray(W)


def unit_directions(W_dec: Any) -> np.ndarray:
    """The rows of ``W_dec`` ``[n, d]`` (numpy or torch) normalised to unit length, as float32.

    A zero row (a dead feature's decoder) stays zero; its cosine with anything is 0."""
    W = _as_numpy(W_dec).astype(np.float32, copy=False)
    if W.ndim != 2:
        raise ConfigError(f"a decoder must be a 2-D array [features, d_model], not of shape {W.shape}: "
                          "pass the SAE's W_dec")
    if not np.isfinite(W).all():
        raise ConfigError("the decoder has NaN or infinite entries: check the SAE's W_dec")
    norms = np.linalg.norm(W.astype(np.float64), axis=1, keepdims=True)
    return (W / np.maximum(norms, 1e-12)).astype(np.float32)


def _cosines(dirs: np.ndarray, vector: np.ndarray) -> np.ndarray:
    """``dirs @ vector`` in float64, ``_CHUNK`` rows at a time, rounded to float32: equal rows of
    ``dirs`` get equal cosines, so that ties are ties and are broken by index."""
    v = vector.astype(np.float64)
    out = np.empty(dirs.shape[0], dtype=np.float32)
    for start in range(0, dirs.shape[0], _CHUNK):
        out[start:start + _CHUNK] = dirs[start:start + _CHUNK].astype(np.float64) @ v
    return out


def _top(cos: np.ndarray, n: int, exclude: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Indices and values of the ``n`` largest of ``cos`` (but ``exclude``), best first, ties by index."""
    idx = np.arange(cos.shape[0])
    if exclude is not None:
        keep = idx != exclude
        idx, cos = idx[keep], cos[keep]
    n = min(n, idx.shape[0])
    if n <= 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
    if n < idx.shape[0]:  # keep every value tied with the n-th largest, then sort those only
        kth = np.partition(cos, idx.shape[0] - n)[idx.shape[0] - n]
        keep = cos >= kth
        idx, cos = idx[keep], cos[keep]
    order = np.lexsort((idx, -cos))[:n]
    return idx[order].astype(np.int64), cos[order].astype(np.float32)


def nearest_neighbours(dirs: Any, feature: int, n: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """The ``n`` features of one decoder whose directions have the highest cosine with ``feature``'s,
    ``feature`` itself excluded: ``(indices [n], cosines [n])``, best first, ties by lower index.

    ``dirs``: a decoder ``[width, d_model]`` (its rows are normalised here, so ``W_dec`` will do).
    Fewer than ``n`` when the decoder has fewer other features."""
    dirs = unit_directions(dirs)
    feature = _check_feature(feature, dirs.shape[0], "the decoder")
    if n < 0:
        raise ConfigError(f"n (the number of neighbours) must be >= 0, not {n}")
    return _top(_cosines(dirs, dirs[feature]), n, exclude=feature)


def _check_feature(feature: int, width: int, where: str) -> int:
    feature = int(feature)
    if not 0 <= feature < width:
        raise ConfigError(f"feature {feature} is not in {where} (features 0 to {width - 1}): pick another index")
    return feature


def _unit_decoders(decoders: Mapping[int, Any]) -> dict[int, np.ndarray]:
    """Every width's unit directions, widths ascending, with one ``d_model`` for all."""
    if not decoders:
        raise ConfigError("no decoders given: pass {width: W_dec} for at least one width")
    dirs = {int(w): unit_directions(W) for w, W in sorted(decoders.items())}
    dims = {w: d.shape[1] for w, d in dirs.items()}
    if len(set(dims.values())) > 1:
        raise ConfigError(f"the decoders read different d_model ({dims}): pass SAEs of one site")
    return dirs


def concept_vectors(decoders: Mapping[int, Any], members: Mapping[int, Sequence[int]]) -> dict[str, Any]:
    """The unit decoder directions that stand for one concept at each width.

    ``decoders``: ``{width: W_dec}``; ``members``: ``{width: [feature, ...]}`` (e.g. a parent at 512,
    its children at 2048, grandchildren at 8192). Returns a table as a dict of equal-length columns,
    widths ascending and each width's features in the order given: ``width`` [m], ``feature`` [m],
    ``label`` (``"w512 #17"``) and ``vector`` [m, d_model] (float32, unit rows)."""
    dirs = _unit_decoders(decoders)
    widths, features, vectors = [], [], []
    for w in sorted(int(k) for k in members):
        if w not in dirs:
            raise ConfigError(f"the concept has members at width {w} but no decoder of that width is given "
                              f"(widths {sorted(dirs)}): add its W_dec to decoders")
        for f in members[w]:
            f = _check_feature(f, dirs[w].shape[0], f"the SAE of width {w}")
            widths.append(w)
            features.append(f)
            vectors.append(dirs[w][f])
    if not vectors:
        raise ConfigError("the concept has no members: give members as {width: [feature, ...]}")
    return {
        "width": np.array(widths, dtype=np.int64),
        "feature": np.array(features, dtype=np.int64),
        "label": [f"w{w} #{f}" for w, f in zip(widths, features)],
        "vector": np.stack(vectors).astype(np.float32),
    }


def neighbourhood_points(decoders: Mapping[int, Any], anchor_width: int, anchor_feature: int,
                         n: int = 100) -> dict[str, np.ndarray]:
    """The anchor's direction, then its ``n`` nearest neighbours by decoder cosine pooled over the
    decoders of ALL widths (the anchor's own width included, the anchor itself excluded).

    Returns a table as a dict of equal-length arrays (``m = 1 + min(n, features available)`` rows,
    the anchor first, then by cosine descending, ties by width then feature): ``width``, ``feature``,
    ``cosine`` (with the anchor's direction; 1 for the anchor) and ``vector`` [m, d_model] (unit rows)."""
    if n < 0:
        raise ConfigError(f"n (the number of neighbours) must be >= 0, not {n}")
    dirs = _unit_decoders(decoders)
    anchor_width = int(anchor_width)
    if anchor_width not in dirs:
        raise ConfigError(f"no decoder of width {anchor_width} (widths {sorted(dirs)}): "
                          "add the anchor's W_dec to decoders")
    anchor_feature = _check_feature(anchor_feature, dirs[anchor_width].shape[0], f"the SAE of width {anchor_width}")
    anchor = dirs[anchor_width][anchor_feature]
    widths, features, cosines = [], [], []
    for w, d in dirs.items():  # each width's best n are enough for the pooled best n
        idx, cos = _top(_cosines(d, anchor), n, exclude=anchor_feature if w == anchor_width else None)
        widths.append(np.full(idx.shape[0], w, dtype=np.int64))
        features.append(idx)
        cosines.append(cos)
    width, feature, cosine = np.concatenate(widths), np.concatenate(features), np.concatenate(cosines)
    order = np.lexsort((feature, width, -cosine))[:n]
    width = np.concatenate([[anchor_width], width[order]]).astype(np.int64)
    feature = np.concatenate([[anchor_feature], feature[order]]).astype(np.int64)
    cosine = np.concatenate([[1.0], cosine[order]]).astype(np.float32)
    vector = np.stack([dirs[int(w)][int(f)] for w, f in zip(width, feature)]).astype(np.float32)
    return {"width": width, "feature": feature, "cosine": cosine, "vector": vector}


def _vectors(vectors: Any, what: str) -> np.ndarray:
    X = _as_numpy(vectors)
    if X.ndim != 2 or X.shape[0] == 0:
        raise ConfigError(f"{what} needs a non-empty 2-D array [points, d], not of shape {X.shape}: "
                          "pass e.g. neighbourhood_points(...)['vector']")
    X = X.astype(np.float64)
    if not np.isfinite(X).all():
        raise ConfigError(f"{what} got NaN or infinite entries: check the vectors")
    return X


def _pca(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``X`` centred at its mean and projected onto its first two principal axes (float64), with
    each axis' share of the variance. Signs are fixed: the largest-magnitude coordinate on each axis
    is positive. Missing axes (one point, or d < 2) are zero columns with share 0."""
    Xc = X - X.mean(axis=0, keepdims=True)
    U, S, _ = np.linalg.svd(Xc, full_matrices=False)
    k = min(2, S.shape[0])
    coords = np.zeros((X.shape[0], 2))
    coords[:, :k] = U[:, :k] * S[:k]
    for j in range(k):
        col = coords[:, j]
        if col[np.argmax(np.abs(col))] < 0:
            coords[:, j] = -col
    total = float((S ** 2).sum())
    share = np.zeros(2)
    if total > 0:
        share[:k] = S[:k] ** 2 / total
    return coords, share


def centred_projection(vectors: Any) -> tuple[np.ndarray, np.ndarray]:
    """The vectors of a concept (e.g. ``concept_vectors(...)['vector']``) centred at the origin (their
    mean subtracted) and projected to 2-D by PCA (an SVD of the centred vectors).

    Returns ``(coords [m, 2], explained [2])``: the coordinates (mean zero; pairwise distances kept
    exactly when the vectors span at most 2 dimensions) and each axis' share of the total variance."""
    return _pca(_vectors(vectors, "centred_projection"))


def _import_umap():
    try:
        import umap  # noqa: PLC0415  (heavy: numba, pynndescent; loaded only for a layout)
    except ImportError:
        raise ConfigError("UMAP layouts need umap-learn, which is not installed: "
                          "pip install umap-learn (or pip install -e '.[book]')") from None
    return umap


def umap_layout(vectors: Any, seed: int = 0, n_neighbors: int = 15, min_dist: float = 0.1) -> np.ndarray:
    """A 2-D UMAP embedding ``[m, 2]`` (float32) of ``vectors`` ``[m, d]`` under the cosine metric,
    the same for the same ``seed`` (``random_state``, one thread).

    With fewer than :data:`MIN_UMAP_POINTS` points it falls back to PCA (logged) and does not need
    umap-learn; ``n_neighbors`` is lowered to ``m - 1`` when there are fewer points than that."""
    X = _vectors(vectors, "umap_layout")
    m = X.shape[0]
    if m < MIN_UMAP_POINTS:
        log.info("umap_layout: %d point(s), fewer than %d: laid out by PCA instead of UMAP", m, MIN_UMAP_POINTS)
        return _pca(X)[0].astype(np.float32)
    umap = _import_umap()
    k = max(2, min(int(n_neighbors), m - 1))
    if k != n_neighbors:
        log.info("umap_layout: n_neighbors lowered from %d to %d for %d points", n_neighbors, k, m)
    reducer = umap.UMAP(n_components=2, n_neighbors=k, min_dist=min_dist, metric="cosine",
                        random_state=seed, n_jobs=1)
    log.info("umap_layout: UMAP of %d points in %d dimensions (cosine, n_neighbors=%d, min_dist=%g, seed=%d)",
             m, X.shape[1], k, min_dist, seed)
    return np.asarray(reducer.fit_transform(X.astype(np.float32)), dtype=np.float32)

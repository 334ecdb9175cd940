import logging
import sys

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from helpers.errors import ConfigError  # noqa: E402
from helpers.evolution.decoder_neighbourhood import (  # noqa: E402
    centred_projection,
    concept_vectors,
    nearest_neighbours,
    neighbourhood_points,
    umap_layout,
    unit_directions,
)
from helpers.notebook.neighbourhood_plots import plot_concept_vectors, plot_neighbourhood_umap  # noqa: E402

D = 16


def _decoder(width: int, seed: int, d: int = D) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((width, d)).astype(np.float32)


def _brute_order(dirs: np.ndarray, anchor: np.ndarray, skip: set[int]) -> list[tuple[float, int]]:
    """(cosine, index) of every row but ``skip``, in float64 one row at a time, best first, ties by index."""
    rows = [(float(np.dot(dirs[i].astype(np.float64), anchor.astype(np.float64))), i)
            for i in range(dirs.shape[0]) if i not in skip]
    return sorted(rows, key=lambda r: (-r[0], r[1]))


def test_unit_directions_of_numpy_and_torch():
    W = _decoder(12, seed=0)
    W[4] = 0.0  # a dead feature stays a zero row
    dirs = unit_directions(W)
    assert dirs.dtype == np.float32
    norms = np.linalg.norm(dirs, axis=1)
    np.testing.assert_allclose(np.delete(norms, 4), 1.0, rtol=1e-6)
    assert norms[4] == 0.0
    np.testing.assert_allclose(dirs[1], W[1] / np.linalg.norm(W[1]), rtol=1e-6)
    np.testing.assert_array_equal(unit_directions(torch.from_numpy(W)), dirs)
    with pytest.raises(ConfigError, match="2-D"):
        unit_directions(W[0])


def test_nearest_neighbours_equal_brute_force_ties_by_index():
    W = _decoder(60, seed=1)
    W[41] = W[9]  # three features with one direction: equal cosines with anything
    W[17] = 2.0 * W[9]
    dirs = unit_directions(W)
    for anchor in (0, 9, 41):
        idx, cos = nearest_neighbours(W, anchor, n=25)
        brute = _brute_order(dirs, dirs[anchor], skip={anchor})[:25]
        assert anchor not in idx.tolist()
        assert idx.tolist() == [i for _, i in brute]
        np.testing.assert_allclose(cos, [c for c, _ in brute], atol=1e-6)
        assert np.all(np.diff(cos) <= 0)
    # the duplicates of 9 come first, in index order, at cosine 1
    idx, cos = nearest_neighbours(W, 9, n=2)
    assert idx.tolist() == [17, 41] and np.allclose(cos, 1.0)
    idx, _ = nearest_neighbours(W, 0, n=60)  # the tied trio, wherever it falls, is in index order
    pos = [idx.tolist().index(i) for i in (9, 17, 41)]
    assert pos == sorted(pos) and pos[2] - pos[0] == 2
    assert len(idx) == 59  # every other feature, never the anchor
    with pytest.raises(ConfigError, match="feature 60 is not in"):
        nearest_neighbours(W, 60)


def _three_widths():
    decoders = {8: _decoder(8, seed=2), 32: _decoder(32, seed=3), 128: _decoder(128, seed=4)}
    rng = np.random.default_rng(5)
    decoders[128][77] = decoders[8][5] + 0.01 * rng.standard_normal(D).astype(np.float32)  # a near-duplicate
    return decoders


def test_neighbourhood_points_pool_every_width():
    decoders = _three_widths()
    pts = neighbourhood_points(decoders, anchor_width=8, anchor_feature=5, n=20)
    assert {k: len(v) for k, v in pts.items()} == {"width": 21, "feature": 21, "cosine": 21, "vector": 21}
    assert (pts["width"][0], pts["feature"][0], pts["cosine"][0]) == (8, 5, 1.0)
    assert (pts["width"][1], pts["feature"][1]) == (128, 77)  # the planted near-duplicate comes first
    assert pts["cosine"][1] > 0.99
    # the pooled brute force: every feature of every width but the anchor, ties by width then index
    dirs = {w: unit_directions(W) for w, W in decoders.items()}
    anchor = dirs[8][5]
    pooled = sorted(((c, w, i) for w, d in dirs.items()
                     for c, i in _brute_order(d, anchor, skip={5} if w == 8 else set())),
                    key=lambda r: (-r[0], r[1], r[2]))[:20]
    assert list(zip(pts["width"][1:].tolist(), pts["feature"][1:].tolist())) == [(w, i) for _, w, i in pooled]
    np.testing.assert_allclose(pts["cosine"][1:], [c for c, _, _ in pooled], atol=1e-6)
    assert set(neighbourhood_points(decoders, 8, 5, n=60)["width"].tolist()) == {8, 32, 128}  # all widths pooled
    for w, f, v in zip(pts["width"], pts["feature"], pts["vector"]):
        np.testing.assert_array_equal(v, dirs[int(w)][int(f)])
    # more neighbours asked than there are: all 8 + 32 + 128 - 1 others
    assert len(neighbourhood_points(decoders, 32, 0, n=1000)["width"]) == 1 + 167
    with pytest.raises(ConfigError, match="no decoder of width 64"):
        neighbourhood_points(decoders, 64, 0)
    with pytest.raises(ConfigError, match="different d_model"):
        neighbourhood_points({8: _decoder(8, 0), 32: _decoder(32, 1, d=8)}, 8, 0)


def test_concept_vectors_per_width():
    decoders = _three_widths()
    concept = concept_vectors(decoders, {128: [77, 3], 8: [5]})
    assert concept["width"].tolist() == [8, 128, 128]
    assert concept["feature"].tolist() == [5, 77, 3]
    assert concept["label"] == ["w8 #5", "w128 #77", "w128 #3"]
    assert concept["vector"].shape == (3, D)
    np.testing.assert_allclose(np.linalg.norm(concept["vector"], axis=1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(concept["vector"][1], unit_directions(decoders[128])[77])
    with pytest.raises(ConfigError, match="no decoder of that width"):
        concept_vectors(decoders, {512: [1]})
    with pytest.raises(ConfigError, match="feature 8 is not in the SAE of width 8"):
        concept_vectors(decoders, {8: [8]})


def _two_clusters(per: int = 15, d: int = 64):
    rng = np.random.default_rng(7)
    centres = rng.standard_normal((2, d))
    X = np.concatenate([c + 0.1 * rng.standard_normal((per, d)) for c in centres]).astype(np.float32)
    return X, np.repeat([0, 1], per)


@pytest.fixture(scope="module")
def clustered_layouts():
    pytest.importorskip("umap")
    X, labels = _two_clusters()
    return umap_layout(X, seed=3, n_neighbors=5), umap_layout(X, seed=3, n_neighbors=5), labels


def test_umap_layout_is_deterministic_and_keeps_clusters_apart(clustered_layouts):
    a, b, labels = clustered_layouts
    assert a.shape == (30, 2) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    dist = np.linalg.norm(a[:, None] - a[None], axis=-1)
    same = labels[:, None] == labels[None]
    off_diagonal = ~np.eye(len(labels), dtype=bool)
    assert dist[same & off_diagonal].mean() < dist[~same].mean()
    assert dist[same & off_diagonal].mean() * 3 < dist[~same].mean()


def test_umap_layout_falls_back_to_pca_without_umap(monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "umap", None)  # importing umap now fails
    X, _ = _two_clusters(per=3)
    with caplog.at_level(logging.INFO, logger="helpers.evolution.decoder_neighbourhood"):
        few = umap_layout(X[:4])
    assert few.shape == (4, 2)
    assert "laid out by PCA instead of UMAP" in caplog.text
    with pytest.raises(ConfigError, match="pip install umap-learn"):
        umap_layout(X)  # 6 points: UMAP, which is missing
    with pytest.raises(ConfigError, match="non-empty"):
        umap_layout(np.zeros((0, 8)))


def test_centred_projection_keeps_2d_distances():
    rng = np.random.default_rng(11)
    P = rng.standard_normal((7, 2)) * [3.0, 0.5] + [10.0, -4.0]
    coords, share = centred_projection(P)
    np.testing.assert_allclose(coords.mean(axis=0), 0.0, atol=1e-12)
    pairwise = lambda Z: np.linalg.norm(Z[:, None] - Z[None], axis=-1)  # noqa: E731
    np.testing.assert_allclose(pairwise(coords), pairwise(P), atol=1e-10)
    assert share.sum() == pytest.approx(1.0) and share[0] > share[1]
    # a plane in 32 dimensions: the same distances, all the variance on two axes
    Q, _ = np.linalg.qr(rng.standard_normal((32, 2)))
    coords_hi, share_hi = centred_projection(P @ Q.T + rng.standard_normal(32))
    np.testing.assert_allclose(pairwise(coords_hi), pairwise(P), atol=1e-10)
    assert share_hi.sum() == pytest.approx(1.0)
    # noisy data: the first two axes hold part of the variance only
    _, share_noisy = centred_projection(rng.standard_normal((10, 32)))
    assert 0 < share_noisy.sum() < 1
    with pytest.raises(ConfigError, match="non-empty"):
        centred_projection(np.zeros((0, 4)))


def test_plot_neighbourhood_umap_draws_every_point():
    decoders = _three_widths()
    pts = neighbourhood_points(decoders, 8, 5, n=30)
    layout = np.random.default_rng(0).standard_normal((31, 2))
    fig = plot_neighbourhood_umap(pts, layout, title="anchor w8 #5", members={128: [77], 8: [5], 32: [999]})
    ax = fig.axes[0]
    by_label = {c.get_label(): c for c in ax.collections}
    widths = sorted(set(pts["width"][1:].tolist()))
    assert [f"width {w}" for w in widths] == [lab for lab in by_label if lab.startswith("width ")]
    assert sum(len(by_label[f"width {w}"].get_offsets()) for w in widths) == 30
    for w in widths:
        assert len(by_label[f"width {w}"].get_offsets()) == int((pts["width"][1:] == w).sum())
    star = by_label["anchor w8 #5"]
    np.testing.assert_allclose(star.get_offsets(), layout[:1])
    assert len(by_label["concept members"].get_offsets()) == 2  # (32, 999) is not among the points
    assert (ax.get_xlabel(), ax.get_ylabel(), ax.get_title()) == ("UMAP 1", "UMAP 2", "anchor w8 #5")
    assert "width 8" in [t.get_text() for t in ax.get_legend().get_texts()]
    assert "concept members" not in {c.get_label() for c in plot_neighbourhood_umap(pts, layout).axes[0].collections}


def test_plot_concept_vectors_draws_one_arrow_per_vector():
    decoders = _three_widths()
    concept = concept_vectors(decoders, {8: [5], 32: [1, 2], 128: [77]})
    coords, share = centred_projection(concept["vector"])
    fig = plot_concept_vectors(coords, concept["width"], concept["feature"], explained=share)
    ax = fig.axes[0]
    arrows = [t for t in ax.texts if getattr(t, "arrow_patch", None) is not None]
    assert len(arrows) == 4
    for arrow, (x, y) in zip(arrows, coords):
        assert arrow.xy == pytest.approx((x, y)) and arrow.xyann == pytest.approx((0.0, 0.0))
    labels = [t.get_text().strip() for t in ax.texts if getattr(t, "arrow_patch", None) is None]
    assert labels == ["w8 #5", "w32 #1", "w32 #2", "w128 #77"]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["width 8", "width 32", "width 128"]
    assert ax.get_aspect() == 1.0 and ax.get_title()
    assert "% of variance" in ax.get_xlabel()
    # ready labels are used as they are
    fig = plot_concept_vectors(coords, concept["width"], concept["label"], title="t")
    assert [t.get_text().strip() for t in fig.axes[0].texts if getattr(t, "arrow_patch", None) is None] == concept["label"]

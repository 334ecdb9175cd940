"""Features and neurons scored alike: rate-matched firing by hand and against a loop, the
bootstrap interval, and one site's comparison on a constructed stream whose rules are known."""

import numpy as np
import pytest
import torch

from helpers.errors import ConfigError
from helpers.explain.artefact import explain_site
from helpers.explain.stream import TokenStream, heldout_mask, key_spaces, windows
from helpers.explain.units import UnitRecorder, compare_site, difference_ci, rate_matched_firing, sample_features


def test_rate_matched_firing_by_hand_and_against_a_loop():
    acts = np.array([[3.0, 0.0], [1.0, 5.0], [2.0, 5.0], [0.0, 1.0]])
    token, unit = rate_matched_firing(acts, np.array([2, 1]))
    assert sorted(zip(unit.tolist(), token.tolist())) == [(0, 0), (0, 2), (1, 1)]  # tie at 5: the earlier
    rng = np.random.default_rng(0)
    acts = rng.normal(size=(50, 7)).round(1)  # many ties
    counts = rng.integers(0, 51, 7)
    token, unit = rate_matched_firing(acts, counts)
    for j in range(7):
        want = sorted(range(50), key=lambda t: (-acts[t, j], t))[: counts[j]]
        assert sorted(token[unit == j].tolist()) == sorted(want)
    with pytest.raises(ConfigError, match="need activations"):
        rate_matched_firing(acts, counts[:3])


def test_difference_ci():
    d = difference_ci(np.full(10, 0.9), np.r_[np.full(10, 0.6), np.nan])
    assert (d["n_a"], d["n_b"]) == (10, 10)
    assert d["difference"] == pytest.approx(0.3) and d["low"] == pytest.approx(0.3) == d["high"]
    rng = np.random.default_rng(1)
    a, b = rng.normal(0.7, 0.1, 400), rng.normal(0.6, 0.1, 300)
    d = difference_ci(a, b, seed=3)
    assert d["low"] < 0.1 < d["high"] and d["low"] > 0 and d["low"] < d["difference"] < d["high"]
    assert d == difference_ci(a, b, seed=3)  # seeded
    assert (difference_ci(a, b, level=0.5)["high"] - difference_ci(a, b, level=0.5)["low"]
            < d["high"] - d["low"])
    assert np.isnan(difference_ci([], b)["low"])
    with pytest.raises(ConfigError, match="level=1.5"):
        difference_ci(a, b, level=1.5)


def test_sample_features_only_draws_those_that_fire_enough():
    counts = np.array([0, 10, 3, 50, 9, 12])
    s = sample_features(counts, 10, np.random.default_rng(0))
    assert sorted(s.tolist()) == [1, 3, 5]
    assert len(sample_features(counts, 2, np.random.default_rng(0))) == 2


def _stream(n_docs=20, length=64, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, 40, (n_docs, length))
    return TokenStream(ids.ravel(), np.repeat(np.arange(n_docs), length), np.tile(np.arange(length), n_docs),
                       [f"doc {d}" for d in range(n_docs)])


def test_a_known_rule_beats_noise_and_the_neuron_fires_as_often_as_its_feature():
    """Feature 0 fires exactly on token 7; its paired neuron's activation is noise: the feature's
    explanation detects it perfectly on held-out text, the neuron's scores near chance."""
    stream = _stream()
    held = heldout_mask(stream.doc)
    spaces, win = key_spaces(stream, 40), windows(stream.subset(held))
    token = np.flatnonzero(stream.ids == 7)
    feature = np.zeros(token.size, np.int64)
    noise = np.random.default_rng(5).normal(size=(stream.n, 3))
    res = compare_site(token, feature, 4, noise, spaces, held, win, np.random.default_rng(0))
    assert res["features"].tolist() == [0] and res["fired"].tolist() == [token.size]
    assert res["feature_detection_auroc"][0] == 1.0 and res["feature_fuzzing"][0] == 1.0
    assert abs(res["neuron_detection_auroc"][0] - 0.5) < 0.2 and res["neuron_fuzzing"][0] < 0.7
    _, _, direct = explain_site(token, feature, 1, spaces, held, win)
    assert res["feature_balanced_accuracy"][0] == direct["balanced_accuracy"][0]
    # a neuron that *is* the feature scores the same
    same = np.zeros((stream.n, 1))
    same[token, 0] = 1.0
    twin = compare_site(token, feature, 4, same, spaces, held, win, np.random.default_rng(0))
    for name in ("detection_auroc", "balanced_accuracy", "fuzzing"):
        assert twin[f"neuron_{name}"][0] == twin[f"feature_{name}"][0]


def test_the_recorder_keeps_stream_order():
    rec = UnitRecorder(["s"], n_neurons=6, sample=4, seed=2)
    assert len(set(rec.neurons["s"].tolist())) == 4
    for lo in (0, 3):
        idx = torch.tensor([[1, 2], [0, 2], [3, 0]])
        val = torch.tensor([[1.0, 0.0], [2.0, 1.0], [0.0, 0.0]])
        rec.add("s", idx, val, torch.arange(18.0).reshape(3, 6) + lo)
    token, feature = rec.firings("s")
    assert list(zip(token.tolist(), feature.tolist())) == [(0, 1), (1, 0), (1, 2), (3, 1), (4, 0), (4, 2)]
    acts = rec.neuron_acts("s")
    assert acts.shape == (6, 4) and acts[3, 0] == 3 + rec.neurons["s"][0]

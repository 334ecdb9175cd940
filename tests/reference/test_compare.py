"""Our side of every comparison equals a brute force from the dense activations behind a tiny
statistics artefact (smoke subject, random TopK SAEs); the matching rows equal a brute force
from a synthetic matching artefact; bad quantities are one clear error."""

import numpy as np
import pytest

from helpers.errors import ConfigError
from helpers.evolution.matching import success_table
from helpers.evolution.partners import build_partners
from helpers.reference import (STUDY, Ours, comparison_rows, figures, load_ours, load_study, max_summary,
                               study_max_summary)

from ..evolution.test_partners import brute_measures, smoke_run  # noqa: F401 (fixture)


@pytest.fixture(scope="module")
def ours(smoke_run):  # noqa: F811
    exp, out, saes, X = smoke_run
    build_partners(exp, k=4, saes=saes, out=out, progress=False)
    return exp, X, saes, load_ours(exp, ["max_activation", "dead", "never_coactivating", "disappearing"], out=out)


def test_dead_never_and_max_equal_brute_force(ours):
    exp, X, _, o = ours
    F = o.n_features
    assert F == exp.sae_width and o.tokens == len(X[exp.sites[0]])
    dead = np.array([((X[s] > 0).sum(0) == 0).sum() / F for s in exp.sites])
    never = np.array([(((X[a] > 0).astype(int).T @ (X[b] > 0).astype(int)) == 0).sum() / F**2
                      for a, b in exp.site_pairs])
    np.testing.assert_allclose(o.dead_share_at_end(0), dead)
    np.testing.assert_allclose(o.never_share_at_end(0), never)
    mx = np.stack([X[s].max(0) for s in exp.sites])
    fired = mx[mx > 0]
    rows = {r["quantity"]: r for r in comparison_rows(o, ["dead", "never_coactivating", "max_activation"])}
    assert rows["features that never fired, share of the SAE width (range over sites)"]["ours"] == \
        pytest.approx((dead.min(), dead.max()))
    assert rows["feature pairs of adjacent sites that never co-fired (mean over pairs)"]["ours"] == \
        pytest.approx(never.mean())
    assert rows["largest maximum activation"]["ours"] == pytest.approx(mx.max(), rel=1e-6)
    assert rows["largest / median maximum (features that fired)"]["ours"] == \
        pytest.approx(mx.max() / np.median(fired), rel=1e-6)


def test_disappearing_equals_brute_force_pearson(ours):
    exp, X, saes, o = ours
    want = []
    for a, b in exp.site_pairs:
        r = brute_measures(X[a], X[b], saes[a].W_dec.detach().numpy(), saes[b].W_dec.detach().numpy())[0]["pearson"]
        alive = (X[a] > 0).any(0)
        best = np.where(np.isnan(r), -np.inf, r).max(1)
        want.append((alive & ~(best >= 0.5 - 1e-6)).sum() / alive.sum())
    np.testing.assert_allclose(o.disappearing(), want, atol=1e-12)
    row = comparison_rows(o, "disappearing")[0]
    assert row["ours"] == pytest.approx((min(want), max(want)))
    assert row["reference"] == (0.19, 0.34)


def test_the_reference_side_and_what_differs(ours):
    exp, _, _, o = ours
    rows = comparison_rows(o, ["dead", "never_coactivating", "max_activation", "disappearing"])
    s = load_study()
    by = {r["quantity"]: r for r in rows}
    dead = by["features that never fired, share of the SAE width (range over sites)"]
    assert dead["reference"] == pytest.approx((3 / 24576, 4070 / 24576))
    assert by["largest maximum activation"]["reference"] == pytest.approx(639.84, abs=0.01)
    assert by["largest / median maximum (features that fired)"]["reference"] == pytest.approx(
        s.max_largest.max() / np.median(s.max_sorted[s.max_sorted > 0].astype(np.float32)))
    assert study_max_summary()["largest"] == figures()["max_activation"].value
    for r in rows:
        assert r["source"] == "study"
        assert f"model: minilm vs {STUDY.model}" in r["what differs"]
        assert f"SAE width: {o.n_features:,} vs 24,576" in r["what differs"]
        assert f"tokens: {o.tokens:,} vs 17,432,576" in r["what differs"]
    assert "first 100 x 24,576" in by["feature pairs of adjacent sites that never co-fired (mean over pairs)"][
        "what differs"]


def test_the_same_setup_says_nothing_differs():
    o = Ours(name="gpt2", model=STUDY.model, n_features=24576, tokens=STUDY.n_tokens,
             sites=["a", "b"], max=np.array([[1.0, 2.0], [0.0, 4.0]]))
    rows = comparison_rows(o, "max_activation")
    assert rows[0]["what differs"].startswith("activations in each model's own units")
    gpt2 = Ours(name="gpt2-res-jb", model="gpt2", n_features=24576, tokens=STUDY.n_tokens, sites=["a"],
                dead=np.zeros((1, 1, 1)), dead_thresholds=np.array([0]))
    assert comparison_rows(gpt2, "dead")[0]["what differs"] == "nothing: same model, SAE width and tokens"
    assert max_summary(o.max) == {"largest": 4.0, "median": 2.0, "ratio": 2.0}


def synthetic_matching(seed=0):
    """A matching artefact of 3 pairs, 3 methods and a control, 10 downstream slots (some unused)."""
    rng = np.random.default_rng(seed)
    P, K, n = 3, 4, 10
    drop = rng.uniform(-0.2, 1.0, (P, K, n))
    drop[rng.random((P, K, n)) < 0.15] = np.nan  # undefined partners
    downstream = np.tile(np.arange(n), (P, 1))
    downstream[:, 8:] = -1  # unused slots
    return {"drop": drop, "downstream": downstream, "upstream_fired": rng.random((P, K, n)) < 0.7,
            "methods": np.array(["cosine", "pearson", "jaccard", "random"]),
            "pairs": np.array(["a->b", "b->c", "c->d"])}


def test_matching_success_equals_brute_force():
    data = synthetic_matching()
    o = Ours(name="x", model="m", n_features=10, tokens=100, sites=["a", "b", "c", "d"],
             matching=success_table(data))
    rows = comparison_rows(o, "matching_success")
    assert [r["quantity"] for r in rows] == ["matching success, top-1 cosine", "matching success, top-1 pearson"]
    for k, row in enumerate(rows):
        drops = data["drop"][:, k, :8].ravel()
        assert row["ours"] == pytest.approx(np.mean(np.nan_to_num(drops, nan=-1.0) >= 0.5))
        assert row["reference"] == 0.65 and row["source"] == "feature-flow" and row["approximate"]
        assert "model: m vs Gemma 2 2B" in row["what differs"]


def test_bad_quantities_and_missing_arrays_are_one_clear_error():
    o = Ours(name="x", model="m", n_features=4, tokens=10, sites=["a", "b"])
    with pytest.raises(ConfigError, match="unknown reference quantity 'dead_features'.*choose among"):
        comparison_rows(o, ["dead_features"])
    with pytest.raises(ConfigError, match="needs 'dead'.*load_ours"):
        comparison_rows(o, "dead")

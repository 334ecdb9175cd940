import numpy as np
import pytest

from helpers.stats.summaries import (alive_pair_counts, dead_feature_rows, max_activation_rows, never_cofired_rows,
                                     top_entries)


def test_top_entries_are_the_largest_first():
    values = np.array([[0.0, 5.0, 1.0], [7.0, 0.5, 3.0]])
    assert top_entries(values, 3) == [(1, 0), (0, 1), (1, 2)]
    assert all(type(i) is int for e in top_entries(values, 2) for i in e)


def test_max_activation_rows_leave_out_the_features_that_never_fired():
    mx = np.array([[0.0, 1.0, 3.0, 0.0], [2.0, 2.0, 2.0, 10.0]])
    a, b = max_activation_rows(mx, ["a", "b"])
    assert a["site"] == "a" and a["median max"] == 2.0 and a["highest"] == 3.0 and a["features that fired"] == 0.5
    assert a["99th percentile"] == pytest.approx(np.percentile([1.0, 3.0], 99))
    assert b["median max"] == 2.0 and b["features that fired"] == 1.0


def brute_dead(fired_steps, thresholds):
    """``dead`` ``[steps, thresholds, sites]`` from cumulative firing counts ``[steps, sites, F]``."""
    return np.stack([[(f <= t).sum(-1) for t in thresholds] for f in fired_steps])


def test_dead_feature_rows_equal_a_brute_force():
    rng = np.random.default_rng(0)
    steps = np.cumsum(rng.poisson(0.4, (6, 2, 50)) * (rng.random((1, 2, 50)) < 0.7), axis=0)  # [steps, S, F]
    thresholds = np.array([0, 1, 10])
    dead = {"fired": steps[-1], "thresholds": thresholds, "tokens": np.arange(1, 7) * 100,
            "dead": brute_dead(steps, thresholds)}
    rows = dead_feature_rows(dead, ["a", "b"])
    for i, row in enumerate(rows):
        never = int((steps[-1, i] == 0).sum())
        curve = (steps[:, i] == 0).sum(-1)
        settled = next(s for s in range(6) if curve[s] <= never * 1.05 + 1)
        assert row == {"site": "ab"[i], "never fired": never, "share": never / 50,
                       "fired at most 10 times": int((steps[-1, i] <= 10).sum()),
                       "tokens until within 5% of the final count": (settled + 1) * 100}
    assert rows[0]["never fired"] > 5  # the 30% that never fire
    dead["thresholds"] = np.array([0, 1, 5])
    assert dead_feature_rows(dead, ["a", "b"])[0]["fired at most 10 times"] is None


def test_never_cofired_rows_equal_a_brute_force():
    rng = np.random.default_rng(1)
    F, tokens = 6, 200
    acts = (rng.random((tokens, 3, F)) < 0.05) & (np.arange(F) < 4)  # features 4 and 5 never fire
    acts[:, 0, 1] = False  # nor does feature 1 of site 0
    fired = acts.sum(0)  # [S, F]
    dead = {"fired": fired, "dead": (fired == 0).sum(-1)[None, None, :]}  # one step, threshold 0
    alive_pairs = alive_pair_counts(dead)
    assert alive_pairs.tolist() == [3 * 4, 4 * 4]
    together = [acts[:, p].astype(int).T @ acts[:, p + 1].astype(int) for p in range(2)]  # [F, F] counts
    alive = fired > 0
    thresholds = [0, 10]
    never_all = np.array([[[(c <= t).sum()] for c in together] for t in thresholds])  # [T, P, steps=1]
    never_alive = np.array([[[((c <= t) & alive[p][:, None] & alive[p + 1][None, :]).sum()]
                             for p, c in enumerate(together)] for t in thresholds])
    pc = {"thresholds": np.array(thresholds), "pairs": np.array(["a->b", "b->c"]),
          "never_all": never_all, "never_alive": never_alive}
    rows = never_cofired_rows(pc, F, alive_pairs)
    for p, row in enumerate(rows):
        assert row["sites"] == ["a->b", "b->c"][p]
        assert row["never co-fired (all pairs)"] == pytest.approx((together[p] == 0).mean())
        assert row["never co-fired (alive pairs)"] == pytest.approx(never_alive[0, p, 0] / alive_pairs[p])
        assert row["co-fired at most 10 times (alive pairs)"] == pytest.approx(1.0)  # so few tokens
    assert 0 < rows[0]["never co-fired (alive pairs)"] < 1

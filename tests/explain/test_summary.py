"""Per-site summaries and best-explained features of a hand-made explanations artefact."""

import numpy as np

from helpers.explain.summary import best_explained, explanation_summary


def fake_explanations():
    nan = np.nan
    return {"sites": ["a", "b"], "kinds": ["token", "bigram", "previous", "title"],
            "detection_auroc": np.array([[0.9, 0.6, nan, 1.0], [nan, nan, nan, nan]]),
            "balanced_accuracy": np.array([[0.8, 0.5, nan, 1.0], [nan, nan, nan, nan]]),
            "fuzzing": np.array([[0.7, 0.5, nan, nan], [nan, nan, nan, nan]]),
            "kind": np.array([[0, 3, -1, 0], [-1, -1, -1, -1]]),
            "activating": np.array([[9, 9, 0, 2], [0, 0, 0, 0]]),
            "text": np.array([["on 'x'", "in documents whose title has 'river'", "", "on 'y'"], [""] * 4])}


def test_summary_rows():
    rows = explanation_summary(fake_explanations())
    assert rows[0]["scored"] == 3 and rows[0]["detection AUROC"] == 0.9 and rows[0]["AUROC >= 0.8"] == 0.667
    assert rows[0]["token rules"] == 2 and rows[0]["title rules"] == 1 and rows[0]["bigram rules"] == 0
    assert rows[1]["scored"] == 0 and np.isnan(rows[1]["fuzzing"])


def test_best_explained_skips_features_with_few_windows():
    best = best_explained(fake_explanations(), "a", n=5)
    assert [r["feature"] for r in best] == [0, 1]  # feature 3 scores 1.0 on only 2 windows
    assert best[0]["explanation"] == "on 'x'" and best[0]["fuzzing"] == 0.7
    assert best_explained(fake_explanations(), 1) == []

import matplotlib

matplotlib.use("Agg")
import numpy as np

import helpers
from helpers.notebook.neuron_plots import plot_best_neuron_r, plot_unit_scores

from ..evolution.test_neuron_artefact import fake


def test_boxes_per_site_and_block_with_the_aligned_line():
    nan = np.nan
    data = fake([[-1, -1], [0, -1], [1, 0]],
                [[[nan, nan], [nan, nan]], [[0.95, -0.2], [nan, nan]], [[0.1, -0.92], [0.91, 0.5]]],
                [[[nan, nan], [nan, nan]], [[0.95, 0.2], [nan, nan]], [[-0.92, 0.1], [0.91, 0.25]]])
    fig = plot_best_neuron_r(data, aligned=0.8)
    ax = fig.axes[0]
    # one box for s1 (own block), two for s2; s0 (the embeddings) has none
    medians = {slot: [round(float(np.mean(line.get_ydata())), 3) for line in ax.lines
                      if line.get_gid() == f"median {slot}"] for slot in ("same", "before")}
    assert medians == {"same": [0.575, 0.51], "before": [0.705]}
    assert [t.get_text() for t in ax.get_xticklabels()] == ["s0", "s1", "s2"]
    assert ax.get_title() and "unitless" in ax.get_ylabel() and ax.get_xlabel()
    assert any(line.get_ydata()[0] == 0.8 for line in ax.lines if line.get_linestyle() == "--")
    assert "neuron-aligned: |r| ≥ 0.8" in [t.get_text() for t in ax.get_legend().get_texts()]


def test_names_reach_notebooks_from_helpers():
    for name in ("plot_best_neuron_r", "load_neurons", "alignment_rows", "neuron_rows", "neuron_totals",
                 "best_abs_r", "plot_unit_scores", "unit_score_rows", "unit_scores"):
        assert callable(getattr(helpers, name))


def test_unit_scores_boxes_and_intervals():
    nan = np.nan
    data = {"sites": ["s0", "s1", "s2"],
            "sample_feature": np.array([[-1, -1, -1], [3, 4, 5], [1, 2, -1]]),
            "sample_feature_fuzzing": np.array([[nan] * 3, [0.8, 0.9, 0.7], [0.9, 0.7, nan]]),
            "sample_neuron_fuzzing": np.array([[nan] * 3, [0.5, 0.6, 0.7], [0.6, 0.6, nan]])}
    fig = plot_unit_scores(data, "fuzzing")
    ax, bx = fig.axes
    medians = {u: [round(float(np.mean(line.get_ydata())), 3) for line in ax.lines
                   if line.get_gid() == f"median {u}"] for u in ("feature", "neuron")}
    assert medians == {"feature": [0.8, 0.8], "neuron": [0.6, 0.6]}  # s1, s2 (s0 has no sample)
    assert "fuzzing" in ax.get_title() and "chance" in ax.get_ylabel()
    assert [t.get_text() for t in bx.get_xticklabels()] == ["s1", "s2", "all sites"]
    points = np.asarray(bx.lines[0].get_ydata(), float)
    np.testing.assert_allclose(points, [0.2, 0.2, 0.2], atol=1e-3)
    assert "95% CI" in bx.get_ylabel()


def test_unit_scores_without_a_sample_say_so():
    data = {"sites": ["s0"], "sample_feature": np.array([[-1, -1]]),
            "sample_feature_detection_auroc": np.full((1, 2), np.nan),
            "sample_neuron_detection_auroc": np.full((1, 2), np.nan)}
    fig = plot_unit_scores(data)
    assert "nothing scored" in fig.axes[0].texts[0].get_text()

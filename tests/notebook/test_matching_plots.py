import matplotlib

matplotlib.use("Agg")
import numpy as np

from helpers.notebook.matching_plots import plot_agreement, plot_matching_success, success_frame

ROWS = [
    {"pair": "a->b", "method": "cosine", "success_rate": 0.5, "mean_drop": 0.4, "silent_partner": 0.1},
    {"pair": "a->b", "method": "random", "success_rate": 0.1, "mean_drop": 0.05, "silent_partner": 0.6},
    {"pair": "all pairs", "method": "cosine", "success_rate": 0.25, "mean_drop": 0.2, "silent_partner": 0.1},
    {"pair": "all pairs", "method": "random", "success_rate": 0.0, "mean_drop": -0.01, "silent_partner": 0.7},
]


def test_success_frame_is_in_percent_and_keeps_the_order():
    frame = success_frame(ROWS)
    assert list(frame.index) == ["a → b", "all pairs"] and list(frame.columns) == ["cosine", "random"]
    assert frame.loc["a → b", "cosine"] == 50.0
    wide = [r | {"pair": "blocks.4.hook_resid_post->blocks.5.hook_resid_post"} for r in ROWS[:2]]
    assert list(success_frame(wide).index) == ["L4 → L5"]  # short site names keep the table narrow
    assert success_frame(ROWS, "mean_drop").loc["all pairs", "random"] == -0.01


def test_success_bars_show_each_method_and_pair():
    fig = plot_matching_success(ROWS, 0.5)
    heights = [p.get_height() for p in fig.axes[0].patches]
    assert sorted(heights) == [0.0, 10.0, 25.0, 50.0]
    assert "0.5" in fig.axes[0].get_ylabel()


def test_agreement_heatmap_in_percent():
    fig = plot_agreement(np.array([[1.0, 0.25], [0.25, 1.0]]), ["x", "y"])
    assert fig.axes[0].images[0].get_array()[0, 1] == 25.0

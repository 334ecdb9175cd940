import matplotlib

matplotlib.use("Agg")
import numpy as np

from helpers.notebook.plots import (
    plot_coactivation_curves,
    plot_dead_curves,
    plot_max_histogram,
    plot_sae_quality,
    plot_value_histograms,
)


def test_quality_plot_shows_the_report():
    fig = plot_sae_quality({"a": {"fvu": 0.2, "l0": 32, "dead_fraction": 0.05},
                            "b": {"fvu": 0.3, "l0": 30, "dead_fraction": 0.1}})
    heights = [p.get_height() for p in fig.axes[2].patches]
    assert heights == [5.0, 10.0]


def test_dead_curve_plots_the_chosen_threshold_in_percent():
    dead = np.array([[[10, 20], [5, 8]], [[4, 9], [2, 3]]])  # [T=2, thr=2, S=2]
    fig = plot_dead_curves(dead, [100, 200], [0, 5], ["s0", "s1"], threshold_index=1, n_features=50)
    lines = fig.axes[0].get_lines()
    assert lines[1].get_ydata().tolist() == [16.0, 6.0]
    assert "at most 5 times" in fig.axes[0].get_title()


def test_coactivation_curves_select_pairs():
    never = np.arange(2 * 3 * 2).reshape(2, 3, 2)
    fig = plot_coactivation_curves(never, [10, 20], [0, 5], ["a", "b", "c"], 1, pair_indices=[2],
                                   total=np.array([10, 10, 20]))
    (line,) = fig.axes[0].get_lines()
    assert line.get_ydata().tolist() == [50.0, 55.0]


def test_histograms_ignore_nan_and_never_fired():
    fig = plot_max_histogram(np.array([[0.0, 1.0, 10.0], [2.0, 0.0, 0.0]]), ["a", "b"])
    assert len(fig.axes[0].patches) == 2
    fig = plot_value_histograms([np.array([[0.1, np.nan], [0.5, 0.9]])], ["p"], "r", "t")
    assert fig.axes[0].patches[0].get_xy() is not None


def test_spurious_share_and_community_shapes():
    from helpers.evolution.decoder_matches import DecoderMatches
    from helpers.notebook.plots import plot_community_shapes, plot_spurious_share

    m = DecoderMatches(pair=np.zeros(4, int), a=np.arange(4), b=np.arange(4),
                       cos=np.array([0.2, 0.5, 0.9, 0.95]), r=np.array([0.5, 0.05, np.nan, 0.3]))
    fig = plot_spurious_share(m, 0.5)
    (line, marker) = fig.axes[0].get_lines()
    x, y = line.get_data()
    assert y[0] == 50.0  # at 0.1: 4 matches, 2 do not fire together (r 0.05 and undefined)
    assert y[np.argmin(abs(x - 0.6))] == 50.0 and y[-1] == 0.0  # 0.9 and 0.95 left, then 0.95 only
    assert marker.get_xdata()[0] == 0.5
    fig = plot_community_shapes(np.array([3, 10, 10, 40]), np.array([1, 2, 2, 4]), "t")
    assert [p.get_height() for p in fig.axes[1].patches] == [1, 2, 1] and fig._suptitle.get_text() == "t"

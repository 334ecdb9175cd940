import pytest

from helpers.notebook.width_plots import plot_width_sweep

ROWS = [{"width": 512, "fvu": 0.4, "l0": 32.0, "dead_fraction": 0.01, "loss_recovered": 80.0},
        {"width": 2048, "fvu": 0.3, "l0": 31.0, "dead_fraction": 0.05, "loss_recovered": 86.0},
        {"width": 8192, "fvu": 0.25, "l0": 30.5, "dead_fraction": 0.2, "loss_recovered": 90.0}]


def test_one_point_per_width_on_a_log_axis():
    fig = plot_width_sweep(ROWS, title="blocks.4")
    assert [ax.get_title() for ax in fig.axes] == ["FVU", "L0", "dead features", "loss recovered"]
    for ax, key, scale in zip(fig.axes, ("fvu", "l0", "dead_fraction", "loss_recovered"), (1, 1, 100, 1)):
        (line,) = ax.get_lines()
        assert line.get_xdata().tolist() == [512, 2048, 8192]
        assert line.get_ydata().tolist() == pytest.approx([r[key] * scale for r in ROWS])
        assert ax.get_xscale() == "log" and "log scale" in ax.get_xlabel()
        assert [t.get_text() for t in ax.get_xticklabels()] == ["512", "2k", "8k"]
    assert fig.axes[2].get_ylabel() == "dead features (% of width)"
    assert fig._suptitle.get_text() == "blocks.4"


def test_several_series_and_no_loss_recovered():
    official = [{"width": 16384, "fvu": 0.2, "l0": 40.0, "dead_fraction": 0.0},
                {"width": 1 << 20, "fvu": 0.1, "l0": 45.0, "dead_fraction": 0.3}]
    fig = plot_width_sweep({"trained here": ROWS, "Gemma Scope 2": official})
    assert len(fig.axes) == 3  # the official rows have no loss recovered: no panel for it
    assert [len(line.get_xdata()) for line in fig.axes[0].get_lines()] == [3, 2]
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["512", "2k", "8k", "16k", "1m"]
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["trained here", "Gemma Scope 2"]

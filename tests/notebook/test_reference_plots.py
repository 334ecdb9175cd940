"""The figures beside the study draw our arrays and the study's (one line per site / layer, the
values the arrays give), and the comparison table shows the rows' numbers and the sources."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from helpers.errors import ConfigError  # noqa: E402
from helpers.evolution.matching import success_table  # noqa: E402
from helpers.notebook import (  # noqa: E402
    plot_dead_beside_study, plot_disappearing_beside_study, plot_matching_beside_feature_flow,
    plot_max_beside_study, plot_never_beside_study, reference_table,
)
from helpers.reference import Ours, load_study  # noqa: E402

from ..reference.test_compare import synthetic_matching  # noqa: E402


@pytest.fixture
def ours():
    """Three sites of 8 features, 4 steps, as the statistics pass writes its arrays."""
    rng = np.random.default_rng(1)
    steps = np.array([100, 200, 300, 400])
    dead = np.sort(rng.integers(0, 8, (4, 2, 3)), axis=0)[::-1].copy()
    never = np.sort(rng.integers(0, 64, (2, 2, 4)), axis=-1)[..., ::-1].copy()
    mx = rng.lognormal(0, 1, (3, 8))
    mx[0, :2] = 0  # two features that never fired
    flows = [{"threshold": 0.5, "pair": p, "disappear": d, "continue": 1 - d, "appear": 0.1}
             for p, d in (("s0->s1", 0.25), ("s1->s2", 0.6))]
    return Ours(name="tiny", model="tiny-model", n_features=8, tokens=400,
                sites=["s0", "s1", "s2"], dead=dead, dead_thresholds=np.array([0, 5]), steps=steps,
                never=never, never_thresholds=np.array([0, 5]), max=mx, flows=flows,
                matching=success_table(synthetic_matching()))


def _study_note(fig):
    return fig.get_supxlabel() if hasattr(fig, "get_supxlabel") else fig._supxlabel.get_text()


def test_dead_curves_beside_the_study(ours):
    fig = plot_dead_beside_study(ours)
    left, right = fig.axes[:2]
    assert len(left.lines) == 3 and len(right.lines) == 12
    np.testing.assert_allclose(left.lines[1].get_ydata(), 100 * ours.dead[:, 0, 1] / 8)
    np.testing.assert_array_equal(left.lines[1].get_xdata(), ours.steps)
    s = load_study()
    np.testing.assert_allclose(right.lines[0].get_ydata(), 100 * s.dead[:, 0, 0] / 24576)
    assert right.lines[0].get_ydata()[-1] == pytest.approx(100 * 4070 / 24576)
    assert "spar-2024 @ c68d126" in _study_note(fig)
    assert left.get_xlim() == right.get_xlim() and left.get_xscale() == "log"  # the same token axis
    fig5 = plot_dead_beside_study(ours, threshold=5)
    np.testing.assert_allclose(fig5.axes[0].lines[0].get_ydata(), 100 * ours.dead[:, 1, 0] / 8)
    plt.close("all")


def test_never_curves_beside_the_study(ours):
    fig = plot_never_beside_study(ours)
    left, right = fig.axes[:2]
    assert len(left.lines) == 2 and len(right.lines) == 11
    np.testing.assert_allclose(left.lines[0].get_ydata(), 100 * ours.never[0, 0] / 64)
    assert right.lines[0].get_ydata()[-1] == pytest.approx(86.3, abs=0.05)
    assert "first 100 x 24,576" in right.get_title()
    plt.close("all")


def test_max_distribution_beside_the_study(ours):
    fig = plot_max_beside_study(ours)
    left, right = fig.axes[:2]
    assert len(left.patches) == 3 and len(right.patches) == 12  # one step outline per site / layer
    # every step outline holds 100% of its site's (layer's) features that fired, each bin the
    # share np.histogram gives (maxima below the axis counted in the first bin)
    for ax, arrays in ((left, ours.max), (right, load_study().max_sorted)):
        for patch, values in zip(ax.patches, arrays):
            xy = patch.get_xy()
            edges, heights = np.unique(xy[:, 0]), xy[1:-1:2, 1]
            values = values[values > 0]
            counts, _ = np.histogram(np.clip(values, edges[0], edges[-1]), edges)
            np.testing.assert_allclose(heights, 100 * counts / values.size, atol=1e-9)
    assert left.get_xscale() == "log" and right.get_xlim() == left.get_xlim()
    plt.close("all")


def test_disappearing_bars_beside_the_study_band(ours):
    fig = plot_disappearing_beside_study(ours)
    ax = fig.axes[0]
    band = [p for p in ax.patches if p.get_label().startswith("study")]
    bars = [p.get_height() for p in ax.patches if p not in band]
    assert bars == pytest.approx([25.0, 60.0])
    corners = band[0].get_patch_transform().transform([(0, 0), (1, 1)])  # the band in data units
    assert len(band) == 1 and (corners[0, 1], corners[1, 1]) == pytest.approx((19.0, 34.0))
    plt.close("all")


def test_matching_bars_beside_feature_flow(ours):
    fig = plot_matching_beside_feature_flow(ours)
    ax = fig.axes[0]
    overall = {r["method"]: r["success_rate"] for r in ours.matching if r["pair"] == "all pairs"}
    assert [p.get_height() for p in ax.patches] == pytest.approx([100 * v for v in overall.values()])
    marks = np.asarray(ax.collections[0].get_segments())  # one red line on each reported bar
    np.testing.assert_allclose(marks, [[[-0.4, 65.0], [0.4, 65.0]], [[0.6, 65.0], [1.4, 65.0]]])
    plt.close("all")


def test_reference_table_shows_ours_beside_theirs(ours):
    html = reference_table(ours)
    assert html._repr_html_() == str(html)
    for text in ("largest maximum activation", "639.8", "52.0%", "19.0% – 34.0%", "25.0% – 60.0%",
                 "about 65%", "model: tiny-model vs GPT-2 small", "SAE width: 8 vs 24,576",
                 "tokens: 400 vs 17,432,576", "arXiv 2410.08869", "Stefan-Heimersheim/spar-2024 @ c68d126",
                 "arXiv 2502.03032", "Feature Flow"):
        assert text in html, text
    dead_only = reference_table(ours, "dead")
    assert "0.01% – 16.6%" in dead_only and "2502.03032" not in dead_only
    with pytest.raises(ConfigError, match="unknown reference quantity"):
        reference_table(ours, ["nonsense"])

import matplotlib

matplotlib.use("Agg")
import numpy as np

from helpers.evolution.upstream import pick_explained
from helpers.notebook.gate_plots import (plot_coverage_curves, plot_explanation_sizes, plot_gate_counts,
                                         side_by_side_html, truth_table_html)


def test_gate_bars_show_candidates_and_survivors():
    summary = [{"pair": "s0->s1", "downstream site": "s1", "and candidates": 3, "and survivors": 1,
                "or candidates": 2, "or survivors": 0},
               {"pair": "s1->s2", "downstream site": "s2", "and candidates": 0, "and survivors": 0,
                "or candidates": 5, "or survivors": 4}]
    fig = plot_gate_counts(summary, 0.9)
    heights = [p.get_height() for p in fig.axes[0].patches]
    assert heights == [3, 0, 1, 0, 2, 5, 0, 4]  # one series (pairs in order) after another
    assert "IoU ≥ 0.9" in fig.axes[0].get_title()
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()][0] == "AND candidates"


def test_truth_table_html_marks_disagreements_seen():
    row = {"pair_index": 0, "kind": "and", "a1": 1, "a2": 2, "b": 3, "table": [50, 0, 5, 0, 6, 0, 2, 9],
           "iou": 9 / 11, "precision": 9 / 11, "recall": 1.0, "survives": False}
    out = truth_table_html(row, ["s0", "s1"], {"s1#3": "cat"})
    assert "s1#3 (cat)" in out and "rejected" in out and "a1 AND a2" in out
    assert out.count("background:#fde0dd") == 1  # only 110 (2 tokens) disagrees with b and was seen


def test_explanation_figures_and_side_by_side():
    sizes = np.array([[0, 1, 2, -1], [3, 3, 0, 0]])
    fig = plot_explanation_sizes(sizes, ["s1", "s2"], 0.9, 3)
    bars = fig.axes[0].patches  # per category (1, 2, 3, not reached), per pair
    assert [round(b.get_height(), 3) for b in bars] == [0.333, 0.0, 0.333, 0.0, 0.0, 1.0, 0.333, 0.0]
    ex = {"steps": [{"coverage": 0.5}, {"coverage": 0.95}]}
    fig = plot_coverage_curves([ex], ["s1#4"], 0.9)
    assert fig.axes[0].get_lines()[0].get_ydata().tolist() == [0.0, 0.5, 0.95]
    html = side_by_side_html([("a <b>", [{"activation": 1.5, "left": "x", "token": "y", "right": "z"}]), ("c", [])])
    assert "a &lt;b&gt;" in html and "(no examples)" in html and "1.50" in html


def test_pick_explained_prefers_small_explanations_of_frequent_features():
    # 2 pairs, 3 features, k=2: coverage after each step and firings
    covered = np.array([[[10, 10], [5, 9], [1, 2]], [[0, 0], [30, 40], [19, 20]]])
    fired = np.array([[10, 10, 100], [0, 40, 20]])
    gates = {"cover_count": covered, "cover_fired": fired}
    # at 0.9: sizes [[1, 2, -1], [0, 2, 1]]; size 2 wanted first, most frequent, pairs alternating
    assert pick_explained(gates, 0.9, n=2, sizes=(2,), min_fired=5) == [(0, 1), (1, 1)]
    # then any reached explanation, pair by pair: feature 0 of pair 0 (ties by index)
    assert pick_explained(gates, 0.9, n=3, sizes=(2,), min_fired=5) == [(0, 1), (1, 1), (0, 0)]

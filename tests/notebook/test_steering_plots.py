import matplotlib

matplotlib.use("Agg")
import numpy as np

from helpers.interventions.steering import SteeringConfig, SteeringResult, steering_summary
from helpers.notebook.steering_plots import (plot_retrieval_ranks, plot_steering_tradeoff, retrieval_table,
                                             steered_texts_table, steering_findings, steering_table)

CONFIG = SteeringConfig(prompts=("I am a",), strengths=(0.0, 5.0), modes=("add",), new_tokens=2)


def _sweep(gain_feature=3.0, gain_random=0.5):
    def row(mode, k, control, gain, act, nll, text):
        return {"prompt": "I am a", "mode": mode, "k": k, "control": control, "value": k, "text": text,
                "logprob": gain - 4.0, "gain": gain, "act": np.array(act), "nll": np.array(nll),
                "distinct": len(set(text.split())) / 2}

    rows = [row("none", 0.0, False, 0.0, [0.0, 0.0], [1.0, 1.0], "cat."),
            row("add", 5.0, False, gain_feature, [2.0, 0.0], [2.0, 4.0], "river river"),
            row("add", 5.0, True, gain_random, [0.0, 0.0], [2.0, 2.0], "dog.")]
    return SteeringResult("blocks.1.hook_resid_post", 7, 1.5, [3, 4], ["river", "lake"], CONFIG, rows)


def test_tradeoff_plots_effect_against_perplexity_with_the_control():
    summary = steering_summary(_sweep())
    fig = plot_steering_tradeoff({"feature 7": summary, "feature 8": summary}, "t")
    assert len(fig.axes) == 4
    lines = {ln.get_label(): ln for ln in fig.axes[0].get_lines()}
    feat, rand = lines["add, feature direction"], lines["add, random direction"]
    # adding starts at the unsteered text (k = 0): perplexity e^1, gain 0
    np.testing.assert_allclose(feat.get_xdata(), [np.e, np.exp(3.0)])
    np.testing.assert_allclose(feat.get_ydata(), [0.0, 3.0])
    np.testing.assert_allclose(rand.get_ydata(), [0.0, 0.5])
    np.testing.assert_allclose(fig.axes[1].get_lines()[0].get_ydata(), [0.0, 0.5])  # fires on 1 of 2
    assert fig.axes[0].get_xscale() == "log"  # perplexity from e to e^3


def test_tables_and_findings_read_the_sweep():
    sweep = _sweep()
    texts = steered_texts_table(sweep, "add", 5)
    assert "river river" in texts and "dog." in texts and "Feature 7" in texts and "&#x27;river&#x27;" in texts
    table = steering_table(steering_summary(sweep), "c")
    assert "unsteered" in table and "+3.00" in table and "50%" in table and "distinct tokens" in table
    text = steering_findings({7: sweep})
    assert "+3.00 nats" in text and "random direction of the same norm: +0.50" in text
    assert "from k = 5" in text and "perplexity 20.1" in text and "50% distinct tokens" in text
    assert "at no strength swept" in steering_findings({7: _sweep(gain_feature=1.0)})


def test_retrieval_figure_and_table():
    ranks = {3: {"strengths": [0.0, 5.0], "steered": [400.0, 12.0], "random": [400.0, 380.0], "summaries": 4}}
    fig = plot_retrieval_ranks(ranks, 1000, "t")
    assert [list(ln.get_ydata()) for ln in fig.axes[0].get_lines()] == [[400.0, 12.0], [400.0, 380.0]]
    table = retrieval_table(ranks, 1000, "hidden.3")
    assert "400" in table and "12" in table and "380" in table and "among 1,000" in table


def test_lineage_plot_draws_one_line_per_condition_from_the_unsteered_text():
    from helpers.interventions.lineage_steering import LineageSteeringResult, lineage_steering_summary
    from helpers.notebook.steering_plots import plot_lineage_steering

    def row(cond, control, k, gain, act, nll):
        return {"prompt": "I am a", "condition": cond, "control": control, "k": k, "gain": gain,
                "act": np.array(act), "nll": np.array(nll), "distinct": 1.0}

    rows = [row("none", False, 0.0, 0.0, [0.0, 0.0], [1.0, 1.0]),
            row("single", False, 2.0, 1.0, [1.0, 0.0], [2.0, 2.0]),
            row("single", True, 2.0, 0.1, [0.0, 0.0], [1.5, 1.5]),
            row("lineage", False, 2.0, 2.0, [1.0, 1.0], [1.5, 2.5]),
            row("lineage", True, 2.0, 0.2, [0.0, 0.0], [1.2, 1.2])]
    result = LineageSteeringResult([(0, 1), (1, 2)], ["a", "b"], (1, 2), 1.0, [3], ["x"], CONFIG, rows)
    fig = plot_lineage_steering({"lineage of 2": lineage_steering_summary(result)}, "t")
    assert len(fig.axes) == 2
    lines = {ln.get_label(): ln for ln in fig.axes[0].get_lines()}
    assert set(lines) == {"feature alone, at its site", "lineage, same total norm", "random, one site",
                          "random, lineage's sites", "unsteered (k = 0)"}
    np.testing.assert_allclose(lines["lineage, same total norm"].get_xdata(), [np.e, np.exp(2.0)])
    np.testing.assert_allclose(lines["lineage, same total norm"].get_ydata(), [0.0, 2.0])
    np.testing.assert_allclose(lines["random, one site"].get_ydata(), [0.0, 0.1])
    np.testing.assert_allclose(fig.axes[1].get_lines()[1].get_ydata(), [0.0, 1.0])  # the lineage fires on 2 of 2
    assert "nats" in fig.axes[0].get_ylabel() and "perplexity" in fig.axes[0].get_xlabel()
    assert [t.get_text() for t in fig.axes[0].texts] == ["2"] * 4  # each point labelled by its k

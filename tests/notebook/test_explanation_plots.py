"""The per-site distribution figure of the explanations' scores."""

import matplotlib

matplotlib.use("Agg")

from helpers.notebook.explanation_plots import plot_explanation_scores  # noqa: E402

from ..explain.test_summary import fake_explanations  # noqa: E402


def test_one_violin_per_scored_site_and_counts_in_the_labels():
    fig = plot_explanation_scores(fake_explanations())
    axes = fig.axes
    assert [ax.get_title() for ax in axes] == ["detection AUROC", "balanced accuracy", "fuzzing"]
    labels = [t.get_text() for t in axes[0].get_xticklabels()]
    assert labels == ["a\n(n=3)", "b\n(n=0)"]
    assert [t.get_text() for t in axes[2].get_xticklabels()] == ["a\n(n=2)", "b\n(n=0)"]
    assert len(axes[0].collections) >= 1  # the violin of site a (b has no score)

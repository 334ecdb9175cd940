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


def test_findings_read_their_numbers():
    import re

    import numpy as np

    from helpers.notebook.explanation_plots import explanation_findings

    from ..evolution.test_neuron_artefact import fake

    text = explanation_findings(fake_explanations())
    assert "3 features were scored" in text and "from 0.90 to 0.90" in text and "67% of the scored" in text
    assert "token 67%, bigram 0%, previous 0%, title 33%" in text and "Neurons" not in text
    nan = np.nan
    neurons = fake([[0, -1], [1, 0]],
                   [[[0.95, -0.2, nan], [nan, nan, nan]], [[0.1, -0.92, nan], [0.91, 0.5, nan]]],
                   [[[0.95, 0.2], [nan, nan]], [[-0.92, 0.1], [0.91, 0.25]]])
    neurons.update({"sample_feature": np.array([[0, 1], [2, -1]]),
                    "sample_feature_detection_auroc": np.array([[0.9, 0.9], [0.9, nan]]),
                    "sample_neuron_detection_auroc": np.array([[0.6, 0.6], [0.6, nan]]),
                    "sample_feature_fuzzing": np.array([[0.5, 0.7], [0.6, nan]]),
                    "sample_neuron_fuzzing": np.array([[0.7, 0.5], [0.6, nan]])})
    text = explanation_findings(fake_explanations(), neurons)
    assert "3 of 4 features (75.0%) have a neuron at |r| >= 0.9" in text
    assert re.search(r"detection AUROC\.\*\* 3 sampled features score 0\.900 .* 3 rate-matched neurons 0\.600: "
                     r"a difference of \+0\.300 \(95% interval \+0\.300 to \+0\.300\); features are the more", text)
    assert re.search(r"fuzzing\.\*\* .* difference of \+0\.000 .*the interval holds 0", text)


def test_findings_without_explanations_say_so():
    from helpers.notebook.explanation_plots import explanation_findings

    assert explanation_findings(None) == "- **Explanations.** None: the corpus was too small to hold documents out."

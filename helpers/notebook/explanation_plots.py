"""The distribution of the explanations' scores, site by site (:mod:`helpers.explain`)."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from ..explain.summary import SCORE_NAMES


def plot_explanation_scores(expl: Mapping[str, Any], title: str | None = None):
    """One panel per score (detection AUROC, balanced accuracy, fuzzing): a violin per site of
    the scores of its features, the median marked, chance (0.5) dashed; features without a
    score (never fired, or no window to compare) are left out and counted in the labels."""
    import matplotlib.pyplot as plt

    sites = list(expl["sites"])
    fig, axes = plt.subplots(1, len(SCORE_NAMES), figsize=(12, 3.8), sharey=True)
    for ax, (key, name) in zip(np.atleast_1d(axes), SCORE_NAMES.items()):
        values = [v[np.isfinite(v)] for v in np.asarray(expl[key], np.float64)]
        at = [i for i, v in enumerate(values) if v.size]
        if at:
            parts = ax.violinplot([values[i] for i in at], positions=at, showmedians=True, widths=0.8)
            for body in parts["bodies"]:
                body.set_alpha(0.5)
        ax.axhline(0.5, color="grey", linestyle="--", linewidth=1)
        ax.set_xticks(range(len(sites)), [f"{s}\n(n={v.size})" for s, v in zip(sites, values)],
                      rotation=45, ha="right", fontsize=7)
        ax.set_title(name)
        ax.set_ylim(0, 1.02)
    np.atleast_1d(axes)[0].set_ylabel("score on held-out documents")
    fig.suptitle(title or "Explanations scored on held-out text, per site (dashed: chance)")
    fig.tight_layout()
    return fig

"""The convergence study's figure: SAE quality against the training budget, where the shipped SAEs sit."""

from __future__ import annotations

from typing import Any, Mapping

import matplotlib.pyplot as plt


def plot_convergence(study: Mapping[str, Any], title: str = "SAE quality against the training budget"):
    """Two rows of panels (FVU, dead features, loss recovered): against training samples per feature on
    every training token, and against the distinct training tokens at the shipped samples per feature.
    The shipped budget is a dashed vertical line, each axis's knee a ring, the targets dotted lines.

    ``study``: :func:`helpers.subject.convergence.load_convergence`'s record."""
    from ..report import DEAD_TARGET, FVU_TARGET, LOSS_RECOVERED_TARGET
    from ..subject.convergence import axis_rows, knee

    rows = study["rows"]
    quality = [("fvu", "FVU", 1.0, FVU_TARGET), ("dead_fraction", "dead features (%)", 100.0, 100 * DEAD_TARGET)]
    if all("loss_recovered" in r for r in rows):
        quality.append(("loss_recovered", "loss recovered (%)", 1.0, LOSS_RECOVERED_TARGET))
    axes_def = [("samples", "samples_per_feature", "training samples per feature (log scale)",
                 study["shipped_samples_per_feature"]),
                ("tokens", "tokens", "distinct training tokens (log scale)", study["train_tokens"])]
    fig, axes = plt.subplots(2, len(quality), figsize=(4.2 * len(quality), 7), constrained_layout=True, squeeze=False)
    for row_axes, (axis, key, xlabel, shipped) in zip(axes, axes_def):
        ordered = axis_rows(rows, axis)
        at_knee = knee(rows, axis)
        x = [r[key] for r in ordered]
        for ax, (q, label, scale, target) in zip(row_axes, quality):
            ax.plot(x, [r[q] * scale for r in ordered], "o-", color="tab:blue", label="measured")
            ax.axvline(shipped, color="tab:green", linestyle="--", linewidth=1, label="shipped budget")
            ax.axhline(target, color="tab:red", linestyle=":", linewidth=1, label=f"target {target:g}")
            if at_knee is not None:
                ax.plot([at_knee[key]], [at_knee[q] * scale], "o", markersize=13, markerfacecolor="none",
                        color="tab:orange", label="knee")
            ax.set_xscale("log", base=2)
            ax.set_xlabel(xlabel)
            ax.set_ylabel(label)
            ax.set_title(f"{label} against {'samples per feature' if axis == 'samples' else 'distinct tokens'}",
                         fontsize=10)
        row_axes[0].legend(fontsize=7)
    fig.suptitle(f"{title} ({study['site']}, held-out tokens)")
    return fig

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


def _verdict(low: float, high: float) -> str:
    if low > 0:
        return "features are the more interpretable"
    if high < 0:
        return "neurons are the more interpretable"
    return "the interval holds 0: no difference can be told at this sample size"


def _explanation_line(rows: list[dict[str, Any]], kinds, good: float) -> str:
    med = [r["detection AUROC"] for r in rows if np.isfinite(r["detection AUROC"])]
    scored = sum(r["scored"] for r in rows)
    share = np.nansum([r[f"AUROC >= {good:g}"] * r["scored"] for r in rows]) / max(scored, 1)
    count = {k: sum(r[f"{k} rules"] for r in rows) for k in kinds}
    total = max(sum(count.values()), 1)
    spread = f"runs from {min(med):.2f} to {max(med):.2f}" if med else "is undefined (nothing scored)"
    return (f"- **Explanations.** {scored:,} features were scored on held-out documents. The median detection "
            f"AUROC per site {spread}; {share:.0%} of the scored features reach {good:g}. The rules chosen: "
            + ", ".join(f"{k} {n / total:.0%}" for k, n in count.items()) + ".")


def explanation_findings(expl: Mapping[str, Any] | None, neurons: Mapping[str, Any] | None = None,
                         good: float = 0.8) -> str:
    """What the explanations and the features-against-neurons artefacts show, in Markdown, with
    their numbers: how well features are explained per site, which kinds of rule win, the
    neuron-aligned features and unexplained neurons, and features against rate-matched neurons
    with the 95% interval of the difference. ``expl`` None: no explanations were built."""
    from ..explain.summary import explanation_summary

    lines = ["- **Explanations.** None: the corpus was too small to hold documents out."]
    if expl is not None:
        lines = [_explanation_line(explanation_summary(expl, good), expl["kinds"], good)]
    if neurons is None:
        return "\n".join(lines)
    from ..evolution.neuron_report import neuron_totals, unit_score_rows

    t = neuron_totals(neurons)
    lines.append(f"- **Neurons.** {t['aligned']:,} of {t['features']:,} features ({t['aligned share']:.1%}) have a "
                 f"neuron at |r| >= {t['aligned_r']:g} in their block or the block before; {t['unexplained']:,} of "
                 f"{t['neurons']:,} neurons ({t['unexplained share']:.0%}) have no feature at |r| >= "
                 f"{t['covered_r']:g} (over {t['tokens']:,} tokens).")
    for score, name in (("detection_auroc", "detection AUROC"), ("fuzzing", "fuzzing")):
        pooled = [r for r in unit_score_rows(neurons, score) if r["site"] == "all sites"]
        if not pooled:
            continue
        p = pooled[0]
        (lo, hi), mean_f, mean_n = p["95% interval"], p["features' mean"], p["neurons' mean"]
        lines.append(f"- **Features against neurons, {name}.** {p['features']:,} sampled features score "
                     f"{mean_f:.3f} on average, {p['neurons']:,} rate-matched neurons {mean_n:.3f}: a "
                     f"difference of {p['difference']:+.3f} (95% interval {lo:+.3f} to {hi:+.3f}); "
                     f"{_verdict(lo, hi)}.")
    return "\n".join(lines)

"""Figures, tables and findings for steering (notebook 07): effect against fluency cost on a
causal LM (:func:`helpers.interventions.steering_sweep`) and along a lineage
(:func:`helpers.interventions.lineage_steering_sweep`), retrieval ranks of steered sentence
embeddings on an encoder (:func:`helpers.interventions.retrieval_sweep`)."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from .tables import Html, html_table

#: what each measure of :func:`helpers.interventions.steering_summary` means, for axes and tables
MEASURES = {
    "gain": "log-prob gain of its top tokens (nats)",
    "fires": "share of generated tokens where it fires",
    "perplexity": "perplexity under the unsteered model",
    "distinct": "share of distinct tokens per text",
}


def _row(summary, mode: str, k: float | None = None, direction: str = "feature") -> Mapping[str, Any]:
    return next(r for r in summary if r["mode"] == mode and (k is None or r["k"] == k)
                and (mode == "none" or r["direction"] == direction))


def _finish_axis(ax, key: str, summary: Sequence[Mapping[str, Any]], label: str) -> None:
    """Labels of one effect-against-cost panel; a log scale only where perplexity spans a wide range."""
    from matplotlib.ticker import PercentFormatter

    ppl = [r["perplexity"] for r in summary]
    if max(ppl) > 3 * min(ppl):
        ax.set_xscale("log")
    if key == "fires":
        ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_xlabel(MEASURES["perplexity"] + " (cost)")
    ax.set_ylabel(MEASURES[key])
    ax.set_title(label, fontsize=9)


def plot_steering_tradeoff(summaries: Mapping[str, Sequence[Mapping[str, Any]]], title: str):
    """Effect against cost over the strength sweep, one row of panels per steered feature
    (``{label: steering_summary(...)}``): the log-prob gain of the feature's top tokens and the
    share of generated tokens on which it fires, against the perplexity of the text under the
    unsteered model (log scale where it spans a wide range). Solid: the feature, dashed: a
    random direction of the same norm; points labelled with their strength k; the star is the
    unsteered text."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(summaries), 2, figsize=(10, 3.6 * len(summaries)), squeeze=False,
                             constrained_layout=True)
    for (label, summary), row in zip(summaries.items(), axes):
        clean = _row(summary, "none")
        modes = list(dict.fromkeys(r["mode"] for r in summary if r["mode"] != "none"))
        for ax, key in zip(row, ("gain", "fires")):
            for i, mode in enumerate(modes):
                for direction, style in (("feature", "-o"), ("random", "--x")):
                    pts = sorted((r for r in summary if r["mode"] == mode and r.get("direction") == direction),
                                 key=lambda r: r["k"])
                    if mode == "add":  # adding 0 is the unsteered text
                        pts = [{**clean, "k": 0.0}] + pts
                    ax.plot([r["perplexity"] for r in pts], [r[key] for r in pts], style, color=f"C{i}",
                            label=f"{mode}, {direction} direction")
                    for r in pts if direction == "feature" else ():
                        ax.annotate(f"{r['k']:g}", (r["perplexity"], r[key]), fontsize=7,
                                    xytext=(3, 3), textcoords="offset points")
            ax.plot([clean["perplexity"]], [clean[key]], "*", color="k", markersize=12, label="unsteered")
            _finish_axis(ax, key, summary, label)
    axes[0, 0].legend(fontsize=7)
    fig.suptitle(title)
    return fig


#: the conditions of :func:`helpers.interventions.lineage_steering_summary`, as the legend names them
LINEAGE_CONDITIONS = {
    ("single", "feature"): "feature alone, at its site",
    ("lineage", "feature"): "lineage, same total norm",
    ("single", "random"): "random, one site",
    ("lineage", "random"): "random, lineage's sites",
}


def plot_lineage_steering(summaries: Mapping[str, Sequence[Mapping[str, Any]]], title: str):
    """Steering along a lineage: effect against fluency cost over the strength sweep, one row of
    panels per lineage (``{label: lineage_steering_summary(...)}``). Left: the log-prob gain of the
    centre feature's top tokens (nats); right: the share of generated tokens on which it fires;
    both against the perplexity of the text under the unsteered model. One line per condition:
    the feature alone at its site, the lineage at the same total norm (solid), and each one's
    random control (dashed); every line starts at the unsteered text (k = 0, the star) and its
    points are labelled with their strength k (x the centre's maximum activation)."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(summaries), 2, figsize=(10, 3.6 * len(summaries)), squeeze=False,
                             constrained_layout=True)
    for (label, summary), row in zip(summaries.items(), axes):
        clean = next(r for r in summary if r["condition"] == "none")
        for ax, key in zip(row, ("gain", "fires")):
            for i, ((cond, direction), name) in enumerate(LINEAGE_CONDITIONS.items()):
                pts = sorted((r for r in summary if (r["condition"], r["direction"]) == (cond, direction)),
                             key=lambda r: r["k"])
                if not pts:
                    continue
                pts = [{**clean, "k": 0.0}] + pts
                style = "-o" if direction == "feature" else "--x"
                ax.plot([r["perplexity"] for r in pts], [r[key] for r in pts], style, color=f"C{i}", label=name)
                for r in pts[1:]:
                    ax.annotate(f"{r['k']:g}", (r["perplexity"], r[key]), fontsize=7, color=f"C{i}",
                                xytext=(3, 3), textcoords="offset points")
            ax.plot([clean["perplexity"]], [clean[key]], "*", color="k", markersize=12, label="unsteered (k = 0)")
            _finish_axis(ax, key, summary, label)
    axes[0, 0].legend(fontsize=7)
    fig.suptitle(title)
    return fig


def steered_texts_table(sweep, mode: str, k: float) -> Html:
    """Per prompt: the unsteered text, the text steered by ``mode`` at ``k x`` the maximum
    activation, and the random control; the caption names the feature and its top tokens."""
    from ..interventions.steering import steered_texts

    verb = "adding" if mode == "add" else "clamping at"
    words = ", ".join(repr(t) for t in sweep.top_tokens)
    return html_table(steered_texts(sweep, mode, k), caption=(
        f"Feature {sweep.feature} at {sweep.site}, {verb} {k:g}x its maximum activation "
        f"({sweep.max_activation:.3g}); its top tokens: {words}"))


def steering_table(summary: Sequence[Mapping[str, Any]], caption: str) -> Html:
    """The sweep's measures per condition, unsteered first."""
    rows = []
    for r in summary:
        steered = r["mode"] != "none"
        rows.append({"form": r["mode"] if steered else "unsteered", "k (x max)": r["k"] if steered else None,
                     "direction": r["direction"] if steered else "",
                     **{MEASURES[m]: r[m] for m in MEASURES}})
    return html_table(rows, caption=caption, formats={
        MEASURES["gain"]: "+.2f", MEASURES["fires"]: ".0%", MEASURES["perplexity"]: ",.1f",
        MEASURES["distinct"]: ".0%", "k (x max)": "g"})


def steering_findings(sweeps: Mapping[int, Any]) -> str:
    """What the sweeps show, in Markdown, with their numbers: per feature and form of steering,
    at the strongest strength, the feature's direction against the random control, and the
    weakest strength whose gain beats the control's by 1 nat."""
    from ..interventions.steering import steering_summary

    lines = []
    for f, sweep in sweeps.items():
        s = steering_summary(sweep)
        clean = _row(s, "none")
        k = max(sweep.config.strengths)
        words = ", ".join(repr(t) for t in sweep.top_tokens[:5])
        lines.append(f"- **Feature {f}** (top tokens {words}). Unsteered, it fires on {clean['fires']:.0%} "
                     f"of the generated tokens, at a perplexity of {clean['perplexity']:,.1f}.")
        for mode in sweep.config.modes:
            a, b = _row(s, mode, k, "feature"), _row(s, mode, k, "random")
            beats = [r["k"] for r in s if r["mode"] == mode and r.get("direction") == "feature"
                     and r["gain"] - _row(s, mode, r["k"], "random")["gain"] >= 1.0]
            first = f"from k = {min(beats):g}" if beats else "at no strength swept"
            verb = "Adding" if mode == "add" else "Clamping at"
            lines.append(
                f"  - {verb} {k:g}x its maximum activation: log-prob gain of its top tokens "
                f"{a['gain']:+.2f} nats (random direction of the same norm: {b['gain']:+.2f}); "
                f"fires on {a['fires']:.0%} of the generated tokens (random: {b['fires']:.0%}); "
                f"perplexity {a['perplexity']:,.1f} (random: {b['perplexity']:,.1f}), "
                f"{a['distinct']:.0%} distinct tokens per text (random: {b['distinct']:.0%}). "
                f"The gain beats the control's by 1 nat {first}.")
    return "\n".join(lines)


def plot_retrieval_ranks(results: Mapping[int, Mapping[str, Any]], n_documents: int, title: str):
    """Encoder steering: median rank of each feature's summaries against the strength, for the
    feature's direction (solid) and a random direction of the same norm (dashed)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4), constrained_layout=True)
    for f, r in results.items():
        (line,) = ax.plot(r["strengths"], r["steered"], marker="o", label=f"feature {f}")
        ax.plot(r["strengths"], r["random"], marker="x", linestyle="--", color=line.get_color(),
                label=f"random, same norm ({f})")
    ax.set_yscale("log")
    ax.invert_yaxis()
    ax.set_xlabel("steering strength k (x the feature's maximum activation)")
    ax.set_ylabel(f"median rank among {n_documents:,} summaries (log)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return fig


def retrieval_table(results: Mapping[int, Mapping[str, Any]], n_documents: int, site: str) -> Html:
    """Encoder steering: per feature, the median rank unsteered, the best steered and where,
    and the best with the random control."""
    rows = []
    for f, r in results.items():
        best = min(range(len(r["steered"])), key=r["steered"].__getitem__)
        plain = r["steered"][r["strengths"].index(0.0)] if 0.0 in r["strengths"] else float("nan")
        rows.append({"feature": f, "summaries": r["summaries"], "median rank unsteered": plain,
                     "best median rank steered": r["steered"][best], "at k": r["strengths"][best],
                     "best with a random direction of the same norm": min(r["random"])})
    fmt = {c: ",.0f" for c in ("median rank unsteered", "best median rank steered",
                               "best with a random direction of the same norm")}
    return html_table(rows, formats={**fmt, "at k": "g"},
                      caption=f"Median rank of each feature's summaries among {n_documents:,}, steering at {site}")


def _lineage_row(summary, condition: str, k: float, direction: str = "feature") -> Mapping[str, Any]:
    return next(r for r in summary if r["condition"] == condition and r["k"] == k and r["direction"] == direction)


def lineage_findings(results: Sequence[Any]) -> str:
    """What the lineage sweeps show, in Markdown, with their numbers: per lineage, at every strength,
    the centre's gain and firing when steered alone and along its lineage (same total norm) against
    the random controls, and the perplexity each costs; then whether the lineage gained more than the
    feature alone at a perplexity no higher, and where it kept 90% of the gain for less perplexity."""
    from ..interventions.lineage_steering import lineage_steering_summary

    lines = []
    for res in results:
        s = lineage_steering_summary(res)
        site, f = res.sites[res.chain.index(res.centre)], res.centre[1]
        steps = " → ".join(f"{res.sites[i]}:{g}" for i, (_, g) in enumerate(res.chain))
        clean = next(r for r in s if r["condition"] == "none")
        lines.append(f"- **Feature {f} at {site}**, lineage {steps} ({len(res.chain)} sites). Unsteered: it fires "
                     f"on {clean['fires']:.0%} of the generated tokens, perplexity {clean['perplexity']:,.1f}.")
        better, cheaper = [], []
        for k in sorted({r["k"] for r in s if r["k"] > 0}):
            one, lin = _lineage_row(s, "single", k), _lineage_row(s, "lineage", k)
            r1, rl = _lineage_row(s, "single", k, "random"), _lineage_row(s, "lineage", k, "random")
            lines.append(f"  - k = {k:g}: gain alone {one['gain']:+.2f} nats (random {r1['gain']:+.2f}), along the "
                         f"lineage {lin['gain']:+.2f} (random {rl['gain']:+.2f}); fires {one['fires']:.0%} alone, "
                         f"{lin['fires']:.0%} along; perplexity {one['perplexity']:,.1f} alone, "
                         f"{lin['perplexity']:,.1f} along.")
            if lin["gain"] > one["gain"] and lin["perplexity"] <= one["perplexity"]:
                better.append(k)
            if lin["perplexity"] < one["perplexity"] and lin["gain"] >= 0.9 * one["gain"] > 0:
                cheaper.append(k)
        lines.append(f"  - The lineage gains more than the feature alone at no higher perplexity at k = "
                     f"{', '.join(f'{k:g}' for k in better)}." if better else
                     "  - At no strength does the lineage gain more than the feature alone at no higher perplexity.")
        if cheaper:
            lines.append(f"  - It keeps at least 90% of the feature's gain at a lower perplexity at k = "
                         f"{', '.join(f'{k:g}' for k in cheaper)}.")
    return "\n".join(lines)

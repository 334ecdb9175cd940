"""What a width sweep's pass says, as rows and Markdown for notebook 14: the splitting shares per width
pair, each parent's best decoder cosine at the wider width, the splitting trees with their examples and
the concept a tree follows across the widths. Figures: :mod:`helpers.notebook.width_plots` and
:mod:`helpers.notebook.neighbourhood_plots`."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

__all__ = [
    "best_cosines", "feature_labels", "split_share_rows", "tree_members", "tree_nodes", "tree_rows",
    "no_sweep_note", "varied_trees", "width_findings", "width_sweep_or_none",
]


def width_sweep_or_none(exp):
    """The pass experiment of ``exp``'s width sweep (``<preset>-widths``) when its splitting is prepared
    (``make widths``; the Gemma preset ships its SAEs and ``make book`` runs its pass), else None."""
    from ..subject.widths import default_sweep_experiment
    from .splitting_artefact import splitting_ready

    wexp = exp if exp.width_pairs else default_sweep_experiment(exp)
    return wexp if wexp is not None and splitting_ready(wexp) else None


def no_sweep_note(exp) -> str:
    """Why ``exp`` has no prepared width sweep (nothing for notebook 14 and the width explorer), naming the
    site a sweep would read and the command."""
    from ..subject.widths import default_sweep_experiment

    wexp = default_sweep_experiment(exp)
    site = exp.sites[len(exp.sites) // 2] if wexp is None else wexp.sites[0].split("@")[0]
    if wexp is None:
        return (f"{exp.name}: no width sweep of its own SAEs at {site} (pretrained SAEs, or a width too small "
                "to divide by 4); official widths: python -m helpers widths --release NAME --layers L")
    return (f"{exp.name}: no width sweep at {site} prepared yet: `make widths` (python -m helpers widths "
            f"--experiment {exp.name}) trains it and runs its pass")


def _pct(x: float) -> str:
    return "–" if x != x else f"{100 * x:.1f}%"


def split_share_rows(pairs: Sequence[Any]) -> list[dict[str, Any]]:
    """One row per width pair (:class:`~.splitting.SplitResult`): alive features of both widths, and the
    shares that split, persist one-to-one and are new, with their counts."""
    rows = []
    for r in pairs:
        wa, wb = r.widths
        rows.append({"widths": f"{wa} → {wb}", "alive parents": r.alive_a, "alive children": r.alive_b,
                     "split": f"{_pct(r.split_share)} ({r.n_split})", "persist 1:1": f"{_pct(r.persist_share)} "
                     f"({r.n_persist})", "new": f"{_pct(r.new_share)} ({r.n_new})"})
    return rows


def best_cosines(exp, saes: Mapping[str, Any], pairs: Sequence[Any]) -> dict[str, np.ndarray]:
    """``{"512 → 2048": cosines}``: each alive parent's highest decoder cosine with any feature of the
    wider SAE (the persistence rule asks for >= 0.9, mutual)."""
    from .decoder import top_cosine_matches

    out = {}
    for i, (a, b) in enumerate(exp.site_pairs):
        _, cos = top_cosine_matches(saes[a], saes[b], 1)
        alive = np.isfinite(pairs[i].recall)  # (recall is NaN exactly for the dead parents)
        out[f"{pairs[i].widths[0]} → {pairs[i].widths[1]}"] = cos[:, 0].numpy()[alive]
    return out


def tree_nodes(tree: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """Every node of a splitting tree, depth first (the root first)."""
    out = [tree]
    for child in tree["children"]:
        out.extend(tree_nodes(child))
    return out


def tree_members(tree: Mapping[str, Any], widths: Sequence[int]) -> dict[int, list[int]]:
    """``{width: [features]}`` of a tree's nodes: one concept followed across the widths."""
    out: dict[int, list[int]] = {}
    for node in tree_nodes(tree):
        out.setdefault(int(widths[node["width_index"]]), []).append(int(node["feature"]))
    return out


def feature_labels(exp, text, nodes: Sequence[Mapping[str, Any]], expl: Mapping[str, Any] | None = None,
                   n: int = 3) -> dict[tuple[int, int], str]:
    """``{(width_index, feature): label}``: the feature's explanation when ``expl`` has one, else the
    tokens of its highest examples (``text``: :func:`~helpers.explore.examples.feature_text`)."""
    out = {}
    for node in nodes:
        s, f = int(node["width_index"]), int(node["feature"])
        said = str(expl["text"][s][f]) if expl is not None and expl["text"][s][f] else ""
        out[(s, f)] = said or text.label(exp.sites[s], f, n=n)
    return out


def varied_trees(exp, trees: Sequence[Mapping[str, Any]], text, n: int = 3) -> list[Mapping[str, Any]]:
    """Up to ``n`` of ``trees`` (clearest first) whose roots share none of their highest examples' tokens
    with an earlier chosen root, so that the trees shown are of different concepts; then the clearest of
    the rest, if too few."""
    chosen, seen = [], set()
    for tree in trees:
        label = text.label(exp.sites[0], int(tree["feature"]))
        words = {w.strip().lower() for w in label.split(",") if w.strip()}
        if not words & seen:
            chosen.append(tree)
            seen |= words
    chosen += [t for t in trees if t not in chosen]
    return chosen[:n]


def tree_rows(exp, text, tree: Mapping[str, Any], labels: Mapping[tuple[int, int], str],
              examples: int = 1, depth: int = 2) -> list[dict[str, Any]]:
    """One row per node of ``tree`` down to ``depth`` (0: the root): its width, feature (a link to its
    page in the width sweep's explorer), share of its parent it covers, label and highest example."""
    from ..explore.links import feature_anchor
    from ..notebook.tables import Html, highlight

    rows = []

    def visit(node: Mapping[str, Any], level: int) -> None:
        s, f = int(node["width_index"]), int(node["feature"])
        ex = text.examples(exp.sites[s], f, n=examples)
        shown = Html("; ".join(str(highlight(e["left"], e["token"], e["right"])) for e in ex) or "–")
        share = node["share"]
        link = Html(feature_anchor(exp, exp.sites[s], f, f"{'· ' * level}#{f}"))
        rows.append({"width": exp.site_widths[s], "feature": link,
                     "covers of its parent": "–" if share is None else f"{100 * share:.0f}%",
                     "label": labels.get((s, f), ""), "highest example": shown})
        if level < depth:
            for child in node["children"]:
                visit(child, level + 1)

    visit(tree, 0)
    return rows


def width_findings(width_rows: Sequence[Mapping[str, Any]], pairs: Sequence[Any],
                   cosines: Mapping[str, np.ndarray], completeness_rows: Sequence[Mapping[str, Any]] = ()) -> str:
    """What the width sweep shows, in Markdown, read from its artefacts."""
    rows = sorted(width_rows, key=lambda r: r["width"])
    lines = []
    if rows:
        lo, hi = rows[0], rows[-1]
        lines.append(f"- **Quality against width.** From {lo['width']:,} to {hi['width']:,} features, FVU falls from "
                     f"{lo['fvu']:.3f} to {hi['fvu']:.3f} and dead features rise from {100 * lo['dead_fraction']:.1f}% "
                     f"to {100 * hi['dead_fraction']:.1f}%"
                     + (f"; the loss recovered grows from {lo['loss_recovered']:.1f}% to {hi['loss_recovered']:.1f}%"
                        if "loss_recovered" in lo and "loss_recovered" in hi else "") + ".")
    for r in pairs:
        wa, wb = r.widths
        cos = cosines.get(f"{wa} → {wb}", np.zeros(0))
        med = f"; the median parent's best decoder cosine at {wb} is {np.median(cos):.2f}" if cos.size else ""
        lines.append(f"- **{wa} → {wb}.** {_pct(r.split_share)} of the {r.alive_a:,} alive parents split (at least "
                     f"two children firing mostly inside them cover at least 80% of their firings), "
                     f"{_pct(r.persist_share)} persist one-to-one (mutual nearest decoder direction at cosine >= 0.9)"
                     f"{med}, and {_pct(r.new_share)} of the {r.alive_b:,} alive wider features are new.")
    if completeness_rows:
        covered = sum(int(r["covered"]) for r in completeness_rows)
        found = sum(int(r["found"]) for r in completeness_rows)
        lines.append(f"- **Completeness.** Over the widths and families, {covered} of {found} member-width "
                     "cases have a feature that fires on the member's mentions with precision >= 0.8 and "
                     "recall >= 0.5.")
    return "\n".join(lines)

"""Explanations summarised for the notebooks: one row per site, and a site's best explained features."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

SCORE_NAMES = {"detection_auroc": "detection AUROC", "balanced_accuracy": "balanced accuracy",
               "fuzzing": "fuzzing"}


def _median(a: np.ndarray) -> float:
    return float(np.nanmedian(a)) if np.isfinite(a).any() else float("nan")


def explanation_summary(expl: Mapping[str, Any], good: float = 0.8) -> list[dict[str, Any]]:
    """Per site: features scored, the median of each score, the share with detection AUROC
    ``>= good`` (of those scored) and how many explanations of each kind were chosen."""
    rows = []
    for s, site in enumerate(expl["sites"]):
        auc = expl["detection_auroc"][s]
        scored = np.isfinite(auc)
        row = {"site": site, "scored": int(scored.sum())}
        row.update({name: round(_median(expl[key][s]), 3) for key, name in SCORE_NAMES.items()})
        row[f"AUROC >= {good:g}"] = round(float((auc[scored] >= good).mean()), 3) if scored.any() else float("nan")
        row.update({f"{k} rules": int((expl["kind"][s] == i).sum()) for i, k in enumerate(expl["kinds"])})
        rows.append(row)
    return rows


def best_explained(expl: Mapping[str, Any], site: int | str, n: int = 10, by: str = "detection_auroc",
                   min_activating: int = 5) -> list[dict[str, Any]]:
    """The ``n`` features of ``site`` whose explanation scores best ``by`` (among features with at
    least ``min_activating`` activating held-out windows), with their text and three scores."""
    s = expl["sites"].index(site) if isinstance(site, str) else int(site)
    score = np.where(expl["activating"][s] >= min_activating, expl[by][s], np.nan)
    order = np.argsort(-np.where(np.isfinite(score), score, -np.inf), kind="stable")[:n]
    return [{"feature": int(f), "explanation": str(expl["text"][s, f]),
             **{name: round(float(expl[key][s, f]), 3) for key, name in SCORE_NAMES.items()},
             "activating windows": int(expl["activating"][s, f])}
            for f in order if np.isfinite(score[f])]

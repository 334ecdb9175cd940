"""Features against neurons, as data: neuron-aligned features, neurons no feature explains,
and each feature's best |r| per block (from :func:`~helpers.evolution.neuron_artefact.load_neurons`).

Correlations are read by their magnitude: a feature that tracks a neuron's negative
(``r = -0.95``) is as aligned with it as one that tracks the neuron (``r = 0.95``).
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from ..errors import ConfigError

#: a feature is neuron-aligned when some neuron correlates with it at |r| >= this
ALIGNED_R = 0.9
#: a neuron is unexplained when no feature correlates with it at |r| >= this
COVERED_R = 0.3


def _check(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ConfigError(f"{name}={value!r} is outside its range [0, 1] (a Pearson |r|)")
    return float(value)


def best_abs_r(neurons: Mapping[str, Any]) -> dict[str, dict[str, np.ndarray]]:
    """``{site: {"same"|"before": |r|}}``: the best |r| of every feature that varied, against the
    neurons of the site's block and of the block before (a slot without a block is absent)."""
    out: dict[str, dict[str, np.ndarray]] = {}
    for i, site in enumerate(neurons["sites"]):
        out[site] = {}
        for j, slot in enumerate(neurons["slots"]):
            if neurons["layers"][i, j] < 0:
                continue
            r = np.abs(neurons["feature_best_r"][i, j])
            out[site][slot] = r[np.isfinite(r)]
    return out


def alignment_rows(neurons: Mapping[str, Any], aligned: float = ALIGNED_R) -> list[dict[str, Any]]:
    """One row per site: its blocks, the features that varied, how many are neuron-aligned
    (some neuron at |r| >= ``aligned``) in each block and in either, and the median best |r|."""
    aligned = _check("aligned", aligned)
    rows = []
    best = best_abs_r(neurons)
    for i, site in enumerate(neurons["sites"]):
        same, before = (int(v) for v in neurons["layers"][i])
        r = np.abs(neurons["feature_best_r"][i])  # [2, F]
        varied = np.isfinite(r).any(0)
        hit = np.nan_to_num(r, nan=0.0) >= aligned
        row: dict[str, Any] = {
            "site": site, "block": same if same >= 0 else None, "block before": before if before >= 0 else None,
            "features": int(varied.sum()),
            "aligned (block)": int(hit[0].sum()) if same >= 0 else None,
            "aligned (block before)": int(hit[1].sum()) if before >= 0 else None,
            "aligned (either)": int(hit.any(0).sum()),
        }
        row["aligned share"] = row["aligned (either)"] / row["features"] if row["features"] else float("nan")
        for slot, key in (("same", "median best |r| (block)"), ("before", "median best |r| (block before)")):
            values = best[site].get(slot)
            row[key] = float(np.median(values)) if values is not None and len(values) else float("nan")
        rows.append(row)
    return rows


def neuron_rows(neurons: Mapping[str, Any], covered: float = COVERED_R) -> list[dict[str, Any]]:
    """One row per block whose neurons were compared: the sites it was compared with, its neurons,
    and how many have no feature of those sites at |r| >= ``covered`` (and their share)."""
    covered = _check("covered", covered)
    layers = neurons["layers"]
    rows = []
    for block in sorted({int(v) for v in layers.flatten() if v >= 0}):
        where = np.argwhere(layers == block)  # (site, slot) pairs that read this block
        r = np.stack([np.abs(neurons["neuron_best_r"][i, j]) for i, j in where])
        best = np.nan_to_num(r, nan=0.0).max(0)
        lonely = int((best < covered).sum())
        rows.append({"block": block, "sites": [neurons["sites"][i] for i, _ in where], "neurons": len(best),
                     f"no feature at |r| >= {covered:g}": lonely, "share": lonely / len(best)})
    return rows


def neuron_totals(neurons: Mapping[str, Any], aligned: float = ALIGNED_R,
                  covered: float = COVERED_R) -> dict[str, Any]:
    """Over every site and block: features that varied, neuron-aligned features (either block) and
    their share; neurons compared and those no feature reaches at ``covered``, and their share."""
    feats = alignment_rows(neurons, aligned)
    blocks = neuron_rows(neurons, covered)
    n_feat = sum(r["features"] for r in feats)
    n_aligned = sum(r["aligned (either)"] for r in feats)
    n_neur = sum(r["neurons"] for r in blocks)
    lonely = sum(r[f"no feature at |r| >= {covered:g}"] for r in blocks)
    return {"features": n_feat, "aligned": n_aligned, "aligned share": n_aligned / n_feat if n_feat else float("nan"),
            "neurons": n_neur, "unexplained": lonely, "unexplained share": lonely / n_neur if n_neur else float("nan"),
            "aligned_r": aligned, "covered_r": covered, "tokens": int(neurons["n_tokens"])}


def unit_scores(neurons: Mapping[str, Any], score: str = "detection_auroc") -> dict[str, dict[str, np.ndarray]]:
    """``{site: {"feature": scores, "neuron": scores}}``: the rate-matched samples' explanation
    ``score`` (:mod:`helpers.explain.units`), finite values only; sites without a sample absent."""
    from ..explain.units import UNIT_SCORES

    if score not in UNIT_SCORES:
        raise ConfigError(f"score {score!r}: choose among {list(UNIT_SCORES)}")
    out = {}
    for i, site in enumerate(neurons["sites"]):
        if (neurons["sample_feature"][i] < 0).all():
            continue
        pair = {u: np.asarray(neurons[f"sample_{u}_{score}"][i], np.float64) for u in ("feature", "neuron")}
        out[site] = {u: v[np.isfinite(v)] for u, v in pair.items()}
    return out


def unit_score_rows(neurons: Mapping[str, Any], score: str = "detection_auroc", n_boot: int = 2000,
                    level: float = 0.95, seed: int = 0) -> list[dict[str, Any]]:
    """One row per site, then one for every site pooled: the scored features and neurons, their
    mean ``score``, the difference (features - neurons) and its bootstrap interval at ``level``
    (:func:`~helpers.explain.units.difference_ci`)."""
    from ..explain.units import difference_ci

    per_site = unit_scores(neurons, score)
    groups = list(per_site.items())
    if groups:
        groups.append(("all sites", {u: np.concatenate([v[u] for v in per_site.values()])
                                     for u in ("feature", "neuron")}))
    pct = f"{100 * level:g}%"
    rows = []
    for site, v in groups:
        d = difference_ci(v["feature"], v["neuron"], n_boot, level, seed)
        rows.append({"site": site, "features": d["n_a"], "neurons": d["n_b"],
                     "features' mean": round(d["mean_a"], 3), "neurons' mean": round(d["mean_b"], 3),
                     "difference": round(d["difference"], 3),
                     f"{pct} interval": (round(d["low"], 3), round(d["high"], 3))})
    return rows

"""Which matching method is right? Top-1 upstream partners by each measure, the deactivation rule,
and the summaries the notebook shows.

Each downstream feature ``b`` (site L+1) is matched to ONE upstream feature (site L) by each
method: the top-1 partner of ``b`` in the partner tables (:mod:`.partners`, ties to the lowest
index) under decoder cosine (Feature Flow's data-free matching, arXiv 2502.03032), Pearson,
Jaccard, necessity or sufficiency; the control ``random`` is an alive upstream feature drawn at
random. The deactivation test (:mod:`helpers.interventions.deactivation`) then ablates the
partner and measures ``b``.

**The rule.** Over the tokens of ``b``'s example windows where ``b`` fires in the clean pass,

    drop(b, a) = mean over those tokens of (clean_b - ablated_b) / clean_b

and the match is a *success* when ``drop >= threshold`` (default 0.5: b loses at least half of
its activation on average where it fired). ``drop`` is at most 1 (activations are >= 0) and is
negative where the ablation makes ``b`` stronger.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..errors import ConfigError
from .measures import MEASURES

METHODS = ("cosine", "pearson", "jaccard", "necessity", "sufficiency")
CONTROL = "random"
DEFAULT_THRESHOLD = 0.5


def check_methods(methods: Sequence[str]) -> tuple[str, ...]:
    """``methods`` as a tuple if every one is a known matching method, else a ConfigError."""
    if isinstance(methods, str):
        methods = (methods,)
    for m in methods:
        if m not in METHODS:
            raise ConfigError(f"unknown matching method {m!r}: choose among {list(METHODS)} "
                              f"(the random control '{CONTROL}' is always added)")
    if not methods:
        raise ConfigError(f"no matching method given: choose among {list(METHODS)}")
    return tuple(methods)


def check_threshold(threshold: float) -> float:
    """A success threshold on the mean relative drop: in (0, 1]."""
    if not isinstance(threshold, (int, float, np.floating, np.integer)) or not 0 < float(threshold) <= 1:
        raise ConfigError(f"success threshold {threshold!r} must lie in (0, 1]: 0.5 means b loses half its activation")
    return float(threshold)


def matched_partners(partners: dict[str, Any], pair: int, methods: Sequence[str] = METHODS) -> np.ndarray:
    """``[len(methods), Fb]`` int64: the top-1 upstream partner of every downstream feature of adjacent
    pair ``pair`` under each method, read from the partner tables; -1 where the measure is undefined."""
    methods = check_methods(methods)
    n_pairs = partners["up_index"].shape[0]
    if not 0 <= pair < n_pairs:
        raise ConfigError(f"pair index {pair} out of range: the partner tables hold {n_pairs} adjacent pairs")
    names = [str(m) for m in partners.get("measures", MEASURES)]
    return np.stack([partners["up_index"][pair, names.index(m), :, 0] for m in methods]).astype(np.int64)


def alive(fired: np.ndarray) -> np.ndarray:
    """Indices of the features that fired at least once."""
    return np.flatnonzero(np.asarray(fired) > 0)


def sample_downstream(candidates: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """All of ``candidates`` (alive downstream features) in a random order; refuses ``n`` larger
    than their number."""
    if n < 1:
        raise ConfigError(f"{n} downstream features asked for: ask for at least 1")
    if n > len(candidates):
        raise ConfigError(f"{n} downstream features asked for, but only {len(candidates)} are alive (fired and "
                          f"have examples): ask for at most {len(candidates)} (--downstream)")
    return rng.permutation(np.asarray(candidates))


def random_partners(fired_a: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` upstream features drawn uniformly (with replacement) among the ALIVE ones: the control."""
    pool = alive(fired_a)
    if len(pool) == 0:
        raise ConfigError("no upstream feature ever fired: the random control needs alive features "
                          "(check the SAEs and the statistics pass)")
    return rng.choice(pool, size=n, replace=True)


def success(drop: np.ndarray, threshold: float = DEFAULT_THRESHOLD) -> np.ndarray:
    """The rule: mean relative drop >= ``threshold`` (NaN, an undefined match, is no success)."""
    threshold = check_threshold(threshold)
    drop = np.asarray(drop, dtype=np.float64)
    return np.where(np.isnan(drop), False, drop >= threshold)


def _evaluated(data: dict[str, Any], pair: int) -> np.ndarray:
    return data["downstream"][pair] >= 0


def success_table(data: dict[str, Any], threshold: float = DEFAULT_THRESHOLD) -> list[dict[str, Any]]:
    """One row per adjacent pair and method (and ``all pairs``): downstream features evaluated,
    partners defined, success rate, mean relative drop, share of partners silent in the windows.

    Rates are over the evaluated features; an undefined partner (-1) counts as a failure.
    """
    threshold = check_threshold(threshold)
    rows = []
    methods = [str(m) for m in data["methods"]]
    n_pairs = data["drop"].shape[0]
    for pair in list(range(n_pairs)) + [None]:
        pairs = range(n_pairs) if pair is None else [pair]
        for k, m in enumerate(methods):
            drop = np.concatenate([data["drop"][p, k][_evaluated(data, p)] for p in pairs])
            silent = np.concatenate([~data["upstream_fired"][p, k][_evaluated(data, p)] for p in pairs])
            rows.append({
                "pair": "all pairs" if pair is None else str(data["pairs"][pair]), "method": m,
                "features": int(len(drop)), "defined": int(np.isfinite(drop).sum()),
                "success_rate": float(success(drop, threshold).mean()) if len(drop) else float("nan"),
                "mean_drop": float(np.nanmean(drop)) if np.isfinite(drop).any() else float("nan"),
                "silent_partner": float(silent.mean()) if len(drop) else float("nan"),
            })
    return rows


def method_agreement(data: dict[str, Any], pair: int | None = None) -> np.ndarray:
    """``[K, K]``: the share of evaluated downstream features for which two methods (the control
    included) pick the same upstream partner (of ``pair``, or pooled over all pairs)."""
    pairs = range(data["partner"].shape[0]) if pair is None else [pair]
    chosen = np.concatenate([data["partner"][p][:, _evaluated(data, p)] for p in pairs], axis=1)  # [K, n]
    same = (chosen[:, None, :] == chosen[None, :, :]) & (chosen[:, None, :] >= 0)
    return same.mean(-1) if chosen.shape[1] else np.full(same.shape[:2], np.nan)


def overall_rows(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """``{method: its row over all pairs}`` from :func:`success_table`'s rows."""
    return {r["method"]: r for r in rows if r["pair"] == "all pairs"}


def ranked_methods(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The matching methods (the control left out) by success rate over all pairs, best first
    (ties: the order of the table)."""
    overall = overall_rows(rows)
    return sorted((m for m in overall if m != CONTROL), key=lambda m: -overall[m]["success_rate"])


def success_range(rows: Sequence[dict[str, Any]], method: str) -> tuple[float, float]:
    """The lowest and the highest success rate of ``method`` over the adjacent pairs."""
    rates = [r["success_rate"] for r in rows if r["method"] == method and r["pair"] != "all pairs"]
    if not rates:
        raise ConfigError(f"no per-pair row of method {method!r} in the success table")
    return min(rates), max(rates)

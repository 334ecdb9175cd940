"""Our figures beside the references': the same quantity measured on the experiment's
artefacts, and one comparison row per quantity with what differs (model, SAE width, tokens).

:func:`load_ours` reads only the artefacts the chosen quantities need; :func:`comparison_rows`
sets each of our numbers beside the reference's (:func:`~helpers.reference.figures.figures`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ..errors import ConfigError
from .figures import FEATURE_FLOW, STUDY, Source, figures, load_study

#: the quantities measured both here and by a reference, in book order
QUANTITIES = ("max_activation", "dead", "never_coactivating", "disappearing", "matching_success")
#: the Pearson threshold of the study's pass-through shares
DISAPPEAR_THRESHOLD = 0.5
#: the matching methods Feature Flow reports
MATCHING_METHODS = ("cosine", "pearson")


@dataclass
class Ours:
    """What the comparisons read from one experiment's artefacts (``None``: not loaded).

    ``dead[step, threshold, site]`` and ``never[threshold, pair, step]`` (all ``F x F`` pairs)
    as the statistics pass wrote them, ``steps`` the tokens read at each step, ``max[site,
    feature]``, ``flows`` the rows of :func:`helpers.evolution.lineages.flow_table` at
    :data:`DISAPPEAR_THRESHOLD`, ``matching`` those of :func:`helpers.evolution.success_table`.
    """

    name: str
    model: str
    n_features: int
    tokens: int
    sites: list[str]
    dead: np.ndarray | None = None
    dead_thresholds: np.ndarray | None = None
    steps: np.ndarray | None = None
    never: np.ndarray | None = None
    never_thresholds: np.ndarray | None = None
    max: np.ndarray | None = None
    flows: list[dict] | None = None
    matching: list[dict] | None = None

    @property
    def pairs(self) -> list[str]:
        return [f"{a}->{b}" for a, b in zip(self.sites, self.sites[1:])]

    def need(self, field: str, quantity: str) -> Any:
        value = getattr(self, field)
        if value is None:
            raise ConfigError(f"the {quantity!r} comparison needs {field!r}: load it with "
                              f"`load_ours(exp, [{quantity!r}])`")
        return value

    # -- our side of each quantity ------------------------------------------------------
    def dead_share_at_end(self, threshold: int = 0) -> np.ndarray:
        """Share of each site's features that fired at most ``threshold`` times by the end."""
        dead = self.need("dead", "dead")
        t = list(self.dead_thresholds).index(threshold)
        return dead[-1, t] / self.n_features

    def never_share_at_end(self, threshold: int = 0) -> np.ndarray:
        """Share of all ``F x F`` feature pairs of each adjacent pair of sites that co-fired at
        most ``threshold`` times by the end."""
        never = self.need("never", "never_coactivating")
        t = list(self.never_thresholds).index(threshold)
        return never[t, :, -1] / float(self.n_features) ** 2

    def disappearing(self) -> np.ndarray:
        """Share of the alive features of site L with no partner r >= 0.5 at L+1, per pair."""
        rows = self.need("flows", "disappearing")
        return np.array([r["disappear"] for r in rows if r["threshold"] == DISAPPEAR_THRESHOLD])

    def matching_success(self) -> dict[str, float]:
        """Success rate over all pairs of the methods Feature Flow reports."""
        rows = self.need("matching", "matching_success")
        overall = {r["method"]: r["success_rate"] for r in rows if r["pair"] == "all pairs"}
        return {m: overall[m] for m in MATCHING_METHODS if m in overall}


def max_summary(mx: np.ndarray) -> dict[str, float]:
    """The largest maximum activation, the median maximum of the features that fired (max > 0),
    and their ratio (scale-free: activations of two models are in different units)."""
    fired = mx[mx > 0]
    largest = float(mx.max()) if mx.size else float("nan")
    median = float(np.median(fired)) if fired.size else float("nan")
    return {"largest": largest, "median": median, "ratio": largest / median if median > 0 else float("nan")}


def study_max_summary() -> dict[str, float]:
    """:func:`max_summary` of the study's maxima (the largest exact, the median from float16)."""
    s = load_study()
    summary = max_summary(s.max_sorted.astype(np.float32))
    summary["largest"] = float(s.max_largest.max())
    summary["ratio"] = summary["largest"] / summary["median"]
    return summary


def check_quantities(quantities: Sequence[str] | str | None) -> tuple[str, ...]:
    """``quantities`` as a tuple (default: all), or a ConfigError naming the choices."""
    if quantities is None:
        return QUANTITIES
    if isinstance(quantities, str):
        quantities = (quantities,)
    wrong = [q for q in quantities if q not in QUANTITIES]
    if wrong:
        raise ConfigError(f"unknown reference quantity {wrong[0]!r}: choose among {', '.join(QUANTITIES)}")
    return tuple(quantities)


def load_ours(exp, quantities: Sequence[str] | str | None = None, out=None) -> Ours:
    """The arrays of ``exp`` that ``quantities`` (default: all of :data:`QUANTITIES`) need, read
    from its artefacts (statistics, partner tables, matching), checksums verified."""
    from ..stats import load_artefact, load_metadata

    quantities = check_quantities(quantities)
    meta = load_metadata(exp, out)
    ours = Ours(name=exp.name, model=exp.model, n_features=int(meta["n_features"]),
                tokens=int(meta["tokens"]), sites=list(exp.sites))
    if "dead" in quantities:
        d = load_artefact(exp, "dead_features", out)
        ours.dead, ours.dead_thresholds, ours.steps = d["dead"], d["thresholds"], d["tokens"]
    if "never_coactivating" in quantities:
        pc = load_artefact(exp, "pair_coactivation", out, keys=("never_all", "thresholds", "tokens"))
        ours.never, ours.never_thresholds, ours.steps = pc["never_all"], pc["thresholds"], pc["tokens"]
    if "max_activation" in quantities:
        ours.max = load_artefact(exp, "max_activations", out)["max"]
    if "disappearing" in quantities:
        from ..evolution.lineages import flow_table
        from ..evolution.partners import load_partners

        fired = load_artefact(exp, "dead_features", out, keys=("fired",))["fired"]
        ours.flows = flow_table(load_partners(exp, out), fired, [DISAPPEAR_THRESHOLD])
    if "matching_success" in quantities:
        from ..evolution.matching import DEFAULT_THRESHOLD, success_table
        from ..evolution.matching_artefact import load_matching

        ours.matching = success_table(load_matching(exp, out), DEFAULT_THRESHOLD)
    return ours


def _differs(ours: Ours, src: Source, extra: str = "") -> str:
    """What differs between our measurement and ``src``'s: model, SAE width, tokens."""
    parts = []
    if ours.model != src.model and ours.model not in src.model_names:
        parts.append(f"model: {ours.model} vs {src.model}")
    width = f"{src.width:,}" if src.width else src.saes
    if ours.n_features != src.width:
        parts.append(f"SAE width: {ours.n_features:,} vs {width}")
    if src.n_tokens and ours.tokens != src.n_tokens:
        parts.append(f"tokens: {ours.tokens:,} vs {src.n_tokens:,}")
    if extra:
        parts.append(extra)
    return "; ".join(parts) or "nothing: same model, SAE width and tokens"


def _row(quantity: str, ours: Any, reference: Any, src: Source, differs: str, unit: str,
         approximate: bool = False) -> dict[str, Any]:
    return {"quantity": quantity, "ours": ours, "reference": reference, "unit": unit,
            "approximate": approximate, "source": src.key, "what differs": differs}


def _span(values: np.ndarray) -> tuple[float, float]:
    return (float(np.min(values)), float(np.max(values))) if len(values) else (float("nan"),) * 2


def comparison_rows(ours: Ours, quantities: Sequence[str] | str | None = None) -> list[dict[str, Any]]:
    """Rows ``{quantity, ours, reference, unit, approximate, source, what differs}``, one or two
    per quantity.

    Values are numbers or ``(low, high)`` ranges over sites / pairs; ``unit`` is ``share``
    (0-1) or ``""`` (an activation or a ratio); ``approximate`` marks a reference figure quoted
    as "about". ``source`` is ``study`` or ``feature-flow``.
    """
    quantities = check_quantities(quantities)
    ref = figures()
    s = load_study()
    rows = []
    for q in quantities:
        if q == "dead":
            rows.append(_row("features that never fired, share of the SAE width (range over sites)",
                             _span(ours.dead_share_at_end(0)), _span(ref["dead"].value / s.n_features),
                             STUDY, _differs(ours, STUDY), "share"))
        elif q == "never_coactivating":
            rows.append(_row("feature pairs of adjacent sites that never co-fired (mean over pairs)",
                             float(ours.never_share_at_end(0).mean()), ref["never_coactivating"].value,
                             STUDY, _differs(ours, STUDY, f"pairs: all {ours.n_features:,} x "
                                                           f"{ours.n_features:,} vs first 100 x 24,576"),
                             "share"))
        elif q == "max_activation":
            mine, theirs = max_summary(ours.need("max", q)), study_max_summary()
            units = "activations in each model's own units"
            rows.append(_row("largest maximum activation", mine["largest"], theirs["largest"],
                             STUDY, _differs(ours, STUDY, units), ""))
            rows.append(_row("largest / median maximum (features that fired)", mine["ratio"],
                             theirs["ratio"], STUDY, _differs(ours, STUDY, "a ratio: scale-free"), ""))
        elif q == "disappearing":
            rows.append(_row(f"features disappearing at Pearson r >= {DISAPPEAR_THRESHOLD:g} "
                             "(range over pairs)", _span(ours.disappearing()), ref["disappearing"].value,
                             STUDY, _differs(ours, STUDY), "share"))
        elif q == "matching_success":
            success = ours.matching_success()
            extra = ("predecessors: the previous residual site only vs residual, MLP and attention; "
                     "their deactivation criterion vs a drop >= 0.5")
            for m in MATCHING_METHODS:
                rows.append(_row(f"matching success, top-1 {m}", success.get(m, float("nan")),
                                 ref["matching_success"].value[m], FEATURE_FLOW,
                                 _differs(ours, FEATURE_FLOW, extra), "share", approximate=True))
    return rows

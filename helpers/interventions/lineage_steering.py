"""Steering along a lineage (Feature Flow's multi-layer steering): a feature together with its
matched predecessors and successors, against the feature alone at equal total norm.

A feature's **lineage** (:func:`lineage_of`) is the feature, its successors (its best forward
partner ``>= t`` in the next site, then that one's, as :meth:`~helpers.evolution.lineages.Lineages.chain`
follows them) and its predecessors (its best backward partner ``>= t`` in the previous site,
then that one's), up to ``radius`` sites each way.

At strength ``k`` (:func:`lineage_steering_sweep`), with ``v = k x`` the centre feature's
maximum activation and ``u_s`` the decoder direction of the lineage's feature at site ``s``
(:func:`~helpers.subject.decode.decoded_rows`), four conditions are generated from every prompt:

- **single**: add ``v`` to the centre feature at its own site, a change of norm ``N = v ||u_c||``;
- **lineage**: each of the ``m`` sites adds ``N / m`` along its own ``u_s`` (its feature gains
  ``N / (m ||u_s||)``), so the norms of the ``m`` changes sum to ``N`` at every position;
- **single, random** and **lineage, random**: the same changes turned, site by site, to a random
  direction of the same norm (:func:`~helpers.interventions.steering.control_delta`).

For an SAE that normalises its input at run time every change is also scaled by the token's
decoder scale (:func:`~helpers.subject.decode.decoder_scale`), as any edit is; the sums of norms are
then equal only where the sites' scales are. The measures are those of
:mod:`~helpers.interventions.steering`, all of the centre feature: the gain in log-probability of
its own top tokens against the unsteered text, its firing when the text is re-read, the text's
perplexity under the unsteered model and its share of distinct tokens. At ``k = 0`` every
condition writes the unsteered text exactly (tested), so the sweep generates it once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from ..errors import ConfigError
from ..evolution.measures import check_threshold
from ..evolution.partners import best_partner
from ..subject.decode import decoded_rows
from ..subject.models import Subject
from .edits import Edit, check_edit
from .steering import SteeringConfig, feature_top_tokens, measured_rows, stream_index, summarise

#: the steered conditions of a lineage sweep, ``(condition, control)``, in the order rows are generated
CONDITIONS = (("single", False), ("single", True), ("lineage", False), ("lineage", True))


def _partner_step(partners: dict, fired: np.ndarray, pair: int, direction: str, feature: int, threshold: float,
                  measure: str) -> int | None:
    """The best partner of ``feature`` across ``pair`` (``down``: in the next site, ``up``: in the previous),
    when its value is ``>= threshold`` and it fired; None otherwise."""
    idx, val = best_partner(partners, pair, direction, measure)
    j, v = int(idx[feature]), float(val[feature])
    other = pair + 1 if direction == "down" else pair
    if j < 0 or not v >= threshold or fired[other][j] <= 0:
        return None
    return j


def lineage_of(partners: dict, fired: np.ndarray, site_index: int, feature: int, threshold: float,
               measure: str = "pearson", radius: int = 2) -> list[tuple[int, int]]:
    """The lineage of ``feature`` at site ``site_index`` as ``[(site_index, feature), ...]`` in forward
    order: up to ``radius`` predecessors (each step the best backward partner, ``up``, ``>= threshold``),
    the feature, and up to ``radius`` successors (the best forward partner, ``down``, ``>= threshold``:
    :meth:`~helpers.evolution.lineages.Lineages.chain` truncated). ``fired``: ``[S, F]`` firing counts.

    Refused with a ConfigError when the feature never fired or has no partner ``>= threshold`` on either
    side: its lineage would be the feature alone, and steering it would repeat the single-site condition.
    """
    check_threshold(measure, threshold)
    fired = np.asarray(fired)
    n_sites = fired.shape[0]
    if n_sites != len(partners["down_index"]) + 1:
        raise ConfigError(f"fired has {n_sites} sites but the partner tables {len(partners['down_index'])} pairs: "
                          "give the firing counts of the pass the tables were built from")
    if not 0 <= site_index < n_sites:
        raise ConfigError(f"site index {site_index} out of range: there are {n_sites} sites")
    if not 0 <= feature < fired.shape[1]:
        raise ConfigError(f"feature {feature} out of range: site {site_index} has {fired.shape[1]} features")
    if int(radius) < 0:
        raise ConfigError(f"radius={radius} must be >= 0")
    if fired[site_index][feature] <= 0:
        raise ConfigError(f"feature {feature} at site {site_index} never fired: it has no lineage")
    back, f = [], feature
    for s in range(site_index, max(site_index - radius, 0), -1):
        f = _partner_step(partners, fired, s - 1, "up", f, threshold, measure)
        if f is None:
            break
        back.append((s - 1, f))
    ahead, f = [], feature
    for s in range(site_index, min(site_index + radius, n_sites - 1)):
        f = _partner_step(partners, fired, s, "down", f, threshold, measure)
        if f is None:
            break
        ahead.append((s + 1, f))
    if not back and not ahead:
        raise ConfigError(f"feature {feature} at site {site_index} has no partner with {measure} >= {threshold:g} "
                          "on either side: choose a feature with a lineage (Lineages.longest) or a lower threshold")
    return back[::-1] + [(site_index, feature)] + ahead


def lineages_to_steer(partners: dict, fired: np.ndarray, site_index: int, candidates: Sequence[int],
                      threshold: float, n: int = 2, measure: str = "pearson", radius: int = 2,
                      min_sites: int = 3) -> list[list[tuple[int, int]]]:
    """The lineages (:func:`lineage_of`) of the first ``n`` of ``candidates`` (features of site
    ``site_index``, in the order given) that have one spanning at least ``min_sites`` sites; if fewer
    qualify, those spanning at least 2 make up the number. Candidates without a lineage are skipped."""
    found: dict[int, list[tuple[int, int]]] = {}
    for f in candidates:
        try:
            found[int(f)] = lineage_of(partners, fired, site_index, int(f), threshold, measure, radius)
        except ConfigError:
            continue
    long = [c for c in found.values() if len(c) >= min_sites]
    short = [c for c in found.values() if len(c) < min_sites]
    return (long + short)[:n]


def check_chain(subject: Subject, saes: dict[str, Any], sites: Sequence[str], chain: Sequence[tuple[int, int]],
                centre: tuple[int, int]) -> list[tuple[str, int]]:
    """``chain`` as ``[(site name, feature)]``, refused unless it is non-empty, goes forward through
    the model one site at most once, its features exist and it holds ``centre``."""
    chain = [(int(s), int(f)) for s, f in chain]
    if not chain:
        raise ConfigError("empty lineage: give at least one (site_index, feature) step")
    bad = [s for s, _ in chain if not 0 <= s < len(sites)]
    if bad:
        raise ConfigError(f"site indices {bad} out of range: there are {len(sites)} sites")
    named = [(sites[s], f) for s, f in chain]
    for site, f in named:
        check_edit(subject, saes, Edit(site, f))
    streams = [stream_index(subject, site) for site, _ in named]
    if any(b <= a for a, b in zip(streams, streams[1:])):
        raise ConfigError(f"lineage steps must go forward through the model, one per site: got sites "
                          f"{[site for site, _ in named]}")
    if tuple(centre) not in chain:
        raise ConfigError(f"the centre {tuple(centre)} is not a step of the lineage {chain}")
    return named


def _decoder_norm(saes: dict[str, Any], site: str, feature: int) -> float:
    sae = saes[site]
    with torch.no_grad():
        norm = float(decoded_rows(sae, torch.tensor([feature], device=sae.W_dec.device))[0].norm())
    if not norm > 0:
        raise ConfigError(f"feature {feature} at {site!r} has a zero decoder direction: it cannot be steered")
    return norm


def lineage_edits(subject: Subject, saes: dict[str, Any], sites: Sequence[str], chain: Sequence[tuple[int, int]],
                  centre: tuple[int, int], value: float) -> tuple[Edit, ...]:
    """The lineage condition at the centre's value ``value``: one ``add`` per step, each site's change
    of norm ``N / m`` along its feature's decoder direction, ``N = value x ||u_centre||`` the norm of
    adding ``value`` to the centre alone, ``m`` the number of steps."""
    named = check_chain(subject, saes, sites, chain, centre)
    if not math.isfinite(value):
        raise ConfigError(f"steering value {value!r} is not finite")
    total = value * _decoder_norm(saes, sites[centre[0]], int(centre[1]))
    return tuple(Edit(site, f, "add", total / (len(named) * _decoder_norm(saes, site, f))) for site, f in named)


def _centre_max(max_acts, centre: tuple[int, int]) -> float:
    """The centre's maximum activation: ``max_acts`` itself (a number) or ``max_acts[site][feature]``."""
    value = max_acts if np.ndim(max_acts) == 0 else np.asarray(max_acts)[centre[0]][centre[1]]
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"the centre {tuple(centre)} has maximum activation {value}: steer a feature that fires")
    return value


@dataclass
class LineageSteeringResult:
    """One lineage's sweep: every generated row with its condition and measures."""

    #: the lineage's steps ``(site index, feature)`` and their site names
    chain: list[tuple[int, int]]
    sites: list[str]
    centre: tuple[int, int]
    max_activation: float
    #: the centre feature's top tokens (direct logit effect), as ids and as they read
    top_ids: list[int]
    top_tokens: list[str]
    config: SteeringConfig
    #: one dict per row: prompt, condition ("none": unsteered, "single", "lineage"), control, k, text,
    #: ids, logprob, gain, distinct, act and nll (the centre's, as :class:`SteeringResult` rows)
    rows: list[dict[str, Any]]


def lineage_steering_sweep(subject: Subject, saes: dict[str, Any], sites: Sequence[str],
                           chain: Sequence[tuple[int, int]], centre: tuple[int, int], max_acts,
                           config: SteeringConfig = SteeringConfig()) -> LineageSteeringResult:
    """Steer ``centre`` alone and along ``chain`` (:func:`lineage_of`), each with its random control,
    at every strength ``k > 0`` of ``config`` (``config.modes`` is not used: every condition adds), from
    every prompt; measure the centre's effect, firing and the cost on each generation.

    ``sites``: the site names that the chain's site indices refer to (the partner tables' ``sites``);
    ``max_acts``: the centre's maximum activation, or ``[S, F]`` maxima indexed by the chain's steps.
    """
    named = check_chain(subject, saes, sites, chain, centre)
    centre = (int(centre[0]), int(centre[1]))
    site, feature = sites[centre[0]], centre[1]
    max_activation = _centre_max(max_acts, centre)
    top = torch.as_tensor(feature_top_tokens(subject, saes, site, [feature], config.top_tokens)[0])
    specs = [("none", False, 0.0)] + [(c, ctl, float(k)) for k in config.strengths if k > 0 for c, ctl in CONDITIONS]
    plan = [(p, spec) for p in config.prompts for spec in specs]
    by_value = {}
    for _, (cond, _, k) in plan:
        if cond == "lineage" and k not in by_value:
            by_value[k] = lineage_edits(subject, saes, sites, chain, centre, k * max_activation)
    edits = [None if cond == "none" else Edit(site, feature, "add", k * max_activation) if cond == "single"
             else by_value[k] for _, (cond, _, k) in plan]
    rows = measured_rows(subject, saes, site, feature, top, [p for p, _ in plan], edits,
                         [ctl for _, (_, ctl, _) in plan], config)
    for row, (_, (cond, ctl, k)) in zip(rows, plan):
        row.update(condition=cond, control=ctl, k=k)
    words = [subject.tokenizer.decode([t]) for t in top.tolist()]
    return LineageSteeringResult([(int(s), int(f)) for s, f in chain], [s for s, _ in named], centre,
                                 max_activation, top.tolist(), words, config, rows)


def lineage_steering_summary(result: LineageSteeringResult) -> list[dict[str, Any]]:
    """One row per ``(condition, direction, k)``, unsteered first (condition "none", k 0, which every
    condition writes at k = 0): the centre's mean log-prob gain of its top tokens (nats), the share of
    generated tokens on which it fires, the perplexity under the unsteered model and the mean share
    of distinct tokens per text (:func:`~helpers.interventions.steering.steering_summary`'s measures)."""
    groups: dict[tuple, list] = {}
    for r in result.rows:
        groups.setdefault((r["condition"], r["control"], r["k"]), []).append(r)
    return [{"condition": cond, "direction": "random" if control else "feature", "k": k, **summarise(rs)}
            for (cond, control, k), rs in groups.items()]

"""Are SAE features more interpretable than MLP neurons? Both scored alike, on the same text.

"Towards Monosemanticity" found features easier to explain than neurons. This module measures
it with the explanation scores of :mod:`.scores`: a random sample of a site's features and a
random sample of the neurons of the site's own block (the MLP whose output the site adds up) are
explained and scored by the same procedure, on the same tokens, split the same way.

**The units' firing.** A feature fires on a token when its activation is > 0, as everywhere
else. A neuron has no such zero (a gated MLP's ``act(gate) * up`` takes either sign on most
tokens), so a threshold must be chosen, and the scores depend on it: a unit that fires on most
tokens is easy to detect in a window and impossible to localise in it. The comparison is
**rate-matched**: the sampled neurons are paired at random with the sampled features, and
each neuron fires on as many tokens as its feature does, those of its highest activation (ties:
the earlier token). Both samples then have the same distribution of firing rates, and neither
score gains from density.

**The sample.** Per site, ``sample`` neurons drawn uniformly from the block (seeded by the
experiment's seed), and as many features drawn uniformly from those that fire on at least
:data:`MIN_FIRINGS` of the tokens (a feature that almost never fires has no explanation to
score; its neuron partner would not either).

**The scores.** Each unit's rule is chosen on the training documents and scored on the held-out
ones (:func:`~.artefact.explain_site`: detection AUROC, balanced accuracy, fuzzing), over the
tokens of the features-against-neurons pass (:mod:`helpers.evolution.neuron_artefact`, which
records what is needed while it runs: :class:`UnitRecorder`).

**The difference.** Mean score of the features minus that of the neurons, with a percentile
bootstrap interval that resamples features and neurons independently (:func:`difference_ci`).
"""

from __future__ import annotations

import logging
from typing import Any, Sequence

import numpy as np
import torch

from ..errors import ConfigError
from .artefact import active_pairs, explain_site
from .rules import MAX_KEYS
from .stream import HELDOUT_EVERY, WINDOW, TokenStream, heldout_mask, key_spaces, windows

log = logging.getLogger(__name__)

#: units of each kind sampled per site
SAMPLE = 200
#: a feature is sampled only if it fires on at least this many tokens of the pass
MIN_FIRINGS = 10
#: the scores compared, as named in the artefact (``feature_<score>``, ``neuron_<score>``)
UNIT_SCORES = ("detection_auroc", "balanced_accuracy", "fuzzing")


class UnitRecorder:
    """What the comparison needs from the neuron pass, per site: every firing ``(token,
    feature)`` of the site's SAE, and the activations of ``sample`` neurons of its own block
    (drawn once, seeded), token by token in stream order."""

    def __init__(self, sites: Sequence[str], n_neurons: int, sample: int = SAMPLE, seed: int = 0):
        if sample < 1 or n_neurons < 1:
            raise ConfigError(f"sample={sample} and n_neurons={n_neurons} must be >= 1")
        rng = np.random.default_rng(seed)
        self.neurons = {s: rng.permutation(n_neurons)[:min(sample, n_neurons)] for s in sites}
        self._acts: dict[str, list[np.ndarray]] = {s: [] for s in sites}
        self._fire: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {s: [] for s in sites}
        self.n_tokens = {s: 0 for s in sites}

    @torch.no_grad()
    def add(self, site: str, indices: torch.Tensor, values: torch.Tensor, block_neurons: torch.Tensor) -> None:
        """One batch of ``n`` tokens: the active features ``indices``/``values`` ``[n, k]`` (0:
        inactive) and the neurons of the site's block ``[n, M]``."""
        idx = torch.as_tensor(self.neurons[site], device=block_neurons.device)
        self._acts[site].append(block_neurons[:, idx].float().cpu().numpy())
        self._fire[site].append(active_pairs(indices, values, self.n_tokens[site]))
        self.n_tokens[site] += int(values.shape[0])

    def neuron_acts(self, site: str) -> np.ndarray:
        """``[N, sample]`` the sampled neurons' activations over the stream."""
        a = self._acts[site]
        return np.concatenate(a) if a else np.zeros((0, len(self.neurons[site])), np.float32)

    def firings(self, site: str) -> tuple[np.ndarray, np.ndarray]:
        """``(token, feature)`` of every firing of the site's features over the stream."""
        f = self._fire[site]
        if not f:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        return np.concatenate([t for t, _ in f]).astype(np.int64), np.concatenate([u for _, u in f]).astype(np.int64)


def rate_matched_firing(acts: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(token, unit)``: unit ``j`` (column of ``acts`` ``[N, n]``) fires on its ``counts[j]``
    tokens of highest activation (ties: the earlier token)."""
    acts = np.asarray(acts)
    counts = np.asarray(counts, np.int64)
    if acts.ndim != 2 or counts.shape != (acts.shape[1],):
        raise ConfigError(f"need activations [N, n] and n counts, got {acts.shape} and {counts.shape}")
    order = np.argsort(-acts, axis=0, kind="stable")
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(acts.shape[0])[:, None], axis=0)
    token, unit = np.nonzero(rank < counts[None, :])
    return token.astype(np.int64), unit.astype(np.int64)


def sample_features(counts: np.ndarray, n: int, rng: np.random.Generator,
                    min_firings: int = MIN_FIRINGS) -> np.ndarray:
    """Up to ``n`` features drawn uniformly among those with ``counts >= min_firings``."""
    eligible = np.flatnonzero(np.asarray(counts) >= min_firings)
    return rng.permutation(eligible)[:min(n, eligible.size)]


def compare_site(token: np.ndarray, feature: np.ndarray, n_features: int, neuron_acts: np.ndarray,
                 spaces: dict, held: np.ndarray, window: np.ndarray, rng: np.random.Generator,
                 min_firings: int = MIN_FIRINGS, max_keys: int = MAX_KEYS) -> dict[str, np.ndarray]:
    """The scores of one site's sampled features and of as many rate-matched neurons (columns of
    ``neuron_acts``, in order): ``features`` ``[m]`` (their ids), ``fired`` ``[m]`` (tokens each
    unit fires on, the same for a feature and its neuron), and ``feature_<score>``,
    ``neuron_<score>`` ``[m]`` for each of :data:`UNIT_SCORES`."""
    counts = np.bincount(feature, minlength=n_features)
    chosen = sample_features(counts, neuron_acts.shape[1], rng, min_firings)
    m = chosen.size
    out: dict[str, np.ndarray] = {"features": chosen, "fired": counts[chosen]}
    if m == 0:
        out.update({f"{u}_{s}": np.zeros(0) for u in ("feature", "neuron") for s in UNIT_SCORES})
        return out
    slot = np.full(n_features, -1, np.int64)
    slot[chosen] = np.arange(m)
    keep = slot[feature] >= 0
    runs = {"feature": (token[keep], slot[feature[keep]]),
            "neuron": rate_matched_firing(neuron_acts[:, :m], counts[chosen])}
    for unit, (tok, u) in runs.items():
        _, _, sc = explain_site(tok, u, m, spaces, held, window, max_keys)
        for name, key in zip(UNIT_SCORES, ("auroc", "balanced_accuracy", "fuzzing")):
            out[f"{unit}_{name}"] = sc[key]
    return out


def compare_units(recorder: UnitRecorder, stream: TokenStream, n_features: int, vocab: int, seed: int = 0,
                  heldout_every: int = HELDOUT_EVERY, window: int = WINDOW, min_firings: int = MIN_FIRINGS,
                  max_keys: int = MAX_KEYS) -> dict[str, dict[str, np.ndarray]]:
    """``{site: compare_site(...)}`` for every site the recorder saw, over ``stream`` (the pass's
    tokens, in order). Sites whose text has no training or no held-out document are left out."""
    held = heldout_mask(stream.doc, heldout_every)
    out: dict[str, dict[str, np.ndarray]] = {}
    if not held.any() or held.all():
        log.info("the neuron pass's %d tokens hold no training or no held-out document: features and "
                 "neurons are not scored", stream.n)
        return out
    spaces = key_spaces(stream, vocab)
    win = windows(stream.subset(held), window)
    rng = np.random.default_rng(seed)
    for site in recorder.neurons:
        if recorder.n_tokens[site] != stream.n:
            raise ConfigError(f"the neuron pass saw {recorder.n_tokens[site]} tokens at {site}, the corpus "
                              f"gives {stream.n}: rebuild with `python -m helpers neurons`")
        token, feature = recorder.firings(site)
        out[site] = compare_site(token, feature, n_features, recorder.neuron_acts(site), spaces, held, win, rng,
                                 min_firings, max_keys)
    return out


def difference_ci(a: np.ndarray, b: np.ndarray, n_boot: int = 2000, level: float = 0.95,
                  seed: int = 0) -> dict[str, Any]:
    """Mean of ``a`` minus mean of ``b`` (NaNs dropped), and its percentile bootstrap interval at
    ``level`` (``a`` and ``b`` resampled independently, ``n_boot`` times, seeded)."""
    if not 0 < level < 1 or n_boot < 1:
        raise ConfigError(f"level={level} must be in (0, 1) and n_boot={n_boot} >= 1")
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    res = {"n_a": int(a.size), "n_b": int(b.size), "mean_a": float(a.mean()) if a.size else float("nan"),
           "mean_b": float(b.mean()) if b.size else float("nan")}
    res["difference"] = res["mean_a"] - res["mean_b"]
    if a.size == 0 or b.size == 0:
        return {**res, "low": float("nan"), "high": float("nan")}
    rng = np.random.default_rng(seed)
    boot = (a[rng.integers(0, a.size, (n_boot, a.size))].mean(1)
            - b[rng.integers(0, b.size, (n_boot, b.size))].mean(1))
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(boot, [tail, 100 - tail])
    return {**res, "low": float(low), "high": float(high)}

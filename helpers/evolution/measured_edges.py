"""The causal effects this project measured, as edges: ``(site_a, a, site_b, b, drop, chosen by)``.

The matching artefact (:mod:`.matching_artefact`, ``matching.npz``) holds, for each adjacent
pair, ~512 sampled downstream features ``b``, each matching method's top-1 upstream partner
``a`` and the **drop**: the mean relative drop of ``b`` over its firing tokens (in its example
windows) when ``a`` is ablated (1: silenced, 0: unchanged, < 0: made stronger; see
:mod:`helpers.interventions.deactivation`). These are the only causal effects measured; every
other edge of the browser and the explorer has no causal value.

**Duplicates.** Several methods often choose the same ``a`` for a ``b``. Such an edge was
*measured once*: the matching pass ablates each distinct (window, a, b) once and every method
that chose it shares that value, so it appears here once, with the bitmask ``chosen_by`` of the
methods (the random control, ``random``, included) that chose it. Should the duplicates of an
artefact disagree (not written by this project's pass), their mean is kept and a warning logged.

**Left out.** Undefined drops (NaN: no partner under a measure, or ``b`` not evaluated).
An edge whose ``a`` never fired in ``b``'s windows is kept: its drop is exactly 0 (it was
measured: nothing changes), and ``upstream_fired`` says so.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ArtefactMismatchError, ConfigError, CorruptArtefactError, MissingArtefactError

log = logging.getLogger(__name__)

__all__ = ["CAUSAL_LABEL", "CAUSAL_MEASURE", "MeasuredEdges", "load_measured_edges", "measured_edges",
           "measured_edges_or_note"]

#: the name of the measure in the browser and the explorer, and how the pages call it
CAUSAL_MEASURE = "causal_drop"
CAUSAL_LABEL = "causal effect (measured drop)"
REQUIRED = ("downstream", "partner", "drop", "methods", "sites")


@dataclass
class MeasuredEdges:
    """Distinct measured edges, one per (pair, a, b), as columns (``E`` edges, sorted by pair, a, b).

    ``pair[i]`` indexes the adjacent pairs: the edge runs from ``sites[pair[i]]`` to
    ``sites[pair[i] + 1]``. ``chosen_by[i]`` has bit ``k`` set when ``methods[k]`` chose it.
    """

    sites: list[str]
    methods: list[str]
    pair: np.ndarray  # [E] int64
    a: np.ndarray  # [E] int64, upstream feature (site pair)
    b: np.ndarray  # [E] int64, downstream feature (site pair + 1)
    drop: np.ndarray  # [E] float64
    chosen_by: np.ndarray  # [E] int64 bitmask over methods
    upstream_fired: np.ndarray  # [E] bool: a fired in b's windows (else drop == 0)
    n_firing: np.ndarray  # [E] int64: b's firing tokens the drop averages over
    choices: int  # (method, downstream feature) slots with a defined drop, before deduplication

    def __len__(self) -> int:
        return int(self.pair.size)

    @property
    def site_a(self) -> np.ndarray:
        return np.asarray(self.sites, dtype=object)[self.pair]

    @property
    def site_b(self) -> np.ndarray:
        return np.asarray(self.sites, dtype=object)[self.pair + 1]

    def chosen_names(self) -> list[str]:
        """Per edge, the methods that chose it, joined by ``+`` (e.g. ``"pearson+jaccard"``)."""
        bits = (self.chosen_by[:, None] >> np.arange(len(self.methods))) & 1
        names = np.asarray(self.methods, dtype=object)
        return ["+".join(names[row.astype(bool)]) for row in bits]

    def n_methods(self) -> np.ndarray:
        """Per edge, how many methods chose it."""
        return ((self.chosen_by[:, None] >> np.arange(len(self.methods))) & 1).sum(1)

    def chosen_by_method(self, method: str) -> np.ndarray:
        """Boolean mask of the edges ``method`` chose."""
        if method not in self.methods:
            raise ConfigError(f"unknown method {method!r}: the matching results hold {self.methods}")
        return ((self.chosen_by >> self.methods.index(method)) & 1).astype(bool)

    def chosen_only_by(self, method: str) -> np.ndarray:
        """Boolean mask of the edges that ``method`` alone chose (all False when the results hold
        no such method, e.g. the control left out)."""
        if method not in self.methods:
            return np.zeros(len(self), bool)
        return self.chosen_by == (1 << self.methods.index(method))

    def method_rows(self, threshold: float) -> list[dict[str, Any]]:
        """Per method: the edges it chose, their median and mean drop, the share at or above
        ``threshold`` and the share whose upstream feature is silent in ``b``'s windows."""
        rows = []
        for m in self.methods:
            sel = self.chosen_by_method(m)
            drop = self.drop[sel]
            rows.append({"method": m, "edges chosen": int(sel.sum()), "median drop": np.median(drop),
                         "mean drop": drop.mean(), f"share >= {threshold:g}": (drop >= threshold).mean(),
                         "partner silent in b's windows": (~self.upstream_fired[sel]).mean()})
        return rows

    def drop_summary(self, threshold: float, control: str = "random") -> dict[str, float]:
        """How the drops spread: their min, max, median (``q50``) and 90th percentile (``q90``),
        the share at or above ``threshold``, and that share and the median for the edges a
        matching method chose (``matched_*``) and for those only the ``control`` chose
        (``control_*``; NaN when there are none)."""
        d = self.drop
        only = self.chosen_only_by(control)
        matched, ctrl = d[~only], d[only]
        q50, q90 = np.percentile(d, [50, 90])
        return {"min": d.min(), "max": d.max(), "q50": q50, "q90": q90, "share": (d >= threshold).mean(),
                "matched_share": (matched >= threshold).mean(), "matched_median": np.median(matched),
                "control_share": (ctrl >= threshold).mean(), "control_median": np.median(ctrl)}

    def strongest(self, min_support: int = 5, n: int = 10):
        """The ``n`` edges of highest drop whose downstream feature fired on at least
        ``min_support`` tokens of its windows, as :meth:`to_frame` rows."""
        frame = self.to_frame()
        return frame[frame.n_firing >= min_support].sort_values("drop", ascending=False).head(n)

    def lookup(self) -> dict[tuple[str, int, str, int], int]:
        """``{(site_a, a, site_b, b): edge index}``."""
        return {(self.sites[p], a, self.sites[p + 1], b): i
                for i, (p, a, b) in enumerate(zip(self.pair.tolist(), self.a.tolist(), self.b.tolist()))}

    def to_frame(self):
        """A pandas DataFrame, one row per edge."""
        import pandas as pd

        return pd.DataFrame({"site_a": self.site_a, "a": self.a, "site_b": self.site_b, "b": self.b,
                             "drop": self.drop, "chosen_by": self.chosen_names(),
                             "upstream_fired": self.upstream_fired, "n_firing": self.n_firing})


def _check(matching: dict[str, Any]) -> None:
    missing = [k for k in REQUIRED if k not in matching]
    if missing:
        raise ConfigError(f"the matching results lack {missing}: rebuild them with `python -m helpers matching`")
    P, K, N = np.shape(matching["partner"])
    if np.shape(matching["drop"]) != (P, K, N) or np.shape(matching["downstream"]) != (P, N):
        raise ConfigError(f"the matching results are inconsistent: partner {np.shape(matching['partner'])}, drop "
                          f"{np.shape(matching['drop'])}, downstream {np.shape(matching['downstream'])} should be "
                          "[P, K, N], [P, K, N], [P, N]: rebuild them with `python -m helpers matching`")
    if len(matching["methods"]) != K or len(matching["sites"]) != P + 1:
        raise ConfigError(f"the matching results name {len(matching['methods'])} methods and "
                          f"{len(matching['sites'])} sites for {K} methods and {P} pairs: rebuild them with "
                          "`python -m helpers matching`")


def measured_edges(matching: dict[str, Any], include_control: bool = True) -> MeasuredEdges:
    """The distinct measured edges of a matching artefact (``load_matching``'s dict, or any dict
    with its arrays): vectorised, NaN drops left out, duplicates merged (see the module)."""
    _check(matching)
    methods = [str(m) for m in matching["methods"]]
    sites = [str(s) for s in matching["sites"]]
    partner = np.asarray(matching["partner"], dtype=np.int64)
    drop = np.asarray(matching["drop"], dtype=np.float64)
    P, K, N = partner.shape
    down = np.broadcast_to(np.asarray(matching["downstream"], dtype=np.int64)[:, None, :], (P, K, N))
    fired = np.asarray(matching.get("upstream_fired", np.ones((P, K, N), bool)), dtype=bool)
    n_firing = np.broadcast_to(np.asarray(matching.get("n_firing", np.zeros((P, N))), dtype=np.int64)[:, None, :],
                               (P, K, N))
    pair_i, k_i, _ = np.indices((P, K, N))
    ok = (partner >= 0) & (down >= 0) & np.isfinite(drop)
    if not include_control and "random" in methods:
        ok &= k_i != methods.index("random")
    p, k, a, b = pair_i[ok], k_i[ok], partner[ok], down[ok]
    d, f, n = drop[ok], fired[ok], n_firing[ok]
    keys = np.stack([p, a, b], 1)
    if keys.size:
        uniq, first, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
    else:
        uniq, first, inverse = np.zeros((0, 3), np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64)
    inverse = inverse.reshape(-1)
    E = len(uniq)
    chosen = np.zeros(E, np.int64)
    np.bitwise_or.at(chosen, inverse, np.left_shift(1, k))
    lo, hi = np.full(E, np.inf), np.full(E, -np.inf)
    np.minimum.at(lo, inverse, d)
    np.maximum.at(hi, inverse, d)
    value = d[first]
    spread = hi - lo
    if E and (spread > 1e-6).any():
        bad = int((spread > 1e-6).sum())
        log.warning("%d measured edge(s) carry different drops for different methods (up to %.3g apart): "
                    "keeping their mean; the matching pass measures each edge once", bad, float(spread.max()))
        value = np.bincount(inverse, weights=d, minlength=E) / np.bincount(inverse, minlength=E)
    upstream = np.zeros(E, bool)
    np.logical_or.at(upstream, inverse, f)
    return MeasuredEdges(sites=sites, methods=methods, pair=uniq[:, 0].copy(), a=uniq[:, 1].copy(),
                         b=uniq[:, 2].copy(), drop=value, chosen_by=chosen, upstream_fired=upstream,
                         n_firing=n[first] if E else np.zeros(0, np.int64), choices=int(ok.sum()))


def load_measured_edges(exp, out=None, include_control: bool = True) -> MeasuredEdges:
    """The measured edges of ``exp`` from its matching artefact; a one-line error (naming the
    command that writes it) when it is missing, stale or of another experiment."""
    from .matching_artefact import load_matching

    data = load_matching(exp, out)
    if list(data["sites"]) != list(exp.sites):
        raise ArtefactMismatchError(f"the matching results name the sites {data['sites']}, the experiment "
                                    f"{list(exp.sites)}: rerun `python -m helpers matching --experiment {exp.name}`")
    return measured_edges(data, include_control)


def measured_edges_or_note(exp, out=None, include_control: bool = True) -> tuple[MeasuredEdges | None, str]:
    """``(edges, note)``: the measured edges and a one-line description, or ``None`` and the reason
    they are not offered (no matching artefact, a stale one, or one without a defined drop) with
    the command that makes them."""
    try:
        edges = load_measured_edges(exp, out, include_control)
    except (MissingArtefactError, ArtefactMismatchError, CorruptArtefactError, ConfigError) as err:
        return None, f"causal effect not measured for {exp.name}: {err}"
    if not len(edges):
        return None, (f"causal effect not measured for {exp.name}: {describe(edges)}; rerun "
                      f"`python -m helpers matching --experiment {exp.name}`")
    return edges, describe(edges)


def describe(edges: MeasuredEdges) -> str:
    """One line: how many edges, over how many pairs, chosen by which methods."""
    if not len(edges):
        return "the matching results hold no measured edge (every drop is undefined)"
    return (f"{len(edges):,} distinct edges measured by ablation ({edges.choices:,} method choices over "
            f"{len(np.unique(edges.pair))} adjacent pairs; methods: {', '.join(edges.methods)}): drop = mean "
            "relative drop of the downstream feature over its firing tokens in its example windows when the "
            "upstream feature is ablated")

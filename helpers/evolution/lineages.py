"""Which features pass through, appear, disappear; and lineages through all sites.

At a threshold ``t`` on a measure (Pearson by default, as in the reference study), an alive
feature of site L with no partner ``>= t`` in site L+1 *disappears*; an alive feature of L+1
with no partner ``>= t`` in L *appears*; the others *continue*. Dead features (never fired)
are left out of every share. Everything is read from the partner tables: a feature's best
partner under a measure is the first entry of its row.

A *lineage* chains a feature to its best continuing partner (best by the same measure and
``>= t``), site after site; its *lifespan* is the number of consecutive sites it spans.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError
from .measures import check_threshold
from .partners import best_partner


@dataclass(frozen=True)
class Flow:
    """Pass-through of one adjacent pair of sites at one threshold (boolean masks over features)."""

    pair: int
    continues: np.ndarray  # [Fa] alive features of L with a partner >= t in L+1
    disappears: np.ndarray  # [Fa] alive features of L without one
    continued: np.ndarray  # [Fb] alive features of L+1 with a partner >= t in L
    appears: np.ndarray  # [Fb] alive features of L+1 without one

    @property
    def shares(self) -> dict[str, float]:
        alive_a = self.continues.sum() + self.disappears.sum()
        alive_b = self.continued.sum() + self.appears.sum()
        return {
            "disappear": float(self.disappears.sum() / max(alive_a, 1)),
            "continue": float(self.continues.sum() / max(alive_a, 1)),
            "appear": float(self.appears.sum() / max(alive_b, 1)),
        }


def flows(partners: dict, fired: np.ndarray, threshold: float, measure: str = "pearson") -> list[Flow]:
    """One :class:`Flow` per adjacent pair. ``fired``: ``[S, F]`` firing counts of the pass."""
    check_threshold(measure, threshold)
    out = []
    for p in range(len(partners["pairs"])):
        _, down = best_partner(partners, p, "down", measure)
        _, up = best_partner(partners, p, "up", measure)
        alive_a, alive_b = fired[p] > 0, fired[p + 1] > 0
        with np.errstate(invalid="ignore"):
            cont, contd = alive_a & (down >= threshold), alive_b & (up >= threshold)
        out.append(Flow(p, cont, alive_a & ~cont, contd, alive_b & ~contd))
    return out


def flow_table(partners: dict, fired: np.ndarray, thresholds, measure: str = "pearson") -> list[dict]:
    """Rows ``{threshold, pair, disappear, continue, appear}`` (shares of alive features)."""
    rows = []
    for t in thresholds:
        for f in flows(partners, fired, t, measure):
            rows.append({"threshold": float(t), "pair": str(partners["pairs"][f.pair]), **f.shares})
    return rows


def next_feature(partners: dict, fired: np.ndarray, threshold: float, measure: str = "pearson") -> list[np.ndarray]:
    """Per adjacent pair, each feature's best continuing partner in the next site (-1: none)."""
    check_threshold(measure, threshold)
    out = []
    for p in range(len(partners["pairs"])):
        idx, val = best_partner(partners, p, "down", measure)
        with np.errstate(invalid="ignore"):
            ok = (fired[p] > 0) & (val >= threshold) & (idx >= 0)
        out.append(np.where(ok, idx, -1))
    return out


@dataclass(frozen=True)
class Lineages:
    """Chains of best continuing partners. ``span[s][f]``: sites the chain from (s, f) spans."""

    span: list[np.ndarray]  # per site, [F] int (0 for dead features)
    starts: list[np.ndarray]  # per site, the features no chain reaches (where lineages begin)
    nxt: list[np.ndarray]

    def lifespans(self) -> np.ndarray:
        """The lifespan of every lineage (one per start), in sites."""
        return np.concatenate([self.span[s][f] for s, f in enumerate(self.starts)]) if self.starts else np.array([])

    def lifespan_counts(self) -> np.ndarray:
        """``[S + 1]``: the number of lineages of each lifespan (index = sites spanned)."""
        return np.bincount(self.lifespans().astype(int), minlength=len(self.span) + 1)

    def chain(self, site: int, feature: int) -> list[tuple[int, int]]:
        """The lineage from ``(site, feature)`` onward, as ``(site, feature)`` steps."""
        if not 0 <= site < len(self.span):
            raise ConfigError(f"site index {site} out of range: there are {len(self.span)} sites")
        if not 0 <= feature < len(self.span[site]):
            raise ConfigError(f"feature {feature} out of range: site {site} has {len(self.span[site])} features")
        steps = [(site, feature)]
        while site < len(self.nxt) and self.nxt[site][feature] >= 0:
            feature = int(self.nxt[site][feature])
            site += 1
            steps.append((site, feature))
        return steps

    def longest(self, n: int = 5) -> list[tuple[int, int]]:
        """The starts of the ``n`` longest lineages (ties: earliest site, lowest feature)."""
        cand = [(-int(self.span[s][f]), s, int(f)) for s, fs in enumerate(self.starts) for f in fs]
        return [(s, f) for _, s, f in sorted(cand)[:n]]

    def one_site(self, n: int = 3) -> list[tuple[int, int]]:
        """The starts of the first ``n`` lineages that last one site though a next site exists
        (earliest site first, then lowest feature)."""
        found = ((s, int(f)) for s in range(len(self.starts) - 1) for f in self.starts[s] if self.span[s][f] == 1)
        return list(itertools.islice(found, n))


def lineages(partners: dict, fired: np.ndarray, threshold: float, measure: str = "pearson") -> Lineages:
    """Chain every alive feature to its best continuing partner through all sites."""
    nxt = next_feature(partners, fired, threshold, measure)
    n_sites = fired.shape[0]
    span = [np.zeros(fired.shape[1], dtype=np.int64) for _ in range(n_sites)]
    span[-1] = (fired[-1] > 0).astype(np.int64)
    for s in range(n_sites - 2, -1, -1):  # vectorised over features, back to front
        follow = np.where(nxt[s] >= 0, span[s + 1][np.maximum(nxt[s], 0)], 0)
        span[s] = np.where(fired[s] > 0, 1 + follow, 0)
    starts = []
    for s in range(n_sites):
        reached = np.zeros(fired.shape[1], dtype=bool)
        if s > 0:
            reached[nxt[s - 1][nxt[s - 1] >= 0]] = True
        starts.append(np.flatnonzero((fired[s] > 0) & ~reached))
    return Lineages(span, starts, nxt)

"""Upstream explanations: the few upstream features that account for a feature's firings.

For every feature ``b`` of site L+1 its **candidate set** is its top-``K`` upstream features
of site L by necessity ``#(a and b) / #b`` (ties by index: the ``up`` necessity ranking of the
partner tables). On every token where ``b`` fires, the second pass (:mod:`.focused_pass`)
records which candidates fire as a bitmask (bit ``j`` = candidate ``j``) and counts the tokens
of each ``(b, mask)``: a sorted list of keys ``b * 2^K + mask`` with their counts.

From these counts a **greedy cover** picks, step by step, the candidate that covers the most
of ``b``'s firings not yet covered (ties: the higher necessity, i.e. the earlier slot), until
no candidate adds any; the coverage after each step is kept, so the smallest greedy set
reaching any coverage (0.9 by default) is read off without recomputing. Everything is
vectorised over all features of a pair.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .measures import check_threshold
from .partners import top_k_stable


def upstream_candidates(count: torch.Tensor, fired_b: torch.Tensor, k: int,
                        chunk: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """Each downstream feature's top-``k`` upstream features by necessity: ``(index, necessity)``,
    both ``[Fb, k]``; index -1 (necessity NaN) where the necessity is 0 or undefined (no firing
    shared with ``b``: such a feature cannot explain any of it)."""
    from ..errors import ConfigError

    fa, fb = count.shape
    if not 1 <= k <= fa:
        raise ConfigError(f"upstream_candidates={k} must be between 1 and the number of features ({fa})")
    idx_parts, val_parts = [], []
    for lo in range(0, fb, chunk):
        c = count[:, lo : lo + chunk].to(torch.float64).T  # [cb, Fa]
        f = fired_b[lo : lo + chunk].to(torch.float64).unsqueeze(1)
        nec = torch.where(f > 0, c / f.clamp_min(1), torch.full_like(c, -torch.inf))
        top = top_k_stable(nec, k)
        val = torch.gather(nec, 1, top)
        useless = ~(val > 0)
        idx_parts.append(torch.where(useless, torch.full_like(top, -1), top))
        val_parts.append(torch.where(useless, torch.full_like(val, float("nan")), val))
    return (torch.cat(idx_parts).cpu().numpy().astype(np.int32),
            torch.cat(val_parts).cpu().numpy().astype(np.float32))


def split_keys(keys: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``(feature, mask)`` of keys ``feature * 2^k + mask``."""
    keys = np.asarray(keys, dtype=np.int64)
    return keys >> k, keys & ((1 << k) - 1)


def greedy_cover(keys: np.ndarray, counts: np.ndarray, n_features: int, k: int) -> dict[str, np.ndarray]:
    """The greedy cover of every feature from its ``(feature, mask)`` counts.

    Returns ``slot`` ``[F, k]`` (the candidate slot chosen at each step, -1 once nothing is
    left to gain), ``covered`` ``[F, k]`` (firings covered after each step, cumulative, int64)
    and ``fired`` ``[F]`` (all firings of the feature, covered or not). Entries drop out once
    covered, so each step only reads what is still open.
    """
    feat, mask = split_keys(keys, k)
    counts = np.asarray(counts, dtype=np.int64)
    fired = np.bincount(feat, weights=counts, minlength=n_features).astype(np.int64)
    chosen = np.zeros(n_features, dtype=np.int64)  # bitmask of chosen slots
    slot = np.full((n_features, k), -1, dtype=np.int8)
    covered = np.zeros((n_features, k), dtype=np.int64)
    so_far = np.zeros(n_features, dtype=np.int64)
    rows = np.arange(n_features)
    open_ = mask != 0  # a firing with no candidate firing can never be covered
    f, m, c = feat[open_], mask[open_], counts[open_].astype(np.float64)
    for step in range(k):
        gain = np.zeros((n_features, k))
        for j in range(k):
            gain[:, j] = np.bincount(f, weights=c * ((m >> j) & 1), minlength=n_features)
        best = np.argmax(gain, 1)  # first maximum: the earlier slot (higher necessity) wins ties
        g = gain[rows, best].astype(np.int64)
        grows = g > 0
        slot[grows, step] = best[grows]
        chosen[grows] |= np.int64(1) << best[grows]
        so_far = so_far + g
        covered[:, step] = so_far
        still = (m & chosen[f]) == 0
        f, m, c = f[still], m[still], c[still]
    return {"slot": slot, "covered": covered, "fired": fired}


def cover_size(covered: np.ndarray, fired: np.ndarray, coverage: float) -> np.ndarray:
    """The size of the smallest greedy set covering ``>= coverage`` of each feature's firings;
    0 for a feature that never fired, -1 where even all candidates fall short."""
    coverage = check_threshold("necessity", coverage)
    covered, fired = np.asarray(covered), np.asarray(fired)
    need = coverage * fired.astype(np.float64)
    reached = covered >= need[..., None]
    size = np.where(reached.any(-1), reached.argmax(-1) + 1, -1)
    return np.where(fired > 0, size, 0)


def explanation(gates: dict[str, Any], pair: int, feature: int, coverage: float = 0.9) -> dict[str, Any]:
    """The upstream explanation of ``feature`` of site ``pair + 1`` (from :func:`load_gates`):
    its greedy upstream features in order with the coverage after each, the set size reaching
    ``coverage`` and whether it is reached."""
    from ..errors import ConfigError

    coverage = check_threshold("necessity", coverage)
    n_pairs, n_features = gates["cover_slot"].shape[:2]
    if not 0 <= pair < n_pairs:
        raise ConfigError(f"pair index {pair} out of range: the experiment has {n_pairs} adjacent pairs")
    if isinstance(feature, bool) or not isinstance(feature, (int, np.integer)) or not 0 <= feature < n_features:
        raise ConfigError(f"unknown feature {feature!r}: features are numbered 0..{n_features - 1}")
    slots = gates["cover_slot"][pair, feature]
    covered = gates["cover_count"][pair, feature]
    fired = int(gates["cover_fired"][pair, feature])
    steps = []
    for step, s in enumerate(slots):
        if s < 0:
            break
        steps.append({
            "upstream": int(gates["upstream_index"][pair, feature, s]), "slot": int(s),
            "necessity": float(gates["upstream_necessity"][pair, feature, s]),
            "covered": int(covered[step]), "coverage": float(covered[step] / fired),
        })
    size = int(cover_size(covered, np.int64(fired), coverage))
    return {"pair": pair, "feature": int(feature), "fired": fired, "coverage_asked": coverage,
            "size": size, "reached": size > 0, "steps": steps,
            "explanation": [s["upstream"] for s in steps[:size]] if size > 0 else [s["upstream"] for s in steps]}


def pick_explained(gates: dict[str, Any], coverage: float = 0.9, n: int = 3, sizes: tuple[int, ...] = (2, 3, 4),
                   min_fired: int = 20) -> list[tuple[int, int]]:
    """A few ``(pair, feature)`` worth showing: explained by ``sizes`` upstream features at
    ``coverage``, firing at least ``min_fired`` times, most frequent first, one pair after another
    (then any reached explanation if too few)."""
    size = cover_size(gates["cover_count"], gates["cover_fired"], coverage)
    fired = gates["cover_fired"]
    picked: list[tuple[int, int]] = []
    for wanted in (np.isin(size, sizes), size > 0):
        ok = wanted & (fired >= min_fired)
        queues = [[(p, int(f)) for f in np.argsort(-fired[p] * ok[p], kind="stable") if ok[p, f]]
                  for p in range(size.shape[0])]
        while len(picked) < n and any(queues):
            for q in queues:
                while q and q[0] in picked:
                    q.pop(0)
                if q and len(picked) < n:
                    picked.append(q.pop(0))
        if len(picked) >= n:
            break
    return picked

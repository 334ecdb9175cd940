"""Boolean combinations of upstream features: candidates from the pairwise counts, scores
from truth tables.

The reference study's Table 2 rule, applied to every downstream feature ``b`` of an adjacent
pair of sites (L, L+1), from the exact co-firing counts of the statistics pass:

- **AND candidate**: exactly two features ``a1 < a2`` of site L have necessity
  ``#(a and b) / #b >= threshold`` (``b`` rarely fires without either of them);
- **OR candidate**: exactly two have sufficiency ``#(a and b) / #a >= threshold``
  (either of them firing makes ``b`` fire).

Only features that fired at least ``min_fires`` times take part, upstream and downstream (a
feature that fired once has sufficiency 1 with anything it met). Both ratios are computed in
float64 from integer counts, so the rule is exact.

Pairwise counts only give necessary conditions (``b`` may need ``a1`` and ``a2`` without
firing whenever both do), so every candidate is verified by its **truth table**: the tokens of
each of the 8 firing patterns of ``(a1, a2, b)``, counted by a second pass
(:mod:`.focused_pass`). Pattern ``code = 4 a1 + 2 a2 + b``. Against the gate ``g = a1 AND a2``
(or ``a1 OR a2``): precision ``#(g and b) / #g``, recall ``#(g and b) / #b`` and
IoU ``#(g and b) / #(g or b)``.
"""

from __future__ import annotations

import numpy as np
import torch

from .measures import check_threshold

KINDS = ("and", "or")
#: the 8 firing patterns ``(a1, a2, b)`` in the order of their code ``4 a1 + 2 a2 + b``
PATTERNS = tuple(((c >> 2) & 1, (c >> 1) & 1, c & 1) for c in range(8))
#: codes where the gate fires: a1 and a2 (AND), a1 or a2 (OR)
GATE_CODES = {"and": (6, 7), "or": (2, 3, 4, 5, 6, 7)}


def check_min_fires(min_fires: int) -> int:
    from ..errors import ConfigError

    if isinstance(min_fires, bool) or not isinstance(min_fires, (int, np.integer)) or min_fires < 1:
        raise ConfigError(f"min_fires={min_fires!r} must be an integer >= 1 (tokens)")
    return int(min_fires)


def _exactly_two(passes: torch.Tensor, offset: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Columns of ``passes`` ``[Fa, cb]`` with exactly two True rows: ``(b, a1, a2)``, a1 < a2."""
    cols = torch.nonzero(passes.sum(0) == 2).flatten()
    if cols.numel() == 0:
        empty = torch.zeros(0, dtype=torch.long, device=passes.device)
        return empty, empty, empty
    rows = torch.nonzero(passes[:, cols].T)[:, 1].view(-1, 2)  # row-major: sorted by column, then row
    return cols + offset, rows[:, 0], rows[:, 1]


def pair_gate_candidates(count: torch.Tensor, fired_a: torch.Tensor, fired_b: torch.Tensor,
                         threshold: float = 0.999, min_fires: int = 5,
                         chunk: int = 4096) -> dict[str, np.ndarray]:
    """AND and OR candidates of one adjacent pair, in column blocks of ``chunk`` features.

    ``count`` ``[Fa, Fb]`` exact co-firing counts, ``fired_a`` ``[Fa]``, ``fired_b`` ``[Fb]``.
    Returns ``kind`` (0 AND, 1 OR), ``a1``, ``a2``, ``b`` (int64 arrays), AND first, each by ``b``.
    """
    threshold = check_threshold("necessity", threshold)
    min_fires = check_min_fires(min_fires)
    fa = fired_a.to(torch.float64)
    ok_a = (fired_a >= min_fires).unsqueeze(1)
    found = {kind: ([], [], []) for kind in KINDS}
    for lo in range(0, count.shape[1], chunk):
        c = count[:, lo : lo + chunk].to(torch.float64)
        fb = fired_b[lo : lo + chunk]
        ok_b = (fb >= min_fires).unsqueeze(0)
        eligible = ok_a & ok_b
        necessity = c / fb.to(torch.float64).clamp_min(1).unsqueeze(0)
        sufficiency = c / fa.clamp_min(1).unsqueeze(1)
        for kind, value in (("and", necessity), ("or", sufficiency)):
            for acc, part in zip(found[kind], _exactly_two(eligible & (value >= threshold), lo)):
                acc.append(part)
    out: dict[str, list[np.ndarray]] = {"kind": [], "a1": [], "a2": [], "b": []}
    for k, kind in enumerate(KINDS):
        b, a1, a2 = (torch.cat(x).cpu().numpy().astype(np.int64) if x else np.zeros(0, np.int64)
                     for x in found[kind])
        out["kind"].append(np.full(len(b), k, dtype=np.int64))
        for name, v in (("a1", a1), ("a2", a2), ("b", b)):
            out[name].append(v)
    return {name: np.concatenate(v) for name, v in out.items()}


def truth_table_scores(table: np.ndarray, kind: np.ndarray) -> dict[str, np.ndarray]:
    """Precision, recall and IoU of ``b`` against its gate, from truth tables ``[C, 8]``.

    Also the gate's and ``b``'s firing counts and their overlap (``gate``, ``fired_b``,
    ``both``). Scores are NaN where undefined (the gate never fired, say).
    """
    table = np.asarray(table, dtype=np.int64).reshape(-1, 8)
    kind = np.asarray(kind).reshape(-1)
    in_gate = np.zeros((len(table), 8), dtype=bool)
    for k, name in enumerate(KINDS):
        in_gate[kind == k] = np.isin(np.arange(8), GATE_CODES[name])
    fires_b = (np.arange(8) & 1).astype(bool)
    gate = (table * in_gate).sum(1)
    fired_b = table[:, fires_b].sum(1)
    both = (table * (in_gate & fires_b)).sum(1)
    union = gate + fired_b - both
    with np.errstate(invalid="ignore", divide="ignore"):
        return {
            "gate": gate, "fired_b": fired_b, "both": both,
            "precision": np.where(gate > 0, both / np.maximum(gate, 1), np.nan),
            "recall": np.where(fired_b > 0, both / np.maximum(fired_b, 1), np.nan),
            "iou": np.where(union > 0, both / np.maximum(union, 1), np.nan),
        }


def survives(table: np.ndarray, kind: np.ndarray, min_iou: float) -> np.ndarray:
    """Whether each candidate's IoU with its gate is at least ``min_iou``."""
    min_iou = check_threshold("jaccard", min_iou)
    iou = truth_table_scores(table, kind)["iou"]
    return np.nan_to_num(iou, nan=-1.0) >= min_iou

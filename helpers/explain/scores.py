"""Detection and fuzzing scores of explanations on held-out text, for all features at once.

Notation, for one feature f on the held-out tokens cut into windows (:func:`~.stream.windows`):
a window is **activating** when f fires (activation > 0) on at least one of its tokens, else
**non-activating**. A rule's prediction on a token is 1 when it matches the token (see
:mod:`.rules`); its **window score** ``s(w)`` is the number of tokens of ``w`` it matches.

- **Detection AUROC**: the probability that an activating window scores higher than a
  non-activating one, ties counting one half (the Mann-Whitney statistic of ``s`` with the
  activating windows as positives); over *all* held-out windows. NaN when f has no activating
  or no non-activating window.
- **Detection balanced accuracy**: at the rule's own threshold (a window is predicted
  activating when the rule matches at least one of its tokens, ``s(w) >= 1``),
  ``(TPR + TNR) / 2`` over the same windows.
- **Fuzzing score**: inside the activating windows only, at token level, whether the rule points
  to the tokens where f fires: the balanced accuracy ``(TPR + TNR) / 2`` of "the rule matches
  the token" against "f fires on the token" (for a yes/no prediction this equals its AUROC).
  A rule that matches every token of a window (``title``) scores 0.5: it says nothing about
  which tokens. NaN when f never fires, or fires on every token of its activating windows.

The same functions score any predictor (:func:`detection_from_scores`: real window scores,
e.g. an LLM's probability of "yes"; :func:`fuzzing_from_predictions`: token predictions).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def window_matrix(window: np.ndarray, n_windows: int | None = None) -> sp.csr_matrix:
    """``[W, N]`` 1 where token n is in window w."""
    n = window.size
    W = int(window.max(initial=-1) + 1) if n_windows is None else n_windows
    return sp.csr_matrix((np.ones(n, np.float32), (window, np.arange(n))), shape=(W, n))


def _auroc_from_hist(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """AUROC ``[F]`` from histograms ``[F, L]`` of integer scores 0..L-1 of positives and negatives."""
    below = np.cumsum(neg, 1) - neg
    n_pos, n_neg = pos.sum(1), neg.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = (pos * (below + 0.5 * neg)).sum(1) / (n_pos * n_neg)
    return np.where((n_pos > 0) & (n_neg > 0), auc, np.nan)


def _column_hist(m: sp.csr_matrix, F: int, L: int) -> np.ndarray:
    """``[F, L]`` counts of each stored value ``1..L-1`` of ``m`` ``[W, F]`` per column."""
    c = m.tocoo()
    v = np.clip(np.rint(c.data).astype(np.int64), 0, L - 1)
    return np.bincount(c.col.astype(np.int64) * L + v, minlength=F * L).reshape(F, L)


def detection_counts(score: sp.csr_matrix, active: sp.csr_matrix, max_score: int) -> dict[str, np.ndarray]:
    """Detection AUROC and balanced accuracy ``[F]`` from integer window scores.

    ``score`` ``[W, F]`` (non-negative integers, at most ``max_score``), ``active`` ``[W, F]``
    (1 where the window is activating). See the module docstring.
    """
    W, F = score.shape
    L = max_score + 1
    active = (active > 0).astype(np.float32).tocsr()
    n_pos = np.asarray(active.sum(0)).ravel().astype(np.int64)
    n_neg = W - n_pos
    score = score.tocsr()
    score.eliminate_zeros()
    pos = _column_hist(score.multiply(active).tocsr(), F, L)
    allh = _column_hist(score, F, L)
    neg = allh - pos
    pos[:, 0] = n_pos - pos[:, 1:].sum(1)
    neg[:, 0] = n_neg - neg[:, 1:].sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        tpr = 1 - pos[:, 0] / n_pos
        tnr = neg[:, 0] / n_neg
        ba = np.where((n_pos > 0) & (n_neg > 0), (tpr + tnr) / 2, np.nan)
    return {"auroc": _auroc_from_hist(pos, neg), "balanced_accuracy": ba, "activating": n_pos,
            "windows": np.full(F, W, np.int64)}


def fuzzing_counts(fire: sp.csr_matrix, matched_at_firing: np.ndarray, matched_in_active: np.ndarray,
                   active: sp.csr_matrix, lengths: np.ndarray) -> np.ndarray:
    """Fuzzing balanced accuracy ``[F]`` from counts.

    ``fire`` ``[F, N]`` held-out firings, ``matched_at_firing`` ``[F]`` firings where the rule
    matches, ``matched_in_active`` ``[F]`` tokens of activating windows where it matches,
    ``active`` ``[W, F]``, ``lengths`` ``[W]`` tokens per window.
    """
    P = np.asarray(fire.sum(1)).ravel().astype(np.float64)
    tokens = np.asarray((active > 0).astype(np.float64).T @ lengths).ravel()
    N = tokens - P
    fp = matched_in_active - matched_at_firing
    with np.errstate(invalid="ignore", divide="ignore"):
        ba = (matched_at_firing / P + 1 - fp / N) / 2
    return np.where((P > 0) & (N > 0), ba, np.nan)


def score_rules(fire: sp.csr_matrix, spaces: dict, window: np.ndarray, rules) -> dict[str, np.ndarray]:
    """Detection and fuzzing scores ``[F]`` of ``rules`` (:class:`~.rules.Rules`) on held-out tokens.

    ``fire`` ``[F, N]`` held-out firings, ``spaces`` the key spaces over the same ``N`` tokens,
    ``window`` ``[N]`` their windows. Keys of one kind never overlap on a token and a title rule
    has one word, so a rule matches a token at most once: ``s = (windows x keys) @ rule``.
    """
    from .stream import KINDS

    F, N = fire.shape
    win = window_matrix(window)
    W = win.shape[0]
    lengths = np.asarray(win.sum(1)).ravel()
    score = sp.csr_matrix((W, F), dtype=np.float32)
    at_firing = np.zeros(F)
    for i, kind in enumerate(KINDS):
        m = spaces[kind].matrix
        r = rules.matrix(i, m.shape[1])
        if r.nnz == 0:
            continue
        score = score + (win @ m) @ r
        at_firing += np.asarray((fire @ m).multiply(r.T.tocsr()).sum(1)).ravel()
    active = (win @ fire.T).tocsr()
    active.data[:] = 1
    det = detection_counts(score, active, int(lengths.max(initial=0)))
    in_active = np.asarray(score.multiply(active).sum(0)).ravel()
    det["fuzzing"] = fuzzing_counts(fire, at_firing, in_active, active, lengths)
    det["fired"] = np.asarray(fire.sum(1)).ravel().astype(np.int64)
    return det


def detection_from_scores(score: np.ndarray, active: np.ndarray, threshold: float) -> dict[str, np.ndarray]:
    """Detection AUROC and balanced accuracy ``[F]`` of any real window scores.

    ``score``, ``active`` ``[W, F]`` (dense); a window is predicted activating when its score is
    ``>= threshold``. AUROC by ranks (ties: half).
    """
    from scipy.stats import rankdata

    score = np.asarray(score, np.float64)
    active = np.asarray(active, bool)
    n_pos = active.sum(0)
    n_neg = active.shape[0] - n_pos
    ranks = rankdata(score, axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = ((ranks * active).sum(0) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
        pred = score >= threshold
        ba = ((pred & active).sum(0) / n_pos + (~pred & ~active).sum(0) / n_neg) / 2
    ok = (n_pos > 0) & (n_neg > 0)
    return {"auroc": np.where(ok, auc, np.nan), "balanced_accuracy": np.where(ok, ba, np.nan)}


def fuzzing_from_predictions(predicted: np.ndarray, fires: np.ndarray, window: np.ndarray) -> np.ndarray:
    """Fuzzing balanced accuracy ``[F]`` of any token predictions ``[N, F]`` (bool) against
    ``fires`` ``[N, F]`` (bool), counting only the tokens of each feature's activating windows."""
    predicted, fires = np.asarray(predicted, bool), np.asarray(fires, bool)
    W = int(window.max(initial=-1)) + 1
    win_fires = np.zeros((W, fires.shape[1]), bool)
    np.logical_or.at(win_fires, window, fires)
    inside = win_fires[window]
    P = (fires & inside).sum(0)
    N = (~fires & inside).sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        ba = ((predicted & fires & inside).sum(0) / P + (~predicted & ~fires & inside).sum(0) / N) / 2
    return np.where((P > 0) & (N > 0), ba, np.nan)

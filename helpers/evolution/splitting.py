"""Feature splitting between two SAE widths at one site: which narrow features split, persist, or are new.

A narrow SAE (width ``w``, the *parents* ``p``) and a wide one (``4w``, the *children* ``c``) run on the
same tokens. With ``#p``/``#c`` their firing counts (activation > 0) and ``#pc`` the tokens on which both
fire (the statistics pass's ``count``), in the project's convention (site A = narrow, site B = wide):

- ``necessity(p, c) = #pc / #c`` = P(p fires | c fires): how much of the child lives inside the parent;
- ``share(p, c) = #pc / #p`` = P(c fires | p fires): how much of the parent the child covers.

Definitions, at the thresholds of the module constants:

- **candidate child** of ``p``: an alive wide feature ``c`` (``#c > 0``) with ``#pc > 0`` and
  ``necessity(p, c) >= NECESSITY`` (0.8);
- **union recall** of ``p``: the exact share of ``p``'s firing tokens on which at least one of its
  candidate children fires (a union over tokens, counted from the recorded firings; it cannot come from
  the pairwise counts); NaN for a dead parent;
- ``p`` **splits** when it has ``>= MIN_CHILDREN`` (2) candidate children and union recall ``>= RECALL`` (0.8);
- ``p`` **persists** one-to-one as ``c`` when ``p`` and ``c`` are mutual top-1 by decoder cosine and the
  cosine is ``>= COSINE`` (0.9), both being alive (a persisting parent may also split; the two are not
  exclusive);
- a wide feature ``c`` is **new** when it is alive, is the candidate child of no parent (it fires mostly
  inside no narrow feature) and is not the one-to-one persistence of any parent.

Shares: split and persist are shares of the *alive* parents, new is a share of the *alive* wide features;
dead features (never fired) are left out of every denominator (a share with no alive feature is NaN).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import scipy.sparse as sp

from ..errors import ConfigError

__all__ = [
    "COSINE", "MIN_CHILDREN", "NECESSITY", "RECALL", "Children", "SplitResult", "exclusive_children",
    "persist_one_to_one",
    "pick_roots", "split_children", "split_pair", "splitting_tree", "union_recall",
]

log = logging.getLogger(__name__)

NECESSITY = 0.8  #: min P(parent fires | child fires) for a candidate child
RECALL = 0.8  #: min union recall of the candidate children for a split
MIN_CHILDREN = 2  #: min candidate children for a split
COSINE = 0.9  #: min decoder cosine of a one-to-one persistence
_ROWS = 256  # parents per block of the dense count
_TOKENS = 1 << 20  # tokens per block of the union count

Firings = tuple[Any, Any]


def _np(x: Any, dtype: Any = None) -> np.ndarray:
    """A numpy array from a numpy array, a list or a (CPU or GPU) torch tensor."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def _fraction(name: str, value: float) -> float:
    if not isinstance(value, (int, float, np.integer, np.floating)) or not 0.0 <= float(value) <= 1.0:
        raise ConfigError(f"{name} threshold {value!r} is outside [0, 1]: pass a value between 0 and 1")
    return float(value)


def _vector(name: str, x: Any, size: int | None = None) -> np.ndarray:
    v = _np(x)
    if v.ndim != 1 or (size is not None and v.size != size):
        want = f"[{size}]" if size is not None else "1-D"
        raise ConfigError(f"{name} has shape {list(v.shape)}, expected {want}: pass one value per feature")
    return v


@dataclass(frozen=True)
class Children:
    """Candidate children of every parent, CSR: parent ``p``'s are ``child[ptr[p]:ptr[p + 1]]``, ordered by
    necessity, then share (both decreasing), then child index."""

    ptr: np.ndarray  # [wa + 1] int64
    child: np.ndarray  # [n] int64 wide feature
    necessity: np.ndarray  # [n] float64 #pc / #c
    share: np.ndarray  # [n] float64 #pc / #p
    n_wide: int  # wb

    @property
    def n_parents(self) -> int:
        return int(self.ptr.size - 1)

    def of(self, parent: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(child, necessity, share)`` of one parent."""
        lo, hi = int(self.ptr[parent]), int(self.ptr[parent + 1])
        return self.child[lo:hi], self.necessity[lo:hi], self.share[lo:hi]

    def parents(self) -> np.ndarray:
        """``[n]`` the parent of every entry."""
        return np.repeat(np.arange(self.n_parents, dtype=np.int64), np.diff(self.ptr))


def split_children(count: Any, fired_a: Any, fired_b: Any, necessity: float = NECESSITY) -> Children:
    """Candidate children of every parent: alive ``c`` with ``#pc > 0`` and ``#pc / #c >= necessity``.

    Parameters
    ----------
    count : ``[wa, wb]`` exact co-firing counts (numpy or torch).
    fired_a, fired_b : ``[wa]``, ``[wb]`` firing counts.
    necessity : the threshold, in [0, 1].
    """
    necessity = _fraction("necessity", necessity)
    count = _np(count)
    if count.ndim != 2:
        raise ConfigError(f"count has shape {list(count.shape)}, expected [wa, wb]: pass the pair's co-firing counts")
    wa, wb = count.shape
    fa = _vector("fired_a", fired_a, wa).astype(np.float64)
    fb = _vector("fired_b", fired_b, wb).astype(np.float64)
    alive_b = fb > 0
    safe_b = np.where(alive_b, fb, 1.0)
    rows, cols, both = [np.zeros(0, dtype=np.int64)], [np.zeros(0, dtype=np.int64)], [np.zeros(0)]
    for lo in range(0, wa, _ROWS):
        block = count[lo:lo + _ROWS].astype(np.float64)
        r, c = np.nonzero((block > 0) & alive_b & (block / safe_b >= necessity))
        rows.append(r + lo)
        cols.append(c)
        both.append(block[r, c])
    r, c, pc = np.concatenate(rows), np.concatenate(cols), np.concatenate(both)
    n = pc / fb[c]
    with np.errstate(divide="ignore", invalid="ignore"):
        share = pc / fa[r]
    order = np.lexsort((c, -share, -n, r))
    ptr = np.zeros(wa + 1, dtype=np.int64)
    np.cumsum(np.bincount(r, minlength=wa), out=ptr[1:])
    return Children(ptr, c[order], n[order].astype(np.float64), share[order].astype(np.float64), int(wb))


def _incidence(name: str, firings: Firings, n_tokens: int, width: int) -> sp.csr_matrix:
    """Boolean ``[n_tokens, width]`` matrix of the firings ``(token, feature)`` (duplicates counted once)."""
    if not isinstance(firings, (tuple, list)) or len(firings) != 2:
        raise ConfigError(f"{name} must be a (token, feature) pair of arrays, as CodeCache.firings returns")
    tok, feat = _vector(f"{name} token", firings[0]), _vector(f"{name} feature", firings[1])
    if tok.size != feat.size:
        raise ConfigError(f"{name} has {tok.size} tokens but {feat.size} features: pass matching arrays")
    if tok.size and (tok.min() < 0 or tok.max() >= n_tokens):
        raise ConfigError(f"{name} has token indices outside [0, {n_tokens}): pass the pair's n_tokens")
    if feat.size and (feat.min() < 0 or feat.max() >= width):
        raise ConfigError(f"{name} has feature indices outside [0, {width}): pass the SAE's width")
    m = sp.csr_matrix((np.ones(tok.size, dtype=np.int32), (tok.astype(np.int64), feat.astype(np.int64))),
                      shape=(n_tokens, width))
    m.sum_duplicates()
    m.data[:] = 1
    return m


def union_recall(children: Children, firings_a: Firings, firings_b: Firings, n_tokens: int, wa: int, wb: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Exact union recall of every parent's candidate children.

    Returns
    -------
    covered : ``[wa]`` int64, the parent's firing tokens on which at least one candidate child fires.
    recall : ``[wa]`` float64, ``covered / #p`` (``#p`` counted from ``firings_a``); NaN for a dead parent.
    """
    if not isinstance(n_tokens, (int, np.integer)) or n_tokens < 1:
        raise ConfigError(f"n_tokens {n_tokens!r} must be a positive integer: pass the pair's counted tokens")
    if children.n_parents != wa or children.n_wide != wb:
        raise ConfigError(f"children are of a {children.n_parents}x{children.n_wide} pair, not {wa}x{wb}: "
                          "pass the split_children of this pair")
    a = _incidence("firings_a", firings_a, int(n_tokens), wa)
    b = _incidence("firings_b", firings_b, int(n_tokens), wb)
    to_parent = sp.csr_matrix((np.ones(children.child.size, dtype=np.int64), (children.child, children.parents())),
                              shape=(wb, wa))
    covered = np.zeros(wa, dtype=np.int64)
    for lo in range(0, int(n_tokens), _TOKENS):
        hit = (b[lo:lo + _TOKENS] @ to_parent).multiply(a[lo:lo + _TOKENS]).tocoo()
        hit.eliminate_zeros()
        covered += np.bincount(hit.col, minlength=wa)
    fired = np.bincount(a.indices, minlength=wa)
    with np.errstate(divide="ignore", invalid="ignore"):
        recall = np.where(fired > 0, covered / np.maximum(fired, 1), np.nan)
    return covered, recall


def persist_one_to_one(dir_a: Any, dir_b: Any, cosine: float = COSINE) -> np.ndarray:
    """``[wa]`` int64: the wide feature that parent ``p`` persists as (mutual top-1 by decoder cosine, cosine
    ``>= cosine``), -1 where none. Directions are normalised here (a zero row has cosine 0 with everything)."""
    cosine = _fraction("cosine", cosine)
    da, db = _np(dir_a, np.float64), _np(dir_b, np.float64)
    if da.ndim != 2 or db.ndim != 2 or da.shape[1] != db.shape[1]:
        raise ConfigError(f"decoder directions of shapes {list(da.shape)} and {list(db.shape)} do not match: "
                          "pass [wa, d] and [wb, d]")
    unit = lambda d: d / np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-12)  # noqa: E731
    da, db = unit(da), unit(db)
    wa, wb = da.shape[0], db.shape[0]
    row_best, row_cos = np.full(wa, -1, dtype=np.int64), np.full(wa, -np.inf)
    col_best, col_cos = np.full(wb, -1, dtype=np.int64), np.full(wb, -np.inf)
    for lo in range(0, wa, _ROWS):
        s = da[lo:lo + _ROWS] @ db.T
        if not s.size:
            continue
        arg = s.argmax(1)
        row_best[lo:lo + s.shape[0]], row_cos[lo:lo + s.shape[0]] = arg, s[np.arange(s.shape[0]), arg]
        carg = s.argmax(0)
        cval = s[carg, np.arange(wb)]
        better = cval > col_cos  # strict: the first parent keeps a tie, as a plain argmax would
        col_best[better], col_cos[better] = carg[better] + lo, cval[better]
    out = np.full(wa, -1, dtype=np.int64)
    p = np.nonzero(row_best >= 0)[0]
    ok = (col_best[row_best[p]] == p) & (row_cos[p] >= cosine)
    out[p[ok]] = row_best[p[ok]]
    return out


@dataclass(frozen=True)
class SplitResult:
    """Splitting of one (narrow, wide) pair; see the module docstring for the definitions."""

    children: Children
    n_children: np.ndarray  # [wa] int64 candidate children
    covered: np.ndarray  # [wa] int64 parent tokens covered by the union of its children
    recall: np.ndarray  # [wa] float64 union recall (NaN if dead)
    splits: np.ndarray  # [wa] bool
    persists: np.ndarray  # [wa] int64 one-to-one wide feature, -1 if none
    parent: np.ndarray  # [wb] int64 best-necessity parent (-1 if dead or co-fires with none)
    parent_necessity: np.ndarray  # [wb] float64 its necessity (NaN if none)
    is_new: np.ndarray  # [wb] bool
    alive_a: int
    alive_b: int
    n_split: int
    n_persist: int
    n_new: int
    split_share: float  # n_split / alive_a
    persist_share: float  # n_persist / alive_a
    new_share: float  # n_new / alive_b

    @property
    def widths(self) -> tuple[int, int]:
        return int(self.n_children.size), int(self.is_new.size)

    def shares_row(self, label: str | None = None) -> dict[str, Any]:
        """The row :func:`~helpers.notebook.width_plots.plot_split_shares` draws (shares in [0, 1])."""
        wa, wb = self.widths
        return {"label": label, "wa": wa, "wb": wb, "split": self.split_share, "persist": self.persist_share,
                "new": self.new_share, "n_split": self.n_split, "n_persist": self.n_persist, "n_new": self.n_new,
                "alive_a": self.alive_a, "alive_b": self.alive_b}


def _best_parent(count: np.ndarray, fired_b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    wa, wb = count.shape
    best, top = np.full(wb, -1, dtype=np.int64), np.zeros(wb, dtype=np.float64)
    for lo in range(0, wa, _ROWS):
        block = count[lo:lo + _ROWS].astype(np.float64)
        if not block.size:
            continue
        arg = block.argmax(0)
        val = block[arg, np.arange(wb)]
        better = val > top
        best[better], top[better] = arg[better] + lo, val[better]
    alive = fired_b > 0
    best[~alive] = -1
    with np.errstate(divide="ignore", invalid="ignore"):
        nec = np.where(best >= 0, top / np.where(alive, fired_b, 1.0), np.nan)
    return best, nec


def split_pair(count: Any, fired_a: Any, fired_b: Any, n_tokens: int, firings_a: Firings, firings_b: Firings,
               dir_a: Any, dir_b: Any, *, necessity: float = NECESSITY, recall: float = RECALL,
               min_children: int = MIN_CHILDREN, cosine: float = COSINE) -> SplitResult:
    """Splits, one-to-one persistences and new features of one (narrow, wide) pair, with their shares.

    Dead features (``fired == 0``) are excluded from the shares' denominators: split and persist are
    shares of the alive parents, new of the alive wide features (NaN when none is alive). Arguments are
    those of :func:`split_children`, :func:`union_recall` and :func:`persist_one_to_one`; thresholds in [0, 1].
    """
    recall_t = _fraction("recall", recall)
    if not isinstance(min_children, (int, np.integer)) or min_children < 1:
        raise ConfigError(f"min_children {min_children!r} must be an integer >= 1")
    count = _np(count)
    children = split_children(count, fired_a, fired_b, necessity)
    wa, wb = count.shape
    fa, fb = _np(fired_a).astype(np.float64), _np(fired_b).astype(np.float64)
    da, db = _np(dir_a), _np(dir_b)
    if da.ndim != 2 or db.ndim != 2 or da.shape[0] != wa or db.shape[0] != wb:
        raise ConfigError(f"decoder directions {list(da.shape)}, {list(db.shape)} do not match count [{wa}, {wb}]: "
                          "pass [wa, d] and [wb, d]")
    covered, rec = union_recall(children, firings_a, firings_b, n_tokens, wa, wb)
    alive_a, alive_b = fa > 0, fb > 0
    fired_here = np.bincount(_np(firings_a[1]).astype(np.int64), minlength=wa) > 0
    if (fired_here != alive_a).any():
        log.warning("firings_a and fired_a disagree on which parents fired (%d of %d features)",
                    int((fired_here != alive_a).sum()), wa)
    n_children = np.diff(children.ptr)
    with np.errstate(invalid="ignore"):
        splits = alive_a & (n_children >= min_children) & (rec >= recall_t)
    persists = persist_one_to_one(da, db, cosine)
    dead_pair = (persists >= 0) & ~(alive_a & alive_b[np.maximum(persists, 0)])
    persists[dead_pair] = -1
    has_parent = np.bincount(children.child, minlength=wb) > 0
    persisted = np.zeros(wb, dtype=bool)
    persisted[persists[persists >= 0]] = True
    is_new = alive_b & ~has_parent & ~persisted
    parent, parent_nec = _best_parent(count, fb)
    n_alive_a, n_alive_b = int(alive_a.sum()), int(alive_b.sum())
    n_split, n_persist, n_new = int(splits.sum()), int((persists >= 0).sum()), int(is_new.sum())
    share = lambda k, n: k / n if n else float("nan")  # noqa: E731
    return SplitResult(children, n_children, covered, rec, splits, persists, parent, parent_nec, is_new,
                       n_alive_a, n_alive_b, n_split, n_persist, n_new, share(n_split, n_alive_a),
                       share(n_persist, n_alive_a), share(n_new, n_alive_b))


def exclusive_children(result: SplitResult) -> Children:
    """The candidate children of ``result`` kept under their best parent only (the one they fire inside
    most, :attr:`SplitResult.parent`), so that no wide feature hangs under two parents; each parent's ordered
    by share (how much of it the child covers), then child index."""
    ch = result.children
    par = ch.parents()
    keep = result.parent[ch.child] == par
    r, c, nec, share = par[keep], ch.child[keep], ch.necessity[keep], ch.share[keep]
    order = np.lexsort((c, -share, r))
    ptr = np.zeros(ch.n_parents + 1, dtype=np.int64)
    np.cumsum(np.bincount(r, minlength=ch.n_parents), out=ptr[1:])
    return Children(ptr, c[order], nec[order], share[order], ch.n_wide)


def splitting_tree(pairs: Sequence[SplitResult], root: int, max_children: int = 4,
                   exclusive: bool = False) -> dict[str, Any]:
    """The tree of a narrowest-width feature's candidate children through consecutive width pairs.

    ``pairs[i]`` is the split of width ``i`` into width ``i + 1``. Nodes are
    ``{"width_index", "feature", "necessity", "share", "children"}`` (the root's necessity and share are
    None), children ordered by necessity then share (decreasing), at most ``max_children`` per node.
    ``exclusive``: each child under its best parent only, ordered by share (:func:`exclusive_children`).
    """
    pairs = [pairs] if isinstance(pairs, SplitResult) else list(pairs)
    if not pairs:
        raise ConfigError("splitting_tree needs at least one width pair")
    if not isinstance(max_children, (int, np.integer)) or max_children < 1:
        raise ConfigError(f"max_children {max_children!r} must be an integer >= 1")
    for i in range(len(pairs) - 1):
        if pairs[i].widths[1] != pairs[i + 1].widths[0]:
            raise ConfigError(f"width pairs {i} and {i + 1} are not consecutive ({pairs[i].widths} then "
                              f"{pairs[i + 1].widths}): pass w->4w, then 4w->16w")
    if not 0 <= int(root) < pairs[0].widths[0]:
        raise ConfigError(f"root {root} is outside [0, {pairs[0].widths[0]}): pass a feature of the narrowest width")

    lists = [exclusive_children(p) if exclusive else p.children for p in pairs]

    def node(i: int, f: int, nec: float | None, share: float | None) -> dict[str, Any]:
        kids = []
        if i < len(pairs):
            c, n, s = lists[i].of(f)
            kids = [node(i + 1, int(c[k]), float(n[k]), float(s[k])) for k in range(min(max_children, c.size))]
        return {"width_index": i, "feature": f, "necessity": nec, "share": share, "children": kids}

    return node(0, int(root), None, None)


def pick_roots(pair_results: SplitResult | Sequence[SplitResult], n: int = 3, score: Any = None) -> list[int]:
    """The ``n`` parents of the first pair whose splits are clearest: those that split, by union recall,
    then number of candidate children (both decreasing), then feature index. ``score`` (``[wa]``, e.g. the
    union recall of each parent's :func:`exclusive_children`): rank by it instead, among the parents that
    split and keep at least ``MIN_CHILDREN`` exclusive children."""
    first = pair_results if isinstance(pair_results, SplitResult) else pair_results[0]
    split = np.nonzero(first.splits)[0]
    if score is not None:
        score = _vector("score", score, first.splits.size).astype(np.float64)
        kids = np.diff(exclusive_children(first).ptr)
        split = split[kids[split] >= MIN_CHILDREN]
        order = np.lexsort((split, -kids[split], -np.nan_to_num(score[split], nan=-1.0)))
        return [int(f) for f in split[order][:max(int(n), 0)]]
    order = np.lexsort((split, -first.n_children[split], -first.recall[split]))
    return [int(f) for f in split[order][:max(int(n), 0)]]

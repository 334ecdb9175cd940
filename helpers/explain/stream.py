"""The text side of explanations: the pass's token stream, the keys a rule can test on each
token, the held-out split and the scoring windows.

**Token stream.** The counted tokens of the statistics pass in stream order: the corpus's
documents in order, each tokenized without special tokens, cut at ``token_budget`` (exactly the
tokens the recorded codes hold, :mod:`helpers.stats.codes`).

**Keys.** A rule tests one kind of key on each token (:data:`KINDS`):

- ``token``: the token itself;
- ``bigram``: the pair (previous token, token) of the same document;
- ``previous``: the token just before it in the same document;
- ``title``: a word of its document's title (lower-cased letters and digits, at least 3
  characters, not a stop word); a token has as many title keys as its title has words.

Each kind is a sparse membership matrix ``[N tokens, K keys]`` (:class:`KeySpace`).

**Held-out split.** By document: document ``d`` is held out when ``d % heldout_every ==
heldout_every - 1`` (default: every fifth document, a fifth of the text). Explanations are
chosen on the other documents only; scores are measured on the held-out ones only.

**Windows.** The held-out tokens are cut into windows of ``window`` consecutive tokens of one
document (``pos // window``; the last window of a document may be shorter), as delphi scores
windows of 32 tokens.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

KINDS = ("token", "bigram", "previous", "title")
HELDOUT_EVERY = 5
WINDOW = 32
STOP_WORDS = frozenset(
    "the and for with from that this are was were his her its their not but you your our who whom "
    "which what when where why how all any can has have had into onto over under than then them they "
    "there these those also about after before been being between both each few more most other "
    "some such only own same very will just".split())


@dataclass
class TokenStream:
    """``ids``, ``doc``, ``pos`` ``[N]`` (int64) of every counted token; ``titles[d]`` of document ``d``."""

    ids: np.ndarray
    doc: np.ndarray
    pos: np.ndarray
    titles: list[str]

    @property
    def n(self) -> int:
        return int(self.ids.size)

    def subset(self, mask: np.ndarray) -> "TokenStream":
        return TokenStream(self.ids[mask], self.doc[mask], self.pos[mask], self.titles)


def token_stream(documents, tokenizer, token_budget: int | None = None) -> TokenStream:
    """The counted tokens of the pass over ``documents`` (see the module docstring)."""
    from ..subject.corpus import tokenize_documents

    ids, doc, pos = [], [], []
    left = token_budget
    for d, toks in tokenize_documents(list(documents), tokenizer):
        toks = toks if left is None else toks[:left]
        ids.append(np.asarray(toks, dtype=np.int64))
        doc.append(np.full(len(toks), d.doc_id, dtype=np.int64))
        pos.append(np.arange(len(toks), dtype=np.int64))
        if left is not None:
            left -= len(toks)
            if left <= 0:
                break
    n_docs = max((d.doc_id for d in documents), default=-1) + 1
    titles = [""] * n_docs
    for d in documents:
        titles[d.doc_id] = d.title
    cat = (lambda a: np.concatenate(a) if a else np.zeros(0, np.int64))
    return TokenStream(cat(ids), cat(doc), cat(pos), titles)


def heldout_mask(doc: np.ndarray, every: int = HELDOUT_EVERY) -> np.ndarray:
    """Whether each token's document is held out (``doc % every == every - 1``)."""
    return np.asarray(doc) % every == every - 1


def windows(stream: TokenStream, window: int = WINDOW) -> np.ndarray:
    """``[N]`` window index 0..W-1 of each token: ``window`` consecutive tokens of one document."""
    if stream.n == 0:
        return np.zeros(0, np.int64)
    key = stream.doc * (1 << 32) + stream.pos // window
    _, index = np.unique(key, return_inverse=True)
    return index.reshape(-1).astype(np.int64)


def title_words(title: str) -> list[str]:
    """The words of a title a rule can name (see the module docstring), in order, once each."""
    words = [w for w in re.findall(r"[a-z0-9]+", title.lower()) if len(w) >= 3 and w not in STOP_WORDS]
    return list(dict.fromkeys(words))


@dataclass
class KeySpace:
    """One kind of key: ``matrix`` ``[N, K]`` (1 where token n has key k), and what each key is:
    ``tokens`` ``[K, 2]`` (previous, token) ids, -1 where unused, or ``words`` ``[K]`` (title)."""

    kind: str
    matrix: sp.csr_matrix
    tokens: np.ndarray | None = None
    words: list[str] | None = None

    @property
    def n_keys(self) -> int:
        return int(self.matrix.shape[1])


def previous_ids(stream: TokenStream) -> np.ndarray:
    """``[N]`` id of the previous token of the same document, -1 at a document's first token."""
    prev = np.full(stream.n, -1, np.int64)
    if stream.n > 1:
        same = (stream.doc[1:] == stream.doc[:-1]) & (stream.pos[1:] == stream.pos[:-1] + 1)
        prev[1:] = np.where(same, stream.ids[:-1], -1)
    return prev


def _single(kind: str, key: np.ndarray, n_keys: int, tokens: np.ndarray) -> KeySpace:
    rows = np.flatnonzero(key >= 0)
    m = sp.csr_matrix((np.ones(rows.size, np.float32), (rows, key[rows])), shape=(key.size, n_keys))
    return KeySpace(kind, m, tokens=tokens)


def key_spaces(stream: TokenStream, vocab: int | None = None) -> dict[str, KeySpace]:
    """Every kind of :data:`KINDS` over ``stream`` (keys are numbered over the whole stream, so
    that training and held-out tokens share them)."""
    n = stream.n
    vocab = int(max(stream.ids.max(initial=-1) + 1, vocab or 0))
    prev = previous_ids(stream)
    ids = np.arange(vocab, dtype=np.int64)
    out = {"token": _single("token", stream.ids, vocab, np.stack([np.full(vocab, -1), ids], 1)),
           "previous": _single("previous", prev, vocab, np.stack([ids, np.full(vocab, -1)], 1))}
    has = prev >= 0
    pairs = prev[has] * vocab + stream.ids[has]
    uniq, inv = np.unique(pairs, return_inverse=True)
    bigram = np.full(n, -1, np.int64)
    bigram[has] = inv.reshape(-1)
    out["bigram"] = _single("bigram", bigram, uniq.size, np.stack([uniq // vocab, uniq % vocab], 1))
    vocab_words: dict[str, int] = {}
    d_rows, d_cols = [], []
    for d, title in enumerate(stream.titles):
        for w in title_words(title):
            d_rows.append(d)
            d_cols.append(vocab_words.setdefault(w, len(vocab_words)))
    per_doc = sp.csr_matrix((np.ones(len(d_rows), np.float32), (d_rows, d_cols)),
                            shape=(len(stream.titles), len(vocab_words)))
    out["title"] = KeySpace("title", per_doc[stream.doc] if n else sp.csr_matrix((0, len(vocab_words))),
                            words=list(vocab_words))
    return out


def quote(text: str) -> str:
    """``text`` between double quotes without its surrounding spaces (whitespace alone shown visibly,
    ``"\\n"`` or ``"␣"``: :func:`helpers.subject.token_text.visible`)."""
    from ..subject.token_text import visible

    return f'"{visible(text)}"'


def key_text(space: KeySpace, key: int, strings) -> str:
    """How key ``key`` of ``space`` reads, quoted (``strings[i]``: token ``i`` as in running text)."""
    if space.kind == "title":
        return quote(space.words[key])
    prev, tok = (int(x) for x in space.tokens[key])
    if space.kind == "token":
        return quote(strings[tok])
    if space.kind == "previous":
        return quote(strings[prev])
    return quote(strings[prev] + strings[tok])


RULE_WORDS = {"token": "on {}", "bigram": "on the last token of {}", "previous": "just after {}",
              "title": "in documents whose title has {}"}


def rule_text(space: KeySpace, keys, strings) -> str:
    """The rule of ``keys`` (a set of keys of one kind) in words, e.g. ``on "river" or "lake"``."""
    keys = [int(k) for k in keys if k >= 0]
    if not keys:
        return ""
    return RULE_WORDS[space.kind].format(" or ".join(key_text(space, k, strings) for k in keys))

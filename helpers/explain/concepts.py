"""Concept families and their mentions in the pass's token stream (issue 18, completeness).

**Families** are data: one JSON file per family in ``concept_lists/`` (see its README for the
sources), each ``{member: [surface forms]}`` with ``exclude``, longer phrases that contain a form
but are not a mention (``New Mexico`` is not ``Mexico``). :func:`concept_families` lists them,
:func:`load_family` reads one.

**Mentions.** A mention is a case-sensitive whole-word match of a surface form in a document's
text: no letter, digit or underscore just before or after it (``Mayday`` is not ``May``, ``May's``
is). At each position the longest form (or exclusion) wins; a match of an exclusion is dropped.
Its **tokens** are the stream's tokens whose characters overlap the match, found with the
tokenizer's offset mapping (a fast tokenizer). Characters, not token ids, because one word
tokenizes differently by context (a leading space or not, merged with punctuation, at a document's
start), so searching for a form's id sequence would miss mentions and could match across word
boundaries. A mention whose tokens run past the pass's token budget is left out.

**Frequency** of a member: its mentions per million tokens of the stream.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from importlib import resources
from typing import Sequence

import numpy as np
import scipy.sparse as sp

from ..errors import ConfigError

LISTS = "concept_lists"


@dataclass(frozen=True)
class ConceptFamily:
    """``members``: ``{member: (surface forms, ...)}``; ``exclude``: phrases that are no mention."""

    name: str
    members: dict[str, tuple[str, ...]]
    exclude: tuple[str, ...] = ()
    description: str = ""
    source: str = ""

    def __post_init__(self) -> None:
        members = {str(m): tuple(f) for m, f in dict(self.members).items()}
        if not members or any(not forms or not all(isinstance(s, str) and s.strip() for s in forms)
                              for forms in members.values()):
            raise ConfigError(f"concept family {self.name!r} needs at least one member, each with at least one "
                              "non-empty surface form, e.g. {'January': ['January']}")
        object.__setattr__(self, "members", members)
        object.__setattr__(self, "exclude", tuple(self.exclude))

    @property
    def names(self) -> list[str]:
        return list(self.members)

    def pattern(self) -> tuple[re.Pattern, dict[str, int]]:
        """The regular expression of every form and exclusion (longest first, whole words), and the
        member index of each form (-1: an exclusion)."""
        index: dict[str, int] = {e: -1 for e in self.exclude}
        for i, forms in enumerate(self.members.values()):
            for form in forms:
                index[form] = i  # a form of a member wins over the same text as an exclusion
        alternatives = "|".join(re.escape(f) for f in sorted(index, key=lambda f: (-len(f), f)))
        return re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)"), index


def concept_families() -> list[str]:
    """The names of the families shipped in ``concept_lists/``."""
    folder = resources.files(__package__) / LISTS
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".json"))


def load_family(family: str | ConceptFamily) -> ConceptFamily:
    """A shipped family by name (or ``family`` itself); an unknown name is a one-line ConfigError."""
    if isinstance(family, ConceptFamily):
        return family
    known = concept_families()
    if family not in known:
        raise ConfigError(f"unknown concept family {family!r}: choose one of {known} or give a ConceptFamily")
    data = json.loads((resources.files(__package__) / LISTS / f"{family}.json").read_text(encoding="utf-8"))
    return ConceptFamily(family, data["members"], tuple(data.get("exclude", ())), data.get("description", ""),
                         data.get("source", ""))


@dataclass
class Mentions:
    """The mentions of one family's members in a stream of ``n_tokens`` tokens.

    ``member`` ``[E]``: each mention's member (index into ``family.names``); ``tokens`` ``[E, N]``
    (csr, 1 where token n belongs to mention e); ``doc``, ``start``, ``end`` ``[E]``: the document
    and the characters matched; ``text`` ``[E]``: the matched form.
    """

    family: ConceptFamily
    member: np.ndarray
    tokens: sp.csr_matrix
    n_tokens: int
    doc: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    start: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    end: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    text: list[str] = field(default_factory=list)

    @property
    def counts(self) -> np.ndarray:
        """``[M]`` mentions of each member."""
        return np.bincount(self.member, minlength=len(self.family.members)).astype(np.int64)

    @property
    def frequency(self) -> np.ndarray:
        """``[M]`` mentions of each member per million tokens."""
        return self.counts * 1e6 / max(self.n_tokens, 1)

    def by_member(self) -> sp.csr_matrix:
        """``[M, E]``: 1 where mention e is of member m."""
        e = self.member.size
        return sp.csr_matrix((np.ones(e, np.float32), (self.member, np.arange(e))),
                             shape=(len(self.family.members), e))

    def member_tokens(self) -> sp.csr_matrix:
        """``[M, N]``: 1 where token n belongs to a mention of member m."""
        m = (self.by_member() @ self.tokens).tocsr()
        m.data[:] = 1
        return m


def _offsets(tokenizer, texts: list[str]) -> tuple[list[list[int]], list[list[tuple[int, int]]]]:
    if not getattr(tokenizer, "is_fast", True):
        raise ConfigError(f"finding mentions needs a fast tokenizer (character offsets); {type(tokenizer).__name__} "
                          "is not: load the model's tokenizer with use_fast=True")
    enc = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
    return enc["input_ids"], enc["offset_mapping"]


def find_mentions(family: str | ConceptFamily, stream, documents: Sequence, tokenizer,
                  require: bool = True) -> Mentions:
    """Every mention of ``family``'s members in ``stream`` (:func:`~.stream.token_stream` of
    ``documents`` with ``tokenizer``), see the module docstring. ``require``: refuse (ConfigError)
    a family none of whose members occurs."""
    family = load_family(family)
    pattern, index = family.pattern()
    by_id = {d.doc_id: d for d in documents}
    doc_ids, first, count = np.unique(stream.doc, return_index=True, return_counts=True)
    found = []  # (stream index of the document's first token, its tokens in the stream, document, matches)
    for d, lo, n in zip(doc_ids.tolist(), first.tolist(), count.tolist()):
        matches = [(m.start(), m.end(), index[m.group()], m.group()) for m in pattern.finditer(by_id[d].text)]
        matches = [m for m in matches if m[2] >= 0]
        if matches:
            found.append((lo, n, d, matches))
    rows, cols, member, doc, start, end, text = [], [], [], [], [], [], []
    for chunk in range(0, len(found), 256):
        part = found[chunk:chunk + 256]
        ids, offsets = _offsets(tokenizer, [by_id[d].text for _, _, d, _ in part])
        for (lo, n, d, matches), tok, off in zip(part, ids, offsets):
            if list(tok[:n]) != stream.ids[lo:lo + n].tolist():
                raise ConfigError(f"document {d} tokenizes otherwise than in the stream: give the tokenizer the "
                                  "stream was made with")
            off = np.asarray(off, dtype=np.int64).reshape(-1, 2)
            for s, e, m, form in matches:
                covering = np.flatnonzero((off[:, 0] < e) & (off[:, 1] > s))
                if covering.size == 0 or covering[-1] >= n:
                    continue  # (partly) past the token budget: the stream cut the document
                rows.extend([len(member)] * covering.size)
                cols.extend((lo + covering).tolist())
                member.append(m), doc.append(d), start.append(s), end.append(e), text.append(form)
    tokens = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(len(member), stream.n))
    out = Mentions(family, np.asarray(member, np.int64), tokens, stream.n, np.asarray(doc, np.int64),
                   np.asarray(start, np.int64), np.asarray(end, np.int64), text)
    if require and not member:
        some = ", ".join(family.names[:3]) + (", ..." if len(family.members) > 3 else "")
        raise ConfigError(f"none of the {len(family.members)} members of concept family {family.name!r} ({some}) "
                          f"occurs in the {stream.n} tokens of the corpus: choose a family the corpus mentions "
                          f"(shipped: {concept_families()}) or a larger token budget")
    return out

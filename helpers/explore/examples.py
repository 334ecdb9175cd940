"""A feature's examples in their context, and short labels made from them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ConfigError


def examples(
    top: dict[str, np.ndarray],
    site_index: int,
    feature: int,
    documents,
    tokenizer,
    kind: str = "hi",
    n: int = 5,
    context_tokens: int = 12,
    source_text: bool = False,
) -> list[dict[str, Any]]:
    """The feature's top (``kind="hi"``) or lowest non-zero (``"lo"``) examples with context.

    ``source_text=True``: context as written in the document (see :func:`token_context`), for display.
    """
    from ..subject.corpus import token_context

    if kind not in ("hi", "lo"):
        raise ConfigError(f"kind must be 'hi' or 'lo', not {kind!r}")
    values = top[f"{kind}_values"][site_index, feature]
    docs = top[f"{kind}_doc"][site_index, feature]
    pos = top[f"{kind}_pos"][site_index, feature]
    by_id = {d.doc_id: d for d in documents}
    rows = []
    for v, d, p in zip(values[:n], docs[:n], pos[:n]):
        if d < 0:
            break
        left, token, right = token_context(tokenizer, by_id[int(d)], int(p), context_tokens, source_text)
        rows.append({"activation": float(v), "document": by_id[int(d)].title,
                     "left": left, "token": token, "right": right})
    return rows


def top_tokens(top: dict[str, np.ndarray], site_index: int, feature: int, documents, tokenizer, n: int = 5) -> str:
    """A short label for a feature: the tokens of its highest examples, most frequent first."""
    from collections import Counter

    rows = examples(top, site_index, feature, documents, tokenizer, "hi", n=len(top["hi_doc"][0, 0]),
                    context_tokens=0)
    from ..subject.token_text import visible

    counts = Counter(visible(r["token"]) for r in rows)
    return ", ".join(t for t, _ in counts.most_common(n)) or "(never fired)"


def topical_features(top: dict[str, np.ndarray], site_index: int, documents, tokenizer, n: int = 3,
                     min_docs: int = 3, max_docs: int = 10, max_act: np.ndarray | None = None) -> list[int]:
    """Features whose top examples come from a few distinct documents and whose top token is a
    word (not punctuation or a short function word): candidates for topic steering.

    Ordered by maximum activation (``max_act`` ``[F]``) when given, else by feature index.
    """
    docs = top["hi_doc"][site_index]
    n_docs = np.array([len({int(d) for d in row if d >= 0}) for row in docs])
    ok = np.flatnonzero((n_docs >= min_docs) & (n_docs <= max_docs))
    if max_act is not None:
        ok = ok[np.argsort(-max_act[ok], kind="stable")]
    chosen = []
    for f in ok:
        label = top_tokens(top, site_index, int(f), documents, tokenizer, n=1).lstrip("#")
        if label.isalpha() and len(label) > 3:
            chosen.append(int(f))
        if len(chosen) == n:
            break
    return chosen


@dataclass(frozen=True)
class FeatureText:
    """The corpus side of every feature: its examples in context and a label made of their
    tokens, from the pass's ``top_examples``, the corpus and the tokenizer.

    ``site`` is an index into ``sites`` or a site's name.
    """

    top: dict[str, np.ndarray]
    documents: list
    tokenizer: Any
    sites: tuple[str, ...] = ()

    def site_index(self, site: int | str) -> int:
        if isinstance(site, str):
            if site not in self.sites:
                raise ConfigError(f"unknown site {site!r}: the experiment's sites are {list(self.sites)}")
            return self.sites.index(site)
        return int(site)

    def label(self, site: int | str, feature: int, n: int = 5) -> str:
        """The tokens of the feature's highest examples, most frequent first (:func:`top_tokens`)."""
        return top_tokens(self.top, self.site_index(site), feature, self.documents, self.tokenizer, n=n)

    def examples(self, site: int | str, feature: int, n: int = 5, **options) -> list[dict[str, Any]]:
        """The feature's examples with their context (:func:`examples`; same options)."""
        return examples(self.top, self.site_index(site), feature, self.documents, self.tokenizer, n=n,
                        **options)


def feature_text(exp, tokenizer=None) -> FeatureText:
    """:class:`FeatureText` of the experiment: its ``top_examples``, corpus and tokenizer
    (``tokenizer``: one already loaded, e.g. ``subject.tokenizer``; else the experiment's)."""
    from ..stats.artefacts import load_artefact
    from ..subject.corpus import stream_documents
    from ..subject.models import load_tokenizer

    top = load_artefact(exp, "top_examples")
    documents = stream_documents(exp)
    tokenizer = load_tokenizer(exp) if tokenizer is None else tokenizer
    return FeatureText(top, documents, tokenizer, tuple(exp.sites))

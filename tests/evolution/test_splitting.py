import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from helpers.errors import ConfigError  # noqa: E402
from helpers.evolution.splitting import (Children, exclusive_children, persist_one_to_one, pick_roots,  # noqa: E402
                                         split_children, split_pair, splitting_tree, union_recall)
from helpers.notebook.width_plots import plot_split_shares, plot_splitting_tree  # noqa: E402


def fire(n_tokens, width, spans):
    """Boolean [T, width] firings: ``spans[f]`` is an iterable of the tokens feature f fires on."""
    m = np.zeros((n_tokens, width), dtype=bool)
    for f, tokens in spans.items():
        m[list(tokens), f] = True
    return m


def stats(a, b):
    """What the statistics pass and the codes give for token x feature firings a [T, wa], b [T, wb]."""
    count = a.T.astype(np.int64) @ b.astype(np.int64)
    return dict(count=count, fired_a=a.sum(0), fired_b=b.sum(0), n_tokens=a.shape[0],
                firings_a=np.nonzero(a), firings_b=np.nonzero(b))


def random_dirs(rng, n, d=64):
    x = rng.standard_normal((n, d))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def run(a, b, dir_a=None, dir_b=None, seed=0, **kw):
    rng = np.random.default_rng(seed)
    dir_a = random_dirs(rng, a.shape[1]) if dir_a is None else dir_a
    dir_b = random_dirs(rng, b.shape[1]) if dir_b is None else dir_b
    return split_pair(**stats(a, b), dir_a=dir_a, dir_b=dir_b, **kw)


def test_parent_that_is_the_or_of_two_children_splits_and_no_other_does():
    rng = np.random.default_rng(0)
    T, wa, wb = 400, 6, 20
    a = rng.random((T, wa)) < 0.05  # noise
    b = rng.random((T, wb)) < 0.05
    a[:, :3], b[:, [3, 7, 10, 12, 13]] = False, False
    parent = rng.choice(T, 100, replace=False)
    a[parent, 0] = True
    b[parent[:50], 3], b[parent[50:], 7] = True, True  # parent 0 = child 3 OR child 7, disjoint halves
    other = np.setdiff1d(np.arange(T), parent)
    a[other[:40], 1] = True
    b[other[:40], 10] = True  # one full child only: no split
    a[other[40:100], 2] = True
    b[other[40:50], 12], b[other[50:60], 13] = True, True  # two children, recall 1/3: no split
    res = run(a, b)
    assert np.nonzero(res.splits)[0].tolist() == [0]
    child, nec, share = res.children.of(0)
    assert sorted(child.tolist()) == [3, 7] and nec.tolist() == [1.0, 1.0] and share.tolist() == [0.5, 0.5]
    assert res.recall[0] == 1.0 and res.covered[0] == 100 and res.n_children[0] == 2
    assert res.n_children[1] == 1 and res.recall[1] == 1.0
    assert res.n_children[2] == 2 and res.recall[2] == pytest.approx(1 / 3)
    assert res.parent[[3, 7, 10, 12]].tolist() == [0, 0, 1, 2]


def brute_recall(children, a, b):
    out = []
    for p in range(a.shape[1]):
        kids = children.of(p)[0]
        toks = [t for t in range(a.shape[0]) if a[t, p]]
        out.append(sum(any(b[t, c] for c in kids) for t in toks))
    return np.array(out)


def manual_children(lists, wb):
    ptr = np.cumsum([0] + [len(v) for v in lists])
    child = np.array([c for v in lists for c in v], dtype=np.int64)
    ones = np.ones(child.size)
    return Children(ptr, child, ones, ones, wb)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_union_recall_equals_brute_force(seed):
    rng = np.random.default_rng(seed)
    T, wa, wb = 300, 7, 25
    a, b = rng.random((T, wa)) < 0.15, rng.random((T, wb)) < 0.1
    a[:, 6] = False  # a dead parent
    s = stats(a, b)
    for children in (split_children(s["count"], s["fired_a"], s["fired_b"], necessity=0.2),
                     manual_children([[1, 2, 3], [2, 3], [], [0, 4, 5, 6, 7], [24], [1, 24, 9], [1]], wb)):
        covered, recall = union_recall(children, s["firings_a"], s["firings_b"], T, wa, wb)
        want = brute_recall(children, a, b)
        np.testing.assert_array_equal(covered, want)
        np.testing.assert_allclose(recall[:6], want[:6] / a.sum(0)[:6])
        assert np.isnan(recall[6])
    # overlapping children: a pairwise sum would count the shared tokens twice
    a, b = fire(10, 1, {0: range(10)}), fire(10, 2, {0: range(0, 6), 1: range(3, 8)})
    covered, recall = union_recall(manual_children([[0, 1]], 2), np.nonzero(a), np.nonzero(b), 10, 1, 2)
    assert covered.tolist() == [8] and recall.tolist() == [0.8]


def test_split_children_csr_and_torch_inputs():
    count = np.array([[9, 1, 0, 4], [0, 8, 0, 4], [0, 0, 0, 0]])
    fired_a, fired_b = np.array([20, 10, 0]), np.array([10, 10, 0, 5])
    ch = split_children(torch.tensor(count), torch.tensor(fired_a), torch.tensor(fired_b), necessity=0.8)
    assert ch.ptr.tolist() == [0, 2, 4, 4]
    assert ch.child.tolist() == [0, 3, 1, 3]  # by necessity (0.9 > 0.8), then (0.8, 0.8) by share
    np.testing.assert_allclose(ch.necessity, [0.9, 0.8, 0.8, 0.8])
    np.testing.assert_allclose(ch.share, [0.45, 0.2, 0.8, 0.4])


def unit(*pairs, d=8):
    v = np.zeros(d)
    for i, x in pairs:
        v[i] = x
    return v


def test_persist_one_to_one():
    c95, c85 = np.sqrt(1 - 0.95 ** 2), np.sqrt(1 - 0.85 ** 2)
    dir_a = np.stack([unit((0, 1)), unit((1, 1)), unit((2, 0.92), (3, np.sqrt(1 - 0.92 ** 2))),
                      unit((2, 0.98), (4, np.sqrt(1 - 0.98 ** 2)))])
    dir_b = np.stack([unit((0, 0.95), (5, c95)), unit((1, 0.85), (6, c85)), unit((2, 1)), unit((7, 1))])
    # 0 -> 0 at 0.95; 1 -> 1 mutual but 0.85; 2's top-1 is b2 whose top-1 is 3 (not mutual); 3 -> 2 at 0.98
    assert persist_one_to_one(dir_a, dir_b).tolist() == [0, -1, -1, 2]
    assert persist_one_to_one(torch.tensor(dir_a), torch.tensor(dir_b), cosine=0.8).tolist() == [0, 1, -1, 2]


def hand_case():
    """wa=4 (3 dead), wb=8 (6 dead); see test_new_features_and_shares_by_hand."""
    a = fire(100, 4, {0: range(0, 20), 1: range(20, 40), 2: range(40, 50)})
    b = fire(100, 8, {0: range(0, 10), 1: range(10, 20), 2: range(20, 40), 3: range(60, 70),
                      4: [*range(40, 45), *range(70, 80)], 5: range(85, 90), 7: [*range(0, 5), *range(90, 100)]})
    rng = np.random.default_rng(5)
    dir_a, dir_b = random_dirs(rng, 4), random_dirs(rng, 8)
    dir_b[2], dir_b[5], dir_b[6] = dir_a[1], dir_a[2], dir_a[3]  # 1 -> 2, 2 -> 5 persist; 3 -> 6 both dead
    return a, b, dir_a, dir_b


def test_new_features_and_shares_by_hand():
    res = run(*hand_case())
    assert np.nonzero(res.splits)[0].tolist() == [0]
    assert res.persists.tolist() == [-1, 2, 5, -1]  # the dead pair 3 -> 6 does not count
    # 0, 1: inside parent 0; 2: inside parent 1 (and persists); 5 persists; 6 dead; 3, 4 (5/15), 7 (5/15): new
    assert np.nonzero(res.is_new)[0].tolist() == [3, 4, 7]
    assert (res.alive_a, res.alive_b, res.n_split, res.n_persist, res.n_new) == (3, 7, 1, 2, 3)
    assert (res.split_share, res.persist_share, res.new_share) == (pytest.approx(1 / 3), pytest.approx(2 / 3),
                                                                   pytest.approx(3 / 7))
    assert res.parent.tolist() == [0, 0, 1, -1, 2, -1, -1, 0]
    np.testing.assert_allclose(res.parent_necessity, [1, 1, 1, np.nan, 1 / 3, np.nan, np.nan, 1 / 3])
    row = res.shares_row()
    assert (row["wa"], row["wb"], row["split"], row["new"]) == (4, 8, res.split_share, res.new_share)


def test_dead_features_are_left_out_of_the_denominators():
    a, b, dir_a, dir_b = hand_case()
    base = run(a, b, dir_a, dir_b)
    assert np.isnan(base.recall[3]) and not base.splits[3] and not base.is_new[6]
    rng = np.random.default_rng(9)
    a5 = np.concatenate([a, np.zeros((100, 5), bool)], 1)
    b5 = np.concatenate([b, np.zeros((100, 5), bool)], 1)
    more = run(a5, b5, np.concatenate([dir_a, random_dirs(rng, 5)]), np.concatenate([dir_b, random_dirs(rng, 5)]))
    assert (more.alive_a, more.alive_b) == (3, 7)
    assert (more.split_share, more.persist_share, more.new_share) == (base.split_share, base.persist_share,
                                                                      base.new_share)
    nothing = run(np.zeros((10, 2), bool), np.zeros((10, 3), bool))
    assert (nothing.alive_a, nothing.alive_b) == (0, 0) and np.isnan(nothing.split_share)
    assert np.isnan(nothing.new_share) and not nothing.splits.any()


def test_config_errors():
    a, b, dir_a, dir_b = hand_case()
    s = stats(a, b)
    good = dict(s, dir_a=dir_a, dir_b=dir_b)
    bad = [dict(good, fired_a=s["fired_a"][:3]), dict(good, fired_b=s["fired_b"][:7]),
           dict(good, count=s["count"][:, :5]), dict(good, dir_b=dir_b[:, :10]), dict(good, dir_a=dir_a[:2]),
           dict(good, necessity=1.5), dict(good, recall=-0.1), dict(good, cosine=2.0), dict(good, min_children=0),
           dict(good, firings_a=(s["firings_a"][0], s["firings_a"][1] + 4)), dict(good, n_tokens=50),
           dict(good, firings_b=(s["firings_b"][0][:3], s["firings_b"][1]))]
    for kw in bad:
        with pytest.raises(ConfigError) as err:
            split_pair(**kw)
        assert "\n" not in str(err.value)
    with pytest.raises(ConfigError):
        split_children(s["count"], s["fired_a"], s["fired_b"], necessity=-0.5)
    with pytest.raises(ConfigError):
        persist_one_to_one(dir_a, dir_b, cosine=1.1)
    res = split_pair(**good)
    with pytest.raises(ConfigError):
        splitting_tree([res, res], 0)  # 4x8 then 4x8 are not consecutive
    with pytest.raises(ConfigError):
        splitting_tree([res], 4)


def three_widths():
    """Widths 2 -> 4 -> 8 on 100 tokens; width-0 feature 0 splits into 0 and 1, which split again."""
    a = fire(100, 2, {0: range(0, 40), 1: range(50, 70)})
    b = fire(100, 4, {0: range(0, 20), 1: [*range(20, 40), 90, 91], 2: range(50, 60), 3: range(60, 70)})
    c = fire(100, 8, {0: range(0, 10), 1: range(10, 20), 5: range(20, 32), 3: range(32, 40), 7: range(50, 60)})
    rng = np.random.default_rng(3)
    da, db, dc = random_dirs(rng, 2), random_dirs(rng, 4), random_dirs(rng, 8)
    return run(a, b, da, db), run(b, c, db, dc)


def skeleton(node):
    return (node["width_index"], node["feature"], node["necessity"] and round(node["necessity"], 3),
            [skeleton(k) for k in node["children"]])


def test_splitting_tree_three_widths():
    first, second = three_widths()
    assert skeleton(splitting_tree([first, second], 0)) == (0, 0, None, [
        (1, 0, 1.0, [(2, 0, 1.0, []), (2, 1, 1.0, [])]),
        (1, 1, round(20 / 22, 3), [(2, 5, 1.0, []), (2, 3, 1.0, [])]),  # 5 before 3: larger share (12 vs 8 of 22)
    ])
    tree = splitting_tree([first, second], 1, max_children=1)
    assert skeleton(tree) == (0, 1, None, [(1, 2, 1.0, [(2, 7, 1.0, [])])])
    assert tree["children"][0]["share"] == 0.5


def test_pick_roots_orders_by_recall_then_children():
    a = fire(100, 4, {0: range(0, 20), 1: range(20, 50), 2: range(50, 70), 3: range(70, 80)})
    b = fire(100, 9, {0: range(0, 10), 1: range(10, 20), 2: range(20, 30), 3: range(30, 40), 4: range(40, 50),
                      5: range(50, 58), 6: range(58, 68), 7: range(70, 80)})
    res = run(a, b)
    assert res.recall[2] == 0.9 and not res.splits[3]
    assert pick_roots([res], n=3) == [1, 0, 2]
    assert pick_roots(res, n=2) == [1, 0]


def texts(fig, gid):
    return [t for ax in fig.axes for t in ax.texts if t.get_gid() == gid]


def test_plot_splitting_tree_draws_every_node_and_edge():
    first, second = three_widths()
    tree = splitting_tree([first, second], 0)
    fig = plot_splitting_tree(tree, labels={(0, 0): "the cat sat", (1, 1): "a very long label " * 4},
                              widths=[512, 2048, 8192])
    assert isinstance(fig, Figure)
    nodes = [t.get_text() for t in texts(fig, "node")]
    assert len(nodes) == 7 and len(texts(fig, "edge")) == 6
    assert "w512 #0\nthe cat sat" in nodes and "w2k #0" in nodes and "w8k #5" in nodes
    assert all(len(line) <= 26 for t in nodes for line in t.split("\n"))
    assert sorted(t.get_text() for t in texts(fig, "edge")).count("1.00") == 5
    assert len(texts(plot_splitting_tree({"width_index": 0, "feature": 3, "necessity": None, "children": []}),
                     "node")) == 1


def test_plot_split_shares_bars():
    first, second = three_widths()
    rows = [first.shares_row(), second.shares_row(label="4 → 8")]
    fig = plot_split_shares(rows)
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert len(ax.patches) == 6
    assert [t.get_text() for t in ax.get_xticklabels()] == ["2 → 4", "4 → 8"]
    heights = sorted(round(p.get_height(), 6) for p in ax.patches)
    want = sorted(round(100 * r[k], 6) for r in rows for k in ("split", "persist", "new"))
    assert heights == want and "%" in ax.get_ylabel() and ax.get_title()


def test_exclusive_children_keep_each_child_under_its_best_parent():
    """Two parents that overlap: a child firing inside both hangs under the one it fires inside most."""
    T = 200
    a, b = np.zeros((T, 2), bool), np.zeros((T, 3), bool)
    a[:100, 0], a[50:150, 1] = True, True
    b[:40, 0] = True  # inside parent 0 only
    b[60:100, 1] = True  # inside both (tokens 60-99): necessity 1 for each, best parent the lower index
    b[110:150, 2] = True  # inside parent 1 only
    res = run(a, b)
    assert res.children.of(0)[0].tolist() == [0, 1] and sorted(res.children.of(1)[0].tolist()) == [1, 2]
    ex = exclusive_children(res)
    assert sorted(ex.of(0)[0].tolist()) == [0, 1] and ex.of(1)[0].tolist() == [2]
    assert (np.bincount(ex.child, minlength=3) == 1).all()  # every child once
    tree = splitting_tree([res], 1, exclusive=True)
    assert [c["feature"] for c in tree["children"]] == [2]


def test_pick_roots_by_score_needs_two_exclusive_children():
    T = 300
    a, b = np.zeros((T, 3), bool), np.zeros((T, 6), bool)
    for p, (lo, hi) in enumerate(((0, 100), (100, 200), (200, 300))):
        a[lo:hi, p] = True
    b[0:50, 0], b[50:100, 1] = True, True  # parent 0: two exclusive children, recall 1
    b[100:140, 2], b[140:200, 3] = True, True  # parent 1: two exclusive children, recall 1
    b[200:300, 4] = True  # parent 2: one child only
    res = run(a, b, min_children=1)
    assert res.splits.tolist() == [True, True, True]
    assert pick_roots([res], 3, score=np.array([0.5, 0.9, 1.0])) == [1, 0]  # parent 2 has one child

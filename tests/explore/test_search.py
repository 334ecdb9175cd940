"""Prompt search equals a brute force over the dense activations (smoke subject, random TopK SAEs)."""

import numpy as np
import pytest
import torch

from helpers.errors import ConfigError
from helpers.experiment import PRESETS
from helpers.explore.search import prompt_activations, prompt_graph, search, search_prompts
from helpers.subject.capture import capture_residuals
from helpers.subject.corpus import Document, iter_token_batches

from ..stats.test_collect import minilm, random_topk_saes  # noqa: F401  (fixture)

POSITIVES = ["The river flows into the sea near the old harbour.",
             "Ships sail from the harbour across the sea to distant ports.",
             "The sea was calm and the fishing boats returned to the harbour."]
NEGATIVES = ["The parliament passed a law on taxes and elections.",
             "Photosynthesis converts light into chemical energy in plants."]
LONG = " ".join(["The cathedral was built in the twelfth century from local stone."] * 12)


@pytest.fixture(scope="module")
def setup(minilm):  # noqa: F811
    exp = PRESETS["smoke"].replace(device="cpu", batch_size=2)  # 2 rows: prompts span several batches
    return minilm, random_topk_saes(exp.sites), exp


def brute_maxima(subject, saes, exp, prompts):
    """Per prompt and site, the max of each feature over its content tokens: plain loops over
    the dense activations of batches made exactly as the pass makes them."""
    docs = [Document(i, "", p) for i, p in enumerate(prompts)]
    best = {}
    for b in iter_token_batches(docs, subject.tokenizer, subject.special_tokens, exp.context_length,
                                exp.batch_size):
        acts = capture_residuals(subject, b.input_ids, b.attention_mask, exp.sites)
        for s in exp.sites:
            with torch.no_grad():
                dense = saes[s].encode(acts[s]).numpy()  # every position, then keep content tokens
            for r in range(dense.shape[0]):
                for t in range(dense.shape[1]):
                    if not b.token_mask[r, t]:
                        continue
                    d = int(b.doc_ids[r, t])
                    cur = best.setdefault((d, s), np.full(dense.shape[2], -np.inf))
                    np.maximum(cur, dense[r, t], out=cur)
    return best


def brute_search(subject, saes, exp, positives, negatives, threshold):
    mx = brute_maxima(subject, saes, exp, list(positives) + list(negatives))
    found = {}
    for s in exp.sites:
        for f in range(saes[s].cfg.d_sae):
            pos = [mx[(i, s)][f] for i in range(len(positives))]
            neg = [mx[(len(positives) + i, s)][f] for i in range(len(negatives))]
            if all(v > threshold for v in pos) and not any(v > threshold for v in neg):
                found[(s, f)] = min(pos) - (max(neg) if neg else threshold)
    return found


@pytest.mark.parametrize("threshold", [0.0, 0.5])
def test_search_equals_brute_force_with_and_not(setup, threshold):
    subject, saes, exp = setup
    res = search_prompts(subject, saes, exp, POSITIVES, NEGATIVES, threshold=threshold)
    brute = brute_search(subject, saes, exp, POSITIVES, NEGATIVES, threshold)
    assert res.features() == set(brute)
    assert res.found and len(brute) > 0
    for r in res.rows:
        assert r["margin"] == pytest.approx(brute[(r["site"], r["feature"])], abs=1e-6)
    assert [r["margin"] for r in res.rows] == sorted((r["margin"] for r in res.rows), reverse=True)
    # the AND and the NOT both remove features: the logic is exercised, not vacuous
    only_first = brute_search(subject, saes, exp, POSITIVES[:1], [], threshold)
    no_neg = brute_search(subject, saes, exp, POSITIVES, [], threshold)
    assert set(brute) < set(no_neg) < set(only_first)
    assert search_prompts(subject, saes, exp, POSITIVES, [], threshold).features() == set(no_neg)


def test_long_prompt_is_windowed_and_said_so(setup):
    subject, saes, exp = setup
    acts = prompt_activations(subject, saes, exp, [LONG, POSITIVES[0]])
    n_tokens = len(subject.tokenizer(LONG, add_special_tokens=False)["input_ids"])
    assert acts.windows[0] > 1 and acts.windows[1] == 1
    assert acts.acts[0][exp.sites[0]].shape[0] == n_tokens == len(acts.tokens[0])
    assert len(acts.notes) == 1 and "windows" in acts.notes[0]
    brute = brute_maxima(subject, saes, exp, [LONG, POSITIVES[0]])
    for s in exp.sites:
        np.testing.assert_allclose(acts.maxima()[0, exp.sites.index(s)], brute[(0, s)], rtol=0, atol=1e-6)
    res = search(acts, None, 0.0)
    assert "windows" in res.notes[0]


def test_nothing_found_names_closest_candidates(setup):
    subject, saes, exp = setup
    res = search_prompts(subject, saes, exp, POSITIVES, POSITIVES[:1])  # a positive is also negative
    assert not res.found and res.candidates
    msg = res.message()
    assert msg.startswith("no feature fires") and "closest candidates by margin" in msg
    margins = [c["margin"] for c in res.candidates]
    # the same prompt in another batch (other padding) can differ by float rounding: margins about 0
    assert margins == sorted(margins, reverse=True) and all(m <= 1e-5 for m in margins)


@pytest.mark.parametrize("args,match", [
    (dict(positives=[]), "no positive prompt"),
    (dict(positives=["ok", "  "]), "positive prompt 1 is empty"),
    (dict(positives=["ok"], negatives=[""]), "negative prompt 0 is empty"),
    (dict(positives="just one string"), "list of strings"),
    (dict(positives=["ok"], threshold=-1), "must be a finite number >= 0"),
    (dict(positives=["ok"], threshold=float("nan")), "must be a finite number >= 0"),
])
def test_bad_input_is_one_clear_line(setup, args, match):
    subject, saes, exp = setup
    with pytest.raises(ConfigError, match=match):
        search_prompts(subject, saes, exp, **args)


def fake_partners(sites, width, k=4, seed=0):
    """Partner tables with random partners and values, in the layout of partners.npz."""
    from helpers.evolution.measures import MEASURES

    rng = np.random.default_rng(seed)
    P, M = len(sites) - 1, len(MEASURES)
    full = rng.uniform(0, 1, (P, M, width, width)).astype(np.float32)  # one value per pair, as real tables
    out = {"sites": list(sites), "pairs": [f"{a}->{b}" for a, b in zip(sites, sites[1:])],
           "measures": list(MEASURES), "n_tokens": 1000}
    for d in ("down", "up"):
        idx = np.stack([[[rng.choice(width, k, replace=False) for _ in range(width)]
                         for _ in range(M)] for _ in range(P)]).astype(np.int32)
        vals = np.zeros((P, M, width, k, M), np.float32)
        for p in range(P):
            for m in range(M):
                for f in range(width):
                    for j, g in enumerate(idx[p, m, f]):
                        a, b = (f, g) if d == "down" else (g, f)
                        vals[p, m, f, j] = full[p, :, a, b]
        out[f"{d}_index"], out[f"{d}_values"] = idx, vals
        out[f"{d}_count"] = np.ones((P, M, width, k), np.int64)
    return out


def test_prompt_graph_nodes_and_edges(setup):
    subject, saes, exp = setup
    acts = prompt_activations(subject, saes, exp, POSITIVES[:1])
    partners = fake_partners(exp.sites, 256)
    g = prompt_graph(acts, 0, partners, "jaccard", 0.3)
    ids = {n["id"] for n in g["nodes"]}
    for s in exp.sites:  # every feature active on some token is a node, with its activations
        act = acts.acts[0][s]
        assert {n["feature"] for n in g["nodes"] if n["site"] == s} == set(np.flatnonzero((act > 0).any(0)))
    m = 1  # jaccard
    expected = set()
    for p, (a_site, b_site) in enumerate(zip(exp.sites, exp.sites[1:])):
        for d in ("down", "up"):
            for f in range(256):
                for j in range(4):
                    g2 = int(partners[f"{d}_index"][p, m, f, j])
                    a, b = (f, g2) if d == "down" else (g2, f)
                    if partners[f"{d}_values"][p, m, f, j, m] >= 0.3 and f"{a_site}:{a}" in ids \
                            and f"{b_site}:{b}" in ids:
                        expected.add((f"{a_site}:{a}", f"{b_site}:{b}"))
    assert {(e["source"], e["target"]) for e in g["edges"]} == expected and expected
    for e in g["edges"]:
        src = next(n for n in g["nodes"] if n["id"] == e["source"])
        dst = next(n for n in g["nodes"] if n["id"] == e["target"])
        assert e["tokens"] == [t for t in range(len(g["tokens"])) if src["acts"][t] > 0 and dst["acts"][t] > 0]
    with pytest.raises(ConfigError, match="unknown measure"):
        prompt_graph(acts, 0, partners, "spearman", 0.3)
    with pytest.raises(ConfigError, match="outside its range"):
        prompt_graph(acts, 0, partners, "jaccard", 1.5)


def test_token_subgraph_and_continuity():
    from helpers.explore.search import prompt_continuity, token_subgraph

    g = {"sites": ["a", "b", "c"], "tokens": ["x", "y"],
         "nodes": [{"id": "a:1", "layer": 0, "acts": [1.0, 0.0]}, {"id": "a:2", "layer": 0, "acts": [1.0, 1.0]},
                   {"id": "b:3", "layer": 1, "acts": [0.5, 2.0]}, {"id": "c:4", "layer": 2, "acts": [0.0, 1.0]}],
         "edges": [{"source": "a:1", "target": "b:3", "value": 0.5, "tokens": [0]},
                   {"source": "b:3", "target": "c:4", "value": 0.2, "tokens": [1]}]}
    sub = token_subgraph(g, -1)
    assert sub["token"] == 1 and [n["id"] for n in sub["nodes"]] == ["a:2", "b:3", "c:4"]
    assert [e["source"] for e in sub["edges"]] == ["b:3"] and sub["nodes"][1]["activation"] == 2.0
    share = prompt_continuity(g)
    # token x: a has 2 active, 1 linked; b has 1 active, 0 linked. token y: a 1 active, 0 linked; b 1, 1
    np.testing.assert_array_equal(share, [[0.5, 0.0], [0.0, 1.0]])
    with pytest.raises(ConfigError, match="out of range"):
        token_subgraph(g, 2)


def test_search_table_links_to_the_explorer():
    from helpers.explore.search import SearchResult
    from helpers.notebook.search_view import search_table

    row = {"site": "hidden.3", "layer": 3, "feature": 17, "margin": 1.5, "lowest_positive": 2.0,
           "highest_negative": 0.5}
    html = search_table(SearchResult(["p"], ["n"], 0.0, [row], []))
    assert 'href="../explorer.html#site=hidden.3&amp;feature=17"' in html and "+1.500" in html
    empty = search_table(SearchResult(["p"], ["n"], 0.0, [], [row]))
    assert "no feature fires" in empty and "closest candidates" in empty


def test_search_funnel_narrows_to_what_the_search_finds():
    from helpers.explore.search import PromptActivations, search_funnel

    rng = np.random.default_rng(4)
    sites = ["a", "b"]

    def acts(n):
        return PromptActivations([f"p{i}" for i in range(n)], sites,
                                 [{s: rng.random((3, 20)) * (rng.random(20) < 0.6) for s in sites} for _ in range(n)],
                                 [["x"] * 3] * n, [1] * n)

    pos, neg = acts(3), acts(2)
    funnel = search_funnel(pos, neg, 0.5)
    mp, mn = pos.maxima() > 0.5, neg.maxima() > 0.5
    assert funnel.index.tolist() == sites
    assert funnel["first positive"].tolist() == mp[0].sum(1).tolist()
    assert funnel["all positives (AND)"].tolist() == mp.all(0).sum(1).tolist()
    found = search(pos, neg, 0.5)
    assert funnel["AND, no negative (NOT)"].tolist() == [len(found.by_site().get(s, [])) for s in sites]
    assert found.site_counts(sites) == dict(zip(sites, funnel["AND, no negative (NOT)"].tolist()))
    assert (funnel["first positive"] >= funnel["all positives (AND)"]).all() and len(found.rows) > 0
    with pytest.raises(ConfigError, match="must be a finite number >= 0"):
        search_funnel(pos, neg, -1.0)

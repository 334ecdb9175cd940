"""Steering along a lineage: multi-site steered generation against a brute force (whole texts
re-run without a cache, the changes added by hooks at each block), strength 0 against the clean
generation, equal total norms, the lineage read from a constructed partner table, bad input."""

import numpy as np
import pytest
import torch

from helpers.errors import ConfigError
from helpers.evolution.lineages import lineages
from helpers.evolution.measures import MEASURES
from helpers.interventions import (
    Edit,
    SteeringConfig,
    check_chain,
    control_seed,
    generate,
    generate_steered,
    lineage_edits,
    lineage_of,
    lineages_to_steer,
    lineage_steering_summary,
    lineage_steering_sweep,
    random_like,
    steering_sweep,
)

from helpers.notebook.steering_plots import lineage_findings

from ..conftest import make_random_sae

SITES = ("blocks.0.hook_resid_post", "blocks.1.hook_resid_post", "blocks.2.hook_resid_post")
CHAIN = [(0, 5), (1, 17), (2, 40)]
CENTRE = (1, 17)
PROMPTS = ("I am a", "My favourite place in the world is")


@pytest.fixture
def saes():
    return {site: make_random_sae(64, 96, seed=3 + i) for i, site in enumerate(SITES)}


def _brute(subject, saes, ids, edits, control, seed=0):
    """Logits of one whole text ``[T, vocab]`` and each edited feature's activation after its edit
    ``{site: [T]}``: each edit adds ``value x W_dec[feature]`` (the control: a random direction of
    that norm) to the output of its block at every position after BOS, by a forward hook."""
    hooks, acts = [], {}
    for j, e in enumerate(edits):
        sae = saes[e.site]
        u = sae.W_dec[e.feature].detach()
        vec = e.value * u
        if control:
            r = random_like(u, seed=control_seed(seed, e.feature, j))
            vec = vec.norm() * r / r.norm()

        def hook(module, args, out, vec=vec, e=e, sae=sae):
            h = (out[0] if isinstance(out, tuple) else out).clone()
            h[:, 1:] += vec
            acts[e.site] = sae.encode(h - h.mean(-1, keepdim=True))[0, :, e.feature]
            return (h, *out[1:]) if isinstance(out, tuple) else h

        layer = int(e.site.split(".")[1])
        hooks.append(subject.hf_model.transformer.h[layer].register_forward_hook(hook))
    try:
        return subject.hf_model(ids.view(1, -1)).logits[0], acts
    finally:
        for h in hooks:
            h.remove()


@torch.no_grad()
def test_multi_site_generation_equals_brute_force_and_keeps_the_total_norm(tiny_gpt2, saes):
    value, n = 30.0, 4
    lin = lineage_edits(tiny_gpt2, saes, SITES, CHAIN, CENTRE, value)
    single = Edit(SITES[1], 17, "add", value)
    specs = [(None, False), (lin, False), (lin, True), (single, False), ((lin[2], lin[0]), False)]
    prompts = [p for p in PROMPTS for _ in specs]
    gen = generate_steered(tiny_gpt2, saes, prompts, n, [e for _ in PROMPTS for e, _ in specs],
                           [c for _ in PROMPTS for _, c in specs], seed=2)
    assert set(gen.site_act) == set(SITES)
    width = gen.ids.shape[1] - 1
    for r, (edits, control) in enumerate(specs * len(PROMPTS)):
        edits = () if edits is None else (edits,) if isinstance(edits, Edit) else edits
        edits = sorted(edits, key=lambda e: e.site)  # forward order, as the generation applies them
        pad = int((gen.mask[r] == 0).sum())
        ids = gen.ids[r][gen.mask[r].bool()]
        logits, acts = _brute(tiny_gpt2, saes, ids, edits, control, seed=2)
        pred = logits[-n - 1 : -1]  # greedy: each new token is the brute force's most likely one
        chosen = pred.gather(1, ids[-n:, None])[:, 0]
        assert (chosen >= pred.max(1).values - 1e-4).all(), (r, edits, control)
        for e in edits:  # the edited feature after the edit, position by position
            torch.testing.assert_close(gen.site_act[e.site][r, pad:], acts[e.site][:-1], atol=1e-4, rtol=1e-4)
        for site in SITES:
            if site not in {e.site for e in edits}:
                assert torch.isnan(gen.site_act[site][r]).all() and (gen.site_delta_norm[site][r] == 0).all()
    # the lineage's three changes sum, position by position, to the norm of the single edit
    single_norm = gen.delta_norm[3, :].clone()
    expected = value * saes[SITES[1]].W_dec[17].norm()
    pad = int((gen.mask[0] == 0).sum())
    torch.testing.assert_close(single_norm[pad + 1:], expected.expand(width - pad - 1), rtol=1e-5, atol=1e-4)
    for r in (1, 2):  # the lineage and its random control
        torch.testing.assert_close(gen.delta_norm[r, pad + 1:], single_norm[pad + 1:], rtol=1e-5, atol=1e-4)
        for site in SITES:  # an equal share at each site
            torch.testing.assert_close(gen.site_delta_norm[site][r, pad + 1:], single_norm[pad + 1:] / 3,
                                       rtol=1e-5, atol=1e-4)
        assert (gen.delta_norm[r, : pad + 1] == 0).all()  # padding and BOS untouched
    assert torch.isnan(gen.edited_act[1]).all() and not torch.isnan(gen.edited_act[3, pad:]).any()
    # the lineage changes the text, and its control writes another one
    assert not torch.equal(gen.ids[1], gen.ids[0]) and not torch.equal(gen.ids[2], gen.ids[1])
    # each site of a control row has its own seed
    assert len({control_seed(2, e.feature, j) for j, e in enumerate(lin)}) == 3


@torch.no_grad()
def test_lineage_steering_at_strength_zero_is_the_clean_generation(tiny_gpt2, saes):
    watch = torch.tensor([5, 9, 11])
    zero = lineage_edits(tiny_gpt2, saes, SITES, CHAIN, CENTRE, 0.0)
    assert [e.value for e in zero] == [0.0] * 3 and [e.mode for e in zero] == ["add"] * 3
    specs = [(None, False), (zero, False), (zero, True), (Edit(SITES[1], 17, "add", 0.0), True)]
    prompts = [p for p in PROMPTS for _ in specs]
    gen = generate_steered(tiny_gpt2, saes, prompts, 6, [e for _ in PROMPTS for e, _ in specs],
                           [c for _ in PROMPTS for _, c in specs], watch=watch)
    clean = generate_steered(tiny_gpt2, saes, PROMPTS, 6, watch=watch)
    for r in range(len(prompts)):
        base = r - r % len(specs)  # the unsteered row of the same prompt, in the same batch: exactly equal
        assert torch.equal(gen.ids[r], gen.ids[base]) and torch.equal(gen.watch_logprob[r], gen.watch_logprob[base])
        # and a batch of the prompts alone writes the same tokens (its sums may round otherwise)
        assert torch.equal(gen.ids[r], clean.ids[r // len(specs)]), r
        torch.testing.assert_close(gen.watch_logprob[r], clean.watch_logprob[r // len(specs)], atol=1e-5, rtol=0)
    assert (gen.delta_norm == 0).all()
    for i, prompt in enumerate(PROMPTS):  # and plain greedy decoding without a cache writes the same
        assert tiny_gpt2.tokenizer.decode(clean.new_ids()[i]) == generate(tiny_gpt2, saes, prompt, 6)


@torch.no_grad()
def test_sweep_conditions_and_summary(tiny_gpt2, saes):
    config = SteeringConfig(prompts=PROMPTS, strengths=(0.0, 4.0), modes=("add",), new_tokens=4, top_tokens=5,
                            batch_rows=4, score_rows=3)
    max_acts = np.ones((3, 96))
    max_acts[1, 17] = 2.5
    result = lineage_steering_sweep(tiny_gpt2, saes, SITES, CHAIN, CENTRE, max_acts, config)
    assert result.max_activation == 2.5 and result.sites == list(SITES) and result.centre == CENTRE
    keys = [(r["condition"], r["control"], r["k"]) for r in result.rows]
    assert keys == [("none", False, 0.0), ("single", False, 4.0), ("single", True, 4.0), ("lineage", False, 4.0),
                    ("lineage", True, 4.0)] * 2  # k = 0 is the unsteered row itself
    # the single-site condition is the one-site sweep's "add" at the same strength, control included
    plain = steering_sweep(tiny_gpt2, saes, SITES[1], 17, 2.5, config)
    by = {(r["prompt"], r["mode"], r["control"]): r for r in plain.rows}
    for r in result.rows:
        mode = {"none": "none", "single": "add"}.get(r["condition"])
        if mode is not None:
            other = by[(r["prompt"], mode, r["control"])]
            assert np.array_equal(r["ids"], other["ids"]) and r["gain"] == pytest.approx(other["gain"], abs=1e-6)
            np.testing.assert_allclose(r["nll"], other["nll"], atol=1e-5)
    summary = lineage_steering_summary(result)
    assert [(s["condition"], s["direction"], s["k"]) for s in summary] == [
        ("none", "feature", 0.0), ("single", "feature", 4.0), ("single", "random", 4.0),
        ("lineage", "feature", 4.0), ("lineage", "random", 4.0)]
    assert summary[0]["gain"] == 0.0
    for s in summary:
        rows = [r for r in result.rows if (r["condition"], r["control"], r["k"]) ==
                (s["condition"], s["direction"] == "random", s["k"])]
        nll = np.concatenate([r["nll"] for r in rows])
        assert s["perplexity"] == pytest.approx(float(np.exp(nll.mean())), rel=1e-6)
        assert s["gain"] == pytest.approx(float(np.mean([r["gain"] for r in rows])))
        assert s["fires"] == pytest.approx(float(np.mean(np.concatenate([r["act"] for r in rows]) > 0)))
    assert any(r["gain"] != 0 for r in result.rows if r["condition"] == "lineage")
    text = lineage_findings([result])
    one, lin = summary[1], summary[3]
    assert f"**Feature 17 at {SITES[1]}**" in text and f"({len(CHAIN)} sites)" in text
    assert f"gain alone {one['gain']:+.2f} nats" in text and f"along the lineage {lin['gain']:+.2f}" in text
    wins = lin["gain"] > one["gain"] and lin["perplexity"] <= one["perplexity"]
    assert ("at no higher perplexity at k = 4." in text) == wins
    assert ("At no strength does the lineage gain more" in text) == (not wins)
    cheaper = lin["perplexity"] < one["perplexity"] and lin["gain"] >= 0.9 * one["gain"] > 0
    assert ("keeps at least 90% of the feature's gain at a lower perplexity at k = 4." in text) == cheaper


def _partners(n_sites=4, n_features=5, k=2):
    """A partner table with one measure filled (pearson), the rest undefined: a forward lineage
    (0,2) -> (1,4) -> (2,1) -> (3,3), and backward best partners that leave it at (2,1) -> (1,0)."""
    m, p = len(MEASURES), n_sites - 1
    t = {f"{d}_index": np.full((p, m, n_features, k), -1, dtype=np.int32) for d in ("down", "up")}
    t.update({f"{d}_values": np.full((p, m, n_features, k, m), np.nan, dtype=np.float32) for d in ("down", "up")})

    def put(direction, pair, feature, partner, value):
        t[f"{direction}_index"][pair, 0, feature, 0] = partner
        t[f"{direction}_values"][pair, 0, feature, 0, 0] = value

    put("down", 0, 2, 4, 0.9), put("down", 1, 4, 1, 0.8), put("down", 2, 1, 3, 0.7), put("down", 1, 0, 3, 0.6)
    put("up", 0, 4, 2, 0.9), put("up", 0, 0, 1, 0.65), put("up", 1, 1, 0, 0.85), put("up", 2, 3, 1, 0.7)
    put("down", 0, 0, 3, 0.2)  # a partner below every threshold used
    t["pairs"] = [(i, i + 1) for i in range(p)]
    return t


def test_lineage_of_follows_the_partner_tables():
    partners, fired = _partners(), np.ones((4, 5))
    assert lineage_of(partners, fired, 1, 4, 0.5) == [(0, 2), (1, 4), (2, 1), (3, 3)]
    # forward it is the lineage chain of notebook 09, truncated at the radius
    assert lineage_of(partners, fired, 1, 4, 0.5) == lineages(partners, fired, 0.5).chain(0, 2)
    assert lineage_of(partners, fired, 1, 4, 0.5, radius=1) == [(0, 2), (1, 4), (2, 1)]
    assert lineage_of(partners, fired, 0, 2, 0.5, radius=1) == [(0, 2), (1, 4)]
    # backward it follows the best backward partner, not the forward chain
    assert lineage_of(partners, fired, 2, 1, 0.5) == [(0, 1), (1, 0), (2, 1), (3, 3)]
    assert lineage_of(partners, fired, 2, 1, 0.75) == [(1, 0), (2, 1)]  # 0.65 and 0.7 fall below
    dead = fired.copy()
    dead[0, 1] = 0  # a predecessor that never fired is not followed
    assert lineage_of(partners, dead, 2, 1, 0.5) == [(1, 0), (2, 1), (3, 3)]
    gone = fired.copy()
    gone[3, 3] = 0  # nor is a successor that never fired
    assert lineage_of(partners, gone, 1, 4, 0.5) == [(0, 2), (1, 4), (2, 1)]
    with pytest.raises(ConfigError, match="no partner with pearson >= 0.5") as err:
        lineage_of(partners, fired, 0, 0, 0.5)  # its only partner has r = 0.2
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="no partner"):
        lineage_of(partners, fired, 1, 4, 0.5, measure="jaccard")  # undefined under that measure
    with pytest.raises(ConfigError, match="never fired"):
        lineage_of(partners, dead, 0, 1, 0.5)
    with pytest.raises(ConfigError, match="out of range"):
        lineage_of(partners, fired, 1, 5, 0.5)
    with pytest.raises(ConfigError, match="out of range"):
        lineage_of(partners, fired, 4, 0, 0.5)
    with pytest.raises(ConfigError, match="outside its range"):
        lineage_of(partners, fired, 1, 4, 1.5)


def test_lineages_to_steer_prefers_long_lineages_in_the_candidates_order():
    partners, fired = _partners(), np.ones((4, 5))
    four, three = lineage_of(partners, fired, 1, 4, 0.5), lineage_of(partners, fired, 1, 0, 0.5)
    assert (len(four), len(three)) == (4, 3)
    assert lineages_to_steer(partners, fired, 1, [3, 0, 4], 0.5, n=2) == [three, four]  # 3 has none
    assert lineages_to_steer(partners, fired, 1, [0, 4], 0.5, n=1) == [three]
    assert lineages_to_steer(partners, fired, 1, [0, 4], 0.5, n=2, min_sites=4) == [four, three]
    assert lineages_to_steer(partners, fired, 1, [1, 2, 3], 0.5) == []


def test_bad_chains(tiny_gpt2, saes):
    cases = [
        ([], CENTRE, "empty lineage"),
        ([(1, 17), (0, 5)], CENTRE, "go forward"),
        ([(1, 17), (1, 3)], CENTRE, "go forward"),
        ([(0, 5), (1, 96)], (0, 5), "out of range"),
        ([(0, 5), (3, 1)], (0, 5), "site indices \\[3\\] out of range"),
        ([(0, 5), (2, 40)], CENTRE, "not a step"),
    ]
    for chain, centre, message in cases:
        with pytest.raises(ConfigError, match=message) as err:
            check_chain(tiny_gpt2, saes, SITES, chain, centre)
        assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="go forward"):
        lineage_edits(tiny_gpt2, saes, SITES[::-1], CHAIN, CENTRE, 1.0)
    with pytest.raises(ConfigError, match="maximum activation"):
        lineage_steering_sweep(tiny_gpt2, saes, SITES, CHAIN, CENTRE, 0.0, SteeringConfig(prompts=PROMPTS))
    # one residual stream under two names, and one site twice in a row, are refused in generation
    same = {**saes, "blocks.1.hook_resid_pre": saes[SITES[0]]}
    with pytest.raises(ConfigError, match="one residual stream"):
        generate_steered(tiny_gpt2, same, ["hi"], 2, [(Edit(SITES[0], 1, "add", 1.0),
                                                        Edit("blocks.1.hook_resid_pre", 1, "add", 1.0))])
    with pytest.raises(ConfigError, match="one site twice"):
        generate_steered(tiny_gpt2, saes, ["hi"], 2, [(Edit(SITES[0], 1, "add", 1.0), Edit(SITES[0], 2, "add", 1.0))])
    with pytest.raises(ConfigError, match="out of range"):
        generate_steered(tiny_gpt2, saes, ["hi"], 2, [(Edit(SITES[0], 1, "add", 1.0), Edit(SITES[1], 99, "add", 1.0))])

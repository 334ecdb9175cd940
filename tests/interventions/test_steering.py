"""Steered generation with a KV cache, its random control and its measures, against brute
forces on the tiny GPT-2 (whole sequences re-run without a cache, one text at a time)."""

import numpy as np
import pytest
import torch

from helpers.errors import ConfigError
from helpers.interventions import (
    Edit,
    SteeringConfig,
    control_delta,
    feature_delta,
    feature_top_tokens,
    generate,
    generate_steered,
    random_like,
    raw_site,
    run_with_edits,
    score_generation,
    steered_texts,
    steering_features,
    steering_summary,
    steering_sweep,
)
from helpers.subject.capture import capture_residuals

from ..conftest import make_random_sae

SITE = "blocks.1.hook_resid_post"
#: prompts of different lengths: the rows are left-padded
PROMPTS = ("I am a", "My favourite place in the world is", "The")
CONFIG = SteeringConfig(prompts=PROMPTS[:2], strengths=(0.0, 2.0), new_tokens=5, top_tokens=5,
                        batch_rows=6, score_rows=4)


@pytest.fixture
def saes():
    return {SITE: make_random_sae(64, 96, seed=3)}


def _firing_feature(subject, sae) -> int:
    ids = torch.tensor([subject.tokenizer("The history of the city is long.")["input_ids"]])
    acts = sae.encode(capture_residuals(subject, ids, None, [SITE])[SITE])[0]
    return int(acts.sum(0).argmax())


def identity_sae(d_in=64, d_sae=16, seed=0):
    """An SAE that reads its features back exactly: orthonormal, zero-mean decoder rows (the
    tiny GPT-2's stream is centred), the encoder their transpose, and a bias that keeps every
    pre-activation positive, so ``encode(x + (v - f_a) W_dec[a])[a] == v``."""
    torch.manual_seed(seed)
    sae = make_random_sae(d_in, d_sae, seed=seed)
    a = torch.randn(d_in, d_sae)
    q, _ = torch.linalg.qr(a - a.mean(0))
    with torch.no_grad():
        sae.W_dec.copy_(q.T)
        sae.W_enc.copy_(q)
        sae.b_enc.fill_(50.0)
    return sae


def test_strength_zero_is_the_clean_generation_exactly(tiny_gpt2, saes):
    n, watch = len(PROMPTS), torch.tensor([5, 9, 11])
    f = _firing_feature(tiny_gpt2, saes[SITE])
    clean = generate_steered(tiny_gpt2, saes, PROMPTS, 6, watch=watch)
    zero = generate_steered(tiny_gpt2, saes, PROMPTS, 6, [Edit(SITE, f, "add", 0.0)] * n, watch=watch)
    assert torch.equal(clean.ids, zero.ids) and torch.equal(clean.watch_logprob, zero.watch_logprob)
    assert (zero.delta_norm == 0).all() and torch.isnan(clean.edited_act).all()
    pushed = generate_steered(tiny_gpt2, saes, PROMPTS, 6, [Edit(SITE, f, "add", 30.0)] * n, watch=watch)
    assert not torch.equal(clean.ids, pushed.ids)  # a real edit changes the text
    # the cached, left-padded batch writes what plain greedy decoding writes, one prompt at a time
    assert (clean.mask == 0).any(dim=1).tolist() == [True, False, True]
    for i, prompt in enumerate(PROMPTS):
        assert tiny_gpt2.tokenizer.decode(clean.new_ids()[i]) == generate(tiny_gpt2, saes, prompt, 6)


def test_clamp_sets_the_feature_at_the_site(tiny_gpt2):
    sae = identity_sae()
    saes = {SITE: sae}
    seen = []

    def read(module, args, kwargs):  # the residual stream entering block 2 = resid_post of block 1
        seen.append((args[0] if args else kwargs["hidden_states"]).detach().clone())

    edits = [Edit(SITE, 4, "clamp", 3.5), Edit(SITE, 4, "clamp", 3.5), Edit(SITE, 2, "add", 2.0), None]
    prompts = ["I am a", "My favourite place in the world is", "I am a", "I am a"]
    hook = tiny_gpt2.hf_model.transformer.h[2].register_forward_pre_hook(read, with_kwargs=True)
    try:
        gen = generate_steered(tiny_gpt2, saes, prompts, 4, edits)
    finally:
        hook.remove()
    stream = torch.cat(seen, dim=1)  # prompt pass, then one position per new token
    acts = sae.encode(stream - stream.mean(-1, keepdim=True))
    width = gen.ids.shape[1] - 1
    pad = (gen.mask[:, :width] == 0).sum(1)
    for r in (0, 1):  # every position after the padding and BOS reads 3.5, as the generation records
        torch.testing.assert_close(acts[r, pad[r] + 1 :, 4], torch.full((width - pad[r] - 1,), 3.5),
                                   atol=1e-4, rtol=0)
        torch.testing.assert_close(gen.edited_act[r, pad[r] + 1 :], acts[r, pad[r] + 1 :, 4])
        assert (acts[r, pad[r], 4] - 3.5).abs() > 1e-2  # BOS is not steered
    # adding 2 moves the feature from its value in the unsteered row 3 (same prompt) by 2
    prompt_end = width - 4 + 1  # the prompt's positions: the same text in rows 2 and 3
    torch.testing.assert_close(acts[2, pad[2] + 1 : prompt_end, 2], acts[3, pad[2] + 1 : prompt_end, 2] + 2.0,
                               atol=1e-4, rtol=0)
    torch.testing.assert_close(gen.edited_act[2, pad[2] + 1 :], acts[2, pad[2] + 1 :, 2])
    assert torch.isnan(gen.edited_act[3]).all()


def test_random_control_has_equal_norm(tiny_gpt2, saes):
    sae = saes[SITE]
    f = _firing_feature(tiny_gpt2, sae)
    d = torch.randn(3, 5, 64)
    u = torch.randn(64)
    c = control_delta(d, u)
    torch.testing.assert_close(c.norm(dim=-1), d.norm(dim=-1))
    torch.testing.assert_close(c / c.norm(dim=-1, keepdim=True), (u / u.norm()).expand(3, 5, 64))
    # adding: the control row adds the same norm as the feature row at every steered position
    edits = [Edit(SITE, f, "add", 4.0)] * 2 + [Edit(SITE, f, "clamp", 9.0)] * 2
    gen = generate_steered(tiny_gpt2, saes, ["I am a"] * 4, 5, edits, [False, True, False, True])
    norm = 4.0 * sae.W_dec[f].norm()
    torch.testing.assert_close(gen.delta_norm[:2, 2:], norm.expand(2, gen.delta_norm.shape[1] - 2))
    assert (gen.delta_norm[:, :1] == 0).all()  # BOS untouched
    # the control's direction is not the feature's
    r = random_like(sae.W_dec[f].detach(), seed=f)
    assert abs(float(torch.nn.functional.cosine_similarity(r, sae.W_dec[f].detach(), 0))) < 0.5


def test_top_tokens_are_the_direct_logit_effect(tiny_gpt2, saes):
    sae = saes[SITE]
    w_u = tiny_gpt2.hf_model.lm_head.weight.detach()
    top = feature_top_tokens(tiny_gpt2, saes, SITE, [3, 7], k=6)
    special = set(tiny_gpt2.tokenizer.all_special_ids)
    for row, f in zip(top, (3, 7)):
        logits = sae.W_dec[f].detach() @ w_u.T
        logits[list(special)] = -torch.inf
        assert sorted(row.tolist()) == sorted(torch.topk(logits, 6).indices.tolist())


def _brute_logits(subject, saes, result, row):
    """Logits of a row's whole text, the row's edit applied at every position after BOS, without
    a cache; the control's change computed from the site's value on the same text."""
    ids = torch.tensor(row["ids"]).view(1, -1)
    if row["mode"] == "none":
        return subject.hf_model(ids).logits[0]
    steer = tuple(range(1, ids.shape[1]))
    edit = Edit(SITE, result.feature, row["mode"], row["value"], positions=steer)
    if not row["control"]:
        return run_with_edits(subject, saes, ids, None, [edit], logits=True)["logits"][0]
    sae = saes[SITE]
    x = raw_site(subject, ids, None, SITE)
    pmask = torch.zeros(1, ids.shape[1])
    pmask[0, 1:] = 1
    d = feature_delta(sae, x, subject.centered, torch.tensor([result.feature]), [row["mode"]],
                      torch.tensor([row["value"]]), pmask)
    direction = random_like(sae.W_dec[result.feature].detach(), seed=result.config.seed + result.feature)
    d = control_delta(d, direction) * pmask.unsqueeze(-1)
    return run_with_edits(subject, saes, ids, None, None, logits=True, delta=d, delta_site=SITE)["logits"][0]


@torch.no_grad()
def test_sweep_measures_equal_brute_forces(tiny_gpt2, saes):
    sae = saes[SITE]
    f = _firing_feature(tiny_gpt2, sae)
    result = steering_sweep(tiny_gpt2, saes, SITE, f, 1.5, CONFIG)
    n = CONFIG.new_tokens
    conditions = 1 + 2 * (2 * len(CONFIG.strengths) - 1)  # unsteered + (feature, random) x forms
    assert len(result.rows) == len(CONFIG.prompts) * conditions
    top = torch.tensor(result.top_ids)
    assert top.tolist() == feature_top_tokens(tiny_gpt2, saes, SITE, [f], k=CONFIG.top_tokens)[0].tolist()
    clean_lp = {}
    for row in sorted(result.rows, key=lambda r: r["mode"] != "none"):  # unsteered rows first
        logits = _brute_logits(tiny_gpt2, saes, result, row)
        ids = torch.tensor(row["ids"])
        pred = logits[-n - 1 : -1]  # the distributions that chose the generated tokens
        # greedy: each generated token is the brute force's most likely one
        chosen = pred.gather(1, ids[-n:, None])[:, 0]
        assert (chosen >= pred.max(1).values - 1e-4).all(), row
        lp = float((torch.logsumexp(pred[:, top], 1) - torch.logsumexp(pred, 1)).mean())
        if row["mode"] == "none":
            clean_lp[row["prompt"]] = lp
            assert row["gain"] == 0.0
        assert row["logprob"] == pytest.approx(lp, abs=1e-4)
        assert row["gain"] == pytest.approx(lp - clean_lp[row["prompt"]], abs=1e-4)
        # perplexity and firing: the text re-read by the unsteered model, one text at a time
        clean = tiny_gpt2.hf_model(ids.view(1, -1)).logits[0, -n - 1 : -1].log_softmax(-1)
        np.testing.assert_allclose(row["nll"], -clean.gather(1, ids[-n:, None])[:, 0].numpy(), atol=1e-4)
        x = capture_residuals(tiny_gpt2, ids.view(1, -1), None, [SITE])[SITE]
        np.testing.assert_allclose(row["act"], sae.encode(x)[0, -n:, f].numpy(), atol=1e-4)
    # some condition moves the text and the top tokens' log-probability
    assert any(r["gain"] != 0 for r in result.rows)
    summary = steering_summary(result)
    assert len(summary) == conditions and summary[0]["mode"] == "none" and summary[0]["gain"] == 0.0
    for s in summary:
        rows = [r for r in result.rows if (r["mode"], r["k"], r["control"]) ==
                (s["mode"], s["k"], s["direction"] == "random")]
        nll = np.concatenate([r["nll"] for r in rows])
        assert s["perplexity"] == pytest.approx(float(np.exp(nll.mean())), rel=1e-6)
        assert s["fires"] == pytest.approx(float(np.mean(np.concatenate([r["act"] for r in rows]) > 0)))
        assert s["gain"] == pytest.approx(float(np.mean([r["gain"] for r in rows])))
        distinct = [len(set(r["ids"][-n:].tolist())) / n for r in rows]
        assert s["distinct"] == pytest.approx(float(np.mean(distinct)))
    side = steered_texts(result, "clamp", 2)
    assert [r["prompt"] for r in side] == list(CONFIG.prompts)
    assert list(side[0]) == ["prompt", "unsteered", "clamp 2x max", "random, same norm"]


@torch.no_grad()
def test_score_generation_batches_as_it_reads_one_text_at_a_time(tiny_gpt2, saes):
    gen = generate_steered(tiny_gpt2, saes, PROMPTS, 4)
    one = score_generation(tiny_gpt2, saes, SITE, 5, gen, batch_rows=1)
    many = score_generation(tiny_gpt2, saes, SITE, 5, gen, batch_rows=3)
    torch.testing.assert_close(one["nll"], many["nll"], atol=1e-4, rtol=0)
    torch.testing.assert_close(one["act"], many["act"], atol=1e-4, rtol=0)


def test_steering_features_prefers_topical_ones_then_the_strongest(tiny_gpt2):
    # feature 1: top examples from 4 documents on a word; 0 and 2: from one document
    docs = np.full((1, 3, 4), -1)
    docs[0, 1] = [0, 1, 2, 3]
    docs[0, 0, :2] = docs[0, 2, :2] = 0
    top = {"hi_doc": docs, "hi_values": np.ones((1, 3, 4)), "hi_pos": np.zeros((1, 3, 4), int)}

    class Doc:
        def __init__(self, i):
            self.doc_id, self.title = i, f"doc {i}"
            self.text = "Mountains rise."

    from unittest import mock

    with mock.patch("helpers.subject.corpus.token_context", return_value=("", "Mountains", "")):
        chosen = steering_features(top, 0, [Doc(i) for i in range(4)], tiny_gpt2.tokenizer,
                                   np.array([5.0, 1.0, 0.0]), n=3)
    assert chosen == [1, 0]  # feature 2 never fired: not steered


def test_bad_input(tiny_gpt2, saes):
    with pytest.raises(ConfigError, match="steering modes"):
        SteeringConfig(modes=("ablate",))
    with pytest.raises(ConfigError, match="finite and >= 0"):
        SteeringConfig(strengths=(1.0, -2.0))
    with pytest.raises(ConfigError, match="new_tokens"):
        SteeringConfig(new_tokens=0)
    with pytest.raises(ConfigError, match="prompt"):
        SteeringConfig(prompts=())
    with pytest.raises(ConfigError, match="Edit.positions"):
        generate_steered(tiny_gpt2, saes, ["hi"], 2, [Edit(SITE, 1, "add", 1.0, positions=(1,))])
    with pytest.raises(ConfigError, match="needs the edit"):
        generate_steered(tiny_gpt2, saes, ["hi"], 2, [None], [True])
    with pytest.raises(ConfigError, match="one of each per row"):
        generate_steered(tiny_gpt2, saes, ["hi", "ho"], 2, [None])
    with pytest.raises(ConfigError, match="out of range"):
        generate_steered(tiny_gpt2, saes, ["hi"], 2, [Edit(SITE, 96, "add", 1.0)])
    with pytest.raises(ConfigError, match="maximum activation"):
        steering_sweep(tiny_gpt2, saes, SITE, 1, 0.0, CONFIG)
    from helpers.experiment import MODELS
    from helpers.subject.models import Subject

    encoder = Subject(MODELS["minilm"], tiny_gpt2.model, tiny_gpt2.tokenizer, tiny_gpt2.device)
    with pytest.raises(ConfigError, match="cannot generate"):
        generate_steered(encoder, saes, ["hi"], 2)

import pytest
import torch

from helpers.subject.capture import capture_residuals
from helpers.errors import ConfigError
from helpers.interventions import (
    Edit,
    edge_effects,
    edge_effects_one_at_a_time,
    generate,
    run_with_edits,
)

from ..conftest import make_random_sae

SITES = ("blocks.0.hook_resid_pre", "blocks.1.hook_resid_pre", "blocks.2.hook_resid_pre")


@pytest.fixture
def saes():
    return {s: make_random_sae(64, 96, seed=i) for i, s in enumerate(SITES)}


def _batch(tok, texts):
    enc = tok(texts, return_tensors="pt", padding=True)
    return enc["input_ids"], enc["attention_mask"]


def test_ablation_keeps_the_error_term_and_every_other_feature(tiny_gpt2, saes, wiki_docs):
    ids, am = _batch(tiny_gpt2.tokenizer, [wiki_docs[0].text[:80]])
    site = SITES[1]
    clean = capture_residuals(tiny_gpt2, ids, am, [site])[site]
    f = saes[site].encode(clean)
    feature = int(f[0].sum(0).argmax())  # a feature that fires
    assert f[0, :, feature].max() > 0
    # edit the residual entering block 1 and read it back as block 1 sees it
    model = tiny_gpt2.model
    import nnsight

    from helpers.interventions.edits import _editable, feature_delta

    with torch.no_grad(), model.trace(input_ids=ids, attention_mask=am):
        x = _editable(tiny_gpt2, site)
        x[:] += feature_delta(saes[site], x, tiny_gpt2.centered, torch.tensor([feature]), ["ablate"], torch.tensor([0.0]))
        edited = nnsight.save(model.transformer.h[1].input)
    edited = edited - edited.mean(-1, keepdim=True)
    # exactly the feature's contribution is removed: every other feature's part and the error stay
    expected = clean - f[0, :, feature].unsqueeze(-1) * saes[site].W_dec[feature]
    torch.testing.assert_close(edited, expected - expected.mean(-1, keepdim=True), atol=1e-5, rtol=0)
    assert (edited - clean).abs().max() > 1e-3


def test_batched_ablation_equals_one_at_a_time(tiny_gpt2, saes, wiki_docs):
    ids, am = _batch(tiny_gpt2.tokenizer, [d.text[:60] for d in wiki_docs[:3]])
    mask = am.bool()
    edges = [(a, b) for a in range(0, 96, 13) for b in (1, 7, 50)]
    batched = edge_effects(tiny_gpt2, saes, ids, am, mask, SITES[0], SITES[1], edges, rows_per_pass=10)
    single = edge_effects_one_at_a_time(tiny_gpt2, saes, ids, am, mask, SITES[0], SITES[1], edges)
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=1e-4)
    assert batched.abs().max() > 0  # some edge has an effect


def test_steering_moves_logits_and_generation_towards_the_direction(tiny_gpt2, saes):
    tok = tiny_gpt2.tokenizer
    site = SITES[2]
    target = tok(" the", add_special_tokens=False)["input_ids"][0]
    sae = saes[site]
    with torch.no_grad():  # give feature 3 the unembedding direction of the target token
        w_u = tiny_gpt2.hf_model.lm_head.weight[target]
        sae.W_dec[3] = w_u / w_u.norm()
    ids = torch.tensor([[tok.bos_token_id] + tok("Paris is", add_special_tokens=False)["input_ids"]])
    base = run_with_edits(tiny_gpt2, saes, ids, None, [None], logits=True)["logits"][0, -1]
    steered = run_with_edits(tiny_gpt2, saes, ids, None, [Edit(site, 3, "add", 50.0)], logits=True)["logits"][0, -1]
    assert steered[target] - base[target] > 1.0
    assert steered.argmax() == target
    plain = generate(tiny_gpt2, saes, "Paris is", 4)
    pushed = generate(tiny_gpt2, saes, "Paris is", 4, Edit(site, 3, "add", 50.0))
    assert pushed.count(" the") >= 3 and pushed != plain  # every generated token is steered
    # clamping to a negative value pushes the other way
    neg = run_with_edits(tiny_gpt2, saes, ids, None, [Edit(site, 3, "clamp", -50.0)], logits=True)["logits"][0, -1]
    assert neg[target] < base[target]


def test_positions_limit_the_edit(tiny_gpt2, saes):
    ids = torch.tensor([[1, 2, 3, 4]])
    clean = run_with_edits(tiny_gpt2, saes, ids, None, [None], [SITES[2]])[SITES[2]]
    edited = run_with_edits(tiny_gpt2, saes, ids, None, [Edit(SITES[1], 5, "add", 20.0, positions=(3,))], [SITES[2]])[SITES[2]]
    torch.testing.assert_close(edited[0, :3], clean[0, :3])  # causal: earlier positions untouched
    assert (edited[0, 3] - clean[0, 3]).abs().max() > 1e-3


def test_bad_input(tiny_gpt2, saes):
    ids = torch.tensor([[1, 2]])
    with pytest.raises(ConfigError, match="out of range"):
        run_with_edits(tiny_gpt2, saes, ids, None, [Edit(SITES[0], 96)])
    with pytest.raises(ConfigError, match="no site 'hidden.0'"):
        run_with_edits(tiny_gpt2, saes, ids, None, [Edit("hidden.0", 1)])
    with pytest.raises(ConfigError, match="not finite"):
        Edit(SITES[0], 1, "add", float("inf"))
    with pytest.raises(ConfigError, match="must come after"):
        run_with_edits(tiny_gpt2, saes, ids, None, [Edit(SITES[1], 1)], [SITES[0]])
    from helpers.experiment import MODELS
    from helpers.subject.models import Subject

    encoder = Subject(MODELS["minilm"], tiny_gpt2.model, tiny_gpt2.tokenizer, tiny_gpt2.device)
    with pytest.raises(ConfigError, match="cannot generate"):
        generate(encoder, saes, "hi")


def test_embeddings_steering_and_ranks():
    import numpy as np

    from helpers.interventions.embeddings import embed, random_like, retrieval_ranks, steering_vector
    from helpers.experiment import PRESETS
    from helpers.subject.models import load_subject

    subject = load_subject(PRESETS["smoke"].replace(device="cpu"))
    texts = ["The cat sat on the mat.", "Stock markets fell sharply on Monday."]
    e = embed(subject, texts)
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, rtol=1e-5)
    # the model's own pipeline: mean pooling of the last hidden state, normalised
    enc = subject.tokenizer(texts, return_tensors="pt", padding=True)
    with torch.no_grad():
        h = subject.hf_model(**enc).last_hidden_state
    m = enc["attention_mask"].unsqueeze(-1).float()
    ref = torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=-1).numpy()
    np.testing.assert_allclose(e, ref, atol=1e-5)
    # steering towards the second sentence's direction at an inner site moves the first towards it
    v = torch.tensor(ref[1] - ref[0]) * 40
    steered = embed(subject, texts[:1], site="hidden.5", vector=v)
    assert steered[0] @ ref[1] > e[0] @ ref[1]
    r = random_like(v, seed=1)
    assert torch.isclose(r.norm(), v.norm()) and abs(float(torch.nn.functional.cosine_similarity(r, v, 0))) < 0.3
    ranks = retrieval_ranks(np.array([[1.0, 0.0]]), np.array([[0.0, 1.0], [1.0, 0.0], [0.6, 0.8]]), [1, 2, 0])
    assert ranks.tolist() == [[1, 2, 3]]
    with pytest.raises(ConfigError, match="before the last one"):
        embed(subject, texts, site="hidden.6", vector=v)
    sae = make_random_sae(384, 32)
    torch.testing.assert_close(steering_vector(sae, 3, 2.0), 2.0 * sae.W_dec[3].detach())
    with pytest.raises(ConfigError, match="not finite"):
        steering_vector(sae, 3, float("nan"))


def test_spearman():
    import numpy as np

    from helpers.evolution.analysis import spearman

    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(np.corrcoef([1, 2.5, 2.5, 4], [1, 2, 3, 4])[0, 1])
    assert np.isnan(spearman([1, 1, 1], [1, 2, 3]))


def test_batched_edges_skip_the_blocks_before_the_edited_site(tiny_gpt2, saes, wiki_docs):
    ids, am = _batch(tiny_gpt2.tokenizer, [d.text[:60] for d in wiki_docs[:2]])
    rows = {0: 0, 1: 0, 2: 0}
    hooks = [
        block.attn.register_forward_hook(lambda m, a, o, _i=i: rows.__setitem__(_i, rows[_i] + a[0].shape[0]))
        for i, block in enumerate(tiny_gpt2.hf_model.transformer.h)
    ]
    try:
        edges = [(a, 3) for a in range(12)]
        edge_effects(tiny_gpt2, saes, ids, am, am.bool(), SITES[1], SITES[2], edges, rows_per_pass=8)
    finally:
        for h in hooks:
            h.remove()
    # blocks.1.hook_resid_pre is block 0's output: block 0 runs for the 2 clean rows only
    # (twice: the capture and the raw read), never for the 12 x 2 ablated copies;
    # block 1 (which produces blocks.2) runs for the clean capture and every copy
    assert rows == {0: 2 + 2, 1: 2 + 12 * 2, 2: 0}


def test_edges_sharing_an_upstream_feature_share_one_copy(tiny_gpt2, saes, wiki_docs):
    ids, am = _batch(tiny_gpt2.tokenizer, [d.text[:60] for d in wiki_docs[:2]])
    rows = {"block1": 0}
    hook = tiny_gpt2.hf_model.transformer.h[1].attn.register_forward_hook(
        lambda m, a, o: rows.__setitem__("block1", rows["block1"] + a[0].shape[0]))
    try:
        fan_out = [(7, b) for b in range(30)]  # 30 edges, one upstream feature
        got = edge_effects(tiny_gpt2, saes, ids, am, am.bool(), SITES[1], SITES[2], fan_out)
    finally:
        hook.remove()
    assert rows["block1"] == 2 + 2  # the clean capture and ONE ablated copy of the 2 rows
    want = edge_effects_one_at_a_time(tiny_gpt2, saes, ids, am, am.bool(), SITES[1], SITES[2], fan_out)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


def test_the_pass_pools_the_document_embeddings_that_embed_computes(tmp_path, monkeypatch):
    """On the encoder, the statistics pass writes every document's sentence embedding from its own
    forward pass (first row of each document); they equal a separate embed() run."""
    import numpy as np

    from helpers.experiment import PRESETS
    from helpers.interventions.embeddings import EMBEDDINGS_FILE, corpus_embeddings, embed, embeddings_key
    from helpers.stats import run_pass
    from helpers.subject.corpus import load_corpus
    from helpers.subject.models import load_subject

    from ..stats.test_collect import random_topk_saes

    monkeypatch.setenv("SAE_EVOLUTION_ARTEFACTS", str(tmp_path))
    exp = PRESETS["smoke"].replace(max_documents=30, context_length=128, batch_size=8, device="cpu")
    subject = load_subject(exp)
    run_pass(exp, progress=False, subject=subject, saes=random_topk_saes(exp.sites))
    out = tmp_path / exp.stats_name
    docs = load_corpus(exp.corpus, exp.max_documents)
    with np.load(out / EMBEDDINGS_FILE) as f:
        pooled, key = f["embeddings"], f["key"]
    assert pooled.shape == (30, 384) and np.array_equal(key, embeddings_key(exp, 30))
    lengths = [len(subject.tokenizer(d.text, add_special_tokens=False)["input_ids"]) for d in docs]
    assert max(lengths) > 126  # some documents span several rows: only their first row is pooled
    direct = embed(subject, [d.text for d in docs], max_length=128)
    np.testing.assert_allclose(pooled, direct, atol=2e-5)
    # notebook 07 reads them instead of embedding the corpus again
    assert corpus_embeddings(exp, subject, progress=False) is not None
    np.testing.assert_array_equal(corpus_embeddings(exp, subject, progress=False), pooled)
    # not on a token budget (the last documents would be missing): no file
    exp2 = exp.replace(token_budget=500)
    run_pass(exp2, out=tmp_path / "budget", progress=False, subject=subject, saes=random_topk_saes(exp.sites))
    assert not (tmp_path / "budget" / EMBEDDINGS_FILE).exists()


def test_retrieval_sweep_ranks_the_summaries_of_each_feature():
    import numpy as np

    from helpers.experiment import PRESETS
    from helpers.interventions.embeddings import embed, random_like, retrieval_ranks, retrieval_sweep, steering_vector
    from helpers.subject.models import load_subject

    subject = load_subject(PRESETS["smoke"].replace(device="cpu"))
    site, sae = "hidden.3", make_random_sae(384, 32)
    corpus = embed(subject, ["Paris is a city.", "The cat sleeps.", "Rivers flow to the sea.", "Music is loud."])
    top = {"hi_doc": np.array([[[1, 2, -1], [0, 0, 3]]])}  # feature 1: top examples in summaries 0 and 3
    sentences = ("Hello there.", "A plain sentence.")
    out = retrieval_sweep(subject, {site: sae}, site, 0, [1], top, np.array([0.0, 2.0]), corpus,
                          strengths=(0.0, 4.0), sentences=sentences)
    assert list(out) == [1] and out[1]["summaries"] == 2 and out[1]["strengths"] == [0.0, 4.0]

    def median(vector=None):
        q = embed(subject, list(sentences), site=site if vector is not None else None, vector=vector)
        return float(np.median(retrieval_ranks(q, corpus, [0, 3])))

    v = steering_vector(sae, 1, 8.0)  # 4 x the maximum activation 2
    assert out[1]["steered"] == [median(), median(v)]
    assert out[1]["random"] == [median(), median(random_like(v, seed=1))]

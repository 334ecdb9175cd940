"""The statistics pass equals a numpy brute-force computation from dense activations."""

import json

import numpy as np
import pytest
import torch

from helpers.subject.capture import capture_residuals
from helpers.subject.corpus import iter_token_batches, stream_documents
from helpers.errors import ArtefactMismatchError, ConfigError, MissingArtefactError
from helpers.experiment import PRESETS
from helpers.stats import load_artefact, load_metadata, run_pass

from ..conftest import make_random_sae


def dense_stream(subject, saes, exp):
    """Dense SAE activations of every counted token, with provenance (the brute-force input)."""
    docs = stream_documents(exp)
    X = {s: [] for s in exp.sites}
    doc, pos = [], []
    for b in iter_token_batches(docs, subject.tokenizer, subject.special_tokens, exp.context_length,
                                exp.batch_size, exp.token_budget):
        acts = capture_residuals(subject, b.input_ids, b.attention_mask, exp.sites)
        for s in exp.sites:
            with torch.no_grad():
                X[s].append(saes[s].encode(acts[s][b.token_mask]).numpy())
        doc.append(b.doc_ids[b.token_mask].numpy())
        pos.append(b.positions[b.token_mask].numpy())
    return {s: np.concatenate(v) for s, v in X.items()}, np.concatenate(doc), np.concatenate(pos)


def brute_force_check(exp, out, X, doc, pos, rtol_sums=1e-9):
    """``rtol_sums``: of the float sums of products (1e-9 in float64, about 1e-6 in flushed float32)."""
    sites = list(exp.sites)
    n = len(doc)
    meta = load_metadata(exp, out)
    assert meta["tokens"] == n
    steps = list(range(exp.step_tokens, n + 1, exp.step_tokens))
    if not steps or steps[-1] != n:
        steps.append(n)
    # 1. max activation
    mx = load_artefact(exp, "max_activations", out)["max"]
    np.testing.assert_array_equal(mx, np.stack([X[s].max(0) for s in sites]))
    # 2. firing counts and dead features against tokens
    dead = load_artefact(exp, "dead_features", out)
    assert dead["tokens"].tolist() == steps
    np.testing.assert_array_equal(dead["fired"], np.stack([(X[s] > 0).sum(0) for s in sites]))
    thr = np.array(exp.dead_thresholds)
    expected = np.stack([
        np.stack([((X[s][:b] > 0).sum(0)[None, :] <= thr[:, None]).sum(1) for s in sites], 1) for b in steps
    ])
    np.testing.assert_array_equal(dead["dead"], expected)
    # 3. pair co-activation, curves over all and alive features, final counts
    pc = load_artefact(exp, "pair_coactivation", out)
    cthr = np.array(exp.coactivation_thresholds)
    corr = load_artefact(exp, "correlation", out)
    cooc = load_artefact(exp, "cooccurrence", out)
    for i, (a, b) in enumerate(exp.site_pairs):
        A, B = (X[a] > 0).astype(np.int64), (X[b] > 0).astype(np.int64)
        C = A.T @ B
        np.testing.assert_array_equal(pc[f"count_{i}"].astype(np.int64), C)
        for j, step in enumerate(steps):
            Cs = A[:step].T @ B[:step]
            alive_a, alive_b = A[:step].sum(0) > 0, B[:step].sum(0) > 0
            for t_i, t in enumerate(cthr):
                assert pc["never_all"][t_i, i, j] == (Cs <= t).sum()
                assert pc["never_alive"][t_i, i, j] == (Cs[np.ix_(alive_a, alive_b)] <= t).sum()
        # 4. Pearson (NaN where a feature has zero variance)
        xa, xb = X[a].astype(np.float64), X[b].astype(np.float64)
        cov = (xa - xa.mean(0)).T @ (xb - xb.mean(0))
        denom = np.outer(np.sqrt(((xa - xa.mean(0)) ** 2).sum(0)), np.sqrt(((xb - xb.mean(0)) ** 2).sum(0)))
        with np.errstate(invalid="ignore", divide="ignore"):
            r = np.where(denom > 0, cov / denom, np.nan)
        np.testing.assert_allclose(corr[f"r_{i}"], r, atol=2e-5, equal_nan=True)
        # 5. Jaccard
        union = A.sum(0)[:, None] + B.sum(0)[None, :] - C
        with np.errstate(invalid="ignore", divide="ignore"):
            jac = np.where(union > 0, C / union, np.nan)
        np.testing.assert_allclose(cooc[f"jaccard_{i}"], jac, rtol=1e-6, equal_nan=True)
    # 6. top examples
    top = load_artefact(exp, "top_examples", out)
    k = exp.top_k_examples
    for si, s in enumerate(sites):
        for f in range(X[s].shape[1]):
            nz = np.flatnonzero(X[s][:, f] > 0)
            hi = nz[np.argsort(-X[s][nz, f], kind="stable")][:k]
            lo = nz[np.argsort(X[s][nz, f], kind="stable")][:k]
            np.testing.assert_array_equal(top["hi_values"][si, f, : len(hi)], X[s][hi, f])
            np.testing.assert_array_equal(top["lo_values"][si, f, : len(lo)], X[s][lo, f])
            assert top["hi_doc"][si, f, : len(hi)].tolist() == doc[hi].tolist()
            assert top["hi_pos"][si, f, : len(hi)].tolist() == pos[hi].tolist()
            assert top["lo_doc"][si, f, : len(lo)].tolist() == doc[lo].tolist()
    # 6b. histograms of the non-zero activations on log bins
    hist = load_artefact(exp, "histograms", out)
    for si, s in enumerate(sites):
        x = X[s].astype(np.float32)
        expected = np.zeros((x.shape[1], len(hist["edges"]) + 1), dtype=np.int64)
        fi, ti = np.nonzero(x.T > 0)
        np.add.at(expected, (fi, np.searchsorted(hist["edges"], x.T[fi, ti], side="right")), 1)
        np.testing.assert_array_equal(hist["counts"][si].astype(np.int64), expected)
    # 7. co-activation graph: top-k links per token, cosine weights over all tokens
    g = load_artefact(exp, "coactivation_graph", out)
    for si, s in enumerate(sites):
        x = X[s].astype(np.float64)
        F = x.shape[1]
        counts = np.zeros((F, F), dtype=np.int64)
        for row in x:
            nzr = np.flatnonzero(row > 0)
            t = np.sort(nzr[np.argsort(-row[nzr], kind="stable")][: exp.graph_top_k])
            for p in range(len(t)):
                counts[t[p], t[p + 1 :]] += 1
        mine = g["edge_site"] == si
        got = np.zeros((F, F), dtype=np.int64)
        got[g["edge_src"][mine], g["edge_dst"][mine]] = g["edge_count"][mine]
        np.testing.assert_array_equal(got, counts)
        norm = np.linalg.norm(x, axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            cos = (x.T @ x) / np.outer(norm, norm)
        np.testing.assert_allclose(g["edge_weight"][mine], cos[g["edge_src"][mine], g["edge_dst"][mine]],
                                   rtol=rtol_sums)
        np.testing.assert_allclose(g["frequency"][si], (x > 0).mean(0))


def test_tiny_gpt2_every_statistic_equals_brute_force(tiny_gpt2, tmp_path):
    exp = PRESETS["gpt2-res-jb"].replace(
        sites=("blocks.0.hook_resid_pre", "blocks.1.hook_resid_pre", "blocks.2.hook_resid_pre"),
        corpus="wiki-summaries", max_documents=8, token_budget=700, context_length=32, batch_size=4,
        sae_width=24, sae_k=8, step_tokens=96, top_k_examples=3, device="cpu",
    )
    saes = {s: make_random_sae(64, 24, seed=i) for i, s in enumerate(exp.sites)}
    with torch.no_grad():  # a dead feature at site 1: its Pearson row must be NaN
        saes[exp.sites[1]].b_enc[5] = -1e3
    res = run_pass(exp, out=tmp_path / "stats", progress=False, subject=tiny_gpt2, saes=saes)
    assert res.tokens == 700
    X, doc, pos = dense_stream(tiny_gpt2, saes, exp)
    assert (X[exp.sites[1]][:, 5] == 0).all()
    brute_force_check(exp, tmp_path / "stats", X, doc, pos)
    r = load_artefact(exp, "correlation", tmp_path / "stats")["r_1"]
    assert np.isnan(r[5]).all()


@pytest.fixture(scope="module")
def minilm():
    from helpers.subject.models import load_subject

    return load_subject(PRESETS["smoke"].replace(device="cpu"))


def random_topk_saes(sites, d_in=384, width=256, k=16, seed=100):
    from sae_lens import TopKSAE, TopKSAEConfig

    out = {}
    for i, s in enumerate(sites):
        torch.manual_seed(seed + i)
        sae = TopKSAE(TopKSAEConfig(d_in=d_in, d_sae=width, k=k))
        with torch.no_grad():
            sae.W_enc.normal_(0, d_in**-0.5)
            sae.W_dec.normal_(0, width**-0.5)
        out[s] = sae
    return out


def test_smoke_preset_every_statistic_equals_brute_force(minilm, tmp_path):
    exp = PRESETS["smoke"].replace(token_budget=900, step_tokens=200, batch_size=8, device="cpu")
    saes = random_topk_saes(exp.sites)
    run_pass(exp, out=tmp_path, progress=False, subject=minilm, saes=saes)
    X, doc, pos = dense_stream(minilm, saes, exp)
    assert max(int((x > 0).sum(1).max()) for x in X.values()) <= 16
    brute_force_check(exp, tmp_path, X, doc, pos)
    # the curves are as long as the steps, and metadata says what made them
    meta = json.loads((tmp_path / "metadata.json").read_text())
    assert meta["experiment"]["name"] == "smoke" and meta["tokens"] == 900
    assert set(meta["file_bytes"]) >= {"pair_coactivation.npz", "top_examples.npz"}
    assert meta["versions"]["torch"].startswith("2.")


def test_artefacts_refuse_another_experiment(minilm, tmp_path):
    exp = PRESETS["smoke"].replace(token_budget=300, step_tokens=100, device="cpu")
    run_pass(exp, out=tmp_path, progress=False, subject=minilm, saes=random_topk_saes(exp.sites))
    other = exp.replace(step_tokens=50)
    with pytest.raises(ArtefactMismatchError, match="step_tokens: 100 on disk, 50 asked for"):
        load_artefact(other, "dead_features", tmp_path)
    before = (tmp_path / "dead_features.npz").read_bytes()
    with pytest.raises(ArtefactMismatchError, match="another --out folder"):
        run_pass(other, out=tmp_path, progress=False, subject=minilm, saes=random_topk_saes(exp.sites))
    assert (tmp_path / "dead_features.npz").read_bytes() == before
    with pytest.raises(MissingArtefactError, match="helpers collect --experiment smoke"):
        load_artefact(exp, "dead_features", tmp_path / "nothing")


def test_missing_histograms_name_the_command_that_rebuilds_them(minilm, tmp_path):
    from helpers.stats import statistics_ready

    exp = PRESETS["smoke"].replace(token_budget=300, step_tokens=100, device="cpu")
    run_pass(exp, out=tmp_path, progress=False, subject=minilm, saes=random_topk_saes(exp.sites))
    assert statistics_ready(exp, tmp_path)
    (tmp_path / "histograms.npz").unlink()  # as an older pass left it
    assert not statistics_ready(exp, tmp_path)  # so `prepare` collects again
    with pytest.raises(MissingArtefactError, match=r"histograms.npz is missing.*helpers collect --experiment smoke"):
        load_artefact(exp, "histograms", tmp_path)


def test_nan_activations_name_site_and_batch(minilm, tmp_path):
    exp = PRESETS["smoke"].replace(token_budget=300, step_tokens=100, device="cpu")
    saes = random_topk_saes(exp.sites)
    with torch.no_grad():
        saes["hidden.2"].W_enc[0, 0] = float("nan")
    with pytest.raises(ConfigError, match=r"non-finite .* site 'hidden.2' in batch 0"):
        run_pass(exp, out=tmp_path / "x", progress=False, subject=minilm, saes=saes)
    assert not (tmp_path / "x" / "metadata.json").exists()


def test_memory_bill_refuses_what_does_not_fit(minilm, tmp_path, monkeypatch):
    import helpers.stats.memory as sp

    exp = PRESETS["smoke"].replace(token_budget=300, device="cpu")
    monkeypatch.setattr(sp, "available_memory", lambda device: 10 * 2**20)
    with pytest.raises(ConfigError, match=r"needs .* GiB on cpu .* lower --batch-size"):
        run_pass(exp, out=tmp_path, progress=False, subject=minilm, saes=random_topk_saes(exp.sites))
    assert not (tmp_path / "metadata.json").exists()


GIB = 2**30
GPT2_PARAMS = 124_439_808


def test_gpt2_scale_plan_fits_one_80gb_gpu_with_32bit_sums():
    """12 sites x 24,576 features, 17.5M tokens: what the reference study needed one pass per pair for."""
    from helpers.stats import host_bill, plan_precision

    exp = PRESETS["gpt2-res-jb"]
    gpu = torch.device("cuda")  # only the arithmetic: the free memory is given
    plan = lambda free, **kw: plan_precision(exp, 24576, GPT2_PARAMS, gpu, max_tokens=17_500_000,  # noqa: E731
                                             available=free, host_available=120 * GIB, **kw)
    # an H100 (about 79 GiB free): float64 sums do not fit, float32 ones flushed to the host do
    prec, bill = plan(79 * GIB)
    assert prec.counts == torch.int32 and prec.sums == torch.float32
    assert sum(bill.values()) <= 0.9 * 79 * GIB
    assert bill["pair statistics (int32 counts + float32 sums)"] == 11 * 24576**2 * 8
    assert bill["co-activation graph (float32 sums, upper triangle)"] == 12 * (24576 * 24575 // 2) * 4
    copies = (11 * 24576**2 + 12 * 24576 * 24575 // 2) * 8  # the float64 copies of the flushed sums
    assert host_bill(exp, 24576, prec, writer=False) == copies
    # the writer also holds one pair's results and its compact counts and r at a time (the pairs are
    # spooled to disk as they become final), Pearson's float64 blocks and the per-site results
    one_pair = 24576**2 * ((4 + 8) + (4 + 4)) + 4 * 2048 * 24576 * 8
    assert 0 < host_bill(exp, 24576, prec, max_tokens=17_500_000) - copies - one_pair < 3 * GIB
    # an H200 (about 139 GiB free): float64 sums fit
    prec, bill = plan(139 * GIB)
    assert prec.sums == torch.float64 and sum(bill.values()) <= 0.9 * 139 * GIB
    # asked for float64 on an H100: refused, with the way out
    with pytest.raises(ConfigError, match=r"sum_dtype=float32"):
        plan_precision(exp.replace(sum_dtype="float64"), 24576, GPT2_PARAMS, gpu, max_tokens=17_500_000,
                       available=79 * GIB, host_available=120 * GIB)
    # 40 GiB is too little even in 32 bits; a small host cannot hold the float64 copy
    with pytest.raises(ConfigError, match=r"needs .* GiB on cuda"):
        plan(40 * GIB)
    with pytest.raises(ConfigError, match=r"the host needs .* GiB \(float64 copies of the flushed float32 sums"):
        plan_precision(exp, 24576, GPT2_PARAMS, gpu, max_tokens=17_500_000, available=79 * GIB,
                       host_available=32 * GIB)
    # 17.5M tokens get int32 counts on any device; an unknown stream length gets int64,
    # and the CPU never takes float32 sums by itself
    assert plan(139 * GIB)[0].counts == torch.int32
    prec, _ = plan_precision(exp, 24576, GPT2_PARAMS, torch.device("cpu"), max_tokens=None,
                             available=400 * GIB, host_available=400 * GIB)
    assert prec.counts == torch.int64 and prec.sums == torch.float64


def test_float32_flushed_sums_equal_brute_force(minilm, tmp_path):
    exp = PRESETS["smoke"].replace(token_budget=700, step_tokens=200, batch_size=8, device="cpu",
                                   sum_dtype="float32", flush_tokens=150)
    saes = random_topk_saes(exp.sites)
    run_pass(exp, out=tmp_path, progress=False, subject=minilm, saes=saes)
    meta = load_metadata(exp, tmp_path)
    assert meta["precision"]["product_sums"].startswith("float32 on cpu, flushed into float64")
    assert meta["precision"]["pair_counts"] == "int32"
    X, doc, pos = dense_stream(minilm, saes, exp)
    brute_force_check(exp, tmp_path, X, doc, pos, rtol_sums=1e-6)


def test_deferred_nan_check_names_site_and_batch():
    """On a GPU the NaN check waits for the step boundary; it still names the site and batch."""
    from helpers.stats.accumulators import SparseActs
    from helpers.stats import PassState

    exp = PRESETS["smoke"].replace(sites=("hidden.0", "hidden.1"), sae_width=8, sae_k=4)
    state = PassState(exp, 8, torch.device("cpu"))
    good = torch.rand(5, 8)
    bad = good.clone()
    bad[3, 2] = float("nan")
    for index, (x0, x1) in enumerate([(good, good), (good, bad), (bad, good)]):
        acts = {s: SparseActs.from_dense(x, check_finite=False) for s, x in zip(exp.sites, (x0, x1))}
        state.defer_finite_check(index, acts)
    with pytest.raises(ConfigError, match=r"non-finite .* site 'hidden.1' in batch 1"):
        state.check_finite()
    state.check_finite()  # the queue was emptied: nothing more to report

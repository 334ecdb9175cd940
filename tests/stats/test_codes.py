"""The per-token SAE codes the statistics pass records (``codes/``) equal the dense activations of
the same batches, are refused when they belong to another pass, and are dropped when too large."""

import json
import logging

import numpy as np
import pytest
import torch

from helpers.evolution.focused_pass import recorded_firing
from helpers.experiment import PRESETS
from helpers.stats import SparseActs, run_pass
from helpers.stats.codes import CODES_DIR, CodeCache, CodeWriter
from helpers.subject.capture import capture_residuals
from helpers.subject.corpus import iter_token_batches, load_corpus

from ..conftest import make_random_sae

EXP = PRESETS["gpt2-res-jb"].replace(
    sites=("blocks.0.hook_resid_pre", "blocks.1.hook_resid_pre", "blocks.2.hook_resid_pre"),
    corpus="wiki-summaries", max_documents=8, token_budget=500, context_length=32, batch_size=4,
    sae_width=40, sae_k=8, step_tokens=96, top_k_examples=3, device="cpu",
)


def dense_batches(subject, saes, exp):
    """``[{site: dense codes}]`` of every batch of the pass, batched as the pass batches."""
    docs = load_corpus(exp.corpus, exp.max_documents)
    out = []
    for b in iter_token_batches(docs, subject.tokenizer, subject.special_tokens, exp.context_length,
                                exp.batch_size, exp.token_budget):
        acts = capture_residuals(subject, b.input_ids, b.attention_mask, exp.sites)
        with torch.no_grad():
            out.append({s: saes[s].encode(acts[s][b.token_mask]).numpy() for s in exp.sites})
    return out


@pytest.fixture(scope="module")
def recorded(tiny_gpt2, tmp_path_factory):
    # StandardSAEs (ReLU): a varying number of active features per token, some tokens with none
    saes = {s: make_random_sae(64, EXP.sae_width, seed=10 + i) for i, s in enumerate(EXP.sites)}
    out = tmp_path_factory.mktemp("codes") / "stats"
    res = run_pass(EXP, out=out, progress=False, subject=tiny_gpt2, saes=saes)
    return out, res, saes, dense_batches(tiny_gpt2, saes, EXP)


def test_recorded_codes_equal_the_dense_activations_batch_by_batch(recorded):
    out, res, _, dense = recorded
    assert res.codes == out / CODES_DIR
    cache = CodeCache.open(out, EXP.sites, EXP.sae_width)
    assert cache is not None and cache.n_batches == len(dense)
    assert int(cache.token_start[-1]) == res.tokens == 500
    counts = []
    for b, want in enumerate(dense):
        got = cache.batch(b, n_tokens=want[EXP.sites[0]].shape[0])
        for s in EXP.sites:
            np.testing.assert_array_equal(got[s].to_dense().numpy(), want[s])  # exact: the pass's numbers
            counts.append((want[s] > 0).sum(1))
    counts = np.concatenate(counts)
    assert counts.min() < counts.max()  # the test covers ragged rows (and tokens with nothing active)
    meta = json.loads((out / CODES_DIR / "codes.json").read_text())
    assert meta["bytes"] == sum((out / CODES_DIR / f).stat().st_size for f in
                                [p.name for p in (out / CODES_DIR).iterdir() if p.suffix == ".bin"])
    assert meta["bytes"] == 2 * res.tokens * 3 + 6 * int(counts.sum())  # uint16 count + int16 index + float32


def test_a_batch_of_another_stream_is_refused(recorded):
    cache = CodeCache.open(recorded[0])
    with pytest.raises(ValueError, match="tokens here but"):
        cache.batch(0, n_tokens=1)
    with pytest.raises(ValueError, match="not batch"):
        cache.batch(cache.n_batches)


def test_codes_of_another_pass_are_not_used(recorded, tmp_path, caplog):
    import shutil

    copy = tmp_path / "stats"
    shutil.copytree(recorded[0], copy)
    meta = json.loads((copy / "metadata.json").read_text())
    meta["date"] = "another pass"
    (copy / "metadata.json").write_text(json.dumps(meta))
    with caplog.at_level(logging.WARNING):
        assert CodeCache.open(copy) is None
    assert "another statistics pass" in caplog.text
    assert CodeCache.open(recorded[0], sites=("blocks.5.hook_resid_pre",)) is None
    assert CodeCache.open(recorded[0], n_features=41) is None


def test_too_large_codes_are_dropped_and_an_earlier_record_removed(recorded, tiny_gpt2, tmp_path, caplog,
                                                                   monkeypatch):
    import shutil

    out = tmp_path / "stats"
    shutil.copytree(recorded[0], out)
    assert (out / CODES_DIR).is_dir()
    import helpers.stats.codes as codes_mod

    monkeypatch.setattr(codes_mod, "DEFAULT_MAX_BYTES", 1000)
    with caplog.at_level(logging.INFO):
        res = run_pass(EXP, out=out, progress=False, subject=tiny_gpt2, saes=recorded[2])
    assert res.codes is None and "not recorded" in caplog.text
    assert not (out / CODES_DIR).exists()  # the old record no longer matched these statistics
    assert not list(out.glob(".~codes.*"))  # nothing half-written left behind
    assert CodeCache.open(out) is None


def test_writer_projects_its_size_from_the_first_batch(tmp_path):
    (tmp_path / "metadata.json").write_text("{}")
    w = CodeWriter(tmp_path, ["a"], 10, expected_tokens=10_000, max_bytes=10_000)
    acts = SparseActs(torch.zeros(100, 2, dtype=torch.long), torch.ones(100, 2), 10)
    w.add({"a": acts})  # 100 tokens x (2 + 2 x 6) bytes, x100 projected = 140 kB > 10 kB
    assert not w.active and "GiB" in w.reason and w.finish() is None
    assert not any(tmp_path.glob(".~codes.*"))


def test_recorded_firing_ignores_padding_slots():
    # token 0 fires feature 0 in its second slot; its padding slot also holds index 0 with value 0
    acts = SparseActs(torch.tensor([[3, 0], [0, 0]]), torch.tensor([[0.5, 1.0], [2.0, 0.0]]), 4)
    f = recorded_firing(acts)
    assert f.dense.tolist() == [[True, False, False, True], [True, False, False, False]]
    assert sorted(zip(f.tok.tolist(), f.feat.tolist())) == [(0, 0), (0, 3), (1, 0)]


def test_several_passes_record_the_same_codes(recorded, tiny_gpt2, tmp_path):
    """Over several passes the first (the only one that encodes every site) records the codes."""
    out = tmp_path / "passes"
    res = run_pass(EXP, out=out, progress=False, subject=tiny_gpt2, saes=recorded[2], plan="passes", passes=2)
    assert res.codes == out / CODES_DIR
    for f in sorted((recorded[0] / CODES_DIR).glob("*.bin")):
        assert (out / CODES_DIR / f.name).read_bytes() == f.read_bytes(), f.name
    assert CodeCache.open(out) is not None

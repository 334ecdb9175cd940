"""The offline preset's trained SAEs ship with the repository (``artefacts/saes/offline``), so a
fresh ``make book`` reuses them instead of training for 12 minutes. These tests fail when the
preset's SAE settings change without the SAEs being retrained and committed again."""

import json

import numpy as np
import pytest
import torch

from helpers.experiment import PRESETS
from helpers.io import ARTEFACTS_ENV, REPO_ROOT, sae_dir
from helpers.subject.saes import REPORT_FILE, load_saes, trained_saes_ready

SHIPPED = REPO_ROOT / "artefacts" / "saes" / "offline"


@pytest.fixture
def repo_artefacts(monkeypatch):
    monkeypatch.delenv(ARTEFACTS_ENV, raising=False)
    assert sae_dir("offline") == SHIPPED


def test_shipped_saes_are_those_of_the_offline_preset(repo_artefacts):
    exp = PRESETS["offline"]
    assert trained_saes_ready(exp), ("artefacts/saes/offline no longer matches the offline preset's SAE "
                                     "settings: retrain (python -m helpers train-saes --experiment offline "
                                     "--force) and commit the new SAEs")
    report = json.loads((SHIPPED / REPORT_FILE).read_text())
    assert report["preset"] == "offline" and list(report["sites"]) == list(exp.sites)
    for site, q in report["sites"].items():
        assert q["l0"] == exp.sae_k and 0 < q["fvu"] < 0.5, (site, q)


def test_shipped_saes_load_and_encode_as_topk(repo_artefacts):
    exp = PRESETS["offline"]
    saes = load_saes(exp, sites=["hidden.0", "hidden.6"])
    x = torch.randn(64, exp.model_spec.d_model, generator=torch.Generator().manual_seed(0))
    for sae in saes.values():
        assert sae.cfg.d_sae == exp.sae_width and int(sae.cfg.k) == exp.sae_k
        f = sae.encode(x)
        assert ((f > 0).sum(1) <= exp.sae_k).all() and np.isfinite(f.detach().numpy()).all()

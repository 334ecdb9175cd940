import json

import pytest

from helpers.errors import ConfigError
from helpers.experiment import MODELS, PRESETS, Experiment, get_experiment


def test_presets_are_valid_and_named():
    assert set(PRESETS) == {"offline", "smoke", "gpt2-res-jb"}
    off = PRESETS["offline"]
    assert off.sites == tuple(f"hidden.{i}" for i in range(7))
    assert off.model_spec.d_model == 384
    gpt2 = PRESETS["gpt2-res-jb"]
    assert gpt2.sites[0] == "blocks.0.hook_resid_pre" and len(gpt2.sites) == 12
    assert gpt2.token_budget == 17_500_000 and gpt2.step_tokens == 65_536
    assert gpt2.site_pairs[0] == ("blocks.0.hook_resid_pre", "blocks.1.hook_resid_pre")
    assert len(gpt2.site_pairs) == 11


def test_environment_variable_selects_preset(monkeypatch):
    monkeypatch.setenv("EXPERIMENT", "smoke")
    assert get_experiment().name == "smoke"
    monkeypatch.delenv("EXPERIMENT")
    assert get_experiment().name == "offline"
    assert get_experiment("smoke", batch_size=3).batch_size == 3


def test_unknown_preset_names_choices():
    with pytest.raises(ConfigError, match="unknown experiment preset 'nope'.*offline"):
        get_experiment("nope")


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"sites": ("hidden.0", "hidden.9")}, r"unknown site\(s\) \['hidden.9'\]"),
        ({"sites": ("hidden.2", "hidden.1")}, "forward order"),
        ({"sites": ()}, "no sites"),
        ({"token_budget": 0}, "token_budget=0 must be a positive"),
        ({"step_tokens": 0}, "step_tokens=0 must be > 0"),
        ({"dead_thresholds": (0, 10, 5)}, "strictly increasing"),
        ({"coactivation_thresholds": (-1, 5)}, "negative threshold"),
        ({"model": "llama"}, "unknown model 'llama'"),
        ({"corpus": "c4"}, "unknown corpus"),
        ({"sae_k": 5000}, "exceeds sae_width"),
        ({"device": "tpu"}, "unknown device"),
        ({"sae_source": "pretrained", "sae_release": None}, "needs sae_release"),
    ],
)
def test_bad_configuration_is_refused_with_the_fix(changes, message):
    with pytest.raises(ConfigError, match=message):
        PRESETS["smoke"].replace(**changes)


def test_frozen():
    with pytest.raises(Exception):
        PRESETS["smoke"].batch_size = 2  # type: ignore[misc]


def test_json_round_trip(tmp_path):
    exp = PRESETS["gpt2-res-jb"]
    path = exp.save(tmp_path)
    assert path.name == "cfg.json"
    data = json.loads(path.read_text())
    assert data["sites"][3] == "blocks.3.hook_resid_pre"
    assert Experiment.load(tmp_path) == exp
    with pytest.raises(ConfigError, match="unknown experiment field"):
        Experiment.from_dict({**data, "colour": "red"})


def test_site_names_per_family():
    assert MODELS["minilm"].site_names()[0] == "hidden.0"
    assert MODELS["gpt2"].site_names()[-1] == "blocks.11.hook_resid_pre"

import json

import pytest

from helpers.errors import ConfigError
from helpers.experiment import MODELS, PRESETS, Experiment, get_experiment


def test_presets_are_valid_and_named():
    assert set(PRESETS) == {"gemma", "gemma-all", "offline", "smoke", "gpt2-res-jb"}
    gemma = PRESETS["gemma"]
    assert gemma.model_spec.family == "gemma3" and gemma.model_spec.n_layers == 18
    assert gemma.model_spec.d_model == 640 and gemma.model_spec.causal
    # the residual stream after each decoder layer, named as Gemma Scope 2's resid_post SAEs
    assert gemma.sites == tuple(f"blocks.{i}.hook_resid_post" for i in range(len(gemma.sites)))
    assert len(gemma.site_pairs) >= 8 and gemma.sae_seed_per_site
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
    assert get_experiment().name == "gemma"
    assert get_experiment("smoke", batch_size=3).batch_size == 3


def test_unknown_preset_names_choices():
    with pytest.raises(ConfigError, match="unknown experiment preset 'nope'.*offline"):
        get_experiment("nope")


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"sites": ("hidden.0", "hidden.9")}, r"unknown site\(s\) \['hidden.9'\]"),
        ({"sites": ("hidden.2", "hidden.1")}, "forward order"),
        ({"model": "gemma-3-270m", "sites": ("blocks.17.hook_resid_post", "blocks.18.hook_resid_post")},
         r"beyond the last layer of model 'gemma-3-270m', which has 18 layers"),
        ({"sae_save_dtype": "int8"}, "sae_save_dtype='int8' must be"),
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
    gpt2 = MODELS["gpt2"].site_names()
    assert gpt2[:3] == ("blocks.0.hook_resid_pre", "blocks.0.hook_resid_post", "blocks.1.hook_resid_pre")
    assert gpt2[-1] == "blocks.11.hook_resid_post" and len(gpt2) == 24
    assert MODELS["gemma-2-2b"].site_names()[-1] == "blocks.25.hook_resid_post"


# ------------------------------------------------------------------ types, files, model families
@pytest.mark.parametrize(
    "changes, message",
    [
        ({"sae_width": "abc"}, r"sae_width='abc' must be an integer"),
        ({"sae_width": 2.5}, r"sae_width=2.5 must be an integer"),
        ({"batch_size": True}, r"batch_size=True must be an integer"),
        ({"sae_lr": "fast"}, r"sae_lr='fast' must be a number"),
        ({"prepend_bos": "yes"}, r"prepend_bos='yes' must be true or false"),
        ({"token_budget": "1e6"}, r"token_budget='1e6' must be an integer"),
        ({"sites": "hidden.0"}, r"sites='hidden.0' must be a list of str values"),
        ({"sites": ("hidden.0", 1)}, r"sites\[1\]=1 must be a string"),
        ({"dead_thresholds": (0, "5")}, r"dead_thresholds\[1\]='5' must be an integer"),
        ({"colour": "red"}, r"unknown experiment field\(s\) \['colour'\]"),
    ],
)
def test_wrong_types_are_one_line_config_errors(changes, message):
    with pytest.raises(ConfigError, match=message):
        PRESETS["smoke"].replace(**changes)


def test_lists_become_tuples_and_ints_become_floats():
    exp = PRESETS["smoke"].replace(sites=["hidden.0", "hidden.1"], sae_lr=1, dead_thresholds=[0, 3])
    assert exp.sites == ("hidden.0", "hidden.1") and exp.dead_thresholds == (0, 3)
    assert isinstance(exp.sae_lr, float) and exp.sae_lr == 1.0


def test_old_cfg_json_without_new_fields_loads(tmp_path):
    data = PRESETS["offline"].to_dict()
    for new in ("sae_ids", "center_residual", "prepend_bos"):
        data.pop(new)
    assert Experiment.from_dict(data) == PRESETS["offline"]


def test_saved_cfg_without_a_later_field_loads_as_it_was_computed(tmp_path):
    """SAEs saved before per-site seeds and centred inputs existed were trained with one seed and
    raw inputs: loading their cfg.json says so, although the fields now default to True."""
    gemma = PRESETS["gemma"]
    assert gemma.sae_seed_per_site and gemma.sae_centre_inputs
    data = gemma.to_dict()
    for new in ("sae_seed_per_site", "sae_centre_inputs"):
        data.pop(new)
    (tmp_path / "cfg.json").write_text(json.dumps(data))
    old = Experiment.load(tmp_path)
    assert not old.sae_seed_per_site and not old.sae_centre_inputs
    assert old.differences(gemma, ("sae_seed_per_site", "sae_centre_inputs"))
    gemma.save(tmp_path)
    assert Experiment.load(tmp_path) == gemma


def test_experiment_files_json_and_toml(tmp_path):
    toml = tmp_path / "mine.toml"
    toml.write_text('base = "smoke"\nsae_width = 128\nsites = ["hidden.0", "hidden.3"]\n')
    only = tmp_path / "only-width.toml"
    only.write_text('base = "smoke"\nsae_width = 128\n')  # everything else from the preset
    assert Experiment.from_file(only).sites == PRESETS["smoke"].sites
    exp = get_experiment(str(toml), batch_size=4)
    assert exp.name == "mine" and exp.sae_width == 128 and exp.sites == ("hidden.0", "hidden.3")
    assert exp.batch_size == 4 and exp.max_documents == PRESETS["smoke"].max_documents
    js = tmp_path / "other.json"
    js.write_text(json.dumps({"name": "x", "sites": ["hidden.1", "hidden.2"], "sae_k": 8}))
    exp = Experiment.from_file(js)
    assert exp.name == "x" and exp.model == "minilm" and exp.sae_k == 8


@pytest.mark.parametrize(
    "text, suffix, message",
    [
        ('base = "smoke"\nsae_widht = 3\n', ".toml", r"unknown experiment field\(s\) 'sae_widht' \(did you mean 'sae_width'\?\)"),
        ('base = "nope"\n', ".toml", "unknown base preset 'nope'"),
        ('sae_width = \n', ".toml", "does not parse"),
        ('{"sites": ["hidden.0"], "sae_width": "wide"}', ".json", r"sae_width='wide' must be an integer"),
        ('[1, 2]', ".json", "must hold a table of fields"),
        ('x', ".yaml", "use a .json or .toml file"),
    ],
)
def test_bad_experiment_files(tmp_path, text, suffix, message):
    path = tmp_path / f"bad{suffix}"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        Experiment.from_file(path)
    with pytest.raises(ConfigError, match="does not exist"):
        Experiment.from_file(tmp_path / "missing.toml")


def test_unknown_model_names_the_closest():
    with pytest.raises(ConfigError, match=r"unknown model 'gemma-2-2' \(closest: gemma-2-2b"):
        PRESETS["smoke"].replace(model="gemma-2-2")


def test_list_fields_are_set_from_the_command_line():
    from helpers.cli import build_experiment, build_parser

    args = build_parser().parse_args(["info", "--experiment", "offline",
                                      "--set", 'sites=["hidden.3","hidden.4"]', "--set", "name=2024"])
    exp = build_experiment(args)
    assert exp.sites == ("hidden.3", "hidden.4") and exp.name == "2024"

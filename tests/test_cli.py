import json

from helpers.cli import main


def test_info_json(capsys, artefacts_tmp):
    assert main(["info", "--experiment", "smoke", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["model"]["d_model"] == 384
    assert info["sites"][0] == "hidden.0" and len(info["sites"]) == 7
    assert info["saes"]["width"] == 256 and info["saes"]["trained"] is False
    assert info["corpus"]["documents"] == 80 and info["corpus"]["tokens"] > 1000
    assert info["artefacts"]["saes"].startswith(str(artefacts_tmp))


def test_info_text_for_online_preset(capsys):
    assert main(["info", "--experiment", "gpt2-res-jb"]) == 0
    out = capsys.readouterr().out
    assert "gpt2-small-res-jb" in out and "blocks.11.hook_resid_pre" in out and "17,500,000" in out


def test_errors_are_one_line_with_exit_2(capsys, monkeypatch):
    assert main(["info", "--experiment", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown experiment preset 'nope'") and err.count("\n") == 1
    assert main(["train-saes", "--experiment", "gpt2-res-jb"]) == 2
    assert "nothing to train" in capsys.readouterr().err


def test_wrongly_typed_override_is_one_line(capsys):
    from helpers.cli import main

    assert main(["info", "--experiment", "smoke", "--no-count", "--set", "sae_width=abc"]) == 2
    err = capsys.readouterr().err
    assert err == "error: sae_width='abc' must be an integer\n"


def test_text_fields_keep_what_was_typed(capsys):
    from helpers.cli import main

    assert main(["info", "--experiment", "smoke", "--no-count", "--json", "--set", "name=2024"]) == 0
    assert json.loads(capsys.readouterr().out)["preset"] == "2024"

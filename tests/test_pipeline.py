"""`prepare` (what `make book` runs) rebuilds a corrupted or stale artefact instead of failing later."""

import shutil
from pathlib import Path

import pytest

import helpers.evolution.gate_artefact as gates_mod
import helpers.evolution.matching_artefact as matching_mod
import helpers.evolution.neuron_artefact as neurons_mod
import helpers.evolution.partners as partners_mod
import helpers.stats as stats_mod
import helpers.subject.training as training_mod
from helpers.pipeline import prepare

from .evolution.test_partners import smoke_run  # noqa: F401  (the fixture: a pass on the smoke subject)


def test_prepare_reruns_what_is_broken(smoke_run, tmp_path, monkeypatch):  # noqa: F811
    from helpers.subject.models import load_subject

    exp, out, saes, _ = smoke_run
    subject = load_subject(exp)
    root = tmp_path / "artefacts"
    shutil.copytree(out, root / exp.stats_name)
    monkeypatch.setenv("SAE_EVOLUTION_ARTEFACTS", str(root))
    calls = []
    monkeypatch.setattr(training_mod, "train_saes", lambda exp, progress=True: training_mod.TrainingResult(exp.name, {}, True))

    def fake_pass(exp, progress=True, **kw):  # a rerun of the pass restores the good files
        calls.append("collect")
        shutil.rmtree(root / exp.stats_name)
        shutil.copytree(out, root / exp.stats_name)
        return stats_mod.PassResult(root / exp.stats_name, 1, 1.0, 1.0)

    monkeypatch.setattr(stats_mod, "run_pass", fake_pass)
    real_build = partners_mod.build_partners
    monkeypatch.setattr(partners_mod, "build_partners",
                        lambda exp, progress=True: calls.append("partners") or real_build(exp, saes=saes, progress=False))

    real_gates = gates_mod.build_gates
    monkeypatch.setattr(gates_mod, "build_gates", lambda exp, progress=True: calls.append("gates")
                        or real_gates(exp, subject=subject, saes=saes, progress=False))
    real_matching = matching_mod.build_matching
    monkeypatch.setattr(matching_mod, "build_matching", lambda exp, progress=True: calls.append("matching")
                        or real_matching(exp, n_downstream=4, saes=saes, progress=False))
    real_neurons = neurons_mod.build_neurons
    monkeypatch.setattr(neurons_mod, "build_neurons", lambda exp, progress=True: calls.append("neurons")
                        or real_neurons(exp, subject=subject, saes=saes, progress=False))

    lines = prepare(exp, progress=False)
    assert calls[:4] == ["partners", "gates", "matching", "neurons"]  # intact statistics reused, what derives from them made
    assert any("reused (already collected)" in line for line in lines)
    calls.clear()
    lines = prepare(exp, progress=False)
    assert any("partner tables" in line and "reused" in line for line in lines)
    assert any("matching methods" in line and "reused" in line for line in lines)
    assert any("gate verification" in line and "reused" in line for line in lines)
    assert any("features against neurons" in line and "reused" in line for line in lines)
    assert calls == []

    data = (root / exp.stats_name / "pair_coactivation.npz").read_bytes()
    (root / exp.stats_name / "pair_coactivation.npz").write_bytes(data[:100])  # truncated
    prepare(exp, progress=False)
    assert calls[0] == "collect"  # the broken statistics were collected again
    assert stats_mod.statistics_ready(exp)


def test_prepare_runs_the_plain_pass_first_for_relative_activity(monkeypatch, tmp_path):
    monkeypatch.setenv("SAE_EVOLUTION_ARTEFACTS", str(tmp_path))
    monkeypatch.setattr(training_mod, "train_saes", lambda exp, progress=True: training_mod.TrainingResult(exp.name, {}, True))
    order = []

    def fake_pass(exp, progress=True, **kw):
        order.append(exp.relative_threshold)
        raise RuntimeError("stop here")

    monkeypatch.setattr(stats_mod, "run_pass", fake_pass)
    from helpers.experiment import PRESETS

    with pytest.raises(RuntimeError, match="stop here"):
        prepare(PRESETS["smoke"].replace(relative_threshold=0.2), progress=False)
    assert order == [0.0]  # the maxima come from the plain pass, which runs first


def test_derived_steps_are_named_and_each_is_ready_or_built_once(monkeypatch):
    """prepare asks each derived step whether it is ready and builds exactly those that are not."""
    from helpers import pipeline
    from helpers.experiment import PRESETS

    assert [s.name for s in pipeline.STEPS] == ["partner tables", "feature splitting", "gate verification",
                                                "matching methods", "features against neurons", "explanations",
                                                "width sweep", "seed twins"]
    # a width sweep's pass: its partners, splitting and explanations; a layer preset: all but splitting
    widths = PRESETS["smoke"].replace(sites=("hidden.3@w64", "hidden.3@w256"), sae_width=256)
    assert [s.name for s in pipeline.STEPS if s.applies(widths)] == ["partner tables", "feature splitting",
                                                                      "explanations"]
    assert "feature splitting" not in [s.name for s in pipeline.STEPS if s.applies(PRESETS["smoke"])]
    # a seeds experiment's pass: the measures of a pair (partners, gates, matching), not neurons nor explanations
    from helpers.experiment import get_experiment

    assert [s.name for s in pipeline.STEPS if s.applies(get_experiment("smoke-seeds"))] == [
        "partner tables", "gate verification", "matching methods"]
    assert "seed twins" in [s.name for s in pipeline.STEPS if s.applies(PRESETS["smoke"])]
    built = []
    steps = [pipeline.Step("first", lambda exp: True, lambda exp, progress: built.append("first")),
             pipeline.Step("second", lambda exp: False, lambda exp, progress: built.append("second") or Path("f2"))]
    monkeypatch.setattr(pipeline, "STEPS", steps)
    monkeypatch.setattr("helpers.subject.training.train_saes", lambda exp, progress: None)
    monkeypatch.setattr("helpers.report.format_training", lambda result: "trained")
    monkeypatch.setattr("helpers.stats.statistics_ready", lambda exp: True)
    done = pipeline.prepare.__wrapped__(PRESETS["smoke"], progress=False)
    assert built == ["second"]
    assert done[-2:] == ["first for preset 'smoke' reused", "second for preset 'smoke' written to f2"]

"""Make every artefact a notebook needs, reusing what already exists."""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass
from typing import Callable

from .experiment import Experiment
from .io import sae_dir, stats_dir
from .locks import writes

log = logging.getLogger(__name__)


def _lazy(path: str) -> Callable:
    """``"module:function"`` of this package, imported when called (so that a test's monkeypatch
    of the module attribute is seen, and importing the pipeline loads nothing heavy)."""
    module, name = path.split(":")
    return lambda *args, **kwargs: getattr(importlib.import_module(module, __package__), name)(*args, **kwargs)


@dataclass(frozen=True)
class Step:
    """One artefact derived after the statistics pass: ``ready(exp)`` says whether a good one is on
    disk, ``build(exp, progress=...)`` writes it (returns its path, or a line saying why not)."""

    name: str
    ready: Callable
    build: Callable
    #: which experiments the step serves (default: every one but a width sweep's pass, whose adjacent
    #: pairs are widths of one site, not layers)
    applies: Callable = lambda exp: not exp.width_pairs

    def run(self, exp: Experiment, progress: bool = True) -> str:
        if not self.applies(exp):
            return ""  # (not a step of this kind of experiment: prepare says nothing of it)
        if self.ready(exp):
            return f"{self.name} for preset {exp.name!r} reused"
        made = self.build(exp, progress=progress)
        return made if isinstance(made, str) else f"{self.name} for preset {exp.name!r} written to {made}"


def _build_neurons(exp: Experiment, progress: bool = True):
    if exp.model_spec.family_spec.neurons is None:
        return (f"features against neurons for preset {exp.name!r} skipped: the model family "
                f"{exp.model_spec.family!r} has no known neuron site")
    return _lazy(".evolution.neuron_artefact:build_neurons")(exp, progress=progress)


def _build_explanations(exp: Experiment, progress: bool = True):
    from .explain.artefact import TooLittleTextError, build_explanations

    try:
        return build_explanations(exp, progress=progress)
    except TooLittleTextError as exc:
        return f"explanations for preset {exp.name!r} skipped: {exc}"


def _width_experiment(exp: Experiment):
    """The pass experiment of ``exp``'s default width sweep, or None when its SAEs are not on disk
    (``make widths`` trains them; the Gemma preset ships them)."""
    from .subject.saes import trained_saes_ready
    from .subject.widths import default_sweep_experiment

    wexp = default_sweep_experiment(exp)
    return wexp if wexp is not None and trained_saes_ready(wexp) else None


def _width_sweep_ready(exp: Experiment) -> bool:
    from .evolution.partners import partners_ready
    from .evolution.splitting_artefact import splitting_ready
    from .stats import statistics_ready

    wexp = _width_experiment(exp)
    return wexp is not None and statistics_ready(wexp) and partners_ready(wexp) and splitting_ready(wexp)


def _build_width_sweep(exp: Experiment, progress: bool = True) -> str:
    wexp = _width_experiment(exp)
    if wexp is None:
        return f"width sweep of preset {exp.name!r} skipped: no trained sweep (make widths)"
    return "; ".join(prepare(wexp, progress=progress))


def _seeds_experiment(exp: Experiment):
    """The seeds experiment of ``exp`` (``<preset>-seeds``), or None when ``exp`` has none or its twins are
    not on disk (``python -m helpers train-saes --experiment <preset>-seeds`` trains them)."""
    from .errors import ConfigError
    from .experiment import seeds_experiment
    from .subject.saes import trained_saes_ready

    if exp.sae_source != "trained" or exp.width_pairs or exp.seed_pairs:
        return None
    try:
        sexp = seeds_experiment(exp)
    except ConfigError:
        return None
    return sexp if trained_saes_ready(sexp) else None


def _seeds_ready(exp: Experiment) -> bool:
    from .stats import statistics_ready

    sexp = _seeds_experiment(exp)
    return sexp is not None and statistics_ready(sexp) and all(
        step.ready(sexp) for step in STEPS if step.applies(sexp))


def _build_seeds(exp: Experiment, progress: bool = True) -> str:
    sexp = _seeds_experiment(exp)
    if sexp is None:
        return (f"seed twins of preset {exp.name!r} skipped: none on disk (python -m helpers train-saes "
                f"--experiment {exp.name}-seeds)")
    return "; ".join(prepare(sexp, progress=progress))


def _cross_layer(exp: Experiment) -> bool:
    """Steps that read layers against layers, not one site's SAEs against each other (widths, seeds)."""
    return not exp.width_pairs and not exp.seed_pairs


#: the derived steps, in order (each may read what the ones before it wrote)
STEPS: list[Step] = [
    Step("partner tables", _lazy(".evolution.partners:partners_ready"), _lazy(".evolution.partners:build_partners"),
         applies=lambda exp: True),
    Step("feature splitting", _lazy(".evolution.splitting_artefact:splitting_ready"),
         _lazy(".evolution.splitting_artefact:build_splitting"), applies=lambda exp: exp.width_pairs),
    Step("gate verification", _lazy(".evolution.gate_artefact:gates_ready"),
         _lazy(".evolution.gate_artefact:build_gates")),
    Step("matching methods", _lazy(".evolution.matching_artefact:matching_ready"),
         _lazy(".evolution.matching_artefact:build_matching")),
    Step("features against neurons", _lazy(".evolution.neuron_artefact:neurons_ready"), _build_neurons,
         applies=_cross_layer),
    Step("explanations", _lazy(".explain.artefact:explanations_ready"), _build_explanations,
         applies=lambda exp: not exp.seed_pairs),
    # the preset's width sweep, when its SAEs are on disk: its pass, partner tables and splitting
    Step("width sweep", _width_sweep_ready, _build_width_sweep,
         applies=lambda exp: exp.sae_source == "trained" and _cross_layer(exp)),
    # the preset's seed twins, when they are on disk: their pass, partner tables, gates and matching (the
    # noise floor of every cross-layer measure)
    Step("seed twins", _seeds_ready, _build_seeds, applies=lambda exp: exp.sae_source == "trained" and _cross_layer(exp)),
]


@writes("prepare", lambda a: sae_dir(a["exp"].name) if a["exp"].sae_source == "trained" else None,
        lambda a: stats_dir(a["exp"].stats_name))
def prepare(exp: Experiment, progress: bool = True) -> list[str]:
    """Train the SAEs if the preset trains its own, run the statistics pass if needed (or if an
    artefact is missing or corrupted), then every derived step of :data:`STEPS` whose artefact is
    not ready: the partner tables, the gate verification (one focused pass), the matching-method
    ablations, the features against neurons (one focused pass) and the explanations of every
    feature with their scores.

    Returns one line per step saying what was done or reused.
    """
    from .report import format_pass, format_training
    from .subject.training import train_saes
    from .stats import run_pass, statistics_ready

    done = []
    if exp.sae_source == "trained" and exp.width_pairs:  # a width sweep's SAEs: `make widths` trains them
        from .subject.saes import load_saes

        load_saes(exp)  # (or one line naming the command that trains them)
        done.append(f"the width sweep's SAEs for preset {exp.name!r} reused ({', '.join(map(str, exp.site_widths))} "
                    "features)")
    elif exp.sae_source == "trained":
        done.append(format_training(train_saes(exp, progress=progress)))
    else:
        done.append(f"preset {exp.name!r} uses the pretrained {exp.sae_release} SAEs: nothing to train")
    if exp.relative_threshold and not statistics_ready(exp.replace(relative_threshold=0.0)):
        # the relative pass takes each feature's maximum from the plain pass: run that first
        done.append(format_pass(run_pass(exp.replace(relative_threshold=0.0), progress=progress)))
    if statistics_ready(exp):
        done.append(f"statistics for preset {exp.name!r} reused (already collected)")
    else:
        done.append(format_pass(run_pass(exp, progress=progress)))
    for step in STEPS:
        done.append(step.run(exp, progress))
    done = [line for line in done if line]
    for line in done:
        log.info(line)
    return done

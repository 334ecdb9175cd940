"""Make every artefact a notebook needs, reusing what already exists."""

from __future__ import annotations

import logging

from .experiment import Experiment
from .io import sae_dir, stats_dir
from .locks import writes

log = logging.getLogger(__name__)

#: the steps derived from the statistics, in order: ``(name, ready, build)``, the last two as
#: ``"module:function"`` under ``helpers`` (imported when run): ``ready(exp)`` says whether the
#: artefact exists, belongs to ``exp`` and is intact; ``build(exp, progress=...)`` writes it
#: (under the folder's lock) and returns its file
STEPS: list[tuple[str, str, str]] = [
    ("partner tables", "evolution.partners:partners_ready", "evolution.partners:build_partners"),
    ("gate verification", "evolution.gate_artefact:gates_ready", "evolution.gate_artefact:build_gates"),
    ("matching methods", "evolution.matching_artefact:matching_ready", "evolution.matching_artefact:build_matching"),
    ("explanations", "explain.artefact:explanations_ready", "explain.artefact:build_explanations"),
]


def _resolve(name: str):
    import importlib

    module, function = name.split(":")
    return getattr(importlib.import_module(f".{module}", __package__), function)


@writes("prepare", lambda a: sae_dir(a["exp"].name) if a["exp"].sae_source == "trained" else None,
        lambda a: stats_dir(a["exp"].stats_name))
def prepare(exp: Experiment, progress: bool = True) -> list[str]:
    """Train the SAEs if the preset trains its own, run the statistics pass if needed (or if an
    artefact is missing or corrupted), then make each of :data:`STEPS` that is not ready: the
    partner tables, the gate verification (one focused pass), the matching-method ablations and
    the explanations with their scores.

    Returns one line per step saying what was done or reused.
    """
    from .report import format_pass, format_training
    from .subject.saes import train_saes
    from .stats import run_pass, statistics_ready

    done = []
    if exp.sae_source == "trained":
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
    for name, ready, build in STEPS:
        if _resolve(ready)(exp):
            done.append(f"{name} for preset {exp.name!r} reused")
        else:
            file = _resolve(build)(exp, progress=progress)
            done.append(f"{name} for preset {exp.name!r} written to {file}")
    for line in done:
        log.info(line)
    return done

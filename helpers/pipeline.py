"""Make every artefact a notebook needs, reusing what already exists."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .experiment import Experiment
from .io import sae_dir, stats_dir
from .locks import writes

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Step:
    """One step derived from the statistics: its name (as the progress lines say it), whether its
    artefact is there and matches the experiment, and how to build it (returns the file written)."""

    name: str
    ready: Callable[[Experiment], bool]
    build: Callable[..., Path]


def derived_steps() -> list[Step]:
    """The steps that ``prepare`` runs after the statistics pass, in order (a new derived artefact
    is one more entry here)."""
    from .evolution.gate_artefact import build_gates, gates_ready
    from .evolution.matching_artefact import build_matching, matching_ready
    from .evolution.partners import build_partners, partners_ready
    from .explain.artefact import build_explanations, explanations_ready

    return [
        Step("partner tables", partners_ready, build_partners),
        Step("gate verification", gates_ready, build_gates),
        Step("matching methods", matching_ready, build_matching),
        Step("explanations", explanations_ready, build_explanations),
    ]


@writes("prepare", lambda a: sae_dir(a["exp"].name) if a["exp"].sae_source == "trained" else None,
        lambda a: stats_dir(a["exp"].stats_name))
def prepare(exp: Experiment, progress: bool = True) -> list[str]:
    """Train the SAEs if the preset trains its own, run the statistics pass if needed (or if an
    artefact is missing or corrupted), then build each of :func:`derived_steps` whose artefact is
    missing or stale: the partner tables, the gate verification (one focused pass), the
    matching-method ablations and the explanations with their scores.

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
    for step in derived_steps():
        if step.ready(exp):
            done.append(f"{step.name} for preset {exp.name!r} reused")
        else:
            file = step.build(exp, progress=progress)
            done.append(f"{step.name} for preset {exp.name!r} written to {file}")
    for line in done:
        log.info(line)
    return done

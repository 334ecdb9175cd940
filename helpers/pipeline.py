"""Make every artefact a notebook needs, reusing what already exists."""

from __future__ import annotations

import logging

from .experiment import Experiment
from .io import sae_dir, stats_dir
from .locks import writes

log = logging.getLogger(__name__)


@writes("prepare", lambda a: sae_dir(a["exp"].name) if a["exp"].sae_source == "trained" else None,
        lambda a: stats_dir(a["exp"].stats_name))
def prepare(exp: Experiment, progress: bool = True) -> list[str]:
    """Train the SAEs if the preset trains its own, run the statistics pass if needed (or if an
    artefact is missing or corrupted), then derive the partner tables, verify the gate candidates
    (one focused pass) and run the matching-method ablations if needed.

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
    from .evolution.partners import build_partners, partners_ready

    if partners_ready(exp):
        done.append(f"partner tables for preset {exp.name!r} reused")
    else:
        file = build_partners(exp, progress=progress)
        done.append(f"partner tables for preset {exp.name!r} written to {file}")
    from .evolution.gate_artefact import build_gates, gates_ready

    if gates_ready(exp):
        done.append(f"gate verification for preset {exp.name!r} reused")
    else:
        file = build_gates(exp, progress=progress)
        done.append(f"gate verification for preset {exp.name!r} written to {file}")
    from .evolution.matching_artefact import build_matching, matching_ready

    if matching_ready(exp):
        done.append(f"matching methods for preset {exp.name!r} reused")
    else:
        file = build_matching(exp, progress=progress)
        done.append(f"matching methods for preset {exp.name!r} written to {file}")
    for line in done:
        log.info(line)
    return done

"""Seed twins: a second SAE at a site, trained with the preset's recipe and another seed.

Two SAEs of one site that differ only in their seed give the **noise floor** of every cross-layer
measure: whatever differs between two runs at one site cannot be credited to the model's layers. A
preset's seeds experiment (``<preset>-seeds``, :func:`helpers.experiment.seeds_experiment`) puts each
twin ``<site>@seed1`` right after its site, so the pass, the partner tables and every step derived
from them measure the pair (site, twin) exactly as they measure (layer L, layer L+1).

A twin trains on the base preset's own training activations (:func:`.training.training_data`, the same
activation cache) with the base's recipe; its seed is derived from its name (:func:`.training.site_seed`),
so it differs from the site's. It is written, with its quality on the base's held-out tokens, to
``artefacts/saes/<preset>-seeds/<site>/seed<n>/`` beside ``twin.json`` (the recipe it was trained with),
one twin at a time (a rerun resumes).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from tqdm.auto import tqdm

from ..errors import ConfigError
from ..experiment import SEEDS_SUFFIX, Experiment, base_site, seed_of_site
from ..io import atomic_write_json, sae_dir
from ..locks import writes

log = logging.getLogger(__name__)

TWIN_FILE = "twin.json"


def base_experiment(exp: Experiment) -> Experiment:
    """The preset a seeds experiment extends (its recipe, training activations and the plain sites' SAEs):
    named without ``-seeds``, as its SAEs on disk were trained (all its sites), else the preset of that
    name, else ``exp`` without its twins."""
    if not exp.seed_pairs:
        raise ConfigError(f"experiment {exp.name!r} has no seed twins (sites named <site>{'@seed1'})")
    from ..experiment import PRESETS
    from .training import staging_dir

    name = exp.name.removesuffix(SEEDS_SUFFIX)
    plain = tuple(s for s in exp.sites if seed_of_site(s) is None)
    for folder in (sae_dir(name), staging_dir(exp.replace(name=name, sites=plain))):
        if (folder / "cfg.json").is_file():  # the preset as its SAEs were trained (all its sites)
            saved = Experiment.load(folder)
            if _recipe(saved) == _recipe(exp) and set(plain) <= set(saved.sites):
                return saved
    if name in PRESETS and set(plain) <= set(PRESETS[name].sites) and _recipe(PRESETS[name]) == _recipe(exp):
        return PRESETS[name]
    return exp.replace(name=name, sites=plain)


def _recipe(exp: Experiment) -> dict[str, Any]:
    """The fields a twin's training depends on (the preset's SAE settings but its sites)."""
    from .saes import SAE_FIELDS

    return {f: getattr(exp, f) for f in SAE_FIELDS if f != "sites"}


def twin_ready(exp: Experiment, site: str) -> bool:
    """Whether the twin ``site`` of the seeds experiment ``exp`` is on disk, trained with ``exp``'s recipe."""
    from .saes import trained_sae_path

    path = trained_sae_path(exp, site)
    if not ((path / "cfg.json").is_file() and (path / TWIN_FILE).is_file()):
        return False
    try:
        saved = json.loads((path / TWIN_FILE).read_text())["recipe"]
    except (ValueError, KeyError):
        return False
    return json.loads(json.dumps(_recipe(exp), default=list)) == saved


@writes("train-twins", lambda a: sae_dir(a["exp"].name))
def train_twins(exp: Experiment, progress: bool = True, subject=None) -> dict[str, dict[str, float]]:
    """Train every twin of the seeds experiment ``exp`` not yet on disk; return every twin's quality
    (FVU, L0, dead fraction and the loss recovered on the base preset's held-out tokens)."""
    from .models import load_subject
    from .saes import trained_sae_path
    from .training import SITE_QUALITY_FILE, _train_site, training_data

    twins = [s for s in exp.sites if seed_of_site(s) is not None]
    base = base_experiment(exp)
    todo = [s for s in twins if not twin_ready(exp, s)]
    if todo:
        subject = subject or load_subject(exp)
        data = training_data(subject, base, sorted({base_site(s) for s in todo}, key=base.sites.index),
                             progress=progress)
        for site in tqdm(todo, desc="seed twins", unit="SAE", disable=not progress):
            folder = trained_sae_path(exp, site)
            quality = _train_site(subject, exp, site, data, folder, progress)
            atomic_write_json(folder / TWIN_FILE, {"site": base_site(site), "seed": seed_of_site(site),
                                                   "recipe": json.loads(json.dumps(_recipe(exp), default=list)),
                                                   "quality": quality})
            log.info("%s: %s", site, quality)
    return {s: json.loads((trained_sae_path(exp, s) / SITE_QUALITY_FILE).read_text()) for s in twins}

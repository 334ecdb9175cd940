"""When does a feature count as active? Above 0, or above a share of its maximum.

The reference study also counted a feature as active only above ``0.2 x`` its maximum
activation ("relative activation"). With ``Experiment.relative_threshold > 0`` the pass
zeroes every activation at or below ``relative_threshold x max`` of its feature, the maxima
taken from the plain pass of the same experiment (``relative_threshold = 0``), which must
have run first; the metadata of the relative pass names that source and its checksum.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..errors import MissingArtefactError
from ..experiment import Experiment
from ..io import stats_dir


def plain_experiment(exp: Experiment) -> Experiment:
    """The same experiment with activity above 0: where the maxima come from."""
    return exp.replace(relative_threshold=0.0)


def maxima_source(exp: Experiment, maxima_from: str | Path | None = None) -> Path:
    return Path(maxima_from) if maxima_from is not None else stats_dir(plain_experiment(exp).stats_name)


def relative_floors(exp: Experiment, device: torch.device | str = "cpu",
                    maxima_from: str | Path | None = None) -> torch.Tensor | None:
    """``[S, F]`` activation floors (``relative_threshold x max``), or None for activity above 0."""
    if not exp.relative_threshold:
        return None
    from .artefacts import load_artefact

    base = plain_experiment(exp)
    src = maxima_source(exp, maxima_from)
    try:
        mx = load_artefact(base, "max_activations", src, keys=("max",))["max"]
    except MissingArtefactError:
        raise MissingArtefactError(
            f"relative_threshold={exp.relative_threshold:g} needs each feature's maximum from the plain "
            f"pass, and {src} has none: run `python -m helpers collect --experiment {exp.name}` first "
            f"(`python -m helpers prepare` does it for you)"
        ) from None
    return torch.as_tensor(mx, dtype=torch.float32, device=device) * exp.relative_threshold


def describe_activity(exp: Experiment, maxima_from: str | Path | None = None) -> dict[str, Any]:
    """What "active" meant in a pass, for its metadata."""
    if not exp.relative_threshold:
        return {"rule": "active when the SAE activation is > 0"}
    import json

    src = maxima_source(exp, maxima_from)
    meta = json.loads((src / "metadata.json").read_text())
    return {
        "rule": f"active when the SAE activation is > {exp.relative_threshold:g} x the feature's maximum",
        "maxima_from": str(src / "max_activations.npz"),
        "maxima_sha256": meta.get("sha256", {}).get("max_activations.npz"),
    }

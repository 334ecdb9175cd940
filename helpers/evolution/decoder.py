"""Cosine similarity of SAE decoder directions between sites, chunked.

At 24,576 features a dense ``F x F`` similarity matrix per pair of sites is 2.4 GB;
:func:`top_cosine_matches` keeps only the best ``k`` matches of every feature,
computing ``chunk`` rows at a time.
"""

from __future__ import annotations

import torch


def decoder_directions(sae) -> torch.Tensor:
    """Unit-norm decoder directions ``[F, d_in]`` (rows of ``W_dec``)."""
    w = sae.W_dec.detach().float()
    return w / w.norm(dim=1, keepdim=True).clamp_min(1e-12)


@torch.no_grad()
def top_cosine_matches(sae_a, sae_b, k: int = 1, chunk: int = 2048) -> tuple[torch.Tensor, torch.Tensor]:
    """For every feature of ``sae_a``, its ``k`` most similar decoder directions in ``sae_b``.

    Returns ``(indices [F_a, k], cosines [F_a, k])``, best first.
    """
    a, b = decoder_directions(sae_a), decoder_directions(sae_b)
    k = min(k, b.shape[0])
    idx, val = [], []
    for start in range(0, a.shape[0], chunk):
        sims = a[start : start + chunk] @ b.T
        v, i = torch.topk(sims, k, dim=1)
        idx.append(i)
        val.append(v)
    return torch.cat(idx).cpu(), torch.cat(val).cpu()


def neuronpedia_url(experiment, site: str, feature: int) -> str | None:
    """Link to a feature's page on Neuronpedia, from the registry's Neuronpedia id of the SAE.

    ``experiment``: an :class:`~helpers.experiment.Experiment` or a preset name. None when the
    SAEs are trained here or the release gives no Neuronpedia id for that SAE.
    """
    from ..experiment import get_experiment
    from ..subject.releases import neuronpedia_id

    exp = get_experiment(experiment) if isinstance(experiment, str) else experiment
    if exp.sae_source != "pretrained" or site not in exp.sites:
        return None
    np_id = neuronpedia_id(exp.sae_release, exp.sae_id(site))
    return f"https://www.neuronpedia.org/{np_id}/{int(feature)}" if np_id else None

"""Completeness of an experiment's sites, or of the widths of a width sweep at one site.

Both read the pass's token stream (:func:`~.stream.token_stream`: the experiment's corpus and token
budget) and the mentions of each family (:func:`~.concepts.find_mentions`), then take where every
feature fires over that stream:

- :func:`site_completeness`: from the codes the statistics pass recorded (:mod:`helpers.stats.codes`),
  or, without them, by running the model and the experiment's SAEs (:func:`~.artefact.firings_from_model`);
- :func:`width_completeness`: every width of a trained :class:`~helpers.subject.widths.WidthSweep`
  encodes the stream's activations at the sweep's site, read once per batch through the sweep's width
  sites and batched as the pass batches (:func:`sae_firings` re-encodes the stream for any
  ``{label: SAE}`` at one site, one model run per SAE).

Definitions in :mod:`.completeness`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import ConfigError
from .completeness import MIN_PRECISION, MIN_RECALL, completeness
from .concepts import Mentions, concept_families, find_mentions

log = logging.getLogger(__name__)

#: the families measured when none are named
DEFAULT_FAMILIES = ("months", "countries", "us_states", "chemical_elements")


@dataclass
class CompletenessResult:
    """``rows`` and ``members`` of :func:`~.completeness.completeness`, the ``mentions`` of each
    family, the stream's ``tokens``, where the firings came from and the ``seconds`` it took."""

    rows: list[dict[str, Any]]
    members: list[dict[str, Any]]
    mentions: dict[str, Mentions] = field(default_factory=dict)
    tokens: int = 0
    firing_from: str = ""
    seconds: float = 0.0


def _stream(exp, tokenizer=None):
    from ..subject.corpus import stream_documents
    from ..subject.models import load_tokenizer
    from .stream import token_stream

    docs = stream_documents(exp)
    tokenizer = tokenizer or load_tokenizer(exp)
    return docs, tokenizer, token_stream(docs, tokenizer, exp.token_budget)


def _mentions(families, stream, docs, tokenizer, require: bool = True) -> dict[str, Mentions]:
    families = DEFAULT_FAMILIES if families is None else ([families] if isinstance(families, str) else families)
    if not families:
        raise ConfigError(f"no concept family given: name some of {concept_families()}")
    out = {}
    for f in families:
        men = find_mentions(f, stream, docs, tokenizer, require=require)
        out[men.family.name] = men
    return out


def sae_firings(exp, site: str, saes: Mapping[Any, Any], subject, documents, max_tokens: int | None = None,
                progress: bool = False) -> dict[Any, tuple[np.ndarray, np.ndarray]]:
    """``{label: (token, feature)}`` of every firing of each SAE of ``saes`` (all reading ``site``)
    over the pass's stream of ``exp``, batched as the pass batches."""
    from .artefact import firings_from_model

    one = exp.replace(sites=(site,))
    return {label: firings_from_model(one, subject, {site: sae}, documents, progress, max_tokens)[site]
            for label, sae in saes.items()}


def site_completeness(exp, families: Sequence[str] | str | None = None, sites: Sequence[str] | None = None,
                      out=None, subject=None, min_precision: float = MIN_PRECISION,
                      min_recall: float = MIN_RECALL, progress: bool = False,
                      require: bool = True) -> CompletenessResult:
    """Completeness of every family (default: :data:`DEFAULT_FAMILIES`) at every site of ``exp``
    (or ``sites``), from the recorded codes beside the statistics in ``out`` (default: the
    experiment's folder) or, without them, a model re-run. Reads only. ``require=False``: a family
    none of whose members the stream mentions gives a row with 0 found, not an error."""
    from ..io import stats_dir
    from ..stats.artefacts import load_metadata
    from .artefact import recorded_firings

    t0 = time.monotonic()
    sites = tuple(exp.sites if sites is None else sites)
    unknown = [s for s in sites if s not in exp.sites]
    if unknown:
        raise ConfigError(f"sites {unknown} are not sites of experiment {exp.name!r}: choose among {list(exp.sites)}")
    folder = out if out is not None else stats_dir(exp.stats_name)
    stats = load_metadata(exp, folder)
    docs, tokenizer, stream = _stream(exp, subject.tokenizer if subject is not None else None)
    if stream.n != int(stats["tokens"]):
        raise ConfigError(f"the corpus gives {stream.n} tokens, the statistics {stats['tokens']}: rebuild "
                          f"the statistics with `python -m helpers collect --experiment {exp.name}`")
    mentions = _mentions(families, stream, docs, tokenizer, require)
    firings, source = recorded_firings(exp, folder, sites, subject, progress=progress)
    rows, members = completeness(list(mentions.values()), firings, int(stats["n_features"]), min_precision,
                                 min_recall)
    seconds = time.monotonic() - t0
    log.info("completeness of %s: %d families x %d sites in %.1f s", exp.name, len(mentions), len(sites), seconds)
    return CompletenessResult(rows, members, mentions, stream.n, source, seconds)


def width_completeness(sweep, families: Sequence[str] | str | None = None, subject=None,
                       min_precision: float = MIN_PRECISION, min_recall: float = MIN_RECALL,
                       progress: bool = False) -> CompletenessResult:
    """Completeness of every family at each width of a trained ``sweep`` (its site, the base
    experiment's stream), the rows labelled by width. The stream is read through the sweep's pass
    experiment (:meth:`~helpers.subject.widths.WidthSweep.pass_experiment` over the base's whole budget):
    one forward pass per batch reads the site once and every width encodes it, batched as the pass batches."""
    from ..errors import MissingArtefactError
    from ..subject.models import load_subject, resolve_device
    from ..subject.saes import load_saes
    from .artefact import firings_from_model

    t0 = time.monotonic()
    missing = [w for w in sweep.widths if not (sweep.width_folder(w) / "cfg.json").is_file()]
    if missing:
        raise MissingArtefactError(
            f"no SAE of width(s) {missing} in {sweep.folder}: run `python -m helpers widths --experiment "
            f"{sweep.base.name} --site {sweep.site} --widths {','.join(map(str, sweep.widths))}`")
    exp = sweep.pass_experiment(token_budget=None)
    subject = subject or load_subject(exp.replace(device=str(resolve_device(exp.device))))
    docs, tokenizer, stream = _stream(exp, subject.tokenizer)
    mentions = _mentions(families, stream, docs, tokenizer)
    saes = load_saes(exp, device=subject.device)
    ran = firings_from_model(exp, subject, saes, docs, progress)
    firings = {w: ran[site] for w, site in zip(sweep.widths, exp.sites)}
    rows, members = completeness(list(mentions.values()), firings, dict(zip(sweep.widths, sweep.widths)),
                                 min_precision, min_recall)
    return CompletenessResult(rows, members, mentions, stream.n, f"{len(saes)} SAEs encoding the stream",
                              time.monotonic() - t0)

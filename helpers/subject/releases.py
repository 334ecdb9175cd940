"""sae_lens' registry of pretrained SAEs, read offline, and experiments built from a release.

sae_lens ships its registry (``sae_lens/pretrained_saes.yaml``) inside the
package: per release the model, the hub repository, the conversion function,
config overrides, and per SAE its id, path, L0 and Neuronpedia id. It does not
name the hook each SAE reads, so :func:`residual_hook` infers it from the id,
path and conversion function the way sae_lens' loaders do (Gemma Scope and
Llama Scope ``res`` SAEs read ``blocks.{L}.hook_resid_post``). The file is read
with ``yaml.safe_load``; sae_lens itself (seconds to import) is never imported
here.

Only residual-stream SAEs (``blocks.{L}.hook_resid_pre``/``hook_resid_post``)
of models whose family the helpers support are usable: the others are listed
as unsupported with the reason.
"""

from __future__ import annotations

import difflib
import functools
import importlib.util
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..experiment import FAMILIES, MODELS, Experiment

REGISTRY_FILE = "pretrained_saes.yaml"

#: conversion functions of SAEs that do not reconstruct the residual stream they read
#: (transcoders, cross-layer transcoders) or encode across positions (temporal)
_NOT_RESIDUAL_SAES = {"mwhanna_transcoder", "mntss_clt_layer_transcoder", "gemma_2_transcoder",
                      "temporal", "connor_rob_hook_z"}

_WIDTH_UNITS = {"": 1, "k": 1024, "m": 1 << 20}


@dataclass(frozen=True)
class ReleaseSae:
    """One SAE of a release that reads the residual stream."""

    sae_id: str
    site: str  # blocks.{L}.hook_resid_pre or blocks.{L}.hook_resid_post
    width: int | None
    l0: float | None
    neuronpedia: str | None
    #: the scale sae_lens folds into the weights of an ``expected_average_only_in`` SAE
    norm_scaling_factor: float | None = None

    @property
    def layer(self) -> int:
        return int(self.site.split(".")[1])


@dataclass(frozen=True)
class Release:
    """A release of the registry, reduced to what the helpers need."""

    name: str
    model: str  # the registry's (TransformerLens) model name
    repo_id: str
    saes: tuple[ReleaseSae, ...]  # residual-stream SAEs only
    config_overrides: dict
    unsupported: str | None  # why the helpers cannot use it (None: usable)
    conversion: str | None = None  # sae_lens' conversion function (None: sae_lens' own format)

    @property
    def family(self) -> str | None:
        spec = MODELS.get(self.model)
        return spec.family if spec else None

    @property
    def sites(self) -> tuple[str, ...]:
        """Distinct sites, in forward order."""
        return tuple(sorted({s.site for s in self.saes}, key=_site_key))

    @property
    def widths(self) -> tuple[int | None, ...]:
        return tuple(sorted({s.width for s in self.saes}, key=lambda w: (w is None, w or 0)))

    @property
    def center_residual(self) -> bool:
        """TransformerLens' ``center_writing_weights``, when the release's config asks for it."""
        kwargs = self.config_overrides.get("model_from_pretrained_kwargs") or {}
        return bool(kwargs.get("center_writing_weights", False))


def _site_key(site: str) -> tuple[int, int]:
    layer, kind = site.split(".")[1], site.rsplit("_", 1)[1]
    return int(layer), 0 if kind == "pre" else 1


def _width(text: str) -> int | None:
    match = (re.search(r"width_(\d+)([km]?)", text) or re.search(r"-w(\d+)([km])\b", text)
             or re.search(r"-v\d+-(\d+)([km])$", text))
    if match:
        n, unit = int(match.group(1)), match.group(2)
        if unit == "k" and (n * 1024) & (n * 1024 - 1):
            # "65k", "131k": rounded powers of two (Gemma Scope); "32k" is 32 * 1024 already
            return 1 << round(math.log2(n * 1000))
        return n * _WIDTH_UNITS[unit]
    match = re.search(r"2pow(\d+)", text)
    if match:
        return 1 << int(match.group(1))
    return None


def residual_hook(release: str, conversion: str | None, sae: dict[str, Any]) -> str | None:
    """The residual-stream hook an SAE of the registry reads, or None if it reads another one."""
    sae_id, path = str(sae.get("id", "")), str(sae.get("path", ""))
    if conversion in _NOT_RESIDUAL_SAES or "transcoder" in release:
        return None
    match = re.match(r"^blocks\.(\d+)\.hook_resid_(pre|post)(?:_\d+)?(?:__.*)?$", sae_id)
    if match:
        return f"blocks.{match.group(1)}.hook_resid_{match.group(2)}"
    patterns = {
        # Gemma Scope (Gemma 2): res releases read resid_post; "embedding/..." reads hook_embed
        "gemma_2": r"^layer_(\d+)/" if "-res" in release else None,
        # Gemma Scope 2 (Gemma 3): the path names the hook
        "gemma_3": r"^layer_(\d+)_" if path.startswith("resid_post") else None,
        # Llama Scope: l{L}r_... are residual (a: attention, m: MLP)
        "llama_scope": r"^l(\d+)r_",
        "llama_scope_r1_distill": r"^l(\d+)r_",
        "qwen_scope": r"^layer(\d+)$",
        "goodfire": r"^layer_(\d+)$",
        "dictionary_learning_1": r"^resid_post_layer_(\d+)_",
    }
    pattern = patterns.get(conversion or "")
    match = re.match(pattern, sae_id) if pattern else None
    return f"blocks.{match.group(1)}.hook_resid_post" if match else None


def _sae_width(release: str, conversion: str | None, sae: dict[str, Any]) -> int | None:
    sae_id = str(sae.get("id", ""))
    width = _width(sae_id) or _width(release)
    if width is None and conversion == "llama_scope":
        match = re.search(r"_(\d+)x$", sae_id)
        spec = MODELS.get("meta-llama/Llama-3.1-8B")
        width = int(match.group(1)) * spec.d_model if match and spec else None
    if width is None:
        match = re.match(r"^blocks\.\d+\.hook_resid_(?:pre|post)_(\d+)$", sae_id)  # feature splitting
        width = int(match.group(1)) if match else None
    return width


def registry_path() -> Path:
    """``sae_lens/pretrained_saes.yaml``, located without importing sae_lens."""
    spec = importlib.util.find_spec("sae_lens")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("sae_lens is not installed: `pip install sae-lens` (it ships the registry)")
    path = Path(list(spec.submodule_search_locations)[0]) / REGISTRY_FILE
    if not path.is_file():
        raise ConfigError(f"sae_lens ships no {REGISTRY_FILE} in {path.parent}: upgrade sae-lens")
    return path


@functools.lru_cache(maxsize=1)
def load_registry() -> dict[str, Release]:
    """Every release of the registry, by name (residual-stream SAEs only in ``saes``)."""
    import yaml

    # the C loader when libyaml is there: the same safe subset, 5x faster on this 40k-line file
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    raw = yaml.load(registry_path().read_text(), Loader=loader)  # noqa: S506 - a safe loader
    out: dict[str, Release] = {}
    for name, entry in raw.items():
        conversion = entry.get("conversion_func")
        saes = []
        for sae in entry.get("saes") or []:
            site = residual_hook(name, conversion, sae)
            if site is not None:
                l0 = sae.get("l0")
                nsf = sae.get("norm_scaling_factor")
                saes.append(ReleaseSae(str(sae["id"]), site, _sae_width(name, conversion, sae),
                                       float(l0) if l0 is not None else None, sae.get("neuronpedia"),
                                       float(nsf) if nsf is not None else None))
        model = str(entry.get("model"))
        if not saes:
            why = "no residual-stream SAEs (attention, MLP, transcoders or other hooks)"
        elif model not in MODELS:
            why = f"model {model!r} is not one the helpers know (supported families: {sorted(FAMILIES)})"
        else:
            why = None
        out[name] = Release(name, model, str(entry.get("repo_id")), tuple(saes),
                            dict(entry.get("config_overrides") or {}), why, conversion)
    return out


def residual_releases(model: str | None = None) -> list[Release]:
    """The usable releases, optionally those whose model name contains ``model`` (any case)."""
    found = [r for r in load_registry().values() if r.unsupported is None]
    if model:
        found = [r for r in found if model.lower() in r.model.lower()]
    return sorted(found, key=lambda r: (r.model, r.name))


def get_release(name: str) -> Release:
    """A usable release by name; ConfigError naming the closest ones, or why it is unusable."""
    registry = load_registry()
    if name not in registry:
        close = difflib.get_close_matches(name, registry, 3, 0.4)
        raise ConfigError(
            f"unknown release {name!r}" + (f": closest {close}" if close else "")
            + " (list them with `python -m helpers releases`)"
        )
    release = registry[name]
    if release.unsupported:
        raise ConfigError(f"release {name!r} cannot be used: {release.unsupported}")
    return release


def compact_sites(sites: tuple[str, ...]) -> str:
    """``blocks.{0..25}.hook_resid_post`` style summary of a list of sites."""
    parts = []
    for kind in ("pre", "post"):
        layers = [int(s.split(".")[1]) for s in sites if s.endswith(f"_{kind}")]
        if not layers:
            continue
        contiguous = layers == list(range(layers[0], layers[-1] + 1))
        if len(layers) == 1:
            span = str(layers[0])
        elif contiguous:
            span = f"{{{layers[0]}..{layers[-1]}}}"
        else:
            span = "{" + ",".join(map(str, layers)) + "}"
        parts.append(f"blocks.{span}.hook_resid_{kind}")
    return " + ".join(parts)


def _width_label(width: int | None) -> str:
    if width is None:
        return "?"
    if width >= 1 << 20 and width % (1 << 20) == 0:
        return f"{width >> 20}m"
    return f"{width // 1024}k" if width % 1024 == 0 and width >= 1024 else str(width)


def format_releases(releases: list[Release]) -> str:
    """A text table: release, model, family, sites, widths, number of SAEs."""
    rows = [("release", "model", "family", "sites", "widths", "SAEs")]
    for r in releases:
        rows.append((r.name, r.model, r.family or "-", compact_sites(r.sites),
                     ",".join(_width_label(w) for w in r.widths), str(len(r.saes))))
    cols = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row[:-1], cols)) + "  " + row[-1] for row in rows
    )


def experiment_from_release(
    release: str,
    layers: tuple[int, int] | None = None,
    width: int | None = None,
    name: str | None = None,
    **fields: Any,
) -> Experiment:
    """An experiment over the residual SAEs of ``release``: one SAE per site, in forward order.

    ``layers`` (first, last; inclusive) keeps the sites of those blocks; ``width`` picks one
    width when the release has several; where a site still has several SAEs (Gemma Scope's
    L0 variants) the registry's first one (its canonical choice) is taken. ``fields`` override
    any other experiment field (corpus, token_budget, ...).
    """
    rel = get_release(release)
    spec = MODELS[rel.model]
    saes = list(rel.saes)
    if layers is not None:
        first, last = layers
        if not 0 <= first <= last < spec.n_layers:
            raise ConfigError(
                f"layer range {first}..{last} is outside model {rel.model!r} (blocks 0..{spec.n_layers - 1})"
            )
        saes = [s for s in saes if first <= s.layer <= last]
        if not saes:
            raise ConfigError(f"release {release!r} has no SAE in blocks {first}..{last}: its sites are "
                              f"{compact_sites(rel.sites)}")
    widths = sorted({s.width for s in saes if s.width is not None})
    if width is not None:
        saes = [s for s in saes if s.width == width]
        if not saes:
            raise ConfigError(f"release {release!r} has no SAE of width {width} there: widths {widths}")
    elif len(widths) > 1:
        raise ConfigError(
            f"release {release!r} has several widths {widths}: choose one with --width (e.g. --width {widths[0]})"
        )
    chosen: dict[str, ReleaseSae] = {}
    for s in saes:
        chosen.setdefault(s.site, s)
    sites = tuple(sorted(chosen, key=_site_key))
    # resid_post L and resid_pre L+1 are the same activations: keep both only if asked
    label = release + (f"-{_width_label(width)}" if width else "") + (f"-L{layers[0]}-{layers[1]}" if layers else "")
    defaults = dict(
        name=name or re.sub(r"[^A-Za-z0-9_.-]", "-", label),
        model=rel.model,
        sae_source="pretrained",
        sae_release=release,
        sites=sites,
        sae_ids=tuple(chosen[s].sae_id for s in sites),
        center_residual=rel.center_residual,
        sae_width=next((s.width for s in chosen.values() if s.width), 0) or 4096,
        corpus="pile-10k",
        description=f"{rel.model} with the pretrained {release} SAEs at {compact_sites(sites)}",
    )
    return Experiment(**{**defaults, **fields})


def neuronpedia_id(release: str, sae_id: str) -> str | None:
    """The Neuronpedia id (``gemma-2-2b/0-gemmascope-res-16k``) of one SAE, if the registry has one."""
    rel = load_registry().get(release)
    if rel is None:
        return None
    return next((s.neuronpedia for s in rel.saes if s.sae_id == sae_id), None)

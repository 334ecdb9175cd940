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

An experiment built from a release (:func:`experiment_from_release`) takes one SAE per site
(:func:`pick_sae`: an L0 variant such as Gemma Scope 2's ``small``/``medium``/``big``), and is the
*twin* of the preset that trains its own SAEs on the same model, when there is one
(:func:`twin_preset`: ``gemma-scope-2-270m-pt-res-all`` and the ``gemma`` preset): the same study
with the official SAEs.
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
from ..experiment import FAMILIES, MODELS, PRESETS, Experiment

REGISTRY_FILE = "pretrained_saes.yaml"

#: conversion functions of SAEs that do not reconstruct the residual stream they read
#: (transcoders, cross-layer transcoders) or encode across positions (temporal)
_NOT_RESIDUAL_SAES = {"mwhanna_transcoder", "mntss_clt_layer_transcoder", "gemma_2_transcoder",
                      "temporal", "connor_rob_hook_z"}

_WIDTH_UNITS = {"": 1, "k": 1024, "m": 1 << 20}
#: Gemma Scope 2's L0 labels: small (L0 10-20), medium (30-60), big (60-150), by target sparsity
_VARIANT = re.compile(r"_l0_((?:small|medium|big)(?:_seed_\d+)?)$")


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

    @property
    def variant(self) -> str | None:
        """Gemma Scope 2's L0 label (``small``, ``medium``, ``big``; ``medium_seed_1`` for a second
        seed) from ids such as ``layer_12_width_16k_l0_small``; None for other ids."""
        match = _VARIANT.search(self.sae_id)
        return match.group(1) if match else None


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


#: the fields of a release experiment that say which SAEs it reads and where; the rest of the
#: study (corpus, tokens, thresholds...) comes from its trained twin, when the model has one
_SAE_FIELDS = ("name", "model", "sae_source", "sae_release", "sites", "sae_ids", "center_residual",
               "sae_width", "description")


def twin_preset(model: str) -> Experiment | None:
    """The preset that trains its own SAEs on ``model`` (a registry model name such as
    ``google/gemma-3-270m``; compared by its last path part and shape), if there is one.

    A release of that model then runs the same study with the official SAEs: same corpus, token
    budget, context, thresholds and (unless ``layers`` are given) the sites both have.
    """
    spec = MODELS.get(model)
    short = model.split("/")[-1].lower()
    for preset in PRESETS.values():
        theirs = preset.model_spec
        names = {n.split("/")[-1].lower() for n in (preset.model, theirs.name, theirs.source)}
        if (preset.sae_source == "trained" and short in names and spec is not None
                and (theirs.family, theirs.d_model) == (spec.family, spec.d_model)):
            return preset
    return None


def _parse_l0(l0: str | float | None) -> str | float | None:
    """``"small"`` stays a label; ``50`` and ``"50"`` become the number 50.0."""
    if l0 is None:
        return None
    try:
        return float(l0)
    except ValueError:
        return str(l0)


def pick_sae(candidates: list[ReleaseSae], l0: str | float | None = None) -> ReleaseSae | None:
    """The SAE of one site among ``candidates`` (same site and width, registry order).

    ``l0`` a label (``small``, ``medium``, ``big``: Gemma Scope 2): that variant; a number: the SAE
    whose registry L0 is nearest. None, the default rule: leaving out second seeds, the first SAE
    that has a Neuronpedia page (Gemma Scope 2's ``medium`` where the registry links it), else the
    ``small`` variant (the sparsest of Gemma Scope 2's ``-all`` releases), else the registry's first.
    None when ``l0`` matches none.
    """
    l0 = _parse_l0(l0)
    if l0 is None:
        plain = [s for s in candidates if "_seed_" not in (s.variant or "")] or candidates
        return (next((s for s in plain if s.neuronpedia), None)
                or next((s for s in plain if s.variant == "small"), None) or plain[0])
    if isinstance(l0, float):
        known = [s for s in candidates if s.l0 is not None]
        return min(known, key=lambda s: abs(s.l0 - l0)) if known else None
    return next((s for s in candidates if s.variant == l0), None)


def _l0_error(release: str, site: str, candidates: list[ReleaseSae], l0: str | float) -> ConfigError:
    labels = [s.variant for s in candidates if s.variant]
    l0s = [f"{s.l0:g}" for s in candidates if s.l0 is not None]
    there = (f"its L0 variants there are {labels}" if labels else f"its registry L0s there are {l0s}" if l0s
             else "the registry gives no L0 variants there")
    return ConfigError(f"--l0 {l0!r}: release {release!r} has no such SAE at {site}: {there} "
                       "(give a label, small|medium|big, or a number: the nearest registry L0)")


def experiment_from_release(
    release: str,
    layers: tuple[int, int] | None = None,
    width: int | None = None,
    name: str | None = None,
    l0: str | float | None = None,
    **fields: Any,
) -> Experiment:
    """An experiment over the residual SAEs of ``release``: one SAE per site, in forward order.

    ``layers`` (first, last; inclusive) keeps the sites of those blocks; ``width`` picks one
    width when the release has several; where a site still has several SAEs (L0 variants),
    ``l0`` picks one (:func:`pick_sae`: a label such as ``small``, or a number; by default the
    Neuronpedia-linked one, else ``small``, else the registry's first).

    When a preset trains its own SAEs on the release's model (:func:`twin_preset`, e.g. ``gemma``
    for ``gemma-scope-2-270m-pt-res-all``), the experiment is its twin: the preset's study
    (corpus, tokens, thresholds, and its sites when the release has them all and no ``layers``
    are given) with the official
    SAEs. ``fields`` override any other experiment field (corpus, token_budget, ...).
    """
    rel = get_release(release)
    spec = MODELS[rel.model]
    l0 = _parse_l0(l0)
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
    by_site: dict[str, list[ReleaseSae]] = {}
    for s in saes:
        by_site.setdefault(s.site, []).append(s)
    twin = twin_preset(rel.model)
    if twin is not None and layers is None and set(twin.sites) <= set(by_site):
        by_site = {site: c for site, c in by_site.items() if site in twin.sites}
    sites = tuple(sorted(by_site, key=_site_key))
    chosen = {site: pick_sae(by_site[site], l0) for site in sites}
    for site, sae in chosen.items():
        if sae is None:
            raise _l0_error(release, site, by_site[site], l0)
    # resid_post L and resid_pre L+1 are the same activations: keep both only if asked
    label = (release + (f"-{_width_label(width)}" if width else "") + (f"-l0-{l0:g}" if isinstance(l0, float) else
             f"-{l0}" if l0 else "") + (f"-L{layers[0]}-{layers[1]}" if layers else ""))
    where = compact_sites(sites)
    sae_side = dict(
        name=name or re.sub(r"[^A-Za-z0-9_.-]", "-", label),
        model=rel.model,
        sae_source="pretrained",
        sae_release=release,
        sites=sites,
        sae_ids=tuple(chosen[s].sae_id for s in sites),
        center_residual=rel.center_residual,
        sae_width=next((s.width for s in chosen.values() if s.width), 0) or 4096,
        description=(f"the study of preset {twin.name!r} with the official {release} SAEs at {where}" if twin
                     else f"{rel.model} with the pretrained {release} SAEs at {where}"),
    )
    study = {k: v for k, v in twin.to_dict().items() if k not in _SAE_FIELDS} if twin else {}
    if "model" in fields:
        check_model_shape(release, rel.model, str(fields["model"]))
    return Experiment(**{"corpus": "pile-10k", **study, **sae_side, **fields})


def check_model_shape(release: str, theirs: str, model: str) -> None:
    """A model asked for instead of the release's own must have its family and d_model."""
    from ..experiment import model_spec

    want, got = MODELS[theirs], model_spec(model)
    if (got.family, got.d_model) != (want.family, want.d_model):
        raise ConfigError(
            f"the {release} SAEs read {theirs!r} ({want.family}, d_model {want.d_model}), but model {model!r} "
            f"is {got.family} with d_model {got.d_model}: use {theirs!r} (or a model of its shape), or a release "
            "of that model (`python -m helpers releases --model NAME`)"
        )


def release_saes(exp: Experiment) -> list[dict[str, Any]]:
    """Per site of a pretrained experiment: the SAE id, the hook it reads (sae_lens' name, and the
    Hugging Face module whose output or input that is), its registry L0 and Neuronpedia id."""
    rel = get_release(exp.sae_release)
    by_id = {s.sae_id: s for s in rel.saes}
    blocks = exp.model_spec.family_spec.blocks[0]
    rows = []
    for site in exp.sites:
        sae = by_id.get(exp.sae_id(site))
        layer, kind = int(site.split(".")[1]), site.rsplit("_", 1)[1]
        rows.append({"site": site, "sae_id": exp.sae_id(site), "hook": site,
                     "module": f"{blocks}.{layer} {'output' if kind == 'post' else 'input'}",
                     "l0": sae.l0 if sae else None, "variant": sae.variant if sae else None,
                     "neuronpedia": sae.neuronpedia if sae else None})
    return rows


def release_variants(exp: Experiment) -> list[str]:
    """The L0 labels the release offers at every site and width of ``exp`` (second seeds left out)."""
    rel = get_release(exp.sae_release)
    per_site = [{s.variant for s in rel.saes if s.site == site and s.width == exp.sae_width
                 and s.variant and "_seed_" not in s.variant} for site in exp.sites]
    common = set.intersection(*per_site) if per_site else set()
    return sorted(common, key=["small", "medium", "big"].index)


def layer_pattern(rows: list[dict[str, Any]], key: str = "sae_id") -> str | None:
    """``layer_{L}_width_16k_l0_small`` when ``row[key]`` of every site (rows of
    :func:`release_saes`) is one pattern in the site's layer, else None."""
    patterns = {re.sub(rf"(?<!\d){r['site'].split('.')[1]}(?!\d)", "{L}", r[key], count=1) for r in rows}
    return patterns.pop() if len(patterns) == 1 else None


def neuronpedia_id(release: str, sae_id: str) -> str | None:
    """The Neuronpedia id (``gemma-2-2b/0-gemmascope-res-16k``) of one SAE, if the registry has one."""
    rel = load_registry().get(release)
    if rel is None:
        return None
    return next((s.neuronpedia for s in rel.saes if s.sae_id == sae_id), None)

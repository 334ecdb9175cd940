"""SAEs: load (trained here or pretrained), check, encode, measure.

Trained SAEs (:mod:`.training`) are written in sae_lens format to
``artefacts/saes/<preset>/<site>/`` and read back by ``sae_lens.SAE.load_from_disk``.

Quality is measured on held-out tokens (the last ``sae_heldout_tokens`` of the
token stream, never seen in training):

- FVU, fraction of variance unexplained: ``sum |x - x_hat|^2 / sum |x - mean(x)|^2``;
- L0: mean number of features active (> 0) per token;
- dead fraction: share of features that never fire on the held-out tokens.

Input normalisation (``normalize_activations`` of an SAE's config): features are always
computed by ``sae.encode``, which applies sae_lens' run-time normalisations; what the helpers
cannot reproduce is refused before the model loads (:func:`check_sae_configs`,
:func:`check_normalization`); :mod:`.decode` gives what a feature edit adds to the stream, as the
SAE's own ``decode`` does, and :func:`check_saes` checks it on every SAE it is given.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from .decode import check_decode
from .corpus import hub_offline
from ..errors import ArtefactMismatchError, ConfigError, HubUnavailableError, MissingArtefactError
from ..experiment import SEEDS_SUFFIX, Experiment, base_site, seed_of_site, width_of_site
from ..io import sae_dir

log = logging.getLogger(__name__)

#: fields of an experiment that trained SAEs depend on; a change means retraining
SAE_FIELDS = (
    "model",
    "sites",
    "corpus",
    "max_documents",
    "context_length",
    "sae_width",
    "sae_k",
    "sae_train_tokens",
    "sae_heldout_tokens",
    "sae_train_batch",
    "sae_epochs",
    "sae_lr",
    "seed",
    "center_residual",
    "prepend_bos",
    "sae_seed_per_site",
    "sae_save_dtype",
    "sae_centre_inputs",
)
REPORT_FILE = "training_report.json"
#: a feature firing on more than this share of tokens counts as dense
DENSE_FREQUENCY = 0.1


# --------------------------------------------------------------------------- input normalisation
#: What sae_lens (6.x, ``saes/sae.py``) does at inference with each ``normalize_activations`` an
#: SAE's config may hold, and so what the helpers do: they always encode with ``sae.encode``,
#: whose ``process_sae_in`` applies the run-time normalisations, so the features are sae_lens'
#: own (``tests/subject/test_saes.py`` checks each against a formula written out by hand).
NORMALIZATIONS = {
    "none": "nothing",
    "layer_norm": "per token, inside sae.encode: x - mean(x), divided by std(x) + 1e-5 (unbiased std)",
    "constant_norm_rescale": "per token, inside sae.encode: x scaled to norm sqrt(d_in)",
    "expected_average_only_in": "a constant scale (the registry's norm_scaling_factor) folded into "
                                "W_enc, W_dec and b_dec when sae_lens loads the SAE (then 'none')",
}
#: ``normalize_activations`` that sae_lens' pretrained loaders set themselves (sae_lens 6.54,
#: ``loading/pretrained_sae_loaders.py``; Goodfire's leaves the default): releases in sae_lens'
#: own format (conversion ``sae_lens``) read it from their ``cfg.json`` on the hub instead
LOADER_NORMALIZATION = {
    "gemma_2": "none", "gemma_3": "none", "qwen_scope": "none", "dictionary_learning_1": "none",
    "deepseek_r1": "none", "goodfire": "none",
    "llama_scope": "expected_average_only_in", "llama_scope_r1_distill": "expected_average_only_in",
}


def check_normalization(value: str | None, what: str, scale_known: bool = False) -> None:
    """Refuse, in one line, an input normalisation the helpers cannot reproduce.

    ``value``: the SAE config's ``normalize_activations`` (as loaded: sae_lens turns
    ``expected_average_only_in`` into ``none`` once it has folded the scale into the weights);
    ``what`` names the SAE; ``scale_known``: the registry gives the scale sae_lens will fold.
    """
    value = value or "none"
    if value in ("none", "layer_norm", "constant_norm_rescale"):
        return
    if value == "expected_average_only_in":
        if scale_known:
            return
        raise ConfigError(
            f"{what} was trained on activations scaled to norm sqrt(d_in) (normalize_activations="
            "'expected_average_only_in') but its scale is not folded into its weights and sae_lens knows no "
            "norm_scaling_factor for it, so it would read unscaled activations: fold the scale with "
            "sae.fold_activation_norm_scaling_factor(...) and save it, or use another SAE"
        )
    if value == "covariance_whitening":
        raise ConfigError(
            f"{what} was trained on whitened activations (normalize_activations='covariance_whitening') "
            "that are not folded into its weights: fold them with sae.fold_activation_whitening(...) and "
            "save it (sae_lens' trainer does), or use another SAE"
        )
    raise ConfigError(f"{what} asks for normalize_activations={value!r}, which the helpers cannot reproduce "
                      f"(they know {sorted(NORMALIZATIONS)}): use an SAE with one of those")


def check_sae_configs(exp: Experiment) -> None:
    """Check what every SAE of ``exp`` does to its input before anything heavy loads.

    Trained SAEs: their ``cfg.json`` on disk. Pretrained ones: the normalisation the release's
    loader or ``config_overrides`` set (with the registry's ``norm_scaling_factor``), else, when
    the hub can be reached, the release's ``cfg.json`` alone (a small download; offline the SAE
    load itself says the hub is needed). Loaded SAEs are checked again by :func:`check_saes`.
    """
    import json

    if exp.sae_source == "trained":
        for site in exp.sites:
            path = trained_sae_path(exp, site) / "cfg.json"
            if path.is_file():  # a missing SAE is named by load_saes, with the command that trains it
                cfg = json.loads(path.read_text())
                check_normalization(cfg.get("normalize_activations"), f"the SAE for site {site!r} ({path.parent})")
        return
    from .releases import check_model_shape, get_release

    rel = get_release(exp.sae_release)
    if exp.model != rel.model:  # an experiment file or --set model: the release's SAEs must fit it
        check_model_shape(exp.sae_release, rel.model, exp.model)
    by_id = {s.sae_id: s for s in rel.saes}
    for site in exp.sites:
        sae_id = exp.sae_id(site)
        entry = by_id.get(sae_id)
        value = rel.config_overrides.get("normalize_activations") or LOADER_NORMALIZATION.get(rel.conversion or "sae_lens")
        if value is None and not hub_offline():
            value = _hub_normalization(exp.sae_release, sae_id)
        if value is not None:
            check_normalization(value, f"SAE {exp.sae_release}/{sae_id}",
                                scale_known=entry is not None and entry.norm_scaling_factor is not None)


def _hub_normalization(release: str, sae_id: str) -> str | None:
    """``normalize_activations`` of a release's ``cfg.json`` on the hub (None when it cannot be read:
    the SAE load then says why)."""
    try:
        from sae_lens.loading.pretrained_sae_loaders import load_sae_config_from_huggingface

        return load_sae_config_from_huggingface(release, sae_id).get("normalize_activations") or "none"
    except Exception as exc:  # noqa: BLE001 - network, missing file, old registry: the load reports it
        log.debug("could not read the config of %s/%s ahead of loading: %s", release, sae_id, exc)
        return None


# --------------------------------------------------------------------------- loading
def trained_saes_ready(exp: Experiment) -> bool:
    """True when SAEs trained for exactly this experiment are on disk (a width sweep's pass: one SAE per
    width site, in the sweep's folders)."""
    if exp.width_pairs:
        return all((trained_sae_path(exp, s) / "cfg.json").is_file() for s in exp.sites)
    if exp.seed_pairs:
        from .twins import twin_ready

        return all(twin_ready(exp, s) if seed_of_site(s) else (trained_sae_path(exp, s) / "cfg.json").is_file()
                   for s in exp.sites)
    base = sae_dir(exp.name)
    if not (base / "cfg.json").is_file():
        return False
    try:
        saved = Experiment.load(base)
    except (ConfigError, ValueError):
        return False
    if saved.differences(exp, SAE_FIELDS):
        return False
    return all((base / s / "cfg.json").is_file() for s in exp.sites)


def trained_sae_path(exp: Experiment, site: str) -> Path:
    """Where the trained SAE of ``site`` lives: ``artefacts/saes/<name>/<site>``, or for a width site
    ``artefacts/saes/<name>/<model site>/w<width>`` (the layout of a width sweep); in a seeds experiment
    ``<base>-seeds`` a twin ``<site>@seed<n>`` lives in ``artefacts/saes/<base>-seeds/<site>/seed<n>`` and
    a plain site is the base preset's own SAE."""
    if exp.seed_pairs:  # a seeds experiment: its plain sites are its base preset's, each twin in its own folder
        seed = seed_of_site(site)
        if seed is None:
            return sae_dir(exp.name.removesuffix(SEEDS_SUFFIX), site)
        return sae_dir(exp.name, base_site(site)) / f"seed{seed}"
    width = width_of_site(site)
    return sae_dir(exp.name, site) if width is None else sae_dir(exp.name, base_site(site)) / f"w{width}"


def load_saes(exp: Experiment, device: torch.device | str = "cpu",
              sites: Sequence[str] | None = None) -> dict[str, Any]:
    """``{site: sae_lens.SAE}`` for every site of the experiment (or only ``sites``), checked
    against the model."""
    from sae_lens import SAE

    chosen = None if sites is None else set(sites)
    wanted = exp.sites if chosen is None else tuple(s for s in exp.sites if s in chosen)
    saes: dict[str, Any] = {}
    if exp.sae_source == "trained" and exp.width_pairs:  # a width sweep's SAEs, one folder per width
        for site in wanted:
            path = trained_sae_path(exp, site)
            if not (path / "cfg.json").is_file():
                raise MissingArtefactError(
                    f"no SAE of width {width_of_site(site)} for site {base_site(site)!r} in {path}: train the "
                    f"sweep with `python -m helpers widths --experiment {exp.name.removesuffix('-widths')}`")
            saes[site] = SAE.load_from_disk(str(path), device=str(device))
    elif exp.sae_source == "trained" and exp.seed_pairs:  # a site's own SAE and its seed twin
        for site in wanted:
            path = trained_sae_path(exp, site)
            if not (path / "cfg.json").is_file():
                base = exp.name.removesuffix(SEEDS_SUFFIX)
                raise MissingArtefactError(
                    f"no SAE for {site!r} in {path}: train "
                    + (f"the twins with `python -m helpers train-saes --experiment {exp.name}`" if seed_of_site(site)
                       else f"the preset's SAEs with `python -m helpers train-saes --experiment {base}`"))
            saes[site] = SAE.load_from_disk(str(path), device=str(device))
    elif exp.sae_source == "trained":
        base = sae_dir(exp.name)
        if not (base / "cfg.json").is_file():
            raise MissingArtefactError(
                f"no trained SAEs for preset {exp.name!r} in {base}: "
                f"run `python -m helpers train-saes --experiment {exp.name}`"
            )
        diff = Experiment.load(base).differences(exp, SAE_FIELDS)
        if diff:
            raise ArtefactMismatchError(
                f"the SAEs in {base} were trained for another configuration ({'; '.join(diff)}): "
                f"retrain with `python -m helpers train-saes --experiment {exp.name} --force`"
            )
        for site in wanted:
            path = base / site
            if not (path / "cfg.json").is_file():
                raise MissingArtefactError(
                    f"no SAE for site {site!r} in {path}: "
                    f"run `python -m helpers train-saes --experiment {exp.name} --force`"
                )
            saes[site] = SAE.load_from_disk(str(path), device=str(device))
    else:
        for site in wanted:
            saes[site] = load_pretrained_sae(exp.sae_release, exp.sae_id(site), device)
    check_saes(saes, exp.model_spec.d_model, exp)
    return saes


def _offline_fix(release: str) -> str:
    """What to do without the hub: the preset that trains SAEs on the release's model, if any."""
    from .releases import get_release, twin_preset

    twin = twin_preset(get_release(release).model)
    if twin is None:
        return "use the offline preset (--experiment offline)"
    return f"use preset {twin.name!r}, the same model with SAEs trained here (--experiment {twin.name})"


def _unreachable(exc: BaseException) -> bool:
    """True for the errors of a hub that cannot be reached (no network, DNS, timeout, offline mode),
    as opposed to one that answers with an error (gated, missing)."""
    import requests
    from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled

    kinds: tuple[type[BaseException], ...] = (ConnectionError, TimeoutError, LocalEntryNotFoundError,
                                              OfflineModeIsEnabled, requests.ConnectionError, requests.Timeout)
    import importlib

    for name in ("httpx", "httpx2"):  # the HTTP clients of huggingface_hub 1.x and 2.x
        try:
            kinds += (importlib.import_module(name).TransportError,)
        except ImportError:
            pass
    return isinstance(exc, kinds)


def check_hub_for_saes(release: str, sae_id: str) -> None:
    """HubUnavailableError, in one line, when HF_HUB_OFFLINE forbids the download of a release's SAE
    (the statistics pass asks before it loads the model)."""
    if hub_offline():
        raise HubUnavailableError(
            f"SAE {release}/{sae_id} must come from the Hugging Face hub and HF_HUB_OFFLINE is set: "
            f"go online, or {_offline_fix(release)}"
        )


def load_pretrained_sae(release: str, sae_id: str, device: torch.device | str = "cpu"):
    """``SAE.from_pretrained`` with a one-line error when the hub cannot be reached or refuses.

    sae_lens folds an ``expected_average_only_in`` scale into the weights here when its registry
    has the release's ``norm_scaling_factor`` (else it warns and leaves the config as it was,
    which :func:`check_saes` refuses)."""
    from sae_lens import SAE

    check_hub_for_saes(release, sae_id)
    try:
        return SAE.from_pretrained(release, sae_id, device=str(device))
    except Exception as exc:  # noqa: BLE001 - sorted below: the hub's, the network's, or re-raised
        if _unreachable(exc):
            raise HubUnavailableError(
                f"cannot download SAE {release}/{sae_id}: the Hugging Face hub cannot be reached "
                f"({exc.__class__.__name__}): go online, or {_offline_fix(release)}"
            ) from None
        import requests
        from huggingface_hub.errors import HfHubHTTPError

        if isinstance(exc, (HfHubHTTPError, requests.HTTPError)):  # the hub answered: gated, missing
            raise HubUnavailableError(
                f"the Hugging Face hub refused SAE {release}/{sae_id} ({exc.__class__.__name__}: "
                f"{(str(exc).splitlines() or [''])[0][:160]}): log in (`hf auth login`) and accept the model's terms "
                f"if it is gated, or {_offline_fix(release)}"
            ) from None
        raise


def check_saes(saes: Mapping[str, Any], d_model: int, exp: Experiment | None = None) -> None:
    """Every SAE reads ``d_model`` (and, given ``exp``, its site of its model) with an input
    normalisation the helpers reproduce (:func:`check_normalization`) and a ``decode`` the edits
    reproduce (:func:`~helpers.subject.decode.check_decode`); all have one width."""
    for site, sae in saes.items():
        check_normalization(getattr(sae.cfg, "normalize_activations", "none"), f"the SAE for site {site!r}")
        if sae.cfg.d_in != d_model:
            if exp is not None and exp.sae_source == "pretrained":
                raise ConfigError(
                    f"SAE {exp.sae_release}/{exp.sae_id(site)} for site {site!r} reads d_in={sae.cfg.d_in}, "
                    f"but model {exp.model!r} has d_model={d_model}: use a release of this model "
                    f"(`python -m helpers releases --model {exp.model.split('/')[-1]}`)"
                )
            raise ConfigError(
                f"the SAE for site {site!r} reads d_in={sae.cfg.d_in}, but the model's residual "
                f"stream has d_model={d_model}: load the SAEs trained for this model"
            )
        check_decode(sae, f"the SAE for site {site!r}")
        if exp is not None:
            check_sae_metadata(sae, site, exp)
    if exp is not None:
        check_sae_widths(saes, exp)
        return
    widths = {sae.cfg.d_sae for sae in saes.values()}
    if len(widths) > 1:
        raise ConfigError(
            f"SAEs of different widths {sorted(widths)}: the statistics need one width for all sites"
        )


def check_sae_widths(saes: Mapping[str, Any], exp: Experiment) -> None:
    """Every SAE has the width its site asks for (``sae_width``, or the width a width site names)."""
    wrong = [(site, sae.cfg.d_sae, w) for site, w in zip(exp.sites, exp.site_widths)
             if (sae := saes.get(site)) is not None and sae.cfg.d_sae != w]
    if wrong:
        site, has, want = wrong[0]
        raise ConfigError(f"the SAE for site {site!r} has {has} features but the experiment says {want} "
                          f"(sae_width, or the width the site names): load the SAE of that width")


def check_sae_metadata(sae, site: str, exp: Experiment) -> None:
    """The SAE's own metadata (hook, model, context) agree with the experiment, when it has them."""
    meta = getattr(sae.cfg, "metadata", None)
    hook = getattr(meta, "hook_name", None)
    if hook and hook != base_site(site):
        raise ConfigError(
            f"the SAE for site {site!r} was trained on {hook!r}: give the SAE id of {site!r} "
            "(sae_ids), or that site"
        )
    model = getattr(meta, "model_name", None)
    spec = exp.model_spec
    names = {exp.model, spec.name, spec.source, spec.source.split("/")[-1], exp.model.split("/")[-1]}
    if model and model not in names and model.split("/")[-1] not in names:
        raise ConfigError(
            f"the SAE for site {site!r} was trained on model {model!r}, not {exp.model!r}: "
            "use the model of its release (see `python -m helpers releases`)"
        )
    context = getattr(meta, "context_size", None)
    if context and exp.context_length > context:
        log.warning(
            "context_length=%d exceeds the %d tokens the SAE for %s was trained on: later positions "
            "are outside its training distribution", exp.context_length, context, site,
        )


@torch.no_grad()
def encode(sae, x: torch.Tensor) -> torch.Tensor:
    """Feature activations ``[..., d_sae]`` of ``x`` ``[..., d_in]`` (cast to the SAE's dtype)."""
    return sae.encode(x.to(sae.W_enc.dtype))


# --------------------------------------------------------------------------- quality
@torch.no_grad()
def sae_quality(sae, acts: torch.Tensor, chunk: int = 4096) -> dict[str, float]:
    """FVU, L0, and the dead and dense fractions of ``sae`` on activations ``[n_tokens, d_in]``
    (dense: firing on more than :data:`DENSE_FREQUENCY` of the tokens)."""
    if acts.ndim != 2 or acts.shape[0] == 0:
        raise ConfigError(f"need activations [n_tokens > 0, d_in], got shape {tuple(acts.shape)}")
    device = sae.W_enc.device
    mean = acts.double().mean(0).to(device)
    sse = sst = 0.0
    l0 = 0
    fires = torch.zeros(sae.cfg.d_sae, dtype=torch.long, device=device)
    for start in range(0, acts.shape[0], chunk):
        x = acts[start : start + chunk].to(device=device, dtype=sae.W_enc.dtype)
        f = sae.encode(x)
        x_hat = sae.decode(f)
        sse += float(((x - x_hat).double() ** 2).sum())
        sst += float(((x.double() - mean) ** 2).sum())
        active = f > 0
        l0 += int(active.sum())
        fires += active.sum(0)
    n = acts.shape[0]
    return {
        "fvu": sse / sst,
        "l0": l0 / n,
        "dead_fraction": float((fires == 0).float().mean()),
        "dense_fraction": float((fires > DENSE_FREQUENCY * n).float().mean()),
        "n_tokens": n,
    }


def training_report(exp: Experiment) -> dict[str, Any]:
    """The saved quality report of the preset's trained SAEs."""
    import json

    path = sae_dir(exp.name) / REPORT_FILE
    if not path.is_file():
        raise MissingArtefactError(
            f"no training report in {path}: run `python -m helpers train-saes --experiment {exp.name}`"
        )
    return json.loads(path.read_text())

"""SAEs: load (trained here or pretrained), encode, measure, train with sae_lens.

Trained SAEs are TopK SAEs (``k`` features active per token), trained per site
with ``sae_lens.SAETrainer`` on activations captured from the subject, with the
activation norm normalised during training and folded back into the weights,
so the saved SAE reads raw activations. They are written in sae_lens format to
``artefacts/saes/<preset>/<site>/`` and read back by
``sae_lens.SAE.load_from_disk``.

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
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import torch
from tqdm.auto import tqdm

from .capture import capture_residuals, flatten_tokens
from .decode import check_decode
from .corpus import hub_offline, iter_token_batches, load_corpus
from ..errors import ArtefactMismatchError, ConfigError, HubUnavailableError, MissingArtefactError
from ..experiment import Experiment, base_site, width_of_site
from ..io import MORE_SPACE, atomic_dir, atomic_write_json, require_space, sae_dir
from ..locks import writes
from .models import Subject, load_subject

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
#: tokens without firing after which training treats a feature as dead (TopK aux loss)
DEAD_WINDOW_TOKENS = 40_000


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
    ``artefacts/saes/<name>/<model site>/w<width>`` (the layout of a width sweep)."""
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


# --------------------------------------------------------------------------- training
@torch.no_grad()
def collect_activations(
    subject: Subject,
    exp: Experiment,
    n_tokens: int,
    progress: bool = True,
    keep_batches_from: int | None = None,
):
    """``{site: [n, d_model]}`` float32 on the CPU for the first ``n_tokens`` tokens of the corpus.

    With ``keep_batches_from``, returns ``(acts, batches)``: also the token batches that lie wholly
    at or after that token (the held-out tail, for the loss recovered).
    """
    docs = load_corpus(exp.corpus, exp.max_documents)
    batches = iter_token_batches(
        docs, subject.tokenizer, subject.special_tokens, exp.context_length, exp.batch_size, n_tokens
    )
    # filled in place: one copy of the activations in memory, not a list and its concatenation
    out = {s: torch.empty(n_tokens, exp.model_spec.d_model) for s in exp.sites}
    kept = []
    seen = 0
    with tqdm(total=n_tokens, desc="activations", unit="tok", disable=not progress) as bar:
        for batch in batches:
            acts = capture_residuals(subject, batch.input_ids, batch.attention_mask, exp.sites)
            for site, a in flatten_tokens(acts, batch.token_mask).items():
                out[site][seen : seen + a.shape[0]] = a.float().cpu()
            if keep_batches_from is not None and seen >= keep_batches_from:
                kept.append(batch)
            seen += batch.n_tokens
            bar.update(batch.n_tokens)
    acts = {s: a[:seen] for s, a in out.items()}
    return acts if keep_batches_from is None else (acts, kept)


def site_seed(seed: int, site: str) -> int:
    """The seed of one site's SAE, derived from the experiment's seed and the site's name, so that
    no two sites start from the same random matrices."""
    import hashlib

    return int.from_bytes(hashlib.sha256(f"{seed}:{site}".encode()).digest()[:4], "little") & 0x7FFFFFFF


def _shuffled_batches(acts: torch.Tensor, batch: int, seed: int, device) -> Iterator[torch.Tensor]:
    """Endless shuffled mini-batches (a new permutation every epoch)."""
    gen = torch.Generator().manual_seed(seed)
    n = acts.shape[0]
    while True:
        perm = torch.randperm(n, generator=gen)
        for start in range(0, n - batch + 1, batch):
            yield acts[perm[start : start + batch]].to(device)


def initial_sae(exp: Experiment, site: str, d_in: int, device: torch.device | str = "cpu"):
    """The untrained TopK SAE of ``site`` and its seed (its own per site, see :func:`site_seed`)."""
    from sae_lens import TopKTrainingSAE, TopKTrainingSAEConfig

    seed = site_seed(exp.seed, site) if exp.sae_seed_per_site else exp.seed
    torch.manual_seed(seed)
    cfg = TopKTrainingSAEConfig(
        d_in=d_in,
        d_sae=exp.sae_width,
        k=exp.sae_k,
        device=str(device),
        normalize_activations="expected_average_only_in",
    )
    cfg.metadata.model_name = exp.model_spec.source
    cfg.metadata.hook_name = site
    return TopKTrainingSAE(cfg), seed


def train_sae(
    acts: torch.Tensor,
    exp: Experiment,
    site: str,
    device: torch.device | str = "cpu",
    progress: bool = True,
    samples: int | None = None,
):
    """Train one TopK SAE on ``acts`` ``[n, d_model]`` with ``sae_lens.SAETrainer``.

    The trainer sees ``sae_epochs`` shuffled passes over ``acts``, or, given ``samples``, about that
    many samples (``max(1, round(samples / batch))`` steps of one batch, reshuffling every pass):
    the width sweep (:mod:`.widths`) gives every width the same samples per feature."""
    from sae_lens import SAETrainer
    from sae_lens.config import SAETrainerConfig

    n, d_in = acts.shape
    batch = min(exp.sae_train_batch, n)
    if n < batch or n == 0:
        raise ConfigError(f"only {n} training tokens for site {site!r}: raise sae_train_tokens")
    sae, seed = initial_sae(exp, site, d_in, device)
    mean = acts.mean(0) if exp.sae_centre_inputs else None
    if mean is not None:
        acts = acts - mean
    steps = max(1, (n // batch) * exp.sae_epochs) if samples is None else max(1, round(samples / batch))
    trainer_cfg = SAETrainerConfig(
        total_training_samples=steps * batch,
        train_batch_size_samples=batch,
        lr=exp.sae_lr,
        lr_end=exp.sae_lr / 10,
        lr_scheduler_name="constant",
        lr_warm_up_steps=max(1, steps // 20),
        lr_decay_steps=max(1, steps // 5),
        device=str(device),
        n_batches_for_norm_estimate=max(1, min(20, n // batch)),
        # a feature idle for ~40k tokens counts as dead and gets the TopK auxiliary loss
        # (sae_lens' default of 1000 steps would never trigger in a run of ~100 steps)
        dead_feature_window=max(1, DEAD_WINDOW_TOKENS // batch),
        feature_sampling_window=max(1, DEAD_WINDOW_TOKENS // batch),
    )
    provider = _shuffled_batches(acts, batch, seed, device)
    import contextlib
    import io as _io

    # sae_lens' own progress bar would interleave with ours: silence it unless asked
    sink = contextlib.nullcontext() if progress else contextlib.redirect_stderr(_io.StringIO())
    with sink:
        trained = SAETrainer(cfg=trainer_cfg, sae=sae, data_provider=provider).fit()
    if mean is not None:
        # an affine map of the input, folded exactly as sae_lens folds its own whitening
        eye = torch.eye(d_in, dtype=mean.dtype)
        trained.fold_activation_whitening(mean=mean, whitening_matrix=eye, unwhitening_matrix=eye)
    return trained


@dataclass
class TrainingResult:
    preset: str
    report: dict[str, dict[str, float]]
    reused: bool


@writes("train-saes", lambda a: sae_dir(a["exp"].name))
def train_saes(
    exp: Experiment,
    force: bool = False,
    progress: bool = True,
    subject: Subject | None = None,
) -> TrainingResult:
    """Train (or reuse) one SAE per site; write them atomically with a quality report.

    Returns the per-site report: FVU, L0 and dead fraction on held-out tokens.
    """
    if exp.sae_source != "trained":
        raise ConfigError(
            f"preset {exp.name!r} uses pretrained SAEs ({exp.sae_release}): nothing to train"
        )
    base = sae_dir(exp.name)
    if not force and trained_saes_ready(exp) and (base / REPORT_FILE).is_file():
        import json

        log.info("reusing the SAEs in %s", base)
        return TrainingResult(exp.name, json.loads((base / REPORT_FILE).read_text())["sites"], True)

    d, f = exp.model_spec.d_model, exp.sae_width  # float32 encoder and decoder, biases
    require_space(base, len(exp.sites) * (2 * d * f + f + d) * 4, "train-saes", MORE_SPACE)
    subject = subject or load_subject(exp)
    total = exp.sae_train_tokens + exp.sae_heldout_tokens
    t0 = time.perf_counter()
    acts, tail = collect_activations(subject, exp, total, progress=progress,
                                     keep_batches_from=exp.sae_train_tokens)
    n = next(iter(acts.values())).shape[0]
    if n < total:
        log.warning("the corpus holds %d tokens, fewer than the %d asked for", n, total)
    n_heldout = min(exp.sae_heldout_tokens, n // 5)
    report: dict[str, dict[str, float]] = {}
    saes = {}
    from sae_lens import SAE

    with atomic_dir(base) as tmp:
        for site in tqdm(exp.sites, desc="SAEs", unit="site", disable=not progress):
            train, heldout = acts[site][: n - n_heldout], acts[site][n - n_heldout :]
            sae = train_sae(train, exp, site, device=subject.device, progress=progress)
            sae.save_inference_model(str(tmp / site))
            if exp.sae_save_dtype != "float32":
                store_weights_as(tmp / site, exp.sae_save_dtype)
            saes[site] = SAE.load_from_disk(str(tmp / site), device=str(subject.device))
            report[site] = sae_quality(saes[site], heldout)
            report[site]["train_tokens"] = int(train.shape[0])
            log.info("%s: %s", site, report[site])
        del acts
        if subject.spec.causal:
            from .splice import loss_recovered

            tail = _first_tokens(tail, exp.sae_ce_tokens)
            for site, q in loss_recovered(subject, saes, tail, progress=progress).items():
                report[site].update(q)
        exp.save(tmp)
        atomic_write_json(
            tmp / REPORT_FILE,
            {"preset": exp.name, "seconds": time.perf_counter() - t0, "sites": report},
        )
    return TrainingResult(exp.name, report, False)


def _first_tokens(batches, n_tokens: int) -> list:
    """The first batches holding about ``n_tokens`` counted tokens (at least one batch)."""
    out, seen = [], 0
    for batch in batches:
        if out and seen >= n_tokens:
            break
        out.append(batch)
        seen += batch.n_tokens
    return out


def store_weights_as(folder, dtype: str) -> None:
    """Rewrite an SAE's weights in ``dtype`` (half the disk in float16); its config keeps float32,
    so ``SAE.load_from_disk`` reads them back as float32."""
    from pathlib import Path

    from safetensors.torch import load_file, save_file

    path = Path(folder) / "sae_weights.safetensors"
    weights = load_file(str(path))
    save_file({k: v.to(getattr(torch, dtype)).contiguous() for k, v in weights.items()}, str(path))


def training_report(exp: Experiment) -> dict[str, Any]:
    """The saved quality report of the preset's trained SAEs."""
    import json

    path = sae_dir(exp.name) / REPORT_FILE
    if not path.is_file():
        raise MissingArtefactError(
            f"no training report in {path}: run `python -m helpers train-saes --experiment {exp.name}`"
        )
    return json.loads(path.read_text())

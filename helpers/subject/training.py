"""Training SAEs with sae_lens, site by site.

Trained SAEs are TopK SAEs (``k`` features active per token), trained per site
with ``sae_lens.SAETrainer`` on activations captured from the subject, with the
activation norm normalised during training and folded back into the weights,
so the saved SAE reads raw activations (:mod:`.saes` loads and checks them).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Iterator

import torch
from tqdm.auto import tqdm

from .capture import capture_residuals, flatten_tokens
from .corpus import iter_token_batches, load_corpus
from ..errors import ConfigError
from ..experiment import Experiment, base_site
from ..io import MORE_SPACE, atomic_dir, atomic_write_json, require_space, sae_dir, swap_in
from ..locks import writes
from .models import Subject, load_subject
from .saes import REPORT_FILE, sae_quality, trained_saes_ready

log = logging.getLogger(__name__)

#: tokens without firing after which training treats a feature as dead (TopK aux loss)
DEAD_WINDOW_TOKENS = 40_000


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
    with tqdm(total=n_tokens, desc="activations", unit="tok", disable=not progress) as bar:
        seen = _fill(out, subject, exp.sites, batches, bar, lambda batch, at: (
            kept.append(batch) if keep_batches_from is not None and at >= keep_batches_from else None))
    acts = {s: a[:seen] for s, a in out.items()}
    return acts if keep_batches_from is None else (acts, kept)


def _fill(out: dict, subject: Subject, sites, batches, bar, each=None) -> int:
    """Write every batch's activations of ``sites`` (counted tokens only) into ``out[site]`` (tensors or
    memory-mapped arrays), one after the other; ``each(batch, start)`` is told of each batch. Returns the
    tokens written."""
    seen = 0
    for batch in batches:
        acts = capture_residuals(subject, batch.input_ids, batch.attention_mask, sites)
        for site, a in flatten_tokens(acts, batch.token_mask).items():
            a = a.float().cpu()
            out[site][seen : seen + a.shape[0]] = a if isinstance(out[site], torch.Tensor) else a.numpy()
        if each is not None:
            each(batch, seen)
        seen += batch.n_tokens
        bar.update(batch.n_tokens)
    return seen


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

    from ..experiment import seed_of_site

    # a seed twin always takes its own seed (derived from its name), even where the sites share one
    seed = site_seed(exp.seed, site) if exp.sae_seed_per_site or seed_of_site(site) else exp.seed
    torch.manual_seed(seed)
    cfg = TopKTrainingSAEConfig(
        d_in=d_in,
        d_sae=exp.sae_width,
        k=exp.sae_k,
        device=str(device),
        normalize_activations="expected_average_only_in",
    )
    cfg.metadata.model_name = exp.model_spec.source
    cfg.metadata.hook_name = base_site(site)  # a seed twin reads its model site
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


#: each trained site's quality on held-out tokens, beside its SAE (written last: the site is done)
SITE_QUALITY_FILE = "quality.json"
#: where an unfinished set of SAEs grows, site by site, beside the finished set it will replace
STAGING_SUFFIX = ".training"


def staging_dir(exp: Experiment):
    """``artefacts/saes/<preset>.training``: the SAEs trained so far for ``exp`` (resumable)."""
    base = sae_dir(exp.name)
    return base.with_name(base.name + STAGING_SUFFIX)


def _open_staging(exp: Experiment, force: bool):
    """The staging folder of ``exp``, resumed when it was started for the same SAE settings (and not
    ``force``), else begun anew with the experiment's ``cfg.json``."""
    import shutil

    from .saes import SAE_FIELDS

    staging = staging_dir(exp)
    if (staging / "cfg.json").is_file() and not force:
        try:
            if not Experiment.load(staging).differences(exp, SAE_FIELDS):
                return staging
        except (ConfigError, ValueError) as exc:
            log.info("cannot read %s (%s)", staging / "cfg.json", exc)
        log.info("the SAEs in %s were begun for other settings: starting over", staging)
    if staging.exists():
        shutil.rmtree(staging)
    with atomic_dir(staging, journal=False) as tmp:  # kept when this call fails: its sites are resumed
        (tmp / "cfg.json").write_text(exp.to_json() + "\n")
    return staging


def _check_writable(folder) -> None:
    """OSError (a one-line DiskError through :func:`~helpers.locks.writes`) when ``folder`` exists and
    cannot be written: the finished set could not be replaced after hours of training."""
    from ..io import TEMP_PREFIX

    if folder.is_dir():
        probe = folder / f"{TEMP_PREFIX}writable"
        probe.write_text("")
        probe.unlink()


def site_done(folder, site: str) -> bool:
    """Whether ``folder`` holds a finished SAE of ``site`` (its quality written)."""
    return (folder / site / SITE_QUALITY_FILE).is_file()


@writes("train-saes", lambda a: sae_dir(a["exp"].name))
def train_saes(
    exp: Experiment,
    force: bool = False,
    progress: bool = True,
    subject: Subject | None = None,
    sites: "tuple[str, ...] | list[str] | None" = None,
) -> TrainingResult:
    """Train (or reuse) one SAE per site, resumably: each site is written (atomically) as soon as it
    is trained, with its quality on held-out tokens, into ``artefacts/saes/<preset>.training``; a
    later call resumes with the sites not yet done. When every site is done, the set (with its
    ``cfg.json`` and ``training_report.json``) replaces ``artefacts/saes/<preset>``, so a finished
    set is never mixed with an unfinished one. ``sites``: train only these now (a session's share);
    ``force``: start over.

    Returns the per-site report: FVU, L0, dead fraction (and on a causal LM the loss recovered) on
    held-out tokens.
    """
    import json

    if exp.sae_source != "trained":
        raise ConfigError(
            f"preset {exp.name!r} uses pretrained SAEs ({exp.sae_release}): nothing to train"
        )
    if exp.seed_pairs:  # a seeds experiment: the base preset's SAEs, then each site's twin
        from ..experiment import seed_of_site
        from .twins import base_experiment, train_twins, twin_ready

        reused = all(twin_ready(exp, s) for s in exp.sites if seed_of_site(s))
        own = train_saes(base_experiment(exp), force=force, progress=progress, subject=subject)
        return TrainingResult(exp.name, own.report | train_twins(exp, progress=progress, subject=subject),
                              reused and own.reused)
    base = sae_dir(exp.name)
    if not force and trained_saes_ready(exp) and (base / REPORT_FILE).is_file():
        log.info("reusing the SAEs in %s", base)
        return TrainingResult(exp.name, json.loads((base / REPORT_FILE).read_text())["sites"], True)
    unknown = [s for s in (sites or ()) if s not in exp.sites]
    if unknown:
        raise ConfigError(f"site(s) {unknown} are not sites of experiment {exp.name!r}: choose among "
                          f"{list(exp.sites)}")
    d, f = exp.model_spec.d_model, exp.sae_width  # float32 encoder and decoder, biases
    require_space(base.parent, len(exp.sites) * (2 * d * f + f + d) * 4, "train-saes", MORE_SPACE)
    _check_writable(base)  # a read-only set is refused before anything trains
    staging = _open_staging(exp, force)
    wanted = [s for s in exp.sites if sites is None or s in sites]
    todo = [s for s in wanted if not site_done(staging, s)]
    if todo:
        subject = subject or load_subject(exp)
        t0 = time.perf_counter()
        data = training_data(subject, exp, todo, progress=progress)
        collect_seconds = time.perf_counter() - t0
        for site in tqdm(todo, desc="SAEs", unit="site", disable=not progress):
            quality = _train_site(subject, exp, site, data, staging / site, progress)
            quality["collect_seconds"] = collect_seconds / len(todo)
            log.info("%s: %s", site, quality)
        del data
    done = [s for s in exp.sites if site_done(staging, s)]
    report = {s: json.loads((staging / s / SITE_QUALITY_FILE).read_text()) for s in done}
    if len(done) < len(exp.sites):
        log.info("%d of %d sites trained in %s; run train-saes again for the rest", len(done), len(exp.sites),
                 staging)
        return TrainingResult(exp.name, report, False)
    seconds = sum(q.get("seconds", 0.0) + q.get("collect_seconds", 0.0) for q in report.values())
    atomic_write_json(staging / REPORT_FILE, {"preset": exp.name, "seconds": seconds, "sites": report})
    swap_in(staging, base)
    return TrainingResult(exp.name, report, False)


def _train_site(subject: Subject, exp: Experiment, site: str, data: "TrainingData", folder, progress: bool
                ) -> dict[str, float]:
    """Train, save and measure the SAE of one site into ``folder`` (atomically)."""
    from sae_lens import SAE

    t0 = time.perf_counter()
    train = data.train(site)
    with atomic_dir(folder, journal=False) as tmp:
        sae = train_sae(train, exp, site, device=subject.device, progress=progress)
        sae.save_inference_model(str(tmp))
        if exp.sae_save_dtype != "float32":
            store_weights_as(tmp, exp.sae_save_dtype)
        saved = SAE.load_from_disk(str(tmp), device=str(subject.device))
        quality = sae_quality(saved, data.heldout(site))
        quality["train_tokens"] = int(train.shape[0])
        del train
        if subject.spec.causal:
            from .splice import clean_loss, loss_recovered

            if data.clean is None:  # the clean model's loss: once for every site of this run
                data.clean = clean_loss(subject, data.ce_batches)
            quality.update(loss_recovered(subject, {site: saved}, data.ce_batches, progress=progress,
                                          clean=data.clean)[site])
        quality["seconds"] = time.perf_counter() - t0
        atomic_write_json(tmp / SITE_QUALITY_FILE, quality)
    return quality


@dataclass
class TrainingData:
    """The activations the SAEs of some sites train on and are measured on, and the held-out
    batches of the loss recovered. ``train(site)`` and ``heldout(site)`` give float32 tensors
    ``[n, d_model]`` (read from disk, site by site, when the experiment splits its corpus)."""

    train_acts: dict
    heldout_acts: dict
    ce_batches: list
    #: the clean model's summed loss and next-token count on ``ce_batches`` (computed once, when needed)
    clean: "tuple[float, int] | None" = None

    def train(self, site: str) -> torch.Tensor:
        return _tensor(self.train_acts[base_site(site)])  # a seed twin trains on its model site

    def heldout(self, site: str) -> torch.Tensor:
        return _tensor(self.heldout_acts[base_site(site)])


def _tensor(a) -> torch.Tensor:
    """A float32 tensor of ``a`` (a tensor, or an array mapped read-only from disk: copied)."""
    import numpy as np

    return a if isinstance(a, torch.Tensor) else torch.from_numpy(np.array(a, dtype=np.float32))


def training_data(subject: Subject, exp: Experiment, sites, progress: bool = True) -> TrainingData:
    """Activations of ``sites`` for training and measuring their SAEs.

    An experiment that splits its corpus (``corpus_split``) trains on its ``sae_train`` documents (at
    most ``sae_train_tokens`` tokens) and measures on its ``sae_heldout`` documents (at most
    ``sae_heldout_tokens``): one forward pass over each, written to a cache on disk
    (:func:`activation_cache`), reused by a later call for the same settings. Otherwise the first
    ``sae_train_tokens + sae_heldout_tokens`` tokens of the stream, in memory: the SAEs train on
    all but the last ``sae_heldout_tokens`` (at most a fifth) and are measured on those."""
    if not exp.corpus_split:
        some = exp.replace(sites=tuple(sites)) if tuple(sites) != exp.sites else exp
        total = exp.sae_train_tokens + exp.sae_heldout_tokens
        acts, tail = collect_activations(subject, some, total, progress=progress, keep_batches_from=exp.sae_train_tokens)
        n = next(iter(acts.values())).shape[0]
        if n < total:
            log.warning("the corpus holds %d tokens, fewer than the %d asked for", n, total)
        n_heldout = min(exp.sae_heldout_tokens, n // 5)
        return TrainingData({s: a[: n - n_heldout] for s, a in acts.items()},
                            {s: a[n - n_heldout :] for s, a in acts.items()},
                            _first_tokens(tail, exp.sae_ce_tokens))
    folder = activation_cache(subject, exp, sites, progress)
    import numpy as np

    from .corpus import corpus_part

    docs = corpus_part(exp, load_corpus(exp.corpus, exp.max_documents), "sae_heldout")
    held = iter_token_batches(docs, subject.tokenizer, subject.special_tokens, exp.context_length, exp.batch_size,
                              exp.sae_heldout_tokens)
    return TrainingData({s: np.load(folder / f"{s}.train.npy", mmap_mode="r") for s in sites},
                        {s: np.load(folder / f"{s}.heldout.npy", mmap_mode="r") for s in sites},
                        _first_tokens(held, exp.sae_ce_tokens))


#: the fields an activation cache depends on (beside the sites it holds)
ACTIVATION_FIELDS = ("model", "corpus", "max_documents", "corpus_split", "seed", "context_length", "batch_size",
                     "sae_train_tokens", "sae_heldout_tokens", "center_residual", "prepend_bos", "dtype")


def activation_cache(subject: Subject, exp: Experiment, sites, progress: bool = True):
    """The folder of ``<site>.train.npy`` and ``<site>.heldout.npy`` (float32 ``[n, d_model]``) for
    ``sites`` of a split corpus, under ``$SAE_EVOLUTION_CACHE/activations/`` (outside git): collected
    in one forward pass per part when missing, else reused. ``done.json`` is written last."""
    import hashlib
    import json

    import numpy as np

    from .corpus import corpus_part, count_tokens
    from .gguf import cache_root

    key = json.dumps({f: getattr(exp, f) for f in ACTIVATION_FIELDS}, sort_keys=True, default=list)
    folder = cache_root() / "activations" / f"{exp.name}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"
    marker = folder / "done.json"
    if marker.is_file() and set(sites) <= set(json.loads(marker.read_text())["sites"]):
        return folder
    if folder.exists():
        import shutil

        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    docs = load_corpus(exp.corpus, exp.max_documents)
    d = exp.model_spec.d_model
    some = exp.replace(sites=tuple(sites)) if tuple(sites) != exp.sites else exp
    sizes = {}
    for part, kind, budget in (("sae_train", "train", exp.sae_train_tokens),
                               ("sae_heldout", "heldout", exp.sae_heldout_tokens)):
        part_docs = corpus_part(exp, docs, part)
        n = min(budget, count_tokens(part_docs, subject.tokenizer))
        require_space(folder, n * d * 4 * len(sites), "train-saes (activation cache)", MORE_SPACE)
        out = {s: np.lib.format.open_memmap(folder / f"{s}.{kind}.npy", mode="w+", dtype=np.float32, shape=(n, d))
               for s in sites}
        batches = iter_token_batches(part_docs, subject.tokenizer, subject.special_tokens, exp.context_length,
                                     exp.batch_size, n)
        with tqdm(total=n, desc=f"activations ({kind})", unit="tok", disable=not progress) as bar:
            seen = _fill(out, subject, some.sites, batches, bar)
        for m in out.values():
            m.flush()
        sizes[kind] = seen
    atomic_write_json(marker, {"sites": list(sites), "tokens": sizes, "fields": json.loads(key)})
    return folder


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

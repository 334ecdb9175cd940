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
from ..experiment import Experiment
from ..io import MORE_SPACE, atomic_dir, atomic_write_json, require_space, sae_dir
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

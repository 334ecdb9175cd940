"""The statistics pass: every statistic, for all features, in ONE pass over the tokens.

For each batch of the token stream: one nnsight forward pass yields every site,
each SAE encodes its site, and the active features of each token (a
:class:`~helpers.stats.accumulators.SparseActs`) update the streaming accumulators,
which stay on the device. Activations are never stored.

Every ``step_tokens`` tokens (exactly: a batch is split at the boundary) the
pass records the number of dead features per threshold and site, and the number
of never/rarely co-activating pairs per threshold and adjacent pair of sites,
over all features and over alive features only.

Multi-process (``torchrun --nproc-per-node K -m helpers collect ...``), one of two
plans (:func:`~helpers.stats.memory.choose_plan` states which and why):

- data-parallel: batch ``i`` of the stream goes to rank ``i % K``. At each step
  boundary the ranks sum their firing and pair counts (``all_reduce``) so the
  curves are those of the global stream; at the end every accumulator is merged.
  Counts equal those of a single process exactly; float sums agree to rounding.
- pair-parallel: every rank runs the model and the SAEs on every batch, and
  holds only the adjacent pairs ``i`` with ``i % K == rank``, so K devices hold
  K times more pairs. Per-site statistics are the same on every rank; at each
  step the ranks sum their pairs' curve rows (small); at the end rank 0
  receives each pair's counts and sums, one pair at a time, on the host, and
  writes the artefacts. Every number equals a single process exactly (the same
  updates in the same order).

In one process whose device cannot hold every pair (``plan="passes"``, or ``"auto"``), the
adjacent pairs are split into runs of consecutive pairs, one run per pass over the tokens
(:func:`~helpers.stats.memory.pass_groups`). The first pass also counts every per-site
statistic and records the alive features per step; a later pass encodes only the sites of its
pairs (the forward pass stops after the last), updates only its pairs and adds their rows to
the curves. After each pass its pairs' counts and sums move to the host. Every number equals
one ordinary pass exactly (the same updates in the same order). Checkpoints record the pass.

Memory: :func:`plan_precision` chooses the accumulator dtypes (int32 pair
counts when exact; float64 sums of products, or float32 ones flushed into
float64 on the host when float64 does not fit the GPU) and refuses, with a way
out, a bill that does not fit.

Checkpoints (``checkpoint_tokens``) hold the accumulators and the stream
position; ``resume=True`` skips the batches already counted, so a run killed
half way and resumed gives exactly the counts and maxima of an uninterrupted one.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from tqdm.auto import tqdm

from ..errors import ArtefactMismatchError, ConfigError, MissingArtefactError
from ..experiment import Experiment
from ..io import atomic_path, stats_dir
from ..subject.capture import capture_residuals
from ..subject.corpus import TokenBatch, iter_token_batches, load_corpus
from .activity import describe_activity, relative_floors
from .accumulators import (ActivationHistogram, CoactivationGraph, FeatureStats, NonFiniteError, PairStats,
                           SparseActs, TopExamples)
from .codes import CODES_DIR, CodeWriter, discard_codes
from .artefacts import METADATA, STAT_FIELDS, write_artefacts
from .distributed import Dist
from .memory import Precision, check_plan_arguments, choose_plan, describe_plan, pass_groups

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint{rank}.pt"


# --------------------------------------------------------------------------- the state
class PassState:
    """All accumulators of the pass plus the per-step curves."""

    def __init__(self, exp: Experiment, n_features: int, device: torch.device,
                 precision: Precision | None = None, own_pairs: "set[int] | None" = None,
                 mode: str | None = None, passes: int = 1):
        self.exp, self.n_features, self.device = exp, n_features, device
        self.precision = precision = precision or Precision()
        #: "data" (one process or data-parallel), "pairs" (pair-parallel) or "passes"
        self.mode = mode or ("data" if own_pairs is None else "pairs")
        self.n_passes = passes
        self._big = 1 << 20 if device.type == "cuda" else 1 << 17  # pair increments per scatter call
        self.features = FeatureStats(exp.sites, n_features, device)
        self.histograms = ActivationHistogram(exp.sites, n_features, device)
        #: pair-parallel: the pairs this rank holds; several passes: the pairs of this pass (the
        #: others are None here); None: all of them
        self.own_pairs = own_pairs
        self.pairs = [self._new_pair(i) if own_pairs is None or i in own_pairs else None
                      for i in range(len(exp.site_pairs))]
        self.pair_results: "list[dict] | None" = None  # pair-parallel: gathered on rank 0
        # several passes over the pairs: the first pass counts the per-site statistics too; the
        # later ones only their pairs, with the per-site alive counts the first recorded per step
        self.pass_index = 0
        self.site_stats = True
        self.done_pairs: dict[int, dict] = {}  # results of the pairs of finished passes (host)
        self.alive_steps: list[torch.Tensor] = []  # [S] alive features per step (first pass)
        self._step = 0  # steps recorded in this pass
        self.top = TopExamples(exp.sites, n_features, exp.top_k_examples, device)
        self.graph = CoactivationGraph(exp.sites, n_features, exp.graph_top_k, device, chunk_pairs=self._big,
                                       sum_dtype=precision.sums, flush_tokens=precision.flush_tokens)
        self._finite: list[tuple[int, str, torch.Tensor]] = []  # deferred NaN checks (GPU)
        self.tokens = 0  # global tokens counted so far
        self.batches = 0  # global batches consumed so far
        self.steps: list[int] = []
        self.dead: list[torch.Tensor] = []  # [n_thr, S] per step
        self.coact_all: list[torch.Tensor] = []  # [n_thr, P] per step
        self.coact_alive: list[torch.Tensor] = []

    def _new_pair(self, i: int) -> PairStats:
        a, b = self.exp.site_pairs[i]
        p = self.precision
        return PairStats(a, b, self.n_features, self.device, chunk_pairs=self._big, count_dtype=p.counts,
                         sum_dtype=p.sums, flush_tokens=p.flush_tokens)

    def begin_pass(self, index: int, pairs: "list[int]") -> None:
        """Several passes: start pass ``index`` (> 0), holding ``pairs``; the per-site
        accumulators keep what the first pass counted and are not updated again."""
        self.pass_index, self.site_stats = index, index == 0
        self.own_pairs = set(pairs)
        self.pairs = [self._new_pair(i) if i in self.own_pairs else None for i in range(len(self.exp.site_pairs))]
        self.tokens = self.batches = self._step = 0
        self._finite = []

    def end_pass(self) -> None:
        """Several passes: move the results of this pass's pairs to the host and free the device."""
        for i, p in enumerate(self.pairs):
            if p is not None:
                self.done_pairs[i] = p.result()
                self.pairs[i] = None
        if len(self.done_pairs) == len(self.pairs):
            self.pair_results = [self.done_pairs[i] for i in range(len(self.pairs))]
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def sites_of_pass(self) -> tuple[str, ...]:
        """The sites this pass encodes: all of them in the first (or only) pass, else those of its pairs."""
        if self.site_stats:
            return self.exp.sites
        used = {s for i in self.own_pairs for s in self.exp.site_pairs[i]}
        return tuple(s for s in self.exp.sites if s in used)

    def defer_finite_check(self, index: int, acts: dict[str, SparseActs]) -> None:
        self._finite.extend((index, site, a.finite) for site, a in acts.items() if a.finite is not None)

    def check_finite(self) -> None:
        """Raise on the first batch and site whose activations were not finite (one sync)."""
        if not self._finite:
            return
        ok = torch.stack([f for _, _, f in self._finite]).cpu()
        bad = [(i, s) for (i, s, _), good in zip(self._finite, ok.tolist()) if not good]
        self._finite = []
        if bad:
            raise ConfigError(_nonfinite_message(*bad[0][::-1]))

    def update(self, acts: dict[str, SparseActs], doc: torch.Tensor, pos: torch.Tensor) -> None:
        if self.site_stats:
            self.features.update(acts)
            self.histograms.update(acts)
        for p in self.pairs:
            if p is not None:
                p.update(acts)
        if self.site_stats:
            self.top.update(acts, doc, pos)
            self.graph.update(acts)

    @torch.no_grad()
    def snapshot(self, dist: Dist, tokens: int) -> None:
        """Record the curves at ``tokens`` global tokens (all ranks call it together)."""
        self.check_finite()  # before NaN-poisoned counts reach a curve
        pair_parallel = self.own_pairs is not None
        if self.site_stats:
            # pair-parallel: every rank saw every token, its per-site counts are already global
            fired = self.features.fired if pair_parallel else dist.all_reduce(self.features.fired.clone())
            thr_dead = torch.tensor(self.exp.dead_thresholds, device=fired.device)
            self.dead.append((fired.unsqueeze(0) <= thr_dead.view(-1, 1, 1)).sum(-1).cpu())
            alive = (fired > 0).sum(1).cpu()
            if self.mode == "passes":
                self.alive_steps.append(alive)
        else:  # a later pass over the pairs: the same step of the same stream as the first pass
            if self._step >= len(self.steps) or self.steps[self._step] != tokens:
                raise AssertionError(f"pass {self.pass_index} reached step {tokens} where the first pass "
                                     "recorded another: the token stream changed between passes")
            alive = self.alive_steps[self._step]
        f2 = self.n_features**2
        all_rows, alive_rows = [], []
        n_thr = len(self.exp.coactivation_thresholds)
        for i, p in enumerate(self.pairs):
            if p is None:  # held by another rank: its row comes with the sum below
                gt = torch.zeros(n_thr, dtype=torch.int64)
                all_rows.append(gt)
                alive_rows.append(gt)
                continue
            count = dist.all_reduce(p.count.clone()) if dist.world > 1 and not pair_parallel else p.count
            gt = torch.stack([(count > t).sum() for t in self.exp.coactivation_thresholds]).cpu()
            all_rows.append(f2 - gt)
            alive_rows.append(int(alive[i]) * int(alive[i + 1]) - gt)
        all_rows, alive_rows = torch.stack(all_rows, 1), torch.stack(alive_rows, 1)
        if pair_parallel and dist.world > 1:
            rows = torch.stack([all_rows, alive_rows]).to(self.device)
            all_rows, alive_rows = dist.all_reduce(rows).cpu()
        if self.site_stats:
            self.coact_all.append(all_rows)
            self.coact_alive.append(alive_rows)
            self.steps.append(tokens)
        else:  # the rows of the pairs this pass holds (the others are 0 here)
            self.coact_all[self._step] += all_rows
            self.coact_alive[self._step] += alive_rows
        self._step += 1

    def finish_curves(self, dist: Dist) -> None:
        """The final point of the curves, at the end of the stream (unless a step fell there)."""
        done = len(self.steps) if self.site_stats else self._step
        if done == 0 or self.steps[done - 1] != self.tokens:
            self.snapshot(dist, self.tokens)

    def accumulators(self):
        return {"features": self.features, "histograms": self.histograms, "top": self.top, "graph": self.graph,
                **{f"pair{i}": p for i, p in enumerate(self.pairs) if p is not None}}

    def state_dict(self) -> dict[str, Any]:
        return {
            "acc": {name: a.state_dict() for name, a in self.accumulators().items()},
            "tokens": self.tokens, "batches": self.batches, "steps": self.steps,
            "dead": self.dead, "coact_all": self.coact_all, "coact_alive": self.coact_alive,
            # several passes: where they are, and what the finished ones counted
            "pass_index": self.pass_index, "step_index": self._step, "alive_steps": self.alive_steps,
            "done_pairs": self.done_pairs,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a checkpoint (several passes: after :meth:`begin_pass` of its pass)."""
        for name, acc in self.accumulators().items():
            acc.load_state_dict(state["acc"][name])
        for key in ("tokens", "batches", "steps", "dead", "coact_all", "coact_alive"):
            setattr(self, key, state[key])
        self.alive_steps = state.get("alive_steps", [])
        self.done_pairs = state.get("done_pairs", {})
        self._step = state.get("step_index", len(self.steps))

    def results_of_pairs(self) -> list[dict]:
        """``PairStats.result()`` of every pair (pair-parallel: those gathered on rank 0)."""
        if self.pair_results is not None:
            return self.pair_results
        return [p.result() for p in self.pairs]

    @torch.no_grad()
    def gather_pairs(self, dist: Dist) -> None:
        """Pair-parallel: bring every pair's result to rank 0's host, one pair at a time."""
        import torch.distributed as tdist

        group = tdist.new_group(backend="gloo")  # host tensors, whatever the device backend
        f = self.n_features
        results = []
        for i, p in enumerate(self.pairs):
            owner = i % dist.world
            if dist.rank == owner:
                res = p.result()
                if owner == 0:
                    results.append(res)
                    continue
                for key in ("count", "sum_xy"):
                    tdist.send(torch.from_numpy(res[key].astype(np.float64 if key == "sum_xy" else np.int64)),
                               dst=0, group=group)
            elif dist.rank == 0:
                res = {}
                for key, dtype in (("count", torch.int64), ("sum_xy", torch.float64)):
                    buf = torch.empty(f, f, dtype=dtype)
                    tdist.recv(buf, src=owner, group=group)
                    res[key] = buf.numpy()
                results.append(res)
        self.pair_results = results if dist.rank == 0 else None
        tdist.destroy_process_group(group)

    @torch.no_grad()
    def reduce(self, dist: Dist) -> None:
        """Merge the accumulators of all ranks into every rank (end of the pass)."""
        if dist.world == 1:
            return
        if self.own_pairs is not None:  # pair-parallel: only the pairs are spread over the ranks
            self.gather_pairs(dist)
            return
        f = self.features
        for t in (f.fired, f.sum, f.sum_sq, f.n_tokens):
            dist.all_reduce(t)
        dist.all_reduce(f.max, op="max")
        dist.all_reduce(self.histograms.counts)
        for p in self.pairs:
            dist.all_reduce(p.count)
        for sums in [p.sum_xy for p in self.pairs] + [self.graph.sum_xy]:
            if sums.flushed:
                sums.flush()
                dist.all_reduce_host(sums.host_sums)
            else:
                dist.all_reduce(sums.device_sums)
        g = self.graph
        g._compact()
        keys, counts = dist.all_gather_varlen(g.edge_keys), dist.all_gather_varlen(g.edge_counts)
        g.edge_keys, g.edge_counts = keys[0], counts[0]
        for r in range(1, dist.world):
            g._compact(keys[r], counts[r])
        gathered = {name: dist.all_gather(t) for name, t in self.top.state_dict().items()}
        merged = TopExamples(self.exp.sites, self.n_features, self.exp.top_k_examples, self.device)
        merged.load_state_dict({n: g[0] for n, g in gathered.items()})
        for r in range(1, dist.world):
            other = TopExamples(self.exp.sites, self.n_features, self.exp.top_k_examples, self.device)
            other.load_state_dict({n: g[r] for n, g in gathered.items()})
            merged.merge(other)
        self.top = merged


# --------------------------------------------------------------------------- encoding
def _nonfinite_message(site: str, index: int) -> str:
    return (f"non-finite (NaN or inf) SAE activations at site {site!r} in batch {index}: "
            "check the model's dtype (use float32) and the SAE weights")


@torch.no_grad()
def encode_batch(subject, saes: dict[str, Any], exp: Experiment, batch: TokenBatch, index: int,
                 floors: torch.Tensor | None = None, sites: "tuple[str, ...] | None" = None,
                 on_residuals=None):
    """``({site: SparseActs}, doc_ids, positions)`` of the counted tokens of one batch.

    ``sites``: only these (default: every site of the experiment; the forward pass stops after
    the last one). On a GPU the NaN/inf check is left in ``SparseActs.finite`` (see
    ``PassState.check_finite``) so that encoding never waits for the device.
    ``on_residuals(batch, {site: [rows, seq, d]})``: also hand the captured residuals of every
    position to this callback (the document embeddings of :class:`FirstRowPooling`).
    """
    sites = exp.sites if sites is None else sites
    acts = capture_residuals(subject, batch.input_ids, batch.attention_mask, sites)
    if on_residuals is not None:
        on_residuals(batch, acts)
    mask = batch.token_mask.to(subject.device)
    defer = subject.device.type == "cuda"
    out = {}
    for site in sites:
        x = acts[site][mask]
        f = saes[site].encode(x.to(saes[site].W_enc.dtype))
        if floors is not None:  # relative activity: only above a share of the feature's maximum
            i = exp.sites.index(site)
            f = torch.where(f > floors[i], f, torch.zeros_like(f))
        try:
            out[site] = SparseActs.from_dense(f, max_active=_topk_bound(saes[site]), check_finite=not defer)
        except NonFiniteError:
            raise ConfigError(_nonfinite_message(site, index)) from None
    return out, batch.doc_ids.to(subject.device)[mask], batch.positions.to(subject.device)[mask]


def _topk_bound(sae) -> int | None:
    """A TopK SAE fires at most k features per token; other architectures have no bound."""
    arch = sae.cfg.architecture() if callable(getattr(sae.cfg, "architecture", None)) else None
    # (BatchTopK bounds k only on average over a batch, not per token)
    return int(sae.cfg.k) if arch == "topk" and getattr(sae.cfg, "k", None) else None


def _slice(acts: dict[str, SparseActs], lo: int, hi: int) -> dict[str, SparseActs]:
    return {s: a.slice(lo, hi) for s, a in acts.items()}


# --------------------------------------------------------------------------- the pass
@dataclass
class PassResult:
    out: Path
    tokens: int
    seconds: float
    tokens_per_second: float  # of the stream (several passes: a token read N times counts once)
    files: dict[str, int] = field(default_factory=dict)
    precision: dict[str, str] = field(default_factory=dict)
    #: the per-token SAE codes recorded beside the statistics (None: not recorded)
    codes: Path | None = None
    plan: str = ""  # the plan in words, e.g. "3 passes over the pairs, 2 pairs each"


def _check_out_dir(out: Path, exp: Experiment) -> None:
    meta = out / METADATA
    if not meta.is_file():
        return
    saved = Experiment.from_dict(json.loads(meta.read_text())["experiment"])
    diff = saved.differences(exp, STAT_FIELDS)
    if diff:
        raise ArtefactMismatchError(
            f"{out} holds the statistics of another experiment ({saved.name!r}; {'; '.join(diff)}): "
            "choose another --out folder, or delete that one"
        )


def run_pass(
    exp: Experiment,
    out: str | Path | None = None,
    resume: bool = False,
    checkpoint_tokens: int | None = None,
    progress: bool = True,
    subject=None,
    saes: dict[str, Any] | None = None,
    maxima_from: str | Path | None = None,
    plan: str = "auto",
    passes: int | None = None,
    record_codes: bool | None = None,
) -> PassResult:
    """Run the statistics pass and write the artefacts into ``out`` (default ``artefacts/<preset>``).

    ``plan``: under torchrun ``"data"`` (data-parallel) or ``"pairs"`` (pair-parallel); in one
    process ``"passes"`` (the adjacent pairs split over several passes over the tokens, each
    holding a run of consecutive pairs: the first pass also counts every per-site statistic,
    the later ones encode only the sites of their pairs); ``"auto"``: all pairs at once when
    they fit the device, else pair-parallel under torchrun, else the fewest passes that fit.
    ``passes``: force that many passes (``plan`` ``"passes"`` or ``"auto"``). Every plan gives
    the same artefacts: integer counts equal, float sums equal to the bit (the same updates in
    the same order).

    ``record_codes``: also record every token's SAE codes beside the statistics (``codes/``, see
    :mod:`.codes`) for the gate verification and the explorer; ``None`` (default): on a CPU, in
    one process, when they fit :data:`~.codes.DEFAULT_MAX_BYTES`.
    """
    from ..subject.models import load_subject, resolve_device
    from ..subject.saes import check_sae_configs, load_saes

    out = Path(out) if out is not None else stats_dir(exp.stats_name)
    _check_out_dir(out, exp)
    floors = relative_floors(exp, "cpu", maxima_from)  # before anything heavy: the maxima must exist
    device = resolve_device(exp.device)
    dist = Dist.from_env(device)
    if dist.world > 1 and device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    check_plan_arguments(exp, dist.world, plan, passes)  # before anything heavy is loaded
    if saes is None:
        check_sae_configs(exp)  # what the SAEs need from their input, before the model loads
    subject = subject or load_subject(exp.replace(device=str(device)))
    saes = saes or load_saes(exp, device=subject.device)
    n_features = next(iter(saes.values())).cfg.d_sae
    if n_features != exp.sae_width:
        raise ConfigError(f"the SAEs have {n_features} features but the experiment says sae_width={exp.sae_width}")
    n_params = sum(p.numel() for p in subject.hf_model.parameters())
    docs = load_corpus(exp.corpus, exp.max_documents)
    max_tokens = exp.token_budget
    if max_tokens is None:  # the whole corpus: count it (for the int32 counts and the progress bar)
        from ..subject.corpus import count_tokens

        max_tokens = count_tokens(docs, subject.tokenizer)
    choice = choose_plan(exp, n_features, n_params, subject.device, dist.world, max_tokens, plan, passes=passes)
    mode, precision = choice.mode, choice.precision
    plan_words = describe_plan(mode, len(exp.site_pairs), dist.world, choice.passes)
    log.info("plan: %s", plan_words)
    floors = floors.to(subject.device) if floors is not None else None
    groups = pass_groups(len(exp.site_pairs), choice.passes) if mode == "passes" else [None]
    own_pairs = ({i for i in range(len(exp.site_pairs)) if i % dist.world == dist.rank} if mode == "pairs"
                 else set(groups[0]) if mode == "passes" else None)
    state = PassState(exp, n_features, subject.device, precision, own_pairs=own_pairs, mode=mode,
                      passes=choice.passes)
    ckpt = out / CHECKPOINT.format(rank=f".rank{dist.rank}" if dist.world > 1 else "")
    if resume:
        if not ckpt.is_file():
            raise MissingArtefactError(f"--resume: no checkpoint {ckpt}; run without --resume")
        saved = torch.load(ckpt, map_location="cpu", weights_only=False)  # moved by load_state_dict
        diff = Experiment.from_dict(saved["experiment"]).differences(exp, STAT_FIELDS)
        if diff:
            raise ArtefactMismatchError(
                f"--resume: {ckpt} was written for another experiment ({'; '.join(diff)}): "
                "run without --resume, or resume with the same settings"
            )
        if (saved["world"] != dist.world or saved["batch_size"] != exp.batch_size
                or saved.get("plan", "data") != mode or saved.get("passes", 1) != choice.passes):
            was = describe_plan(saved.get("plan", "data"), len(exp.site_pairs), saved["world"],
                                saved.get("passes", 1))
            raise ConfigError(
                f"--resume: the checkpoint was written by {saved['world']} process(es) with batch size "
                f"{saved['batch_size']} ({was}), this run would be {plan_words} with batch size "
                f"{exp.batch_size}: resume with the same settings (--plan, --passes, --batch-size)"
            )
        if saved.get("precision") != precision.describe(subject.device):
            raise ConfigError(
                f"--resume: the checkpoint's accumulators are {saved.get('precision')}, this run's would be "
                f"{precision.describe(subject.device)}: resume with the same --set sum_dtype on the same device"
            )
        index = saved["state"].get("pass_index", 0)
        if index:
            state.begin_pass(index, groups[index])
        state.load_state_dict(saved["state"])
        log.info("resuming %safter %d batches (%d tokens)", f"pass {index + 1} of {choice.passes} " if index else "",
                 state.batches, state.tokens)
    out.mkdir(parents=True, exist_ok=True)

    checkpoint_tokens = checkpoint_tokens or max(exp.step_tokens, 50 * exp.batch_size * exp.context_length)
    codes = None
    if record_codes is None:
        record_codes = subject.device.type == "cpu"
    if record_codes and (dist.world > 1 or resume):
        log.info("per-token SAE codes not recorded (%s): later steps re-run the model",
                 "several processes" if dist.world > 1 else "a resumed pass")
    elif record_codes:  # (several passes: recorded in the first, the only one that encodes every site)
        codes = CodeWriter(out, exp.sites, n_features, expected_tokens=max_tokens)
    from ..interventions.embeddings import FirstRowPooling

    # the encoder's document embeddings (notebook 07) from this very forward pass, where they apply
    pooling = (FirstRowPooling(len(docs), subject.spec.site_names()[-1])
               if codes is not None and FirstRowPooling.applies(exp, subject) else None)
    t0 = time.perf_counter()
    counted = 0
    # pair-parallel and several passes: every rank takes every batch (a "round" of one), as a
    # single process does
    slot, slots = (0, 1) if mode in ("pairs", "passes") else (dist.rank, dist.world)
    for j in range(state.pass_index, len(groups)):
        if j != state.pass_index:
            state.begin_pass(j, groups[j])
        desc = f"statistics ({exp.name})" + (f", pass {j + 1}/{len(groups)}" if mode == "passes" else "")
        counted += _count_stream(state, exp, subject, saes, docs, dist, floors, slot, slots, ckpt,
                                 checkpoint_tokens, codes=codes if j == 0 else None,
                                 pooling=pooling if j == 0 else None,
                                 bar=tqdm(total=max_tokens, initial=state.tokens, unit="tok", desc=desc,
                                          disable=not progress or dist.rank != 0, smoothing=0.1))
        if mode == "passes":
            state.end_pass()
    state.reduce(dist)
    seconds = time.perf_counter() - t0
    result = PassResult(out, state.tokens, seconds,
                        counted / len(groups) / max(seconds, 1e-9), precision=precision.describe(subject.device),
                        plan=plan_words)
    if dist.rank == 0:
        result.files = write_artefacts(state, exp, out, seconds=seconds, world=dist.world, plan=mode,
                                       activity=describe_activity(exp, maxima_from),
                                       plan_words=plan_words if mode == "passes" else None)
        if pooling is not None and pooling.result() is not None:
            from ..interventions.embeddings import EMBEDDINGS_FILE, embeddings_key
            from ..io import atomic_save_npz

            atomic_save_npz(out / EMBEDDINGS_FILE, embeddings=pooling.result(), key=embeddings_key(exp, len(docs)))
        if codes is not None and codes.finish() is not None:
            result.codes = out / CODES_DIR
        else:
            discard_codes(out)  # an earlier pass's record no longer matches these statistics
    dist.barrier()  # every rank keeps its checkpoint until the artefacts are written
    ckpt.unlink(missing_ok=True)
    return result


def _count_stream(state: PassState, exp: Experiment, subject, saes: dict[str, Any], docs, dist: Dist,
                  floors: torch.Tensor | None, slot: int, slots: int, ckpt: Path, checkpoint_tokens: int,
                  bar, codes: CodeWriter | None = None, pooling=None) -> int:
    """One pass over the token stream (from the batch ``state`` stopped at): encode, update the
    accumulators, record the curves at every step, checkpoint. Returns the tokens counted here.

    Rank ``slot`` of ``slots`` takes batch ``slot`` of every round of ``slots`` batches. In a
    later pass over the pairs, ``acts`` hold only the sites of that pass's pairs
    (:meth:`PassState.sites_of_pass`). ``codes``: the writer that records every batch's codes;
    ``pooling``: the document embeddings pooled from the same forward pass.
    """
    stream = iter_token_batches(
        docs, subject.tokenizer, subject.special_tokens, exp.context_length, exp.batch_size, exp.token_budget
    )
    sites = state.sites_of_pass()
    step = exp.step_tokens
    last_ckpt = state.tokens
    counted = 0
    for round_batches in _rounds(stream, slots, skip=state.batches):
        sizes = [b.n_tokens for b in round_batches]
        start = state.tokens
        offsets = np.cumsum([0] + sizes)  # global start of each batch in this round
        mine = slot < len(round_batches)
        if mine:
            index = state.batches + slot
            acts, doc, pos = encode_batch(subject, saes, exp, round_batches[slot], index, floors, sites,
                                          on_residuals=pooling.update if pooling is not None else None)
            state.defer_finite_check(index, acts)
            if codes is not None:
                codes.add(acts)
            lo_g, hi_g = start + int(offsets[slot]), start + int(offsets[slot + 1])
        cursor = start + (int(offsets[slot]) if mine else 0)
        end = start + int(offsets[-1])
        boundary = (start // step + 1) * step
        while boundary <= end:
            if mine and cursor < min(boundary, hi_g):
                a, b = cursor - lo_g, min(boundary, hi_g) - lo_g
                state.update(_slice(acts, a, b), doc[a:b], pos[a:b])
                cursor = min(boundary, hi_g)
            state.snapshot(dist, boundary)
            boundary += step
        if mine and cursor < hi_g:
            a = cursor - lo_g
            state.update(_slice(acts, a, hi_g - lo_g), doc[a:], pos[a:])
        state.tokens = end
        state.batches += len(round_batches)
        counted += end - start
        bar.update(end - start)
        if state.tokens - last_ckpt >= checkpoint_tokens:
            state.check_finite()
            _save_checkpoint(ckpt, state, dist, exp)
            last_ckpt = state.tokens
    bar.close()
    if state.tokens == 0:
        raise ConfigError("the token stream was empty: nothing to count")
    state.check_finite()
    state.finish_curves(dist)
    return counted


def _rounds(stream: Iterator[TokenBatch], world: int, skip: int) -> Iterator[list[TokenBatch]]:
    """Groups of ``world`` consecutive batches (the last may be short), after ``skip`` batches."""
    for _ in range(skip):
        next(stream, None)
    group: list[TokenBatch] = []
    for batch in stream:
        group.append(batch)
        if len(group) == world:
            yield group
            group = []
    if group:
        yield group


def _save_checkpoint(path: Path, state: PassState, dist: Dist, exp: Experiment) -> None:
    with atomic_path(path, suffix=".pt") as tmp:
        torch.save({"state": state.state_dict(), "world": dist.world, "batch_size": exp.batch_size,
                    "plan": state.mode, "passes": state.n_passes,
                    "experiment": exp.to_dict(), "precision": state.precision.describe(state.device)}, tmp)

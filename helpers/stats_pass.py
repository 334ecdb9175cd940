"""The statistics pass: every statistic, for all features, in ONE pass over the tokens.

For each batch of the token stream: one nnsight forward pass yields every site,
each SAE encodes its site, and the active features of each token (a
:class:`~helpers.accumulators.SparseActs`) update the streaming accumulators,
which stay on the device. Activations are never stored.

Every ``step_tokens`` tokens (exactly: a batch is split at the boundary) the
pass records the number of dead features per threshold and site, and the number
of never/rarely co-activating pairs per threshold and adjacent pair of sites,
over all features and over alive features only.

Multi-process (``torchrun --nproc-per-node K -m helpers collect ...``): batch
``i`` of the stream goes to rank ``i % K``. At each step boundary the ranks sum
their firing and pair counts (``all_reduce``) so the curves are those of the
global stream; at the end every accumulator is merged. Counts equal those of a
single process exactly; float sums agree to rounding.

Memory: :func:`plan_precision` chooses the accumulator dtypes (int32 pair
counts when exact; float64 sums of products, or float32 ones flushed into
float64 on the host when float64 does not fit the GPU) and refuses, with a way
out, a bill that does not fit.

Checkpoints (``checkpoint_tokens``) hold the accumulators and the stream
position; ``resume=True`` skips the batches already counted, so a run killed
half way and resumed gives exactly the counts and maxima of an uninterrupted one.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from tqdm.auto import tqdm

from .accumulators import (
    COMPACT_EVERY,
    FLUSH_TOKENS,
    CoactivationGraph,
    FeatureStats,
    NonFiniteError,
    PairStats,
    SparseActs,
    TopExamples,
    jaccard,
    pearson,
)
from .capture import capture_residuals
from .corpus import TokenBatch, iter_token_batches, load_corpus
from .errors import ArtefactMismatchError, ConfigError, MissingArtefactError
from .experiment import Experiment
from .io import REPO_ROOT, atomic_path, atomic_save_npz, atomic_write_json, stats_dir

log = logging.getLogger(__name__)

#: experiment fields the statistics depend on (not batch size or device)
STAT_FIELDS = (
    "model", "sae_source", "sae_release", "sites", "corpus", "max_documents", "token_budget",
    "context_length", "sae_width", "sae_k", "sae_train_tokens", "sae_heldout_tokens",
    "sae_train_batch", "sae_epochs", "sae_lr", "seed", "step_tokens", "dead_thresholds",
    "coactivation_thresholds", "top_k_examples", "graph_top_k",
)
ARTEFACT_FILES = (
    "max_activations.npz", "dead_features.npz", "pair_coactivation.npz", "correlation.npz",
    "cooccurrence.npz", "top_examples.npz", "coactivation_graph.npz",
)
METADATA = "metadata.json"
CHECKPOINT = "checkpoint{rank}.pt"


# --------------------------------------------------------------------------- distributed
@dataclass
class Dist:
    """Rank and world size; ``world == 1`` means no process group."""

    rank: int = 0
    world: int = 1

    @classmethod
    def from_env(cls, device: torch.device) -> "Dist":
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        return cls(rank=dist.get_rank(), world=dist.get_world_size())

    def all_reduce(self, t: torch.Tensor, op: str = "sum") -> torch.Tensor:
        if self.world > 1:
            import torch.distributed as dist

            dist.all_reduce(t, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX)
        return t

    def all_reduce_host(self, t: torch.Tensor, chunk: int = 1 << 26) -> torch.Tensor:
        """Sum a host (CPU) tensor over the ranks: directly on gloo, through the GPU in chunks on NCCL."""
        if self.world == 1:
            return t
        import torch.distributed as dist

        if dist.get_backend() == "gloo":
            dist.all_reduce(t)
            return t
        dev = torch.device("cuda", torch.cuda.current_device())
        for lo in range(0, t.numel(), chunk):
            part = t[lo : lo + chunk].to(dev)
            dist.all_reduce(part)
            t[lo : lo + chunk] = part.cpu()
        return t

    def all_gather_varlen(self, t: torch.Tensor) -> list[torch.Tensor]:
        """``all_gather`` of 1-D tensors whose lengths differ between ranks."""
        if self.world == 1:
            return [t]
        n = torch.tensor([t.numel()], device=t.device)
        sizes = [int(x) for x in self.all_gather(n)]
        padded = torch.zeros(max(sizes), dtype=t.dtype, device=t.device)
        padded[: t.numel()] = t
        return [g[:size] for g, size in zip(self.all_gather(padded), sizes)]

    def all_gather(self, t: torch.Tensor) -> list[torch.Tensor]:
        if self.world == 1:
            return [t]
        import torch.distributed as dist

        out = [torch.empty_like(t) for _ in range(self.world)]
        dist.all_gather(out, t.contiguous())
        return out

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()


# --------------------------------------------------------------------------- memory bill
@dataclass(frozen=True)
class Precision:
    """The dtypes of the big accumulators (pair and edge counts, sums of products)."""

    counts: torch.dtype = torch.int64
    sums: torch.dtype = torch.float64
    flush_tokens: int = FLUSH_TOKENS

    def describe(self, device: torch.device | str = "cpu") -> dict[str, str]:
        sums = "float64" if self.sums == torch.float64 else (
            f"float32 on {device}, flushed into float64 on the host every {self.flush_tokens:,} tokens")
        return {"pair_counts": _dtype_name(self.counts), "feature_counts": "int64",
                "edge_counts": "int64", "feature_sums": "float64", "product_sums": sums}


def _nbytes(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def memory_bill(exp: Experiment, n_features: int, n_model_params: int, world: int = 1,
                precision: Precision | None = None, max_tokens: int | None = None) -> dict[str, int]:
    """Bytes the pass needs on its device, by item (the host copy of flushed sums: :func:`host_bill`)."""
    precision = precision or Precision()
    s, f, p, k = len(exp.sites), n_features, len(exp.site_pairs), exp.top_k_examples
    d = exp.model_spec.d_model
    cb, sb = _nbytes(precision.counts), _nbytes(precision.sums)
    tokens = exp.batch_size * exp.context_length
    tri = f * (f - 1) // 2
    links = exp.graph_top_k * (exp.graph_top_k - 1) // 2
    # distinct edges: measured at ~2% of the links made on the offline preset; budget 5%
    edges = min(s * tri, int(0.05 * (max_tokens or 10**7) * s * links))
    counts, sums = _dtype_name(precision.counts), _dtype_name(precision.sums)
    bill = {
        "model": n_model_params * 4,
        "saes": s * (2 * d * f + f + d) * 4,
        # every site's residuals, one site's dense SAE pre-activations and codes, all sparse codes
        "batch (residuals, SAE codes)": tokens * (s * d * 4 + 3 * f * 4 + s * min(f, 256) * 12),
        "feature statistics": s * f * (8 + 4 + 8 + 8),
        f"pair statistics ({counts} counts + {sums} sums)": p * f * f * (cb + sb),
        f"co-activation graph ({sums} sums, upper triangle)": s * tri * sb,
        # edges: key + count; the link buffer: a key each, and a count each while it is merged
        "co-activation graph edge list (estimated)": edges * 16 * 2 + COMPACT_EVERY * 16,
        "top examples": s * f * k * 2 * (4 + 8 + 8),
        "step scratch (threshold comparisons)": f * f,
    }
    if world > 1:
        bill["step synchronisation buffers"] = f * f * cb + s * f * 8
    return bill


def host_bill(exp: Experiment, n_features: int, precision: Precision) -> int:
    """Host bytes of the float64 copies of flushed float32 sums (0 for float64 sums)."""
    if precision.sums == torch.float64:
        return 0
    s, f, p = len(exp.sites), n_features, len(exp.site_pairs)
    return (p * f * f + s * (f * (f - 1) // 2)) * 8


def available_memory(device: torch.device) -> int:
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 1 << 62  # pragma: no cover - not Linux


def _gib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB"


def plan_precision(exp: Experiment, n_features: int, n_model_params: int, device: torch.device,
                   world: int = 1, max_tokens: int | None = None,
                   available: int | None = None, host_available: int | None = None) -> tuple[Precision, dict[str, int]]:
    """Choose the accumulator dtypes and check the memory bill; refuse with a way out.

    Counts are int32 when the stream is known to hold fewer than 2^31 tokens (exact).
    Sums follow ``exp.sum_dtype``; ``"auto"`` takes float64 when its bill fits the device
    and float32 flushed into float64 on the host otherwise (on a GPU only: on the CPU the
    host copy would sit in the same memory).
    """
    from .accumulators import count_dtype_for

    counts = count_dtype_for(max_tokens)
    avail = available_memory(device) if available is None else available
    host_avail = available_memory(torch.device("cpu")) if host_available is None else host_available
    if device.type == "cpu":
        avail //= world  # the ranks of one machine share its memory
    else:
        host_avail //= max(1, min(world, torch.cuda.device_count() or 1))

    def plan(sums: torch.dtype) -> tuple[Precision, dict[str, int]]:
        prec = Precision(counts, sums, exp.flush_tokens)
        return prec, memory_bill(exp, n_features, n_model_params, world, prec, max_tokens)

    if exp.sum_dtype == "auto":
        prec, bill = plan(torch.float64)
        if sum(bill.values()) > 0.9 * avail and device.type != "cpu":
            prec, bill = plan(torch.float32)
            log.info("float64 sums do not fit %s: sums in float32, flushed into float64 on the host", device)
    else:
        prec, bill = plan(getattr(torch, exp.sum_dtype))
    total = sum(bill.values())
    lines = ", ".join(f"{k} {_gib(v)}" for k, v in bill.items())
    host = host_bill(exp, n_features, prec)
    log.info("memory bill on %s: %s (%s); available %s; host copy of the sums %s",
             device, _gib(total), lines, _gib(avail), _gib(host))
    if total > 0.9 * avail:
        raise ConfigError(
            f"the pass needs {_gib(total)} on {device} ({lines}) but only {_gib(avail)} are free: "
            + ("on a GPU use --set sum_dtype=float32 (or auto); " if prec.sums == torch.float64 else "")
            + "lower --batch-size, use fewer sites or narrower SAEs, or run on a device with more memory"
        )
    if host > 0.9 * host_avail:
        raise ConfigError(
            f"the float64 host copy of the float32 sums needs {_gib(host)} but the host has only "
            f"{_gib(host_avail)} free: use fewer sites or narrower SAEs, or a host with more memory"
        )
    return prec, bill


# --------------------------------------------------------------------------- the state
class PassState:
    """All accumulators of the pass plus the per-step curves."""

    def __init__(self, exp: Experiment, n_features: int, device: torch.device,
                 precision: Precision | None = None):
        self.exp, self.n_features, self.device = exp, n_features, device
        self.precision = precision = precision or Precision()
        big = 1 << 20 if device.type == "cuda" else 1 << 17  # pair increments per scatter call
        self.features = FeatureStats(exp.sites, n_features, device)
        self.pairs = [PairStats(a, b, n_features, device, chunk_pairs=big, count_dtype=precision.counts,
                                sum_dtype=precision.sums, flush_tokens=precision.flush_tokens)
                      for a, b in exp.site_pairs]
        self.top = TopExamples(exp.sites, n_features, exp.top_k_examples, device)
        self.graph = CoactivationGraph(exp.sites, n_features, exp.graph_top_k, device, chunk_pairs=big,
                                       sum_dtype=precision.sums, flush_tokens=precision.flush_tokens)
        self._finite: list[tuple[int, str, torch.Tensor]] = []  # deferred NaN checks (GPU)
        self.tokens = 0  # global tokens counted so far
        self.batches = 0  # global batches consumed so far
        self.steps: list[int] = []
        self.dead: list[torch.Tensor] = []  # [n_thr, S] per step
        self.coact_all: list[torch.Tensor] = []  # [n_thr, P] per step
        self.coact_alive: list[torch.Tensor] = []

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
        self.features.update(acts)
        for p in self.pairs:
            p.update(acts)
        self.top.update(acts, doc, pos)
        self.graph.update(acts)

    @torch.no_grad()
    def snapshot(self, dist: Dist, tokens: int) -> None:
        """Record the curves at ``tokens`` global tokens (all ranks call it together)."""
        self.check_finite()  # before NaN-poisoned counts reach a curve
        fired = dist.all_reduce(self.features.fired.clone())
        thr_dead = torch.tensor(self.exp.dead_thresholds, device=fired.device)
        self.dead.append((fired.unsqueeze(0) <= thr_dead.view(-1, 1, 1)).sum(-1).cpu())
        f2 = self.n_features**2
        alive = (fired > 0).sum(1)
        all_rows, alive_rows = [], []
        for i, p in enumerate(self.pairs):
            count = dist.all_reduce(p.count.clone()) if dist.world > 1 else p.count
            gt = torch.stack([(count > t).sum() for t in self.exp.coactivation_thresholds]).cpu()
            all_rows.append(f2 - gt)
            alive_rows.append(int(alive[i]) * int(alive[i + 1]) - gt)
        self.coact_all.append(torch.stack(all_rows, 1))
        self.coact_alive.append(torch.stack(alive_rows, 1))
        self.steps.append(tokens)

    def accumulators(self):
        return {"features": self.features, "top": self.top, "graph": self.graph,
                **{f"pair{i}": p for i, p in enumerate(self.pairs)}}

    def state_dict(self) -> dict[str, Any]:
        return {
            "acc": {name: a.state_dict() for name, a in self.accumulators().items()},
            "tokens": self.tokens, "batches": self.batches, "steps": self.steps,
            "dead": self.dead, "coact_all": self.coact_all, "coact_alive": self.coact_alive,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name, acc in self.accumulators().items():
            acc.load_state_dict(state["acc"][name])
        for key in ("tokens", "batches", "steps", "dead", "coact_all", "coact_alive"):
            setattr(self, key, state[key])

    @torch.no_grad()
    def reduce(self, dist: Dist) -> None:
        """Merge the accumulators of all ranks into every rank (end of the pass)."""
        if dist.world == 1:
            return
        f = self.features
        for t in (f.fired, f.sum, f.sum_sq, f.n_tokens):
            dist.all_reduce(t)
        dist.all_reduce(f.max, op="max")
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
def encode_batch(subject, saes: dict[str, Any], exp: Experiment, batch: TokenBatch, index: int):
    """``({site: SparseActs}, doc_ids, positions)`` of the counted tokens of one batch.

    On a GPU the NaN/inf check is left in ``SparseActs.finite`` (see ``PassState.check_finite``)
    so that encoding never waits for the device.
    """
    acts = capture_residuals(subject, batch.input_ids, batch.attention_mask, exp.sites)
    mask = batch.token_mask.to(subject.device)
    defer = subject.device.type == "cuda"
    out = {}
    for site in exp.sites:
        x = acts[site][mask]
        f = saes[site].encode(x.to(saes[site].W_enc.dtype))
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
    tokens_per_second: float
    files: dict[str, int] = field(default_factory=dict)
    precision: dict[str, str] = field(default_factory=dict)


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
) -> PassResult:
    """Run the statistics pass and write the artefacts into ``out`` (default ``artefacts/<preset>``)."""
    from .models import load_subject, resolve_device
    from .saes import load_saes

    out = Path(out) if out is not None else stats_dir(exp.name)
    _check_out_dir(out, exp)
    device = resolve_device(exp.device)
    dist = Dist.from_env(device)
    if dist.world > 1 and device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    subject = subject or load_subject(exp.replace(device=str(device)))
    saes = saes or load_saes(exp, device=subject.device)
    n_features = next(iter(saes.values())).cfg.d_sae
    if n_features != exp.sae_width:
        raise ConfigError(f"the SAEs have {n_features} features but the experiment says sae_width={exp.sae_width}")
    n_params = sum(p.numel() for p in subject.hf_model.parameters())
    docs = load_corpus(exp.corpus, exp.max_documents)
    max_tokens = exp.token_budget
    if max_tokens is None:  # the whole corpus: count it (for the int32 counts and the progress bar)
        from .corpus import count_tokens

        max_tokens = count_tokens(docs, subject.tokenizer)
    precision, _ = plan_precision(exp, n_features, n_params, subject.device, dist.world, max_tokens)

    state = PassState(exp, n_features, subject.device, precision)
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
        if saved["world"] != dist.world or saved["batch_size"] != exp.batch_size:
            raise ConfigError(
                f"--resume: the checkpoint was written by {saved['world']} process(es) with batch size "
                f"{saved['batch_size']}: resume with the same settings"
            )
        if saved.get("precision") != precision.describe(subject.device):
            raise ConfigError(
                f"--resume: the checkpoint's accumulators are {saved.get('precision')}, this run's would be "
                f"{precision.describe(subject.device)}: resume with the same --set sum_dtype on the same device"
            )
        state.load_state_dict(saved["state"])
        log.info("resuming after %d batches (%d tokens)", state.batches, state.tokens)
    out.mkdir(parents=True, exist_ok=True)

    stream = iter_token_batches(
        docs, subject.tokenizer, subject.special_tokens, exp.context_length, exp.batch_size, exp.token_budget
    )
    step = exp.step_tokens
    checkpoint_tokens = checkpoint_tokens or max(step, 50 * exp.batch_size * exp.context_length)
    last_ckpt = state.tokens
    t0 = time.perf_counter()
    counted = 0
    bar = tqdm(total=max_tokens, initial=state.tokens, unit="tok", desc=f"statistics ({exp.name})",
               disable=not progress or dist.rank != 0, smoothing=0.1)
    for round_batches in _rounds(stream, dist.world, skip=state.batches):
        sizes = [b.n_tokens for b in round_batches]
        start = state.tokens
        offsets = np.cumsum([0] + sizes)  # global start of each batch in this round
        mine = dist.rank < len(round_batches)
        if mine:
            index = state.batches + dist.rank
            acts, doc, pos = encode_batch(subject, saes, exp, round_batches[dist.rank], index)
            state.defer_finite_check(index, acts)
            lo_g, hi_g = start + int(offsets[dist.rank]), start + int(offsets[dist.rank + 1])
        cursor = start + (int(offsets[dist.rank]) if mine else 0)
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
    if not state.steps or state.steps[-1] != state.tokens:
        state.snapshot(dist, state.tokens)  # the final point of the curves
    state.reduce(dist)
    seconds = time.perf_counter() - t0
    result = PassResult(out, state.tokens, seconds, counted / max(seconds, 1e-9),
                        precision=precision.describe(subject.device))
    if dist.rank == 0:
        result.files = write_artefacts(state, exp, out, seconds=seconds, world=dist.world)
    dist.barrier()  # every rank keeps its checkpoint until the artefacts are written
    ckpt.unlink(missing_ok=True)
    return result


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
                    "experiment": exp.to_dict(), "precision": state.precision.describe(state.device)}, tmp)


# --------------------------------------------------------------------------- artefacts
def _compact_counts(count: np.ndarray) -> np.ndarray:
    """The smallest unsigned integer type that holds every count exactly."""
    top = int(count.max()) if count.size else 0
    for dtype in (np.uint8, np.uint16, np.uint32, np.uint64):
        if top <= np.iinfo(dtype).max:
            return count.astype(dtype)
    raise AssertionError("unreachable")  # pragma: no cover


def _git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                              text=True, timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):  # pragma: no cover
        return None


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("torch", "numpy", "transformers", "nnsight", "sae-lens"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:  # pragma: no cover
            pass
    return out


def write_artefacts(state: PassState, exp: Experiment, out: Path, seconds: float = 0.0, world: int = 1) -> dict[str, int]:
    """Write every artefact atomically; ``metadata.json`` last. Returns file sizes in bytes."""
    sites = np.array(exp.sites)
    pairs = np.array([f"{a}->{b}" for a, b in exp.site_pairs])
    feats = state.features.result()
    steps = np.array(state.steps, dtype=np.int64)
    n = feats["n_tokens"]
    atomic_save_npz(out / "max_activations.npz", max=feats["max"], sites=sites)
    atomic_save_npz(
        out / "dead_features.npz",
        dead=torch.stack(state.dead).numpy(),  # [n_steps, n_thr, S]
        thresholds=np.array(exp.dead_thresholds), tokens=steps, fired=feats["fired"], sites=sites,
    )
    pair_res = [p.result() for p in state.pairs]
    counts = {f"count_{i}": _compact_counts(r["count"]) for i, r in enumerate(pair_res)}
    atomic_save_npz(
        out / "pair_coactivation.npz",
        never_all=torch.stack(state.coact_all, -1).numpy(),  # [n_thr, P, n_steps]
        never_alive=torch.stack(state.coact_alive, -1).numpy(),
        thresholds=np.array(exp.coactivation_thresholds), tokens=steps, pairs=pairs, sites=sites, **counts,
    )
    corr, jac = {}, {}
    for i, r in enumerate(pair_res):
        corr[f"r_{i}"] = pearson(n, feats["sum"][i], feats["sum_sq"][i], feats["sum"][i + 1],
                                 feats["sum_sq"][i + 1], r["sum_xy"]).astype(np.float32)
        jac[f"jaccard_{i}"] = jaccard(r["count"], feats["fired"][i], feats["fired"][i + 1]).astype(np.float32)
    atomic_save_npz(out / "correlation.npz", pairs=pairs, n_tokens=np.int64(n),
                    mean=feats["sum"] / n, **corr)
    atomic_save_npz(out / "cooccurrence.npz", pairs=pairs, **jac)
    top = state.top.result()
    atomic_save_npz(out / "top_examples.npz", sites=sites, **top)
    graph = state.graph.result(feats["sum_sq"])
    atomic_save_npz(out / "coactivation_graph.npz", sites=sites, frequency=feats["fired"] / n,
                    fired=feats["fired"], **graph)
    sizes = {name: (out / name).stat().st_size for name in ARTEFACT_FILES}
    exp.save(out)
    atomic_write_json(out / METADATA, {
        "experiment": exp.to_dict(),
        "tokens": int(n),
        "n_features": state.n_features,
        "processes": world,
        "precision": state.precision.describe(state.device),
        "seconds": round(seconds, 2),
        "versions": _versions(),
        "git_commit": _git_commit(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "file_bytes": sizes,
    })
    return sizes


def load_artefact(exp: Experiment, name: str, out: str | Path | None = None) -> dict[str, np.ndarray]:
    """One statistics artefact (e.g. ``"dead_features"``), refused if made by another experiment."""
    out = Path(out) if out is not None else stats_dir(exp.name)
    meta = out / METADATA
    if not meta.is_file():
        raise MissingArtefactError(
            f"no statistics in {out}: run `python -m helpers collect --experiment {exp.name}`"
        )
    diff = Experiment.from_dict(json.loads(meta.read_text())["experiment"]).differences(exp, STAT_FIELDS)
    if diff:
        raise ArtefactMismatchError(
            f"the statistics in {out} belong to another experiment ({'; '.join(diff)}): "
            f"rerun `python -m helpers collect --experiment {exp.name}`"
        )
    file = out / (name if name.endswith(".npz") else f"{name}.npz")
    with np.load(file, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def load_metadata(exp: Experiment, out: str | Path | None = None) -> dict[str, Any]:
    out = Path(out) if out is not None else stats_dir(exp.name)
    load_artefact(exp, "max_activations", out)  # checks the experiment
    return json.loads((out / METADATA).read_text())


def statistics_ready(exp: Experiment, out: str | Path | None = None) -> bool:
    try:
        load_metadata(exp, out)
    except (MissingArtefactError, ArtefactMismatchError, FileNotFoundError):
        return False
    return True

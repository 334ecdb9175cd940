"""The statistics pass: every statistic, for all features, in ONE pass over the tokens.

For each batch of the token stream: one nnsight forward pass yields every site,
each SAE encodes its site, and the active features of each token (a
:class:`~helpers.stats.accumulators.SparseActs`) update the streaming accumulators,
which stay on the device. Activations are never stored.

Every ``step_tokens`` tokens (exactly: a batch is split at the boundary) the
pass records the number of dead features per threshold and site, and the number
of never/rarely co-activating pairs per threshold and adjacent pair of sites,
over all features and over alive features only.

Groups and owners. The adjacent pairs are held by one group (one process, data-parallel), or
split into consecutive groups (:func:`~helpers.stats.memory.pass_groups`): one per pass over
the tokens on one device, or one per rank. A group encodes only the sites of its pairs (the
forward pass stops after the last of them) and keeps their feature statistics (small: the
alive counts of its pairs' curve rows). Every site has one owner, the first group whose pairs
include it (:func:`~helpers.stats.memory.group_sites`): only the owner holds the site's heavy
statistics (histograms, top examples, the within-site co-activation graph with its sums and
edge list) and records its dead-feature curves. At the end the owners' per-site results are
stitched in site order (:meth:`PassState.results_of_sites`) into exactly the arrays of one
ordinary pass.

Multi-process (``torchrun --nproc-per-node K -m helpers collect ...``), one of two
plans (:func:`~helpers.stats.memory.choose_plan` states which and why):

- data-parallel: batch ``i`` of the stream goes to rank ``i % K``. At each step
  boundary the ranks sum their firing and pair counts (``all_reduce``) so the
  curves are those of the global stream; at the end every accumulator is merged.
  Counts equal those of a single process exactly; float sums agree to rounding.
- pair-parallel: rank ``r`` holds group ``r`` of the K groups of consecutive pairs, runs the
  model on every batch up to its last site, encodes only its sites and holds only the
  per-site statistics of the sites it owns (and only their SAEs are loaded on its device). At
  each step the ranks sum their pairs' curve rows (small); at the end rank 0 receives each
  rank's per-site results, then each pair's counts and sums, one pair at a time, on the host
  (gloo), spools each pair as it arrives (below), and writes the artefacts. Every number
  equals a single process exactly (the same updates in the same order).

In one process whose device cannot hold every pair (``plan="passes"``, or ``"auto"``), pass
``j`` over the tokens holds group ``j``, as a rank would; on a GPU only its sites' SAEs are on
the device (those of the others wait on the host). After each pass its owned sites' results move
to the host (where they stay until the artefacts are written) and its pairs are spooled
(below); a later pass checks that it met the same steps and that a site it shares with an
earlier pass fired exactly as there (else the token stream or the SAEs changed between
passes). Every number equals one ordinary pass exactly (the same updates in the same order).
Checkpoints record the pass, the finished passes' per-site results, the spooled pairs and which
sites the group encodes and owns.

The streaming writer (:mod:`.spool`): as soon as a pair's result is final (several passes: at
the end of its pass, r from that pass's feature sums, which cover both sites of its pairs;
pair-parallel: on rank 0 as it arrives; one process: pair by pair when writing), its compact
counts and Pearson r, exactly the arrays the artefacts store, are saved to
``<out>/.pair_spool/`` and its full-width counts and sums dropped, so the writer's host holds one
pair's results at a time. :func:`~.artefacts.write_artefacts` writes the pair artefacts from the
spool and removes it. A fresh run clears a stale spool; a resumed one verifies the files its
checkpoint records.

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
from ..io import atomic_path, keep, require_space, stats_dir, temporary
from ..locks import note_kept, stats_out, writes
from ..subject.capture import capture_residuals
from ..subject.corpus import TokenBatch, iter_token_batches, stream_documents
from .activity import describe_activity, relative_floors
from .accumulators import (ActivationHistogram, CoactivationGraph, FeatureStats, NonFiniteError, PairStats,
                           SparseActs, TopExamples)
from .codes import CODES_DIR, CodeWriter, discard_codes
from .artefacts import METADATA, STAT_FIELDS, write_artefacts
from .spool import PairSpool, pair_sums
from .distributed import Dist
from .memory import (Precision, check_plan_arguments, choose_plan, describe_plan, disk_bill, group_sites,
                     pass_groups)

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint{rank}.pt"
#: the per-feature arrays of ``FeatureStats.result()`` that an owner hands on for its sites
FEATURE_SUMS = ("fired", "max", "sum", "sum_sq")
#: the way out when a later pass over the pairs does not see the stream the first one saw
STREAM_FIX = (": rerun the pass from the start (delete the checkpoint, no --resume), with the corpus and SAEs "
              "left unchanged")


# --------------------------------------------------------------------------- the state
class PassState:
    """All accumulators of the pass (of one group of pairs) plus the per-step curves.

    ``groups``: the pairs of each group (:func:`~helpers.stats.memory.pass_groups`; default one
    group of every pair); ``group``: the group this state holds now (several passes: the pass;
    pair-parallel: the rank). The group encodes the sites of its pairs and keeps their feature
    statistics (small, for its curves); it owns the sites no earlier group encodes
    (:func:`~helpers.stats.memory.group_sites`) and holds only their histograms, top examples,
    co-activation graph and dead-feature curves.
    """

    def __init__(self, exp: Experiment, n_features: int, device: torch.device,
                 precision: Precision | None = None, groups: "list[list[int]] | None" = None,
                 group: int = 0, mode: str = "data", passes: int = 1):
        self.exp, self.n_features, self.device = exp, n_features, device
        self.precision = precision or Precision()
        #: "data" (one process or data-parallel), "pairs" (pair-parallel) or "passes"
        self.mode = mode
        self.n_passes = passes
        self._big = 1 << 20 if device.type == "cuda" else 1 << 17  # pair increments per scatter call
        self.groups = groups if groups is not None else [list(range(len(exp.site_pairs)))]
        self.layout = group_sites(len(exp.sites), self.groups)
        #: where the writer spools each pair's derived arrays once its result is final (set by run_pass)
        self.spool: PairSpool | None = None
        #: the spool records of the pairs of finished passes (their full results are on disk, derived)
        self.done_pairs: dict[int, dict] = {}
        self.site_results: dict[int, dict] = {}  # per-site results of finished groups, by group (host)
        self.tokens = 0  # global tokens counted so far (in this pass)
        self.batches = 0  # global batches consumed so far (in this pass)
        self.steps: list[int] = []
        self.coact_all: list[torch.Tensor] = []  # [n_thr, P] per step
        self.coact_alive: list[torch.Tensor] = []
        self.pass_index = 0
        self._start(group)

    def _start(self, group: int) -> None:
        """Fresh accumulators for ``group``: feature statistics of the sites it encodes, the heavy
        per-site ones of the sites it owns, its pairs."""
        exp, f, dev, p = self.exp, self.n_features, self.device, self.precision
        self.group = group
        encoded, owned = self.layout[group]
        self.encoded = tuple(exp.sites[i] for i in encoded)
        self.owned = tuple(exp.sites[i] for i in owned)
        self._first = encoded[0] if encoded else 0  # global index of the first encoded site
        # the owned sites' rows among the encoded (they are consecutive, and last)
        self._own_rows = slice(owned[0] - self._first, owned[-1] + 1 - self._first) if owned else slice(0, 0)
        self.own_pairs = set(self.groups[group])
        self.features = FeatureStats(self.encoded, f, dev)
        self.histograms = ActivationHistogram(self.owned, f, dev)
        self.top = TopExamples(self.owned, f, exp.top_k_examples, dev)
        self.graph = CoactivationGraph(self.owned, f, exp.graph_top_k, dev, chunk_pairs=self._big,
                                       sum_dtype=p.sums, flush_tokens=p.flush_tokens, weights=exp.graph_weights)
        self.pairs = [self._new_pair(i) if i in self.own_pairs else None for i in range(len(exp.site_pairs))]
        self.dead: list[torch.Tensor] = []  # [n_thr, owned sites] per step
        self._finite: list[tuple[int, str, torch.Tensor]] = []  # deferred NaN checks (GPU)
        self._step = 0  # steps recorded in this pass

    def _new_pair(self, i: int) -> PairStats:
        a, b = self.exp.site_pairs[i]
        p = self.precision
        wa, wb = self._pair_widths(i)
        return PairStats(a, b, wa, self.device, chunk_pairs=self._big, count_dtype=p.counts,
                         sum_dtype=p.sums, flush_tokens=p.flush_tokens, n_features_b=wb)

    def _pair_widths(self, i: int) -> tuple[int, int]:
        """Pair ``i``'s counts are ``w_a x w_b``: its sites' widths (a width pair), else ``F x F``."""
        return self.exp.pair_widths(i) if self.exp.width_pairs else (self.n_features,) * 2

    def begin_pass(self, index: int) -> None:
        """Several passes: start pass ``index`` (> 0), holding group ``index`` (fresh accumulators;
        the finished passes' results stay on the host)."""
        self.pass_index = index
        self._start(index)
        self.tokens = self.batches = 0

    def end_pass(self) -> None:
        """Several passes: move this pass's per-site results to the host, spool its pairs' derived
        arrays (one pair's full results on the host at a time; r from this pass's feature sums, which
        cover both sites of each of its pairs and are final) and free the device."""
        if self.spool is None:
            raise AssertionError("several passes need a spool for the pairs' results (run_pass sets it)")
        result = self.site_result()
        self._check_shared_sites(result)
        self.site_results[self.group] = result
        feats = self.features.result()
        for i, p in enumerate(self.pairs):
            if p is not None:
                self.spool.add(i, p.result(), feats["n_tokens"],
                               pair_sums(feats, i - self._first, self.exp.pair_widths(i)))
                self.pairs[i] = None
        self.done_pairs = self.spool.records
        self.features = self.histograms = self.top = self.graph = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def _check_shared_sites(self, result: dict) -> None:
        """A site encoded by an earlier pass too must have fired exactly as it did there."""
        encoded = self.layout[self.group][0]
        for g, done in self.site_results.items():
            for row, site in enumerate(done["sites"]):
                mine = result["encoded_fired"][site - self._first] if site in encoded else None
                if mine is not None and not np.array_equal(done["fired"][row], mine):
                    raise ConfigError(f"site {self.exp.sites[site]!r} fired differently in pass {self.group + 1} "
                                      f"than in pass {g + 1}: the token stream or the SAEs changed between passes"
                                      f"{STREAM_FIX}")

    def sites_of_pass(self) -> tuple[str, ...]:
        """The sites this group encodes (one group: every site), in forward order."""
        return self.encoded

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
        self.histograms.update(acts)
        for p in self.pairs:
            if p is not None:
                p.update(acts)
        self.top.update(acts, doc, pos)
        self.graph.update(acts)

    @torch.no_grad()
    def snapshot(self, dist: Dist, tokens: int) -> None:
        """Record the curves at ``tokens`` global tokens (all ranks call it together)."""
        self.check_finite()  # before NaN-poisoned counts reach a curve
        data_parallel = self.mode == "data" and dist.world > 1
        # pair-parallel and several passes: every group sees every token, its counts are global
        fired = dist.all_reduce(self.features.fired.clone()) if data_parallel else self.features.fired
        thr_dead = torch.tensor(self.exp.dead_thresholds, device=fired.device)
        own = fired[self._own_rows]
        below = own.unsqueeze(0) <= thr_dead.view(-1, 1, 1)
        if self.exp.width_pairs:  # a narrower SAE's padding features are not features: never dead
            owned = self.layout[self.group][1]
            widths = torch.tensor([self.exp.site_widths[i] for i in owned], device=fired.device)
            below &= torch.arange(fired.shape[1], device=fired.device) < widths.view(1, -1, 1)
        self.dead.append(below.sum(-1).cpu())
        alive = (fired > 0).sum(1).cpu()  # the encoded sites
        all_rows, alive_rows = [], []
        n_thr = len(self.exp.coactivation_thresholds)
        for i, p in enumerate(self.pairs):
            if p is None:  # held by another group: its row comes from it
                gt = torch.zeros(n_thr, dtype=torch.int64)
                all_rows.append(gt)
                alive_rows.append(gt)
                continue
            count = dist.all_reduce(p.count.clone()) if data_parallel else p.count
            gt = torch.stack([(count > t).sum() for t in self.exp.coactivation_thresholds]).cpu()
            all_rows.append(p.count.numel() - gt)
            a, b = int(alive[i - self._first]), int(alive[i + 1 - self._first])
            alive_rows.append(a * b - gt)
        all_rows, alive_rows = torch.stack(all_rows, 1), torch.stack(alive_rows, 1)
        if self.mode == "pairs" and dist.world > 1:
            rows = torch.stack([all_rows, alive_rows]).to(self.device)
            all_rows, alive_rows = dist.all_reduce(rows).cpu()
        if self.pass_index == 0:
            self.coact_all.append(all_rows)
            self.coact_alive.append(alive_rows)
            self.steps.append(tokens)
        else:  # a later pass: the same steps of the same stream as the first; add its pairs' rows
            if self._step >= len(self.steps) or self.steps[self._step] != tokens:
                raise ConfigError(f"pass {self.pass_index + 1} reached step {tokens} where the first pass "
                                  f"recorded another: the token stream changed between passes{STREAM_FIX}")
            self.coact_all[self._step] += all_rows
            self.coact_alive[self._step] += alive_rows
        self._step += 1

    def finish_curves(self, dist: Dist) -> None:
        """The final point of the curves, at the end of the stream (unless a step fell there)."""
        if self._step == 0 or self.steps[self._step - 1] != self.tokens:
            self.snapshot(dist, self.tokens)
        if self.pass_index > 0 and self._step != len(self.steps):
            raise ConfigError(f"pass {self.pass_index + 1} recorded {self._step} steps, the first "
                              f"{len(self.steps)}: the token stream changed between passes{STREAM_FIX}")

    def accumulators(self):
        return {"features": self.features, "histograms": self.histograms, "top": self.top, "graph": self.graph,
                **{f"pair{i}": p for i, p in enumerate(self.pairs) if p is not None}}

    def state_dict(self) -> dict[str, Any]:
        return {
            "acc": {name: a.state_dict() for name, a in self.accumulators().items()},
            "tokens": self.tokens, "batches": self.batches, "steps": self.steps,
            "dead": self.dead, "coact_all": self.coact_all, "coact_alive": self.coact_alive,
            # several passes: where they are, and what the finished ones counted
            "pass_index": self.pass_index, "step_index": self._step,
            "done_pairs": self.done_pairs, "site_results": self.site_results,
            # which sites this group encodes and owns (the shapes of its accumulators)
            "group": self.group, "encoded": self.encoded, "owned": self.owned,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a checkpoint (several passes: after :meth:`begin_pass` of its pass)."""
        if tuple(state.get("encoded", self.exp.sites)) != self.encoded or \
                tuple(state.get("owned", self.exp.sites)) != self.owned:
            was = list(state.get("encoded", self.exp.sites)), list(state.get("owned", self.exp.sites))
            raise ConfigError(f"--resume: the checkpoint's accumulators hold sites {was[0]} "
                              f"(owning {was[1]}), this run's group encodes "
                              f"{list(self.encoded)} (owning {list(self.owned)}): it was written by an older "
                              "version; run without --resume")
        for name, acc in self.accumulators().items():
            acc.load_state_dict(state["acc"][name])
        for key in ("tokens", "batches", "steps", "dead", "coact_all", "coact_alive"):
            setattr(self, key, state[key])
        self.done_pairs = state.get("done_pairs", {})
        self.site_results = state.get("site_results", {})
        self._step = state.get("step_index", len(self.steps))

    # ----------------------------------------------------------------------- results
    def site_result(self) -> dict[str, Any]:
        """The per-site results of the sites this group owns (host arrays): feature statistics,
        dead-feature curves, top examples, histogram counts, the graph's edges (global site index)."""
        feats = self.features.result()
        owned = self.layout[self.group][1]
        graph = self.graph.result(feats["sum_sq"][self._own_rows])
        if owned:
            graph["edge_site"] = (graph["edge_site"].astype(np.int64) + owned[0]).astype(np.int16)
        return {
            "sites": owned, **self._owned_features(feats),
            "encoded_fired": feats["fired"],  # every encoded site's counts (the check between passes)
            "dead": torch.stack(self.dead).numpy(),  # [n_steps, n_thr, owned sites]
            "top": self.top.result(), "histograms": self.histograms.result(), "graph": graph,
        }

    def results_of_sites(self) -> dict[str, Any]:
        """Every site's results, stitched from their owners in site order: ``features``
        (``FeatureStats.result()`` over all sites), ``dead`` ``[n_steps, n_thr, S]``, ``top``,
        ``histograms`` and ``graph`` (the edge lists of all sites, by site then key), exactly the
        arrays of one ordinary pass."""
        parts = dict(self.site_results)
        if len(parts) < len(self.groups):  # one group, or the writer's own still on the device
            parts[self.group] = self.site_result()
        parts = [parts[g] for g in range(len(self.groups))]
        order = [s for p in parts for s in p["sites"]]
        if order != list(range(len(self.exp.sites))):
            raise AssertionError(f"the groups own sites {order}, not each site once in order")
        tokens = {p["n_tokens"] for p in parts}
        if len(tokens) != 1:
            raise AssertionError(f"the groups counted different tokens {sorted(tokens)}")
        cat = lambda key, sub=None, axis=0: np.concatenate(  # noqa: E731
            [(p[sub] if sub else p)[key] for p in parts], axis=axis)
        feats = {"n_tokens": tokens.pop(), **{k: cat(k) for k in FEATURE_SUMS}}
        top = {k: cat(k, "top") for k in parts[0]["top"]}
        hist = {"counts": cat("counts", "histograms"), "edges": parts[0]["histograms"]["edges"]}
        graph = {k: cat(k, "graph") for k in parts[0]["graph"]}
        return {"features": feats, "dead": cat("dead", axis=2), "top": top, "histograms": hist, "graph": graph}

    def features_of_sites(self) -> dict[str, Any]:
        """Every site's feature statistics (``n_tokens``, ``fired``, ``max``, ``sum``, ``sum_sq``),
        stitched from their owners as in :meth:`results_of_sites`."""
        parts = dict(self.site_results)
        if len(parts) < len(self.groups):  # the writer's own, from its feature statistics alone
            parts[self.group] = self._owned_features(self.features.result())
        parts = [parts[g] for g in range(len(self.groups))]
        return {"n_tokens": parts[0]["n_tokens"],
                **{k: np.concatenate([p[k] for p in parts]) for k in FEATURE_SUMS}}

    def _owned_features(self, feats: dict[str, Any]) -> dict[str, Any]:
        """``FeatureStats.result()`` of the encoded sites, cut to the sites this group owns."""
        return {"n_tokens": feats["n_tokens"], **{k: feats[k][self._own_rows] for k in FEATURE_SUMS}}

    def spool_pair(self, i: int, result: dict, feats: dict[str, Any]) -> None:
        """Spool pair ``i``'s derived arrays from its full ``result`` (consumed) and the stitched ``feats``."""
        self.spool.add(i, result, feats["n_tokens"], pair_sums(feats, i, self.exp.pair_widths(i)))

    def spool_pairs(self) -> None:
        """The writer: spool every pair not spooled yet (one process or data-parallel: all of them,
        from the accumulators, one pair at a time)."""
        missing = [i for i in range(len(self.pairs)) if i not in self.spool.records]
        if not missing:
            return
        feats = self.features_of_sites()
        for i in missing:
            if self.pairs[i] is None:
                raise AssertionError(f"pair {i} is neither spooled nor held by the writer")
            self.spool_pair(i, self.pairs[i].result(), feats)

    @torch.no_grad()
    def gather(self, dist: Dist) -> None:
        """Pair-parallel: bring every rank's per-site results, then every pair's result (one pair
        at a time), to rank 0's host (gloo: host tensors, whatever the device backend); rank 0 spools
        each pair's derived arrays as it arrives (r from the stitched feature sums), so its host holds
        one pair's full results at a time."""
        import torch.distributed as tdist

        group = tdist.new_group(backend="gloo")
        # the owners' per-site results (small beside the pairs), one rank at a time
        mine = self.site_result()
        if dist.rank == 0:
            self.site_results = {0: mine}
            for r in range(1, dist.world):
                box = [None]
                tdist.recv_object_list(box, src=r, group=group)
                self.site_results[r] = box[0]
            feats = self.features_of_sites()
        else:
            tdist.send_object_list([mine], dst=0, group=group)
        owner = {i: g for g, pairs in enumerate(self.groups) for i in pairs}
        count_dtype = self.precision.counts
        for i, p in enumerate(self.pairs):
            if dist.rank == owner[i]:
                res = p.result()
                if owner[i] == 0:
                    self.spool_pair(i, res, feats)
                    continue
                tdist.send(torch.from_numpy(np.ascontiguousarray(res["count"])), dst=0, group=group)
                tdist.send(torch.from_numpy(np.ascontiguousarray(res["sum_xy"], dtype=np.float64)), dst=0,
                           group=group)
                del res
            elif dist.rank == 0:
                res = {}
                for key, dtype in (("count", count_dtype), ("sum_xy", torch.float64)):
                    buf = torch.empty(*self._pair_widths(i), dtype=dtype)
                    tdist.recv(buf, src=owner[i], group=group)
                    res[key] = buf.numpy()
                self.spool_pair(i, res, feats)
                del res, buf
        tdist.destroy_process_group(group)

    @torch.no_grad()
    def reduce(self, dist: Dist) -> None:
        """Merge the accumulators of all ranks into every rank (end of the pass)."""
        if dist.world == 1:
            return
        if self.mode == "pairs":  # pair-parallel: the pairs and the sites are spread over the ranks
            self.gather(dist)
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


@writes("collect", stats_out)
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
    holding a run of consecutive pairs, encoding only their sites and holding the per-site
    statistics of the sites it owns); ``"auto"``: all pairs at once when
    they fit the device, else pair-parallel under torchrun, else the fewest passes that fit.
    ``passes``: force that many passes (``plan`` ``"passes"`` or ``"auto"``). Every plan gives
    the same artefacts: integer counts equal, float sums equal to the bit (the same updates in
    the same order).

    ``record_codes``: also record every token's SAE codes beside the statistics (``codes/``, see
    :mod:`.codes`) for the gate verification and the explorer; ``None`` (default): on a CPU, in
    one process, when they fit :data:`~.codes.DEFAULT_MAX_BYTES`.
    """
    from ..subject.models import load_subject, resolve_device
    from ..subject.saes import check_hub_for_saes, check_sae_configs, check_sae_widths, load_saes

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
        if exp.sae_source == "pretrained":  # and whether the hub may be asked for them
            check_hub_for_saes(exp.sae_release, exp.sae_id(exp.sites[0]))
    subject = subject or load_subject(exp.replace(device=str(device)))
    n_features = exp.sae_width  # checked against the SAEs once they are loaded
    n_params = sum(p.numel() for p in subject.hf_model.parameters())
    docs = stream_documents(exp)
    max_tokens = exp.token_budget
    if max_tokens is None:  # the whole corpus: count it (for the int32 counts and the progress bar)
        from ..subject.corpus import count_tokens

        max_tokens = count_tokens(docs, subject.tokenizer)
    choice = choose_plan(exp, n_features, n_params, subject.device, dist.world, max_tokens, plan, passes=passes)
    mode, precision = choice.mode, choice.precision
    plan_words = describe_plan(mode, len(exp.site_pairs), dist.world, choice.passes)
    log.info("plan: %s", plan_words)
    n_pairs = len(exp.site_pairs)
    # the pairs of each group: the passes (one device), the ranks (pair-parallel), or one group
    groups = (pass_groups(n_pairs, choice.passes) if mode == "passes" else pass_groups(n_pairs, dist.world)
              if mode == "pairs" else None)
    state = PassState(exp, n_features, subject.device, precision, groups=groups,
                      group=dist.rank if mode == "pairs" else 0, mode=mode, passes=choice.passes)
    state.spool = PairSpool(out)  # the writer's (rank 0's) pairs' derived arrays, as they become final
    # the disk, before the first token: what the pass writes must fit (the codes are skipped if they do not)
    need = sum(disk_bill(exp, n_features, precision, max_tokens, max(map(len, state.groups))).values())
    free = require_space(out, need, "the statistics pass",
                         "free some space, or write elsewhere (--out DIR, or $SAE_EVOLUTION_ARTEFACTS), or write "
                         "less (fewer sites, a smaller sae_width)")
    # the SAEs: pair-parallel, only this rank's sites; several passes on a GPU, on the host, each
    # pass moving its sites' to the device (_place_saes)
    movable = saes is None and mode == "passes" and subject.device.type != "cpu"
    if saes is None:
        saes = load_saes(exp, device="cpu" if movable else subject.device,
                         sites=state.encoded if mode == "pairs" else None)
    check_sae_widths(saes, exp)  # (SAEs handed in did not pass load_saes' checks)
    floors = floors.to(subject.device) if floors is not None else None
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
            state.begin_pass(index)
        state.load_state_dict(saved["state"])
        if dist.rank == 0:  # the spooled pairs the checkpoint records must be there, whole
            state.spool.verify(state.done_pairs)
            state.done_pairs = state.spool.records
        log.info("resuming %safter %d batches (%d tokens)", f"pass {index + 1} of {choice.passes} " if index else "",
                 state.batches, state.tokens)
    out.mkdir(parents=True, exist_ok=True)
    if not resume and dist.rank == 0:
        state.spool.clear()  # a stale spool of a killed run
        temporary(state.spool.folder)  # removed if the pass fails, unless a checkpoint refers to it

    checkpoint_tokens = checkpoint_tokens or max(exp.step_tokens, 50 * exp.batch_size * exp.context_length)
    codes = None
    if record_codes is None:
        record_codes = subject.device.type == "cpu"
    if record_codes and (dist.world > 1 or resume):
        log.info("per-token SAE codes not recorded (%s): later steps re-run the model",
                 "several processes" if dist.world > 1 else "a resumed pass")
    elif record_codes:  # (several passes: each pass records the codes of the sites it owns)
        codes = CodeWriter(out, exp.sites, n_features, expected_tokens=max_tokens,
                           free_bytes=max(free - need, 0) * 9 // 10)
    from ..interventions.embeddings import FirstRowPooling

    # the encoder's document embeddings (notebook 07) from this very forward pass, where they apply
    # (several passes: in the pass that owns the model's last site)
    pooling = (FirstRowPooling(len(docs), subject.spec.site_names()[-1])
               if codes is not None and FirstRowPooling.applies(exp, subject) else None)
    t0 = time.perf_counter()
    counted = 0
    # pair-parallel and several passes: every rank takes every batch (a "round" of one), as a
    # single process does
    slot, slots = (0, 1) if mode in ("pairs", "passes") else (dist.rank, dist.world)
    n_passes = choice.passes if mode == "passes" else 1
    for j in range(state.pass_index, n_passes):
        if j != state.pass_index:
            state.begin_pass(j)
        if movable:
            _place_saes(saes, state.encoded, subject.device)
        desc = f"statistics ({exp.name})" + (f", pass {j + 1}/{n_passes}" if mode == "passes" else "")
        counted += _count_stream(state, exp, subject, saes, docs, dist, floors, slot, slots, ckpt,
                                 checkpoint_tokens, codes=codes,
                                 pooling=pooling if pooling is not None and pooling.site in state.owned else None,
                                 bar=tqdm(total=max_tokens, initial=state.tokens, unit="tok", desc=desc,
                                          disable=not progress or dist.rank != 0, smoothing=0.1))
        if mode == "passes":
            state.end_pass()
    if movable:
        _place_saes(saes, (), subject.device)
    state.reduce(dist)
    seconds = time.perf_counter() - t0
    result = PassResult(out, state.tokens, seconds,
                        counted / n_passes / max(seconds, 1e-9), precision=precision.describe(subject.device),
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


def _place_saes(saes: dict[str, Any], sites: "tuple[str, ...]", device: torch.device) -> None:
    """The SAEs of ``sites`` on ``device``, the others on the host (several passes on a GPU)."""
    for site, sae in saes.items():
        sae.to(device if site in sites else torch.device("cpu"))
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _count_stream(state: PassState, exp: Experiment, subject, saes: dict[str, Any], docs, dist: Dist,
                  floors: torch.Tensor | None, slot: int, slots: int, ckpt: Path, checkpoint_tokens: int,
                  bar, codes: CodeWriter | None = None, pooling=None) -> int:
    """One pass over the token stream (from the batch ``state`` stopped at): encode, update the
    accumulators, record the curves at every step, checkpoint. Returns the tokens counted here.

    Rank ``slot`` of ``slots`` takes batch ``slot`` of every round of ``slots`` batches. ``acts``
    hold only the sites of the state's group (:meth:`PassState.sites_of_pass`; the forward pass
    stops after the last). ``codes``: the writer that records every batch's codes (of the sites
    the group owns); ``pooling``: the document embeddings pooled from the same forward pass.
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
                codes.add(acts, sites=state.owned, new_batch=state.pass_index == 0)
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
    """Save the state (kept when the pass fails, with the spooled pairs it refers to)."""
    with atomic_path(path, suffix=".pt", journal=False) as tmp:
        torch.save({"state": state.state_dict(), "world": dist.world, "batch_size": exp.batch_size,
                    "plan": state.mode, "passes": state.n_passes,
                    "experiment": exp.to_dict(), "precision": state.precision.describe(state.device)}, tmp)
    if state.done_pairs:
        keep(state.spool.folder)
    of_pass = f" of pass {state.pass_index + 1}" if state.n_passes > 1 else ""
    note_kept(f"the checkpoint at {state.tokens:,} tokens{of_pass} ({path})")

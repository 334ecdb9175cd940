"""The matching artefact: every method's top-1 partner ablated for hundreds of downstream features
per adjacent pair, written once (``matching.npz`` + ``matching.json``), read by the notebook.

For each adjacent pair, downstream features are taken in a random order among the alive ones
(fired, with examples) until ``n_downstream`` are *evaluated*: ``b`` fires on at least one
content token of its windows. A feature's windows are its ``n_windows`` strongest examples of
the statistics pass (``top_examples.npz``), each with ``radius`` tokens of its document on either
side; ``b``'s firing tokens are re-read in the clean pass of these windows. Every
(method, feature) edge of a chunk of features goes through :func:`ablation_drops` together.

``matching.npz`` (``P`` pairs, ``K`` = methods + the random control, ``N`` = ``n_downstream``):

- ``downstream`` ``[P, N]`` int32: the evaluated downstream features (-1: fewer were evaluable);
- ``partner`` ``[P, K, N]`` int32: each method's upstream partner (-1: undefined);
- ``drop`` ``[P, K, N]`` float32: mean relative drop of ``b`` over its firing tokens (NaN: undefined);
- ``upstream_fired`` ``[P, K, N]`` bool: the partner fired in ``b``'s windows (else drop = 0 exactly);
- ``n_firing`` ``[P, N]`` int32: ``b``'s firing tokens in its windows;
- ``candidates``, ``edges``, ``ablated_rows`` ``[P]`` int64: features tried, distinct edges, passes' rows;
- ``methods`` ``[K]``, ``pairs`` ``[P]``, ``sites`` ``[S]`` str.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from ..errors import ArtefactMismatchError, ConfigError
from ..io import MORE_SPACE, atomic_save_npz, atomic_write_json, load_npz, require_space, sha256_file, stats_dir
from ..locks import stats_out, writes
from .matching import CONTROL, DEFAULT_THRESHOLD, METHODS, check_methods, check_threshold, matched_partners
from .matching import random_partners, sample_downstream

log = logging.getLogger(__name__)

MATCHING_FILE = "matching.npz"
MATCHING_META = "matching.json"
DEFAULT_DOWNSTREAM = 512


def _stats_out(exp, out) -> Path:
    """``out``, or the experiment's statistics folder (``stats_name`` where the experiment has one:
    a relative-threshold variant keeps its statistics apart)."""
    return Path(out) if out is not None else stats_dir(exp.stats_name)


def matching_command(exp) -> str:
    return f"python -m helpers matching --experiment {exp.name}"


def example_windows(token_ids: Sequence[int], positions: Sequence[int], radius: int, room: int):
    """``(start, ids)`` of the window around each position: ``radius`` tokens each side, at most
    ``room`` tokens, the position inside."""
    out = []
    for pos in positions:
        lo = max(0, pos - radius)
        hi = min(len(token_ids), pos + radius + 1, lo + room)
        out.append((lo, list(token_ids[lo:hi])))
    return out


class _Windows:
    """Token windows around features' top examples (documents tokenized once, on demand)."""

    def __init__(self, docs, tokenizer, special, context_length: int, radius: int):
        from ..subject.corpus import _collate

        self.docs = {d.doc_id: d for d in docs}
        self.tok, self.special, self.radius = tokenizer, special, radius
        self.room = context_length - len(special.prefix) - len(special.suffix)
        self.collate = _collate
        self.cache: dict[int, list[int]] = {}

    def ids(self, doc_id: int) -> list[int]:
        if doc_id not in self.cache:
            if doc_id not in self.docs:
                raise ConfigError(f"top example in document {doc_id}, which the corpus does not hold: "
                                  "the statistics were collected on another corpus; rerun the pass")
            self.cache[doc_id] = self.tok(self.docs[doc_id].text, add_special_tokens=False)["input_ids"]
        return self.cache[doc_id]

    def batch(self, examples: Sequence[tuple[int, int]]):
        rows = []
        for doc_id, pos in examples:
            (start, ids), = example_windows(self.ids(doc_id), [pos], self.radius, self.room)
            rows.append((doc_id, start, ids))
        return self.collate(rows, self.special)


def evaluate_pair(subject, saes, site_a: str, site_b: str, partners_ab: np.ndarray, order: np.ndarray,
                  control: np.ndarray, examples: np.ndarray, windows: _Windows, n_downstream: int,
                  chunk: int = 128, rows_per_pass: int = 256) -> dict[str, Any]:
    """Evaluate downstream features in ``order`` until ``n_downstream`` fire in their windows.

    ``partners_ab`` ``[M, Fb]``: each method's partner of every downstream feature; ``control``
    ``[len(order)]``: the random partner of each candidate; ``examples`` ``[Fb, n_windows, 2]``:
    (doc, position) of each feature's example windows (doc -1: none).
    """
    from ..interventions.deactivation import ablation_drops, clean_windows

    k_slots = partners_ab.shape[0] + 1
    got_b, got_partner, got_drop, got_fired, got_n = [], [], [], [], []
    tried = n_edges = n_rows = 0
    lo = 0
    while lo < len(order) and len(got_b) < n_downstream:
        # a few more than still needed: some features do not fire in their windows
        size = min(chunk, n_downstream - len(got_b) + max(4, (n_downstream - len(got_b)) // 16))
        feats = order[lo : lo + size]
        slots = np.concatenate([partners_ab[:, feats], control[None, lo : lo + size]])  # [K, c]
        lo += size
        rows, owner = [], []
        for j, b in enumerate(feats):
            for doc, pos in examples[b]:
                if doc >= 0:
                    rows.append((int(doc), int(pos)))
                    owner.append(j)
        tried += len(feats)
        if not rows:
            continue
        owner = np.array(owner)
        batch = windows.batch(rows)
        clean = clean_windows(subject, saes, batch.input_ids, batch.attention_mask, batch.token_mask, site_a, site_b)
        edge_id: dict[tuple[int, int, int], int] = {}
        for w, j in enumerate(owner):
            for a in set(int(a) for a in slots[:, j] if a >= 0):
                edge_id.setdefault((w, a, int(feats[j])), len(edge_id))
        edges = list(edge_id)
        drop_sum, n_fire = ablation_drops(subject, saes, clean, site_a, site_b, edges, rows_per_pass)
        dev = clean.f_a.device
        w_idx = torch.tensor([e[0] for e in edges], device=dev)
        a_idx = torch.tensor([e[1] for e in edges], device=dev)
        a_fires = ((clean.f_a[w_idx, :, a_idx] * clean.attention_mask[w_idx]) != 0).any(-1).tolist()
        n_edges += len(edges)
        n_rows += len({(w, a) for (w, a, _), f, n in zip(edges, a_fires, n_fire.tolist()) if f and n > 0})
        fires_wb = ((clean.f_b[torch.arange(len(owner), device=dev), :, torch.as_tensor(feats[owner], device=dev)] > 0)
                    & clean.token_mask).sum(-1).cpu().numpy()  # b's firing tokens in each of its windows
        for j, b in enumerate(feats):
            mine = np.flatnonzero(owner == j)
            fire_b = int(fires_wb[mine].sum())
            if fire_b == 0 or len(got_b) >= n_downstream:
                continue
            drop, fired_up = np.full(k_slots, np.nan), np.zeros(k_slots, bool)
            for s in range(k_slots):
                a = int(slots[s, j])
                if a < 0:
                    continue
                ids = [edge_id[(int(w), a, int(b))] for w in mine]
                drop[s] = float(drop_sum[ids].sum()) / fire_b
                fired_up[s] = any(a_fires[i] for i in ids)
            got_b.append(int(b))
            got_partner.append(slots[:, j])
            got_drop.append(drop)
            got_fired.append(fired_up)
            got_n.append(fire_b)
    n = len(got_b)
    out = {
        "downstream": np.full(n_downstream, -1, np.int32), "partner": np.full((k_slots, n_downstream), -1, np.int32),
        "drop": np.full((k_slots, n_downstream), np.nan, np.float32),
        "upstream_fired": np.zeros((k_slots, n_downstream), bool), "n_firing": np.zeros(n_downstream, np.int32),
        "candidates": tried, "edges": n_edges, "ablated_rows": n_rows,
    }
    if n:
        out["downstream"][:n] = got_b
        out["partner"][:, :n] = np.stack(got_partner, 1)
        out["drop"][:, :n] = np.stack(got_drop, 1)
        out["upstream_fired"][:, :n] = np.stack(got_fired, 1)
        out["n_firing"][:n] = got_n
    return out


def compute_matching(exp, n_downstream: int | None = None, methods: Sequence[str] = METHODS, n_windows: int = 2,
                     radius: int = 12, seed: int = 0, subject=None, saes: dict | None = None, out=None,
                     chunk: int = 128, rows_per_pass: int = 256, progress: bool = True) -> dict[str, np.ndarray]:
    """The arrays of ``matching.npz`` for every adjacent pair (nothing is written); ``seconds`` is
    the time of the ablations (after loading the model, SAEs and artefacts).

    ``n_downstream``: features evaluated per pair (default: 512, or all alive ones where fewer);
    an explicit number larger than the alive features is refused.
    """
    from ..stats.artefacts import load_artefact, load_metadata
    from ..subject.corpus import stream_documents
    from .partners import load_partners

    methods = check_methods(methods)
    if n_windows < 1 or radius < 0:
        raise ConfigError(f"n_windows={n_windows} must be >= 1 and radius={radius} >= 0")
    out = _stats_out(exp, out)
    load_metadata(exp, out)  # refuses another experiment's statistics
    partners = load_partners(exp, out=out)
    top = load_artefact(exp, "top_examples", out, keys=("hi_doc", "hi_pos"))
    if n_windows > top["hi_doc"].shape[-1]:
        raise ConfigError(f"n_windows={n_windows} exceeds the {top['hi_doc'].shape[-1]} examples kept per feature")
    fired = load_artefact(exp, "dead_features", out, keys=("fired",))["fired"]
    if subject is None:
        from ..subject.models import load_subject

        subject = load_subject(exp)
    if saes is None:
        from ..subject.saes import load_saes

        saes = load_saes(exp, subject.device)
    windows = _Windows(stream_documents(exp), subject.tokenizer, subject.special_tokens,
                       exp.context_length, radius)
    t0 = time.perf_counter()
    results = []
    for p in tqdm(range(len(exp.site_pairs)), desc="matching methods", unit="pair", disable=not progress):
        site_a, site_b = exp.site_pairs[p]
        examples = np.stack([top["hi_doc"][p + 1, :, :n_windows], top["hi_pos"][p + 1, :, :n_windows]], -1)
        candidates = np.flatnonzero((fired[p + 1] > 0) & (examples[:, 0, 0] >= 0))
        n = n_downstream if n_downstream is not None else min(DEFAULT_DOWNSTREAM, len(candidates))
        rng = np.random.default_rng([seed, p])
        order = sample_downstream(candidates, n, rng)
        control = random_partners(fired[p], len(order), rng)
        res = evaluate_pair(subject, saes, site_a, site_b, matched_partners(partners, p, methods), order, control,
                            examples, windows, n, chunk, rows_per_pass)
        if (res["downstream"] < 0).any():
            say = log.info if n_downstream is None else log.warning  # all alive asked for: expected
            say("pair %s: only %d of %d downstream features fire in their windows",
                f"{site_a}->{site_b}", int((res["downstream"] >= 0).sum()), n)
        results.append(res)
    width = max(len(r["downstream"]) for r in results)
    pad = lambda a, fill: np.pad(a, [(0, 0)] * (a.ndim - 1) + [(0, width - a.shape[-1])], constant_values=fill)  # noqa: E731
    return {
        "methods": np.array(list(methods) + [CONTROL]), "sites": np.array(exp.sites),
        "pairs": np.array([f"{a}->{b}" for a, b in exp.site_pairs]),
        "downstream": np.stack([pad(r["downstream"], -1) for r in results]),
        "partner": np.stack([pad(r["partner"], -1) for r in results]),
        "drop": np.stack([pad(r["drop"], np.nan) for r in results]),
        "upstream_fired": np.stack([pad(r["upstream_fired"], False) for r in results]),
        "n_firing": np.stack([pad(r["n_firing"], 0) for r in results]),
        **{key: np.array([r[key] for r in results], np.int64) for key in ("candidates", "edges", "ablated_rows")},
        "seconds": np.float64(time.perf_counter() - t0),
    }


@writes("matching", stats_out)
def build_matching(exp, n_downstream: int | None = None, methods: Sequence[str] = METHODS, n_windows: int = 2,
                   radius: int = 12, seed: int = 0, threshold: float = DEFAULT_THRESHOLD, subject=None,
                   saes: dict | None = None, out=None, chunk: int = 128, rows_per_pass: int = 256,
                   progress: bool = True) -> Path:
    """:func:`compute_matching`, written atomically to ``matching.npz`` and ``matching.json`` (the
    experiment, the options and the rule, the checksums of its inputs and of the file, seconds).

    ``threshold`` is the default success threshold the notebook starts from (drops are stored,
    so any threshold can be applied later).
    """
    from ..stats.artefacts import load_metadata
    from .partners import PARTNERS_META

    threshold = check_threshold(threshold)
    out = _stats_out(exp, out)
    require_space(out, len(exp.site_pairs) * (n_downstream or 512) * 1024, "matching", MORE_SPACE)
    arrays = compute_matching(exp, n_downstream, methods, n_windows, radius, seed, subject, saes, out, chunk,
                              rows_per_pass, progress)
    seconds = float(arrays["seconds"])
    file = out / MATCHING_FILE
    atomic_save_npz(file, **arrays)
    meta = load_metadata(exp, out)
    partners_meta = json.loads((out / PARTNERS_META).read_text())
    atomic_write_json(out / MATCHING_META, {
        "experiment": exp.to_dict(), "methods": [str(m) for m in arrays["methods"][:-1]], "control": CONTROL,
        "options": {"n_downstream": n_downstream, "n_windows": n_windows, "radius": radius, "seed": seed,
                    "threshold": threshold,
                    "rule": "mean over b's firing tokens (clean) of (clean - ablated) / clean >= threshold"},
        "seconds": round(seconds, 2), "edges": int(arrays["edges"].sum()),
        "ablated_rows": int(arrays["ablated_rows"].sum()),
        "partners_sha256": partners_meta["sha256"], "statistics_sha256": meta.get("sha256", {}),
        "sha256": sha256_file(file), "bytes": file.stat().st_size,
    })
    log.info("matching methods for %s: %d edges in %.1f s -> %s", exp.name, int(arrays["edges"].sum()), seconds, file)
    return file


def load_matching(exp, out=None) -> dict[str, Any]:
    """The matching artefact of ``exp`` (checksum verified), refused if it was made for another
    experiment or from other partner tables than those on disk now; ``meta`` holds its json."""
    from ..stats.artefacts import read_derived_meta
    from .partners import PARTNERS_META

    out = _stats_out(exp, out)
    # made from the partner tables (checked below), which are checked against the statistics
    meta = read_derived_meta(exp, out, MATCHING_META, "matching results", matching_command(exp), statistics=False)
    partners_file = out / PARTNERS_META
    if not partners_file.is_file() or json.loads(partners_file.read_text()).get("sha256") != meta["partners_sha256"]:
        raise ArtefactMismatchError(f"the matching results in {out} were made from other partner tables: "
                                    f"rerun `{matching_command(exp)}`")
    data = load_npz(out / MATCHING_FILE, meta["sha256"], matching_command(exp))
    for key in ("methods", "pairs", "sites"):
        data[key] = [str(v) for v in data[key]]
    data["meta"] = meta
    return data


def matching_ready(exp, out=None) -> bool:
    from ..stats.artefacts import artefact_ready

    return artefact_ready(load_matching, exp, out)

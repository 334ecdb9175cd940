"""``gates.npz``: verified boolean combinations and upstream explanations of every feature.

:func:`build_gates` finds the gate candidates of every adjacent pair (:mod:`.gates`) and the
upstream candidate set of every downstream feature (:mod:`.upstream`) from the exact counts of
the statistics pass, runs ONE focused second pass (:mod:`.focused_pass`) that counts both the
candidates' truth tables and the upstream firing masks, derives the greedy covers, and writes
``gates.npz`` with ``gates.json`` (the experiment, the options, the checksum, the seconds of
the pass) atomically. :func:`load_gates` refuses another experiment's file, or one made from
other statistics, with the command that rebuilds it. Layout: ``artefacts/README.md``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..io import MORE_SPACE, atomic_save_npz, atomic_write_json, load_npz, require_space, sha256_file, stats_dir
from ..locks import stats_out, writes
from ..stats.artefacts import smallest_uint
from .focused_pass import FocusPlan, run_focused_pass
from .gates import KINDS, pair_gate_candidates, truth_table_scores
from .measures import load_pair_inputs
from .upstream import cover_size, greedy_cover, upstream_candidates

log = logging.getLogger(__name__)

GATES_FILE = "gates.npz"
GATES_META = "gates.json"
#: experiment fields that change what the pass counts (on top of the statistics' fields)
GATE_FIELDS = ("gate_threshold", "gate_min_fires", "upstream_candidates")
#: every array of gates.npz except the per-pair firing-mask counts
GATE_ARRAYS = (
    "sites", "pairs", "kinds", "n_tokens", "gate_pair", "gate_kind", "gate_a1", "gate_a2", "gate_b",
    "gate_table", "upstream_index", "upstream_necessity", "cover_slot", "cover_count", "cover_fired",
)


def gates_command(exp) -> str:
    return f"python -m helpers gates --experiment {exp.name}"


def plan_gates(exp, out=None, device="cpu") -> tuple[FocusPlan, dict[str, np.ndarray], list[np.ndarray]]:
    """The candidates and upstream sets of every pair, from the counts of the statistics pass:
    ``(plan, candidates, necessities)``; ``candidates`` has ``pair, kind, a1, a2, b`` ``[C]``."""
    from ..stats.artefacts import load_metadata

    meta = load_metadata(exp, out)
    f = int(meta["n_features"])
    plan = FocusPlan(sites=tuple(exp.sites), n_features=f)
    cands: dict[str, list[np.ndarray]] = {k: [] for k in ("pair", "kind", "a1", "a2", "b")}
    necessity = []
    for p in range(len(exp.site_pairs)):
        inputs = load_pair_inputs(exp, p, device=device, out=out)
        found = pair_gate_candidates(inputs.count, inputs.fired_a, inputs.fired_b,
                                     exp.gate_threshold, exp.gate_min_fires)
        plan.triples[p] = (found["a1"], found["a2"], found["b"])
        for key, value in found.items():
            cands[key].append(value)
        cands["pair"].append(np.full(len(found["b"]), p, dtype=np.int64))
        plan.upstream[p], nec = upstream_candidates(inputs.count, inputs.fired_b, exp.upstream_candidates)
        necessity.append(nec)
    return plan, {k: np.concatenate(v) for k, v in cands.items()}, necessity


@writes("gates", stats_out)
def build_gates(exp, out=None, subject=None, saes: dict | None = None, progress: bool = True,
                keep_masks: bool = False) -> Path:
    """Plan, run the focused pass, derive the covers and write ``gates.npz`` (+ ``gates.json``).

    ``keep_masks`` also stores the per-pair firing-mask counts the covers were derived from
    (up to one entry per firing: the largest arrays by far, so off by default).
    """
    from ..stats.artefacts import load_metadata
    from ..subject.models import load_subject, resolve_device
    from ..subject.saes import load_saes

    out = Path(out) if out is not None else stats_dir(exp.stats_name)
    stats = load_metadata(exp, out)  # refuses another experiment's statistics
    f = int(stats["n_features"])
    if not 1 <= exp.upstream_candidates <= f:
        raise ConfigError(f"upstream_candidates={exp.upstream_candidates} must be between 1 and the "
                          f"number of features ({f})")
    masks = exp.token_budget * exp.sae_k * 12 if keep_masks and exp.token_budget else 0  # (a guess)
    require_space(out, len(exp.site_pairs) * (f * (16 * exp.upstream_candidates + 256) + masks), "gates",
                  MORE_SPACE)
    plan, cands, necessity = plan_gates(exp, out)
    from ..stats.codes import open_codes

    codes = open_codes(exp, out, plan.needed_sites()) if subject is None else None
    if codes is None:  # no usable record of the pass's codes: run the model again
        subject = subject or load_subject(exp.replace(device=str(resolve_device(exp.device))))
        saes = saes or load_saes(exp, device=subject.device)
    result, seconds = run_focused_pass(exp, plan, subject, saes, progress=progress, codes=codes)
    if result["n_tokens"] != int(stats["tokens"]):
        raise ConfigError(f"the focused pass read {result['n_tokens']} tokens, the statistics "
                          f"{stats['tokens']}: rebuild the statistics with `python -m helpers collect "
                          f"--experiment {exp.name}`")
    k = plan.k
    n_pairs = len(exp.site_pairs)
    table = np.zeros((len(cands["b"]), 8), dtype=np.int64)
    for p in range(n_pairs):
        rows = cands["pair"] == p
        if rows.any():
            table[rows] = result["tables"][p]
    covers = [greedy_cover(result["keys"][p], result["counts"][p], f, k) for p in range(n_pairs)]
    # the truth tables' marginals must equal the statistics pass's firing counts (same batching)
    fired = load_pair_fired(exp, out)
    consistent = bool(np.array_equal(truth_table_scores(table, cands["kind"])["fired_b"],
                                      fired[cands["pair"] + 1, cands["b"]]) if len(table) else True)
    consistent &= all(np.array_equal(c["fired"], fired[p + 1]) for p, c in enumerate(covers))
    if not consistent:
        log.warning("the focused pass's firing counts differ from the statistics pass's (another "
                    "batch_size or device? TopK ties can flip): the truth tables stay exact for this pass")
    file = out / GATES_FILE
    atomic_save_npz(
        file, sites=np.array(exp.sites), pairs=np.array([f"{a}->{b}" for a, b in exp.site_pairs]),
        kinds=np.array(KINDS), n_tokens=np.int64(result["n_tokens"]),
        gate_pair=cands["pair"].astype(np.int16), gate_kind=cands["kind"].astype(np.int8),
        gate_a1=cands["a1"].astype(np.int32), gate_a2=cands["a2"].astype(np.int32),
        gate_b=cands["b"].astype(np.int32), gate_table=table,
        upstream_index=np.stack([plan.upstream[p] for p in range(n_pairs)]),
        upstream_necessity=np.stack(necessity),
        cover_slot=np.stack([c["slot"] for c in covers]), cover_count=np.stack([c["covered"] for c in covers]),
        cover_fired=np.stack([c["fired"] for c in covers]),
        **{f"mask_key_{p}": smallest_uint(result["keys"][p]) for p in range(n_pairs) if keep_masks},
        **{f"mask_count_{p}": smallest_uint(result["counts"][p]) for p in range(n_pairs) if keep_masks},
    )
    atomic_write_json(out / GATES_META, {
        "experiment": exp.to_dict(),
        "options": {name: getattr(exp, name) for name in GATE_FIELDS},
        "seconds": round(seconds, 2), "tokens": result["n_tokens"], "sites_encoded": list(plan.needed_sites()),
        "firing_from": "the statistics pass's recorded codes" if codes is not None else "a model re-run",
        "candidates": int(len(table)), "consistent_with_statistics": consistent, "masks": keep_masks,
        "mask_entries": [int(len(result["keys"][p])) for p in range(n_pairs)],
        "statistics_sha256": stats.get("sha256", {}), "sha256": sha256_file(file), "bytes": file.stat().st_size,
    })
    log.info("gate verification for %s: %d candidates, %d tokens in %.1f s -> %s",
             exp.name, len(table), result["n_tokens"], seconds, file)
    return file


def load_pair_fired(exp, out=None) -> np.ndarray:
    from ..stats.artefacts import load_artefact

    return load_artefact(exp, "dead_features", out, keys=("fired",))["fired"]


def read_gates_meta(exp, out=None) -> dict[str, Any]:
    """``gates.json``, refused when missing or made for another experiment or other statistics."""
    from ..stats.artefacts import STAT_FIELDS, read_derived_meta

    out = Path(out) if out is not None else stats_dir(exp.stats_name)
    return read_derived_meta(exp, out, GATES_META, "gate verification results", gates_command(exp),
                             fields=STAT_FIELDS + GATE_FIELDS)


def load_gates(exp, out=None, masks: bool = False) -> dict[str, Any]:
    """The arrays of ``gates.npz`` (checksum verified) and ``meta`` (``gates.json``).

    The firing-mask counts (``mask_key_{p}``, ``mask_count_{p}``, the largest arrays) are
    loaded only with ``masks=True``, as int64, and exist only if the file was built with them
    (``python -m helpers gates --masks``); the covers derived from them always are.
    """
    out = Path(out) if out is not None else stats_dir(exp.stats_name)
    meta = read_gates_meta(exp, out)
    if masks and not meta.get("masks"):
        raise ConfigError(f"{out / GATES_FILE} holds no firing-mask counts: rebuild it with "
                          f"`{gates_command(exp)} --masks`")
    n_pairs = len(exp.site_pairs)
    keys = None if masks else GATE_ARRAYS
    data = load_npz(out / GATES_FILE, meta["sha256"], gates_command(exp), keys)
    for p in range(n_pairs) if masks else ():
        for name in (f"mask_key_{p}", f"mask_count_{p}"):
            data[name] = data[name].astype(np.int64)
    for key in ("sites", "pairs", "kinds"):
        data[key] = [str(s) for s in data[key]]
    data["meta"] = meta
    return data


def gates_ready(exp, out=None) -> bool:
    """Whether ``gates.npz`` exists, belongs to ``exp`` and its statistics, and is intact."""
    from ..stats.artefacts import artefact_ready

    return artefact_ready(load_gates, exp, out)


def gate_rows(gates: dict[str, Any], min_iou: float) -> list[dict[str, Any]]:
    """One row per candidate: pair, kind, a1, a2, b, its truth table, precision, recall, IoU and
    whether it survives (IoU >= ``min_iou``), best IoU first."""
    from .gates import survives

    scores = truth_table_scores(gates["gate_table"], gates["gate_kind"])
    alive = survives(gates["gate_table"], gates["gate_kind"], min_iou)
    rows = []
    for i in range(len(gates["gate_b"])):
        p = int(gates["gate_pair"][i])
        rows.append({
            "pair": gates["pairs"][p], "pair_index": p, "kind": KINDS[int(gates["gate_kind"][i])],
            "a1": int(gates["gate_a1"][i]), "a2": int(gates["gate_a2"][i]), "b": int(gates["gate_b"][i]),
            "table": gates["gate_table"][i].tolist(), "survives": bool(alive[i]),
            **{m: float(scores[m][i]) for m in ("precision", "recall", "iou")},
        })
    return sorted(rows, key=lambda r: (-np.nan_to_num(r["iou"], nan=-1.0), r["pair_index"], r["b"]))


def gate_summary(gates: dict[str, Any], min_iou: float) -> list[dict[str, Any]]:
    """Per adjacent pair (downstream site) and kind: candidates and survivors."""
    from .gates import survives

    alive = survives(gates["gate_table"], gates["gate_kind"], min_iou)
    rows = []
    for p, name in enumerate(gates["pairs"]):
        row: dict[str, Any] = {"pair": name, "downstream site": gates["sites"][p + 1]}
        for k, kind in enumerate(KINDS):
            mine = (gates["gate_pair"] == p) & (gates["gate_kind"] == k)
            row[f"{kind} candidates"] = int(mine.sum())
            row[f"{kind} survivors"] = int((mine & alive).sum())
        rows.append(row)
    return rows


def explanation_sizes(gates: dict[str, Any], coverage: float) -> np.ndarray:
    """``[P, F]`` greedy explanation size reaching ``coverage`` (0: never fired, -1: not reached)."""
    return cover_size(gates["cover_count"], gates["cover_fired"], coverage)


def gate_totals(gates: dict[str, Any], min_iou: float) -> dict[str, Any]:
    """Over all pairs: the AND and OR candidates, how many survive at ``min_iou`` and their share,
    and the median IoU, precision and recall of the candidates (NaN without candidates)."""
    from .gates import survives

    kind = gates["gate_kind"]
    alive = survives(gates["gate_table"], kind, min_iou)
    scores = truth_table_scores(gates["gate_table"], kind)
    n_and = int((kind == 0).sum())
    medians = {m: float(np.nanmedian(scores[m])) if len(kind) else float("nan")
               for m in ("iou", "precision", "recall")}
    return {"candidates": len(kind), "and": n_and, "or": len(kind) - n_and, "survivors": int(alive.sum()),
            "share": float(alive.mean()) if len(kind) else float("nan"), **medians}


def explanation_rows(gates: dict[str, Any], coverage: float, few: int = 3) -> list[dict[str, Any]]:
    """Per adjacent pair: the downstream features that fired, the share of them whose greedy
    explanation reaches ``coverage``, the median size of those explanations, and the share
    explained by at most ``few`` upstream features."""
    sizes = explanation_sizes(gates, coverage)
    rows = []
    for p, name in enumerate(gates["pairs"]):
        s = sizes[p][sizes[p] != 0]
        reached = s[s > 0]
        rows.append({"pair": name, "firing": len(s), "covered": np.mean(s > 0),
                     "median size": np.median(reached) if len(reached) else float("nan"),
                     f"at most {few}": np.mean((s > 0) & (s <= few))})
    return rows


def format_gates(exp, file: Path, out=None) -> str:
    """A few lines for the command line: candidates and survivors per pair, the pass's time."""
    gates = load_gates(exp, out if out is not None else file.parent)
    meta = gates["meta"]
    lines = [f"gate verification: {file} ({file.stat().st_size / 2**20:.1f} MiB), {meta['candidates']} "
             f"candidates, pass over {meta['tokens']:,} tokens in {meta['seconds']:.1f} s "
             f"(sites encoded: {len(meta['sites_encoded'])})"]
    for row in gate_summary(gates, exp.gate_min_iou):
        lines.append(f"  {row['pair']}: AND {row['and survivors']}/{row['and candidates']}, "
                     f"OR {row['or survivors']}/{row['or candidates']} survive (IoU >= {exp.gate_min_iou:g})")
    return "\n".join(lines)

"""The artefacts of the statistics pass: writing them atomically, loading them safely."""

from __future__ import annotations

import datetime as _dt
import json
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..errors import ArtefactMismatchError, CorruptArtefactError, MissingArtefactError
from ..experiment import Experiment
from ..io import REPO_ROOT, atomic_save_npz, atomic_write_json, load_npz, sha256_file, stats_dir
from .accumulators import jaccard, pearson

if TYPE_CHECKING:
    from .collect import PassState

#: experiment fields the statistics depend on (not batch size or device)
STAT_FIELDS = (
    "model", "sae_source", "sae_release", "sites", "corpus", "max_documents", "token_budget",
    "context_length", "sae_width", "sae_k", "sae_train_tokens", "sae_heldout_tokens",
    "sae_train_batch", "sae_epochs", "sae_lr", "seed", "step_tokens", "dead_thresholds",
    "coactivation_thresholds", "top_k_examples", "graph_top_k", "graph_weights", "relative_threshold",
    # activations and SAE choice; defaults reproduce what older artefacts were computed with
    "sae_ids", "center_residual", "prepend_bos",
)
ARTEFACT_FILES = (
    "max_activations.npz", "dead_features.npz", "pair_coactivation.npz", "correlation.npz",
    "top_examples.npz", "coactivation_graph.npz", "histograms.npz",
)
#: artefacts derived on demand from the others instead of being stored (full F x F matrices)
DERIVED = {"cooccurrence": "Jaccard index of every feature pair, from pair_coactivation and dead_features"}
METADATA = "metadata.json"


def smallest_uint(count: np.ndarray) -> np.ndarray:
    """Non-negative integers (counts) in the smallest unsigned type that holds them exactly."""
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


def _pearson32(n, sum_a, sum_sq_a, sum_b, sum_sq_b, sum_xy, rows: int = 2048) -> np.ndarray:
    """:func:`pearson` as float32, computed in blocks of ``rows`` rows (the same numbers: every
    entry is computed alone) so that its float64 temporaries stay a few blocks, not ``F x F`` each."""
    out = np.empty(sum_xy.shape, dtype=np.float32)
    for lo in range(0, sum_xy.shape[0], rows):
        hi = lo + rows
        out[lo:hi] = pearson(n, sum_a[lo:hi], sum_sq_a[lo:hi], sum_b, sum_sq_b, sum_xy[lo:hi])
    return out


def write_artefacts(state: PassState, exp: Experiment, out: Path, seconds: float = 0.0, world: int = 1,
                    activity: dict[str, Any] | None = None, plan: str = "data",
                    plan_words: str | None = None) -> dict[str, int]:
    """Write every artefact atomically; ``metadata.json`` last. Returns file sizes in bytes.

    ``plan_words``: the plan as recorded in ``metadata.json`` when it is not the default
    (one process, or ``<plan>-parallel`` for several), e.g. "3 passes over the pairs, 2 pairs each".
    The per-site arrays are stitched from their owners (:meth:`PassState.results_of_sites`). The
    pairs' derived arrays (compact counts, Pearson r) come from the spool (:mod:`.spool`): the pairs
    spooled when their results became final (at the end of their pass, or on rank 0 as they
    arrived), the others spooled here one pair at a time from the accumulators, each r checked to
    come from the stitched feature sums. ``pair_coactivation.npz`` and ``correlation.npz`` are
    written from the memory-mapped spool files (numpy streams them into the npz in chunks), so the
    host holds one pair's full results at a time, never every pair's; the spool is removed once
    ``metadata.json`` is written.
    """
    from .collect import STREAM_FIX
    from .spool import PairSpool, pair_sums

    if state.spool is None:  # a state not made by run_pass: spool here, from a clean folder
        state.spool = PairSpool(out)
        state.spool.clear()
    spool = state.spool
    sites = np.array(exp.sites)
    pairs = np.array([f"{a}->{b}" for a, b in exp.site_pairs])
    per_site = state.results_of_sites()  # stitched from the sites' owners (several passes, ranks)
    feats = per_site["features"]
    steps = np.array(state.steps, dtype=np.int64)
    n = feats["n_tokens"]
    atomic_save_npz(out / "max_activations.npz", max=feats["max"], sites=sites)
    atomic_save_npz(
        out / "dead_features.npz",
        dead=per_site["dead"],  # [n_steps, n_thr, S]
        thresholds=np.array(exp.dead_thresholds), tokens=steps, fired=feats["fired"], sites=sites,
    )
    state.spool_pairs()  # those not spooled yet, one pair at a time
    for i in range(len(pairs)):  # every r from exactly the feature sums of its sites' owners
        spool.check_sums(i, n, pair_sums(feats, i, exp.pair_widths(i)), STREAM_FIX)
    counts = {f"count_{i}": spool.load("count", i) for i in range(len(pairs))}
    atomic_save_npz(
        out / "pair_coactivation.npz",
        never_all=torch.stack(state.coact_all, -1).numpy(),  # [n_thr, P, n_steps]
        never_alive=torch.stack(state.coact_alive, -1).numpy(),
        thresholds=np.array(exp.coactivation_thresholds), tokens=steps, pairs=pairs, sites=sites, **counts,
    )
    del counts
    corr = {f"r_{i}": spool.load("r", i) for i in range(len(pairs))}
    atomic_save_npz(out / "correlation.npz", pairs=pairs, n_tokens=np.int64(n),
                    mean=feats["sum"] / n, **corr)
    del corr
    atomic_save_npz(out / "top_examples.npz", sites=sites, **per_site["top"])
    atomic_save_npz(out / "coactivation_graph.npz", sites=sites, frequency=feats["fired"] / n,
                    fired=feats["fired"], **per_site["graph"])
    hist = per_site["histograms"]
    atomic_save_npz(out / "histograms.npz", sites=sites, edges=hist["edges"], counts=smallest_uint(hist["counts"]))
    sizes = {name: (out / name).stat().st_size for name in ARTEFACT_FILES}
    exp.save(out)
    atomic_write_json(out / METADATA, {
        "experiment": exp.to_dict(),
        "tokens": int(n),
        "n_features": state.n_features,
        "processes": world,
        # data- or pair-parallel, one process, or several passes over the pairs
        "plan": plan_words or (f"{plan}-parallel" if world > 1 else "one process"),
        "precision": state.precision.describe(state.device),
        "seconds": round(seconds, 2),
        "versions": _versions(),
        "git_commit": _git_commit(),
        "activity": activity or {"rule": "active when the SAE activation is > 0"},
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "file_bytes": sizes,
        "sha256": {name: sha256_file(out / name) for name in ARTEFACT_FILES},
    })
    spool.clear()
    return sizes


def collect_command(exp: Experiment) -> str:
    rel = f" --set relative_threshold={exp.relative_threshold:g}" if exp.relative_threshold else ""
    return f"python -m helpers collect --experiment {exp.name}{rel}"


def read_metadata(exp: Experiment, out: Path) -> dict[str, Any]:
    """``metadata.json`` of ``out``, refused if missing or written for another experiment."""
    meta = out / METADATA
    if not meta.is_file():
        raise MissingArtefactError(f"no statistics in {out}: run `{collect_command(exp)}`")
    try:
        data = json.loads(meta.read_text())
        saved = Experiment.from_dict(data["experiment"])
    except (ValueError, KeyError) as err:
        raise CorruptArtefactError(f"{meta} is unreadable ({err}): rebuild the statistics with "
                                   f"`{collect_command(exp)}`") from None
    diff = saved.differences(exp, STAT_FIELDS)
    if diff:
        raise ArtefactMismatchError(
            f"the statistics in {out} belong to another experiment ({'; '.join(diff)}): "
            f"rerun `{collect_command(exp)}`"
        )
    return data


def read_derived_meta(exp: Experiment, out: Path, meta_name: str, what: str, command: str,
                      fields: tuple[str, ...] = STAT_FIELDS, statistics: bool = True) -> dict[str, Any]:
    """The json metadata of an artefact derived from the statistics (partner tables, gate
    verification, matching results), refused when it is missing or unreadable, when it was written
    for another experiment (``fields`` differ), or, with ``statistics``, when it was made from other
    statistics than those in ``out`` now. Every error names ``command``, which rebuilds it."""
    meta_file = out / meta_name
    if not meta_file.is_file():
        raise MissingArtefactError(f"no {what} in {out}: run `{command}`")
    try:
        meta = json.loads(meta_file.read_text())
        saved = Experiment.from_dict(meta["experiment"])
    except (ValueError, KeyError) as err:
        raise CorruptArtefactError(f"{meta_file} is unreadable ({err}): rerun `{command}`") from None
    diff = saved.differences(exp, fields)
    if diff:
        raise ArtefactMismatchError(f"the {what} in {out} belong to another experiment ({'; '.join(diff)}): "
                                    f"rerun `{command}`")
    if statistics:
        stats = read_metadata(exp, out)
        if stats.get("sha256") and meta.get("statistics_sha256") != stats.get("sha256"):
            raise ArtefactMismatchError(f"the {what} in {out} were made from earlier statistics: rerun `{command}`")
    return meta


def load_artefact(exp: Experiment, name: str, out: str | Path | None = None,
                  keys: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
    """One statistics artefact (e.g. ``"dead_features"``), refused if made by another experiment,
    missing, truncated or corrupted (its checksum in ``metadata.json`` is verified).

    ``keys`` loads only those arrays of the file. ``"cooccurrence"`` (Jaccard) is derived on
    demand from the exact counts (see :data:`DERIVED`).
    """
    out = Path(out) if out is not None else stats_dir(exp.stats_name)
    name = name[:-4] if name.endswith(".npz") else name
    if name in DERIVED:
        return _derive(exp, name, out, keys)
    meta = read_metadata(exp, out)
    file = out / f"{name}.npz"
    if not file.is_file():
        raise MissingArtefactError(
            f"{file} is missing (written by an older statistics pass?): rebuild the statistics with "
            f"`{collect_command(exp)}`"
        )
    return load_npz(file, meta.get("sha256", {}).get(file.name), collect_command(exp), keys)


def _derive(exp: Experiment, name: str, out: Path, keys: tuple[str, ...] | None) -> dict[str, np.ndarray]:
    assert name == "cooccurrence"
    n_pairs = len(exp.site_pairs)
    wanted = [f"jaccard_{i}" for i in range(n_pairs) if keys is None or f"jaccard_{i}" in keys]
    fired = load_artefact(exp, "dead_features", out, keys=("fired",))["fired"]
    counts = load_artefact(exp, "pair_coactivation", out, keys=tuple(k.replace("jaccard", "count") for k in wanted))
    result: dict[str, np.ndarray] = {}
    if keys is None or "pairs" in keys:
        result["pairs"] = np.array([f"{a}->{b}" for a, b in exp.site_pairs])
    for key in wanted:
        i = int(key.split("_")[1])
        count = counts[f"count_{i}"]  # (a width pair: [w_a, w_b], the firing rows padded to the widest)
        result[key] = jaccard(count, fired[i][: count.shape[0]], fired[i + 1][: count.shape[1]]).astype(np.float32)
    return result


def load_metadata(exp: Experiment, out: str | Path | None = None) -> dict[str, Any]:
    out = Path(out) if out is not None else stats_dir(exp.stats_name)
    return read_metadata(exp, out)


def check_statistics(exp: Experiment, out: str | Path | None = None) -> dict[str, Any]:
    """Verify every artefact of the pass against its checksum; the metadata if all are good."""
    out = Path(out) if out is not None else stats_dir(exp.stats_name)
    meta = read_metadata(exp, out)
    sums = meta.get("sha256", {})
    for name in ARTEFACT_FILES:
        file = out / name
        if not file.is_file():
            raise MissingArtefactError(f"{file} is missing: rebuild the statistics with `{collect_command(exp)}`")
        expected = sums.get(name)
        if expected is not None:
            from ..io import verify_checksum

            verify_checksum(file, expected, collect_command(exp))
    return meta


def artefact_ready(load, *args: Any, **kwargs: Any) -> bool:
    """Whether ``load(*args, **kwargs)`` succeeds: the artefact it reads exists, belongs to the experiment
    (and to the statistics it was derived from) and is intact; False on any of the loaders' refusals
    (missing, another experiment's, corrupted, a bad argument), which all derive from ValueError or
    FileNotFoundError. Every ``*_ready`` of the pipeline's steps is this with its loader."""
    try:
        load(*args, **kwargs)
    except (ValueError, FileNotFoundError):
        return False
    return True


def statistics_ready(exp: Experiment, out: str | Path | None = None) -> bool:
    """Whether the statistics of ``exp`` exist, belong to it and are intact (checksums)."""
    return artefact_ready(check_statistics, exp, out)

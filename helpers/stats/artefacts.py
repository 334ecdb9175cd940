"""The artefacts of the statistics pass: writing them atomically, loading them safely."""

from __future__ import annotations

import datetime as _dt
import json
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..errors import ArtefactMismatchError, MissingArtefactError
from ..experiment import Experiment
from ..io import REPO_ROOT, atomic_save_npz, atomic_write_json, stats_dir
from .accumulators import jaccard, pearson

if TYPE_CHECKING:
    from .collect import PassState

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
    "histograms.npz",
)
METADATA = "metadata.json"


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
    hist = state.histograms.result()
    atomic_save_npz(out / "histograms.npz", sites=sites, edges=hist["edges"], counts=_compact_counts(hist["counts"]))
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
    if not file.is_file():
        raise MissingArtefactError(
            f"{file} is missing (written by an older statistics pass?): rebuild the statistics with "
            f"`python -m helpers collect --experiment {exp.name}`"
        )
    with np.load(file, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def load_metadata(exp: Experiment, out: str | Path | None = None) -> dict[str, Any]:
    out = Path(out) if out is not None else stats_dir(exp.name)
    load_artefact(exp, "max_activations", out)  # checks the experiment
    return json.loads((out / METADATA).read_text())


def statistics_ready(exp: Experiment, out: str | Path | None = None) -> bool:
    """True when ``out`` holds every artefact of this experiment (an older pass may lack some)."""
    try:
        load_metadata(exp, out)
    except (MissingArtefactError, ArtefactMismatchError, FileNotFoundError):
        return False
    out = Path(out) if out is not None else stats_dir(exp.name)
    return all((out / name).is_file() for name in ARTEFACT_FILES)

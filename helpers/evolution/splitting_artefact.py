"""The splitting of every width pair of a width sweep's pass, as an artefact (``splitting.npz``).

A width sweep's statistics pass (:meth:`helpers.subject.widths.WidthSweep.pass_experiment`: one site
per width, ``<site>@w<width>``) counts, for each consecutive pair of widths, exactly what it counts
for adjacent layers. This step reads those counts, the firing tokens (the pass's recorded codes, or
the model re-run batched as the pass batches) and the decoders, and applies the split rule of
:mod:`.splitting` to every pair: ``splitting.npz`` holds the per-feature arrays of each pair
(``<name>_<pair>``), ``splitting.json`` the thresholds, the shares per pair, the clearest roots and
their trees through every width, with the experiment and the checksum of the statistics.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..io import atomic_save_npz, atomic_write_json, load_npz, sha256_file, stats_dir
from ..locks import stats_out, writes
from .splitting import (COSINE, MIN_CHILDREN, NECESSITY, RECALL, Children, SplitResult, exclusive_children,
                        pick_roots, split_pair, splitting_tree, union_recall)

log = logging.getLogger(__name__)

SPLITTING_FILE = "splitting.npz"
SPLITTING_META = "splitting.json"
#: per-feature arrays of :class:`.splitting.SplitResult` stored for each pair
RESULT_ARRAYS = ("n_children", "covered", "recall", "splits", "persists", "parent", "parent_necessity", "is_new")
CHILD_ARRAYS = ("ptr", "child", "necessity", "share")
#: roots (features of the narrowest width) whose trees the artefact keeps
ROOTS = 12


def splitting_command(exp) -> str:
    return f"python -m helpers prepare --experiment {exp.name}"


def _check_width_experiment(exp) -> None:
    if not exp.width_pairs:
        raise ConfigError(f"preset {exp.name!r} has no width pairs: feature splitting reads a width sweep's pass "
                          "(e.g. --experiment gemma-widths, after `make widths`)")


@writes("splitting", stats_out)
def build_splitting(exp, out=None, saes: dict | None = None, progress: bool = True, roots: int = ROOTS) -> Path:
    """Split every width pair of ``exp``'s pass and write ``splitting.npz`` and ``splitting.json``."""
    from ..explain.artefact import recorded_firings
    from ..stats.artefacts import load_artefact, load_metadata
    from ..subject.saes import load_saes
    from .decoder import decoder_directions

    _check_width_experiment(exp)
    out = Path(out) if out is not None else stats_dir(exp.stats_name)
    meta = load_metadata(exp, out)  # refuses another experiment's statistics
    t0 = time.perf_counter()
    saes = saes if saes is not None else load_saes(exp)
    fired = load_artefact(exp, "dead_features", out, keys=("fired",))["fired"]
    firings, _ = recorded_firings(exp, out, saes=saes, progress=progress)
    results: list[SplitResult] = []
    for i, (a, b) in enumerate(exp.site_pairs):
        wa, wb = exp.pair_widths(i)
        count = load_artefact(exp, "pair_coactivation", out, keys=(f"count_{i}",))[f"count_{i}"]
        results.append(split_pair(count, fired[i][:wa], fired[i + 1][:wb], int(meta["tokens"]), firings[a],
                                  firings[b], decoder_directions(saes[a]), decoder_directions(saes[b])))
    arrays: dict[str, np.ndarray] = {"sites": np.array(exp.sites), "widths": np.array(exp.site_widths)}
    for i, r in enumerate(results):
        arrays.update({f"{name}_{i}": np.asarray(getattr(r, name)) for name in RESULT_ARRAYS})
        arrays.update({f"children_{name}_{i}": np.asarray(getattr(r.children, name)) for name in CHILD_ARRAYS})
    file = out / SPLITTING_FILE
    atomic_save_npz(file, **arrays)
    # the trees: each wide feature under its best parent only; the roots whose own children cover them best
    a0, b0 = exp.site_pairs[0]
    _, exclusive_recall = union_recall(exclusive_children(results[0]), firings[a0], firings[b0],
                                       int(meta["tokens"]), *exp.pair_widths(0))
    chosen = pick_roots(results, roots, score=exclusive_recall)
    atomic_write_json(out / SPLITTING_META, {
        "experiment": exp.to_dict(),
        "thresholds": {"necessity": NECESSITY, "recall": RECALL, "min_children": MIN_CHILDREN, "cosine": COSINE},
        "shares": [r.shares_row(f"{wa} -> {wb}") for r, (wa, wb) in
                   zip(results, (exp.pair_widths(i) for i in range(len(results))))],
        "roots": chosen, "roots_exclusive_recall": [float(exclusive_recall[f]) for f in chosen],
        "trees": [splitting_tree(results, f, exclusive=True) for f in chosen],
        "seconds": round(time.perf_counter() - t0, 2), "statistics_sha256": meta.get("sha256", {}),
        "sha256": sha256_file(file), "bytes": file.stat().st_size,
    })
    log.info("feature splitting for %s: %d width pairs -> %s", exp.name, len(results), file)
    return file


def load_splitting(exp, out=None) -> dict[str, Any]:
    """``{"pairs": [SplitResult per width pair], "meta": splitting.json}``, checked against ``exp``
    and its statistics (one line naming the command that rebuilds it otherwise)."""
    from ..stats.artefacts import read_derived_meta

    _check_width_experiment(exp)
    out = Path(out) if out is not None else stats_dir(exp.stats_name)
    command = splitting_command(exp)
    meta = read_derived_meta(exp, out, SPLITTING_META, "feature splitting", command)
    data = load_npz(out / SPLITTING_FILE, meta["sha256"], command)
    pairs = []
    for i, row in enumerate(meta["shares"]):
        children = Children(*(data[f"children_{n}_{i}"] for n in CHILD_ARRAYS), n_wide=int(row["wb"]))
        pairs.append(SplitResult(children, *(data[f"{n}_{i}"] for n in RESULT_ARRAYS),
                                 *(row[k] for k in ("alive_a", "alive_b", "n_split", "n_persist", "n_new",
                                                    "split", "persist", "new"))))
    return {"pairs": pairs, "meta": meta}


def splitting_ready(exp, out=None) -> bool:
    """Whether ``splitting.npz`` exists, belongs to ``exp`` and its statistics, and is intact."""
    from ..stats.artefacts import artefact_ready

    return artefact_ready(load_splitting, exp, out)

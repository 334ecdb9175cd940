"""Benchmark: the matching-method step (deactivation test of every method's top-1 partner).

    python bench/matching.py --experiment smoke
    SAE_EVOLUTION_ARTEFACTS=/work/main/artefacts python bench/matching.py --experiment offline

Nothing is written. Three figures, measured in one run:

1. the whole step on the preset's artefacts (``compute_matching``: every adjacent pair), when
   they exist: seconds, edges/s, ablated rows/s;
2. batched vs one pass per edge on a sample of the same kind of edges: edges/s of each and the
   ratio (both give the same drops, checked to 1e-4);
3. the offline preset's shape (MiniLM, 2048-feature TopK SAEs with k=32, random weights, one
   pair, windows of 2 x 12 + 1 tokens around random positions): seconds per clean window and
   per ablated row (wall and CPU: on a shared machine the CPU seconds of a 1-thread run are
   the better guide to an idle one), extrapolated to 6 pairs x 512 features x 2 windows with every one of the 6
   partners firing in every window and distinct (the worst case: silent partners need no pass,
   and methods that agree share one), and with the share of ablated rows per edge seen in 1.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from helpers.evolution.matching_artefact import _Windows, compute_matching  # noqa: E402
from helpers.experiment import PRESETS, get_experiment  # noqa: E402
from helpers.interventions.deactivation import ablation_drops, ablation_drops_one_at_a_time, clean_windows  # noqa: E402
from helpers.stats import statistics_ready  # noqa: E402
from helpers.subject.corpus import load_corpus  # noqa: E402
from helpers.subject.models import load_subject  # noqa: E402

OFFLINE_PAIRS, OFFLINE_DOWN, WINDOWS, SLOTS = 6, 512, 2, 6


def whole_step(exp, subject):
    from helpers.subject.saes import load_saes

    saes = load_saes(exp, subject.device)
    c = time.process_time()
    res = compute_matching(exp, subject=subject, saes=saes, progress=False)
    cpu = time.process_time() - c
    s = float(res["seconds"])
    edges, rows = int(res["edges"].sum()), int(res["ablated_rows"].sum())
    n = int((res["downstream"] >= 0).sum())
    return {"pairs": len(res["pairs"]), "downstream features evaluated": n, "edges": edges,
            "ablated rows": rows, "rows per edge": round(rows / max(edges, 1), 3), "seconds": round(s, 1),
            "CPU seconds": round(cpu, 1),
            "edges/s": round(edges / s, 1), "rows/s": round(rows / s, 1)}, saes, rows / max(edges, 1)


def offline_shape(subject, n_windows: int, radius: int, n_edges_slow: int):
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from stats_pass import random_topk_saes

    exp = PRESETS["offline"]
    saes = random_topk_saes(exp.sites, exp.model_spec.d_model, exp.sae_width, exp.sae_k, subject.device)
    site_a, site_b = exp.site_pairs[3]  # 4 blocks before site L+1: above the mean of 3.5 over the pairs
    docs = load_corpus(exp.corpus, 400)
    windows = _Windows(docs, subject.tokenizer, subject.special_tokens, exp.context_length, radius)
    rng = np.random.default_rng(0)
    examples = []
    for d in rng.choice(len(docs), n_windows, replace=False):
        n_tok = len(windows.ids(int(d)))
        examples.append((int(d), int(rng.integers(0, n_tok))))
    batch = windows.batch(examples)
    t, c = time.perf_counter(), time.process_time()
    clean = clean_windows(subject, saes, batch.input_ids, batch.attention_mask, batch.token_mask, site_a, site_b)
    t_clean, c_clean = time.perf_counter() - t, time.process_time() - c
    # per window: 6 upstream features that fire in it (all need a pass), 1 downstream feature that fires
    edges = []
    for w in range(n_windows):
        ups = torch.nonzero((clean.f_a[w] > 0).any(0)).flatten()
        downs = torch.nonzero(((clean.f_b[w] > 0) & clean.token_mask[w, :, None]).any(0)).flatten()
        b = int(downs[rng.integers(len(downs))])
        edges += [(w, int(a), b) for a in ups[torch.from_numpy(rng.permutation(len(ups))[:SLOTS])]]
    t, c = time.perf_counter(), time.process_time()
    fast, n_fast = ablation_drops(subject, saes, clean, site_a, site_b, edges)
    t_rows, c_rows = time.perf_counter() - t, time.process_time() - c
    sample = edges[:n_edges_slow]
    t = time.perf_counter()
    slow, n_slow = ablation_drops_one_at_a_time(subject, saes, batch.input_ids, batch.attention_mask,
                                                batch.token_mask, site_a, site_b, sample)
    t_slow = time.perf_counter() - t
    torch.testing.assert_close(fast[: len(sample)], slow, atol=1e-4, rtol=1e-3)
    assert torch.equal(n_fast[: len(sample)], n_slow)
    return {"sites": f"{site_a} -> {site_b}", "windows": n_windows, "tokens per window": batch.input_ids.shape[1],
            "s per clean window": t_clean / n_windows, "s per ablated row": t_rows / len(edges),
            "CPU s per clean window": c_clean / n_windows, "CPU s per ablated row": c_rows / len(edges),
            "batched edges/s": round(len(edges) / t_rows, 1), "one pass per edge edges/s": round(len(sample) / t_slow, 2),
            "speed-up": round((t_slow / len(sample)) / (t_rows / len(edges)), 1)}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--experiment", default="smoke")
    p.add_argument("--windows", type=int, default=128, help="offline-shaped windows to time")
    p.add_argument("--slow-edges", type=int, default=12, help="edges for the one-pass-per-edge baseline")
    p.add_argument("--no-whole-step", action="store_true", help="skip the whole step on the preset's artefacts")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    exp = get_experiment(args.experiment)
    subject = load_subject(exp)
    figures = {"experiment": exp.name, "torch threads": torch.get_num_threads()}
    rows_per_edge = None
    if args.no_whole_step:
        figures["whole step"] = "skipped (--no-whole-step)"
    elif statistics_ready(exp):
        whole, _, rows_per_edge = whole_step(exp, subject)
        figures.update({f"whole step: {k}": v for k, v in whole.items()})
    else:
        figures["whole step"] = f"skipped: no statistics for {exp.name!r} (run `python -m helpers prepare`)"
    shape = offline_shape(subject, args.windows, 12, args.slow_edges)
    figures.update({f"offline shape: {k}": (round(v, 5) if isinstance(v, float) else v) for k, v in shape.items()})
    worst_rows = OFFLINE_PAIRS * OFFLINE_DOWN * WINDOWS * SLOTS
    for clock in ("", "CPU "):
        clean_s = OFFLINE_PAIRS * OFFLINE_DOWN * 1.06 * WINDOWS * shape[f"{clock}s per clean window"]  # a few tried in vain
        row_s = shape[f"{clock}s per ablated row"]
        figures[f"offline extrapolated: worst case {clock}s"] = round(clean_s + worst_rows * row_s, 1)
        if rows_per_edge is not None:
            figures[f"offline extrapolated: at {exp.name}'s rows per edge {clock}s"] = round(
                clean_s + worst_rows * rows_per_edge * row_s, 1)
    for k, v in figures.items():
        print(f"{k:<52} {v}")
    return figures


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()

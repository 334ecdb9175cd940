"""Benchmark: cross-layer edges measured per second, batched ablation vs one pass per edge.

    python bench/edges.py --experiment smoke --edges 200

Both methods measure the same edges on the same text batch (ablate feature a at
site L, mean change of feature b at site L+1) and must agree to 1e-4; the
speed-up batched / one-at-a-time is printed (target >= 20x) for two edge sets:

- ``random``: every edge has its own upstream feature (the worst case for batching);
- ``fan-out``: ``--fan-out U x D`` edges, D downstream partners for each of U upstream
  features, as when a causal check measures the candidate partners of features.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from helpers.subject.corpus import iter_token_batches, load_corpus  # noqa: E402
from helpers.experiment import get_experiment  # noqa: E402
from helpers.interventions import edge_effects, edge_effects_one_at_a_time  # noqa: E402
from helpers.subject.models import load_subject  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--experiment", default="smoke")
    p.add_argument("--edges", type=int, default=200, help="random edges")
    p.add_argument("--fan-out", default="10x20", help="U x D: D downstream partners of U upstream features")
    p.add_argument("--rows", type=int, default=4, help="text rows per edge")
    p.add_argument("--context", type=int, default=32)
    p.add_argument("--rows-per-pass", type=int, default=512)
    p.add_argument("--pair", type=int, default=2, help="index of the adjacent pair of sites")
    args = p.parse_args(argv)

    exp = get_experiment(args.experiment)
    subject = load_subject(exp)
    from helpers.subject.saes import load_saes, trained_saes_ready

    if exp.sae_source == "trained" and trained_saes_ready(exp):
        saes, note = load_saes(exp, subject.device), "trained SAEs"
    else:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from stats_pass import random_topk_saes

        saes = random_topk_saes(exp.sites, exp.model_spec.d_model, exp.sae_width, exp.sae_k, subject.device)
        note = "random TopK SAEs of the preset's shape"
    a, b = exp.site_pairs[args.pair]
    batch = next(iter_token_batches(load_corpus(exp.corpus, 50), subject.tokenizer, subject.special_tokens,
                                    args.context, args.rows))
    g = torch.Generator().manual_seed(0)
    width = saes[a].cfg.d_sae
    u, d = (int(x) for x in args.fan_out.split("x"))
    sets = {
        "random": [(int(x), int(y)) for x, y in torch.randint(0, width, (args.edges, 2), generator=g)],
        "fan-out": [(int(x), int(y)) for x in torch.randperm(width, generator=g)[:u]
                    for y in torch.randperm(width, generator=g)[:d]],
    }
    run = (subject, saes, batch.input_ids, batch.attention_mask, batch.token_mask, a, b)
    edge_effects(*run, sets["random"][:4], rows_per_pass=args.rows_per_pass)  # warm up
    figures = {"experiment": exp.name, "saes": note, "sites": f"{a} -> {b}",
               "text_rows x tokens": f"{args.rows} x {batch.input_ids.shape[1]}"}
    for name, edges in sets.items():
        t = time.perf_counter()
        fast = edge_effects(*run, edges, rows_per_pass=args.rows_per_pass)
        t_fast = time.perf_counter() - t
        t = time.perf_counter()
        slow = edge_effects_one_at_a_time(*run, edges)
        t_slow = time.perf_counter() - t
        torch.testing.assert_close(fast, slow, atol=1e-4, rtol=1e-3)
        figures.update({
            f"{name}: edges": len(edges),
            f"{name}: batched_edges_per_s": round(len(edges) / t_fast, 1),
            f"{name}: one_pass_per_edge_edges_per_s": round(len(edges) / t_slow, 1),
            f"{name}: speedup": round(t_slow / t_fast, 1),
        })
    figures["identical_results"] = True
    for k, v in figures.items():
        print(f"{k:<32} {v}")
    return figures


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()

"""Benchmark of the gate-verification pass. Prints ratios measured side by side in one run.

    python bench/gates.py --experiment smoke
    SAE_EVOLUTION_ARTEFACTS=/path/to/artefacts python bench/gates.py --experiment offline --tokens 65536

It reads the statistics (and the trained SAEs) of the preset and writes nothing.

1. ``forward+encode``: the model's forward pass to the last site plus every SAE encode over
   the tokens, nothing else (the cost of any pass over them).
2. ``verification``: the focused pass of ``python -m helpers gates`` (truth tables of every
   gate candidate, upstream firing masks of every feature), same tokens, reading and
   tokenizing its stream included (also printed alone, and the ratio against
   tokenize + forward+encode). Target: verification / forward+encode at most 1 plus a small
   fraction.
Both run ``--repeats`` times, alternating; the best time of each is compared.

Then the work outside the pass, derived from the artefacts: planning (candidates and upstream
sets from the exact counts) and the greedy covers; and per adjacent pair the candidates and, when
the pass read the whole stream (or ``gates.npz`` exists), the survivors.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from helpers.errors import SaeEvolutionError  # noqa: E402
from helpers.evolution.focused_pass import run_focused_pass  # noqa: E402
from helpers.evolution.gate_artefact import gates_ready, load_gates, plan_gates  # noqa: E402
from helpers.evolution.gates import KINDS, survives  # noqa: E402
from helpers.evolution.upstream import greedy_cover  # noqa: E402
from helpers.experiment import get_experiment  # noqa: E402
from helpers.stats import load_metadata  # noqa: E402
from helpers.subject.capture import capture_residuals  # noqa: E402
from helpers.subject.corpus import iter_token_batches, load_corpus  # noqa: E402
from helpers.subject.models import load_subject, resolve_device  # noqa: E402
from helpers.subject.saes import load_saes  # noqa: E402


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def forward_encode(exp, subject, saes, tokens) -> tuple[float, float]:
    """Seconds of the forward pass + every SAE encode over the first ``tokens`` tokens, and
    seconds of reading and tokenizing them (done first, not in the first figure)."""
    t = time.perf_counter()
    docs = load_corpus(exp.corpus, exp.max_documents)
    data = list(iter_token_batches(docs, subject.tokenizer, subject.special_tokens, exp.context_length,
                                   exp.batch_size, tokens))
    tokenize = time.perf_counter() - t
    sync(subject.device)
    t = time.perf_counter()
    for b in data:
        acts = capture_residuals(subject, b.input_ids, b.attention_mask, exp.sites)
        mask = b.token_mask.to(subject.device)
        for s in exp.sites:
            saes[s].encode(acts[s][mask].to(saes[s].W_enc.dtype))
    sync(subject.device)
    return time.perf_counter() - t, tokenize


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--experiment", default="smoke")
    p.add_argument("--tokens", type=int, default=None, help="tokens to time (default: the whole stream)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--device", default="auto")
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = p.parse_args(argv)
    device = resolve_device(args.device)
    exp = get_experiment(args.experiment, device=str(device))
    try:
        stats = load_metadata(exp)
    except SaeEvolutionError as err:
        print(f"no statistics for {exp.name!r} ({err}); run `python -m helpers prepare --experiment {exp.name}`")
        return None
    total = int(stats["tokens"])
    tokens = min(args.tokens or total, total)
    timed = exp.replace(token_budget=tokens) if tokens < total else exp

    t = time.perf_counter()
    plan, cands, _ = plan_gates(exp)
    plan_s = time.perf_counter() - t
    subject = load_subject(exp)
    saes = load_saes(exp, device=subject.device)
    forward_encode(exp, subject, saes, min(tokens, 2048))  # warm up
    fe, ver, tok_s = [], [], []
    for _ in range(args.repeats):
        seconds, tokenize = forward_encode(timed, subject, saes, tokens)
        fe.append(seconds)
        tok_s.append(tokenize)
        res, seconds = run_focused_pass(timed, plan, subject, saes, progress=False)
        ver.append(seconds)
    f = plan.n_features
    t = time.perf_counter()
    for q in plan.upstream:
        greedy_cover(res["keys"][q], res["counts"][q], f, plan.k)
    cover_s = time.perf_counter() - t
    figures = {
        "experiment": exp.name, "device": str(device), "tokens": tokens, "stream_tokens": total,
        "sites_encoded": len(plan.needed_sites()), "candidates": int(len(cands["b"])),
        "forward_encode_s": round(min(fe), 3), "verification_s": round(min(ver), 3),
        "ratio_verification_over_forward_encode": round(min(ver) / min(fe), 3),
        # the pass reads and tokenizes its stream itself; forward+encode was given ready batches
        "tokenize_s": round(min(tok_s), 3),
        "ratio_over_tokenize_plus_forward_encode": round(min(ver) / (min(fe) + min(tok_s)), 3),
        "all_runs_s": {"forward_encode": [round(x, 2) for x in fe], "verification": [round(x, 2) for x in ver]},
        "plan_s": round(plan_s, 3), "greedy_cover_s": round(cover_s, 3),
    }
    # candidates and survivors per adjacent pair
    if tokens == total:
        table = np.zeros((len(cands["b"]), 8), dtype=np.int64)
        for q, t_ in res["tables"].items():
            table[cands["pair"] == q] = t_
        alive, source = survives(table, cands["kind"], exp.gate_min_iou), "this run (whole stream)"
    elif gates_ready(exp):
        g = load_gates(exp)
        table, alive, source = g["gate_table"], survives(g["gate_table"], g["gate_kind"], exp.gate_min_iou), "gates.npz"
    else:
        alive, source = None, None
    per_pair = {}
    for q, (a, b) in enumerate(exp.site_pairs):
        row = {}
        for k, kind in enumerate(KINDS):
            mine = (cands["pair"] == q) & (cands["kind"] == k)
            row[f"{kind}_candidates"] = int(mine.sum())
            if alive is not None:
                row[f"{kind}_survivors"] = int((mine & alive).sum())
        per_pair[f"{a}->{b}"] = row
    figures["per_pair"] = per_pair
    figures["survivors_from"] = source or f"not measured (timed {tokens} of {total} tokens; no gates.npz)"
    figures["min_iou"] = exp.gate_min_iou
    for k, v in figures.items():
        if k != "per_pair":
            print(f"{k:<40} {v}")
    for name, row in per_pair.items():
        print(f"  {name:<24} " + ", ".join(f"{k} {v}" for k, v in row.items()))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
    return figures


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()

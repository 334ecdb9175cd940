"""Precision of float32 sums of products flushed into float64 (``sum_dtype=float32``).

    python bench/precision.py [--tokens 17500000] [--entries 64]

The worst case for a float32 running sum is an entry that grows on every token:
a pair of features that fire together on every token of the stream. This
script streams such entries through :class:`helpers.stats.accumulators.StreamedSums`
the way the pass does (batches of 4,096 tokens, ``index_add_``), in float64 and
in float32 flushed every ``flush_tokens`` tokens, and prints the relative error
of the float32 result against the float64 one, for several ``flush_tokens``.
Products are drawn like those of two SAE activations (|N(0, 1)| x |N(0, 1)|,
times a per-entry scale). The figures go into ``bench/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from helpers.stats.accumulators import StreamedSums  # noqa: E402


def stream_error(tokens: int, entries: int, flush_tokens: int, batch: int = 4096, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    scale = torch.exp(torch.randn(entries, generator=g))
    exact = StreamedSums(entries, torch.float64)
    approx = StreamedSums(entries, torch.float32, flush_tokens=flush_tokens)
    index = torch.arange(entries).repeat(batch)
    for start in range(0, tokens, batch):
        n = min(batch, tokens - start)
        prod = (torch.randn(n, entries, generator=g).abs() * torch.randn(n, entries, generator=g).abs()
                * scale).double().reshape(-1)
        for sums in (exact, approx):
            sums.reserve(n)
            sums.index_add_(index[: n * entries], prod)
    rel = ((approx.total() - exact.total()).abs() / exact.total()).double()
    return {"flush_tokens": flush_tokens, "max_relative_error": float(rel.max()),
            "median_relative_error": float(rel.median())}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokens", type=int, default=17_500_000)
    p.add_argument("--entries", type=int, default=64)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    rows = [stream_error(args.tokens, args.entries, f) for f in (1 << 16, 1 << 18, 1 << 20, 1 << 22, 1 << 24)]
    print(f"{args.tokens:,} tokens, {args.entries} entries co-firing on every token")
    print(f"{'flush_tokens':>14} {'max rel. error':>16} {'median rel. error':>18}")
    for r in rows:
        print(f"{r['flush_tokens']:>14,} {r['max_relative_error']:>16.2e} {r['median_relative_error']:>18.2e}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    return rows


if __name__ == "__main__":
    main()

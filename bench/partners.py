"""Partner tables for one GPT-2-shaped pair of sites (24,576 x 24,576) from synthetic statistics.

    python bench/partners.py                      # 24,576 features, 2,048 feature rows each way, CPU
    python bench/partners.py --rows 0             # every row (the whole pair)
    python bench/partners.py --device cuda        # on a GPU

Prints the seconds per pair (measured on ``--rows`` rows in each direction and scaled to the
whole pair when fewer), the peak memory of the process (and of the GPU), and the bytes the
tables of all 11 GPT-2 pairs take. Synthetic inputs: random exact counts consistent with the
firing counts, a random correlation matrix and random decoder directions.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from helpers.evolution.measures import MEASURES, PairInputs  # noqa: E402
from helpers.evolution.partners import partner_block  # noqa: E402


def synthetic(F: int, d: int, n_tokens: int, device: torch.device, seed: int = 0) -> PairInputs:
    g = torch.Generator().manual_seed(seed)
    fired_a = torch.randint(1, n_tokens // 100, (F,), generator=g)
    fired_b = torch.randint(1, n_tokens // 100, (F,), generator=g)
    count = torch.empty(F, F, dtype=torch.int32)
    for lo in range(0, F, 2048):  # counts <= min(#a, #b), half of them 0 (as in the reference study)
        hi = min(lo + 2048, F)
        top = torch.minimum(fired_a[lo:hi, None], fired_b[None, :]).float()
        c = (torch.rand(hi - lo, F, generator=g) ** 4 * top).to(torch.int32)
        c[torch.rand(hi - lo, F, generator=g) < 0.5] = 0
        count[lo:hi] = c
    r = (torch.rand(F, F, generator=g) * 1.1 - 0.1).to(torch.float32)
    da = torch.nn.functional.normalize(torch.randn(F, d, generator=g), dim=1)
    db = torch.nn.functional.normalize(torch.randn(F, d, generator=g), dim=1)
    return PairInputs(count, fired_a, fired_b, n_tokens, r, da, db).to(device)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--features", type=int, default=24576)
    ap.add_argument("--d-model", type=int, default=768)
    ap.add_argument("--tokens", type=int, default=17_500_000)
    ap.add_argument("--rows", type=int, default=2048, help="rows per direction to time (0: all)")
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--chunk", type=int, default=512)
    ap.add_argument("--pairs", type=int, default=11, help="pairs to size the tables for (GPT-2: 11)")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    device = torch.device(args.device)
    F = args.features
    t0 = time.perf_counter()
    inputs = synthetic(F, args.d_model, args.tokens, device)
    setup = time.perf_counter() - t0
    rows = F if args.rows <= 0 else min(args.rows, F)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for direction in ("down", "up"):
        for lo in range(0, rows, args.chunk):
            idx, val, cnt = partner_block(inputs, lo, min(lo + args.chunk, rows), args.k, direction)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    per_pair = seconds * F / rows
    M = len(MEASURES)
    table_bytes = args.pairs * 2 * M * F * args.k * (4 + 8 + 4 * M)
    print(f"device {device}{' (' + torch.cuda.get_device_name(device) + ')' if device.type == 'cuda' else ''}, "
          f"torch threads {torch.get_num_threads()}")
    print(f"synthetic inputs of one {F:,} x {F:,} pair built in {setup:.1f} s")
    print(f"partner tables, {len(MEASURES)} measures, k={args.k}: {rows:,} of {F:,} rows each way in {seconds:.1f} s"
          f" -> {per_pair:.1f} s per pair{' (scaled)' if rows < F else ''}, {per_pair * args.pairs / 60:.1f} min for "
          f"{args.pairs} pairs")
    print(f"peak host memory (max RSS) {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB")
    if device.type == "cuda":
        print(f"peak GPU memory {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB")
    print(f"partners.npz for {args.pairs} pairs of {F:,} features: {table_bytes / 2**30:.2f} GiB uncompressed")


if __name__ == "__main__":
    main()

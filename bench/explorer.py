"""Benchmark: building the feature explorer's data, and its size.

    python bench/explorer.py [--width 2048] [--tokens 4000]

Runs the statistics pass on the offline subject (MiniLM, 7 sites) with random TopK SAEs of the
offline preset's width (2048, k=32) over a few thousand tokens, then builds the explorer and
prints, measured in this one run:

- pages built per minute (everything but the model re-run: partner tables, labels, neighbours,
  effects, histograms, writing the files), against the 100,000 features/minute target;
- the example contexts: read from the codes the statistics pass recorded (what ``make book``
  does on a CPU), and, for comparison, re-run through the model and the SAEs (what happens
  without the record), each in tokens per second with what it costs on the offline preset
  (about all of its 1.01M tokens, since almost every batch holds an example);
- the data size, split into a per-feature part and a per-example part, extrapolated to the
  offline preset (7 x 2048 features, up to 40 examples each, 1.01M tokens) against the 60 MB
  target, and to GPT-2 scale (12 x 24576 features, 17.5M tokens).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    import torch
    from sae_lens import TopKSAE, TopKSAEConfig

    from helpers.experiment import PRESETS
    from helpers.explore.site import site_payload, write_site, build_data
    from helpers.stats import load_artefact, run_pass
    from helpers.subject.models import load_subject

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--width", type=int, default=2048)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--tokens", type=int, default=4000)
    args = ap.parse_args()
    torch.set_num_threads(2)
    exp = PRESETS["offline"].replace(sae_width=args.width, sae_k=args.k, token_budget=args.tokens,
                                     batch_size=32, step_tokens=args.tokens, device="cpu")
    subject = load_subject(exp)
    saes = {}
    for i, s in enumerate(exp.sites):
        torch.manual_seed(100 + i)
        sae = TopKSAE(TopKSAEConfig(d_in=384, d_sae=args.width, k=args.k))
        with torch.no_grad():
            sae.W_enc.normal_(0, 384**-0.5)
            sae.W_dec.normal_(0, args.width**-0.5)
        saes[s] = sae
    tmp = Path(tempfile.mkdtemp(prefix="bench-explorer-"))
    t = time.perf_counter()
    run_pass(exp, out=tmp / "stats", progress=False, subject=subject, saes=saes)
    t_pass = time.perf_counter() - t
    from helpers.evolution.partners import build_partners

    build_partners(exp, out=tmp / "stats", saes=saes, progress=False)  # the 6-measure tables the book uses
    data = build_data(exp, subject, saes, tmp / "stats")
    assert data["examples"].from_codes, "the statistics pass did not record the codes"
    from helpers.explore import contexts as ctx

    rerun = ctx.flatten_examples(load_artefact(exp, "top_examples", tmp / "stats"))
    t = time.perf_counter()
    rerun = ctx.example_contexts(exp, subject, saes, rerun, data["examples"].partner_feature,
                                 data["examples"].partner_offset, data["labels"])
    t_model = time.perf_counter() - t
    t, c = time.perf_counter(), time.process_time()
    sizes = write_site(exp, data, tmp / "site")
    t_write, c_write = time.perf_counter() - t, time.process_time() - c
    cpu = data["cpu_build"] + c_write
    S, F = len(exp.sites), exp.sae_width
    n_feat = S * F
    build = data["seconds_build"] + t_write
    ex = data["examples"]
    # size: examples part vs the rest, per site payload
    ex_bytes = rest_bytes = 0
    for s in range(S):
        p = site_payload(exp, data, s)
        part = json.dumps({"examples": p.pop("examples"), "recolour": p.pop("recolour")}, separators=(",", ":"))
        ex_bytes += len(part)
        rest_bytes += len(json.dumps(p, separators=(",", ":")))
    per_example = ex_bytes / max(ex.n, 1)
    per_feature = rest_bytes / n_feat
    corpus = sizes["explorer/data/corpus.js"]
    meta = sizes["explorer/data/meta.js"]
    n_tokens_run = sum(len(v) for v in data["doc_tokens"].values())
    offline_tokens, gpt2_tokens = 1_010_000, 17_500_000
    offline = 7 * 2048 * (per_feature + 40 * per_example) + 3 * offline_tokens + meta
    gpt2 = 12 * 24576 * (per_feature * 1.3 + 40 * per_example) + 3 * gpt2_tokens + 2 * meta
    codes_rate = ex.tokens_run / max(data["seconds_rerun"], 1e-9)
    rerun_rate = rerun.tokens_run / max(t_model, 1e-9)
    print(f"subject MiniLM, {S} sites x {F} random TopK SAE features (k={args.k}), {args.tokens:,} tokens "
          f"(statistics pass {t_pass:.1f} s); load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"pages built (excluding the model re-run): {n_feat:,} features in {build:.2f} s = "
          f"{n_feat / build * 60:,.0f} features/min (target >= 100,000: {n_feat / build * 60 / 1e5:.2f}x); "
          f"CPU time of this process {cpu:.2f} s = {n_feat / cpu * 60:,.0f} features per CPU-minute "
          f"(what an unloaded machine gives with one core busy)")
    print(f"example contexts from the recorded codes: {ex.batches_run} batches, {ex.tokens_run:,} tokens in "
          f"{data['seconds_rerun']:.1f} s = {codes_rate:,.0f} tokens/s; on the offline preset (~all of its "
          f"{offline_tokens:,} tokens) at most {offline_tokens / codes_rate / 60:.1f} min (a linear upper bound: "
          "fixed costs dominate a few batches; `python -m helpers explorer` prints the real time)")
    print(f"the same contexts re-run through the model (no recorded codes): {rerun.tokens_run:,} tokens in "
          f"{t_model:.1f} s = {rerun_rate:,.0f} tokens/s; on the offline preset about "
          f"{offline_tokens / rerun_rate / 60:.1f} min ({rerun_rate and codes_rate / rerun_rate:.1f}x slower "
          f"than the record)")
    print(f"data written: {sum(sizes.values()) / 1e6:.1f} MB for {ex.n:,} examples ({ex.n / n_feat:.1f} per feature), "
          f"{per_example:.0f} B per example, {per_feature:.0f} B per feature otherwise, corpus {corpus / 1e6:.2f} MB "
          f"for {n_tokens_run:,} corpus tokens, meta {meta / 1e6:.2f} MB")
    print(f"estimate, offline preset (7 x 2048, 40 examples each, 1.01M tokens): {offline / 1e6:.0f} MB "
          f"(target <= 60 MB: {offline / 60e6:.2f}x)")
    print(f"estimate, GPT-2 scale (12 x 24576, 40 examples each, 17.5M tokens): {gpt2 / 1e9:.2f} GB "
          f"(one site {gpt2 / 12 / 1e6:.0f} MB, loaded on demand)")


if __name__ == "__main__":
    main()

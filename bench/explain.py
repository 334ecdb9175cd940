"""Time the explanations step at the offline preset's scale without its statistics.

The real corpus is tokenized as the pass does (MiniLM, every document: about 1M tokens) and every
token gets ``k`` firing features out of ``F``: a quarter tied to the token id (features that
read a token), the rest drawn from a Zipf law (a few dense features, many rare ones). One site
is timed end to end (wall clock and CPU time: on a busy machine the CPU time is the figure) (:func:`helpers.explain.artefact.explain_site`: rules chosen on the
training documents, scored on the held-out ones) and the key spaces once; the preset's
``S`` sites cost S times a site.

    nice -n 19 python bench/explain.py [--sites 7] [--features 2048] [--k 32] [--preset offline]
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main() -> None:
    from helpers.experiment import PRESETS
    from helpers.explain.artefact import explain_site
    from helpers.explain.stream import heldout_mask, key_spaces, token_stream, windows
    from helpers.subject.corpus import load_corpus
    from helpers.subject.models import load_tokenizer

    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="offline")
    ap.add_argument("--sites", type=int, default=7)
    ap.add_argument("--features", type=int, default=2048)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--timed-sites", type=int, default=1)
    args = ap.parse_args()
    exp = PRESETS[args.preset]
    t0, c0 = time.perf_counter(), time.process_time()
    tok = load_tokenizer(exp)
    stream = token_stream(load_corpus(exp.corpus, exp.max_documents), tok, exp.token_budget)
    t_tok = time.perf_counter() - t0
    t0 = time.perf_counter()
    spaces = key_spaces(stream, len(tok))
    held = heldout_mask(stream.doc)
    win = windows(stream.subset(held))
    t_keys = time.perf_counter() - t0
    c_setup = time.process_time() - c0
    rng = np.random.default_rng(0)
    F, k, n = args.features, args.k, stream.n
    per_site = []
    for s in range(args.timed_sites):
        tied = (stream.ids * 7919 + s) % F
        zipf = np.minimum(rng.zipf(1.3, (n, k - 1)) - 1, F - 1)
        feats = np.concatenate([tied[:, None], (zipf * 2654435761 + s) % F], 1)
        token = np.repeat(np.arange(n), k)
        feature = feats.ravel()
        keep = np.r_[True, (token[1:] != token[:-1]) | (feature[1:] != feature[:-1])]
        t0, c0 = time.perf_counter(), time.process_time()
        rules, why, scores = explain_site(token[keep], feature[keep], F, spaces, held, win)
        per_site.append((time.perf_counter() - t0, time.process_time() - c0))
    site, cpu = np.mean(per_site, 0)
    print(f"{n:,} tokens ({held.sum():,} held out, {win.max() + 1:,} windows), {F} features, k={k}")
    print(f"tokenize {t_tok:.1f} s, key spaces {t_keys:.1f} s, one site {site:.1f} s "
          f"-> {args.sites} sites about {t_tok + t_keys + args.sites * site:.0f} s")
    print(f"CPU time (the figure on a shared machine): set-up {c_setup:.1f} s, one site {cpu:.1f} s -> "
          f"{args.sites} sites about {c_setup + args.sites * cpu:.0f} s")
    import resource

    print(f"peak memory {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.1f} GiB")
    print(f"median detection AUROC {np.nanmedian(scores['auroc']):.2f}, fuzzing {np.nanmedian(scores['fuzzing']):.2f}")


if __name__ == "__main__":
    main()

"""The explorer's data model: what every feature's page shows, computed for all features at once.

Every function here works on whole ``[S, F, ...]`` arrays (numpy or torch): no Python loop
over features. :mod:`.site` writes the result as the explorer's data files.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigError, MissingArtefactError
from ..experiment import Experiment

#: partner measures taken straight from the pass's tables when ``partners.npz`` is missing
TABLE_MEASURES = ("pearson", "jaccard")
#: characters for 64 colour levels, one per token
LEVELS = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
N_LEVELS = len(LEVELS) - 1


def summary(exp: Experiment, out: str | Path | None = None) -> dict[str, np.ndarray]:
    """``[S, F]`` firing count, frequency, max, mean, and the ``[S, F, B]`` histograms."""
    from ..stats import load_artefact

    dead = load_artefact(exp, "dead_features", out)
    hist = load_artefact(exp, "histograms", out)  # refuses an older pass with the command to rerun
    mx = load_artefact(exp, "max_activations", out)["max"]
    graph = load_artefact(exp, "coactivation_graph", out)
    n = int(dead["tokens"][-1])
    sums = _mean(exp, out)
    return {"n_tokens": np.int64(n), "fired": dead["fired"], "frequency": dead["fired"] / n, "max": mx,
            "mean": sums, "hist": hist["counts"], "edges": hist["edges"],
            "graph": {k: graph[k] for k in ("edge_site", "edge_src", "edge_dst", "edge_count", "edge_weight")}}


def _arrays(exp: Experiment, name: str, keys, out=None):
    """Some arrays of an artefact, one at a time (the pair tables are big at GPT-2 scale)."""
    from ..stats import load_artefact

    for key in keys:
        yield load_artefact(exp, name, out, keys=(key,))[key]


def _mean(exp, out):
    return next(_arrays(exp, "correlation", ["mean"], out))


def top_rows(mat: np.ndarray, k: int) -> np.ndarray:
    """``[R, k]`` column indices of the ``k`` largest finite values of each row, best first; -1 where
    a row has fewer."""
    vals = np.where(np.isfinite(mat), mat, -np.inf).astype(np.float64)
    k = min(k, mat.shape[1])
    part = np.argpartition(-vals, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(vals, part, 1), axis=1, kind="stable")
    idx = np.take_along_axis(part, order, 1)
    return np.where(np.isfinite(np.take_along_axis(vals, idx, 1)), idx, -1)


def table_partners(exp: Experiment, k: int = 5, out: str | Path | None = None) -> dict[str, np.ndarray]:
    """Partner tables in the format of ``partners.npz`` (see ``helpers.evolution.load_partners``),
    from the pass's Pearson and Jaccard tables: for feature f of site p its top-k partners at
    site p+1 (``down_*``), and for feature f of site p+1 its top-k at site p (``up_*``)."""
    P, F, M = len(exp.site_pairs), exp.sae_width, len(TABLE_MEASURES)
    shape = (P, M, F, k)
    res = {f"{d}_{n}": np.full(shape, -1, np.int32) if n == "index" else np.zeros(shape + ((M,) if n == "values" else ()),
                                                                                   np.float32 if n == "values" else np.int64)
           for d in ("down", "up") for n in ("index", "values", "count")}
    for i in range(P):
        r, = _arrays(exp, "correlation", [f"r_{i}"], out)
        jac, = _arrays(exp, "cooccurrence", [f"jaccard_{i}"], out)
        cnt, = _arrays(exp, "pair_coactivation", [f"count_{i}"], out)
        tables = (r, jac)
        for direction, view in (("down", lambda a: a), ("up", lambda a: a.T)):
            for m, mat in enumerate(tables):
                idx = top_rows(view(mat), k)
                safe = np.clip(idx, 0, None)
                rows = np.arange(F)[:, None]
                res[f"{direction}_index"][i, m] = idx
                for m2, mat2 in enumerate(tables):
                    res[f"{direction}_values"][i, m, :, :, m2] = np.where(idx >= 0, view(mat2)[rows, safe], np.nan)
                res[f"{direction}_count"][i, m] = np.where(idx >= 0, view(cnt)[rows, safe], 0)
    res["sites"] = np.array(exp.sites)
    res["measures"] = np.array(TABLE_MEASURES)
    return res


def partner_tables(exp: Experiment, k: int = 5, out: str | Path | None = None) -> dict[str, np.ndarray]:
    """``partners.npz`` when the pass's follow-up wrote it, else :func:`table_partners`."""
    from ..evolution.partners import load_partners

    try:
        res = dict(load_partners(exp, out))
    except MissingArtefactError:
        return table_partners(exp, k, out)
    # keep the pages small (offline data <= 60 MB): k per measure with 2 measures, else
    # about 12 listed pairs in all (2 per measure with the 6 measures of partners.npz)
    keep = k if len(res["measures"]) <= 2 else max(1, min(k, 12 // len(res["measures"])))
    for d in ("down", "up"):
        for n in ("index", "values", "count"):
            res[f"{d}_{n}"] = np.asarray(res[f"{d}_{n}"])[:, :, :, :keep]
    return res


def measured_columns(edges, s: int) -> dict[str, dict[str, np.ndarray]]:
    """The measured (causal) edges touching site ``s``, as columns sorted by feature, then partner.

    ``up``: edges into ``s`` (``feature`` = the downstream ``b`` at ``s``, ``partner`` = the ablated
    ``a`` at ``s - 1``); ``down``: edges out of ``s`` (``feature`` = the ablated ``a``, ``partner``
    = ``b`` at ``s + 1``). ``drop``, ``chosen_by`` (bitmask over ``edges.methods``) and
    ``silent`` (``a`` never fired in ``b``'s windows: drop 0) per edge. ``edges``: a
    :class:`helpers.evolution.measured_edges.MeasuredEdges`.
    """
    out = {}
    for direction, sel, mine, other in (("up", edges.pair == s - 1, edges.b, edges.a),
                                        ("down", edges.pair == s, edges.a, edges.b)):
        f, g = mine[sel], other[sel]
        order = np.lexsort((g, f))
        out[direction] = {"feature": f[order], "partner": g[order], "drop": edges.drop[sel][order],
                          "chosen_by": edges.chosen_by[sel][order], "silent": ~edges.upstream_fired[sel][order]}
    return out


def graph_neighbours(graph: dict, shape: tuple[int, int], k: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """``(index, count)`` ``[S, F, k]``: each feature's strongest co-activation graph neighbours."""
    S, F = shape
    site = np.concatenate([graph["edge_site"], graph["edge_site"]]).astype(np.int64)
    src = np.concatenate([graph["edge_src"], graph["edge_dst"]]).astype(np.int64)
    dst = np.concatenate([graph["edge_dst"], graph["edge_src"]]).astype(np.int64)
    cnt = np.concatenate([graph["edge_count"], graph["edge_count"]]).astype(np.int64)
    order = np.lexsort((dst, -cnt, src, site))
    site, src, dst, cnt = site[order], src[order], dst[order], cnt[order]
    group = site * F + src
    start = np.searchsorted(group, group, side="left")
    rank = np.arange(group.size) - start
    keep = rank < k
    idx = np.full((S, F, k), -1, np.int32)
    count = np.zeros((S, F, k), np.int64)
    idx[site[keep], src[keep], rank[keep]] = dst[keep]
    count[site[keep], src[keep], rank[keep]] = cnt[keep]
    return idx, count


#: same-site neighbours by decoder cosine listed on every feature page
DECODER_NEIGHBOURS = 10


@torch.no_grad()
def stack_sites(rows: list[np.ndarray], fill) -> np.ndarray:
    """Per-site arrays ``[f_s, ...]`` stacked as ``[S, F, ...]``; a narrower SAE's rows (a width
    sweep's sites) padded with ``fill`` up to the widest."""
    width = max(r.shape[0] for r in rows)
    return np.stack([np.concatenate([r, np.full((width - r.shape[0], *r.shape[1:]), fill, r.dtype)])
                     if r.shape[0] < width else r for r in rows])


def decoder_neighbours(saes: dict, sites, k: int = DECODER_NEIGHBOURS) -> tuple[np.ndarray, np.ndarray]:
    """``(index, cosine)`` ``[S, F, k]``: the most similar decoder directions at the same site."""
    from ..evolution.decoder import top_cosine_matches

    idx, cos = [], []
    for site in sites:
        i, c = top_cosine_matches(saes[site], saes[site], k + 1)
        F = i.shape[0]
        not_self = i != torch.arange(F).unsqueeze(1)
        # drop each feature's own direction (or, for duplicates, the last match)
        order = torch.argsort((~not_self).to(torch.int8), dim=1, stable=True)[:, :k]
        idx.append(i.gather(1, order).numpy().astype(np.int32))
        cos.append(c.gather(1, order).numpy())
    return stack_sites(idx, -1), stack_sites(cos, np.nan)


def _usable_tokens(tokenizer, vocab: int) -> torch.Tensor:
    """Real tokens: not special, not ``[unusedN]`` placeholders."""
    ok = torch.ones(vocab, dtype=torch.bool)
    special = [i for i in (tokenizer.all_special_ids or []) if i < vocab]
    ok[special] = False
    for i, t in enumerate(tokenizer.convert_ids_to_tokens(list(range(vocab)))):
        if t is None or (t.startswith("[unused") and t.endswith("]")):
            ok[i] = False
    return ok


@torch.no_grad()
def effect_tokens(subject, saes: dict, sites, k: int = 8, chunk: int = 2048,
                  present: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """What each decoder direction does to tokens, ``[S, F, k]`` each.

    Causal LM: ``boosted``/``suppressed`` token ids (and ``*_value``) of the direction through the
    unembedding (direct logit effect, final LayerNorm ignored). Encoder: ``boosted`` = the input
    tokens whose embeddings have the highest cosine with the direction (``suppressed`` empty).
    Both among the tokens of the corpus when ``present`` (token ids) is given, else over the whole
    vocabulary: a token the corpus never holds cannot be looked up in the examples, and the product
    is much cheaper (on the offline preset 22,827 of MiniLM's 30,522 tokens occur; Gemma 3's
    vocabulary has 262,144 tokens, of which the Gemma preset's 300k tokens hold about a tenth, and
    the product over all of them took 44 s of the width sweep explorer's 64 s).
    """
    hf = subject.hf_model
    causal = subject.spec.causal
    W = (hf.get_output_embeddings() if causal else hf.get_input_embeddings()).weight.detach().float().cpu()
    usable = _usable_tokens(subject.tokenizer, W.shape[0])
    if present is not None:
        seen = torch.zeros(W.shape[0], dtype=torch.bool)
        ids = torch.as_tensor(np.asarray(present, dtype=np.int64))
        seen[ids[(ids >= 0) & (ids < W.shape[0])]] = True
        usable &= seen
    keep = torch.nonzero(usable)[:, 0]
    W = W[keep]
    if not causal:
        W = W / W.norm(dim=1, keepdim=True).clamp_min(1e-12)
    out = {n: [] for n in ("boosted", "boosted_value", "suppressed", "suppressed_value")}
    for site in sites:
        d = saes[site].W_dec.detach().float().cpu()
        if not causal:
            d = d / d.norm(dim=1, keepdim=True).clamp_min(1e-12)
        parts = {n: [] for n in out}
        for lo in range(0, d.shape[0], chunk):
            logits = d[lo : lo + chunk] @ W.T
            v, i = torch.topk(logits, k, dim=1)
            parts["boosted"].append(keep[i])
            parts["boosted_value"].append(v)
            if causal:
                v, i = torch.topk(logits, k, dim=1, largest=False)
                parts["suppressed"].append(keep[i])
                parts["suppressed_value"].append(v)
        for n in out:
            out[n].append(torch.cat(parts[n]).numpy() if parts[n] else np.zeros((d.shape[0], 0)))
    return {n: stack_sites(v, 0) for n, v in out.items()}


def token_strings(tokenizer, family: str) -> list[str]:
    """How each token id reads in running text (with its leading space, if any; a byte-fallback
    token as ``<0xE2>``: :func:`helpers.subject.token_text.running_text`)."""
    from ..subject.token_text import running_text

    return running_text(tokenizer, family, range(len(tokenizer)))


def levels(acts: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Activations as colour levels 0..63 of ``scale`` (broadcast; 0 where scale is 0)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        q = np.where(scale > 0, np.rint(np.clip(acts / scale, 0, 1) * N_LEVELS), 0)
    return q.astype(np.uint8)


def level_string(q: np.ndarray) -> str:
    """One character per level (see :data:`LEVELS`)."""
    lut = np.frombuffer(LEVELS, dtype=np.uint8)
    return lut[np.asarray(q, dtype=np.uint8).ravel()].tobytes().decode("ascii")


def decode_levels(text: str) -> np.ndarray:
    lut = np.full(256, 255, np.uint8)
    lut[np.frombuffer(LEVELS, np.uint8)] = np.arange(len(LEVELS), dtype=np.uint8)
    return lut[np.frombuffer(text.encode("ascii"), np.uint8)]


def check_feature(exp: Experiment, site: str, feature: int) -> int:
    """The index of ``site``; a clear error for an unknown site or feature."""
    if site not in exp.sites:
        raise ConfigError(f"no site {site!r} in preset {exp.name!r}: choose among {list(exp.sites)}")
    if not 0 <= int(feature) < exp.sae_width:
        raise ConfigError(f"no feature {feature} at {site!r}: features are 0..{exp.sae_width - 1}")
    return exp.sites.index(site)


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())

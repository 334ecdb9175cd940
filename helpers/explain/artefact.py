"""``explanations.npz``: every feature's explanation and its detection and fuzzing scores.

:func:`build_explanations` reads where every feature fires from the codes the statistics pass
recorded (:mod:`helpers.stats.codes`; without them it runs the model over the corpus once),
splits the documents (:func:`~.stream.heldout_mask`), chooses each feature's rule on the
training documents (:mod:`.rules`) and scores it on the held-out ones (:mod:`.scores`), all
features of a site at once (sparse matrix products, no loop over features). It writes
``explanations.npz`` and ``explanations.json`` (the experiment, the options, the checksum)
atomically beside the statistics, under the folder's lock. It reads the first
``max_tokens`` tokens of the stream (:data:`MAX_TOKENS`, 2M: all of the offline and Gemma
presets; the beginning of a larger corpus), which bounds its memory.

Arrays (``S`` sites, ``F`` features, ``C = len(KINDS)`` kinds, ``M`` keys):

- ``text`` ``[S, F]`` the explanation in words ("" where the feature never fired in training);
  ``kind`` ``[S, F]`` its kind (index into ``kinds``, -1: none); ``rule_tokens``
  ``[S, F, M, 2]`` its keys as (previous, token) ids (-1 unused; title rules: ``text`` only);
- ``detection_auroc``, ``balanced_accuracy``, ``fuzzing`` ``[S, F]`` (NaN: undefined, see
  :mod:`.scores`), ``activating`` ``[S, F]`` held-out windows where it fires, ``fired`` ``[S, F]``
  held-out tokens where it fires, ``windows`` (held-out windows);
- ``candidate_text`` ``[S, F, C]``, ``candidate_f1``, ``candidate_precision``,
  ``candidate_recall`` ``[S, F, C]``: every kind's best rule and its training scores (why the
  explanation won).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, MissingArtefactError
from ..io import atomic_save_npz, atomic_write_json, load_npz, sha256_file, stats_dir
from ..locks import stats_out, writes
from .rules import MAX_KEYS, choose_rules, firing_matrix
from .scores import score_rules
from .stream import HELDOUT_EVERY, KINDS, WINDOW, heldout_mask, key_spaces, rule_text, token_stream, windows

log = logging.getLogger(__name__)

EXPLANATIONS_FILE = "explanations.npz"
EXPLANATIONS_META = "explanations.json"
SCORES = ("detection_auroc", "balanced_accuracy", "fuzzing")
#: explanations read at most this many tokens of the stream (its beginning): memory grows with the
#: firings (about 40 bytes each per site; the offline preset's 1.01M tokens x k=32 fit)
MAX_TOKENS = 2_000_000


def explain_command(exp) -> str:
    return f"python -m helpers explain --experiment {exp.name}"


def _subset(spaces: dict, mask: np.ndarray) -> dict:
    from .stream import KeySpace

    return {k: KeySpace(v.kind, v.matrix[mask], v.tokens, v.words) for k, v in spaces.items()}


def _token_strings(tokenizer, family: str, ids) -> dict[int, str]:
    """How the tokens ``ids`` read in running text (as :func:`helpers.explore.pages.token_strings`)."""
    from ..subject.token_text import running_text

    ids = sorted({int(i) for i in ids if i >= 0})
    return dict(zip(ids, running_text(tokenizer, family, ids)))


def active_pairs(indices, values, offset: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(token, feature)`` of every active slot (value > 0) of a batch's codes ``indices``/``values``
    ``[n, k]``, tokens numbered from ``offset``."""
    fires = (values > 0).cpu().numpy()
    row = np.broadcast_to(np.arange(fires.shape[0])[:, None], fires.shape)
    return row[fires] + offset, indices.cpu().numpy()[fires]


def firings_from_model(exp, subject, saes, documents, progress: bool = False, max_tokens: int | None = None
                       ) -> dict[str, tuple]:
    """``{site: (token, feature)}`` of every firing, by running the model over the pass's stream
    (batched as the pass batches; the batches holding its first ``max_tokens`` tokens): when the
    pass recorded no codes."""
    from tqdm.auto import tqdm

    from ..stats.collect import encode_batch
    from ..subject.corpus import iter_token_batches

    out: dict[str, list] = {s: [] for s in exp.sites}
    offset = 0
    stream = iter_token_batches(documents, subject.tokenizer, subject.special_tokens, exp.context_length,
                                exp.batch_size, exp.token_budget)
    for b, batch in enumerate(tqdm(stream, desc="firings (model)", unit="batch", disable=not progress)):
        if max_tokens is not None and offset >= max_tokens:
            break
        acts, doc, _ = encode_batch(subject, saes, exp, batch, b)
        for site in exp.sites:
            a = acts[site]
            out[site].append(active_pairs(a.indices, a.values, offset))
        offset += int(doc.numel())
    return {s: tuple(np.concatenate(p) if p else np.zeros(0, np.int64) for p in zip(*v)) if v
            else (np.zeros(0, np.int64),) * 2 for s, v in out.items()}


def recorded_firings(exp, out, sites=None, subject=None, saes: dict | None = None, progress: bool = False
                     ) -> tuple[dict[str, tuple], str]:
    """``({site: (token, feature)}, where they came from)`` of every firing at ``sites`` (default: all):
    the codes the statistics pass recorded beside its artefacts in ``out``, else the model (``subject``,
    loaded if None) and ``saes`` (loaded if None) re-run over the pass's stream, batched as the pass batches."""
    from ..stats.codes import open_codes
    from ..subject.corpus import stream_documents

    sites = tuple(exp.sites if sites is None else sites)
    codes = open_codes(exp, out, sites)
    if codes is not None:
        return {s: codes.firings(s) for s in sites}, "the statistics pass's recorded codes"
    from ..subject.models import load_subject, resolve_device
    from ..subject.saes import load_saes

    subject = subject or load_subject(exp.replace(device=str(resolve_device(exp.device))))
    saes = saes if saes is not None else load_saes(exp, device=subject.device, sites=sites)
    some = exp if sites == exp.sites else exp.replace(sites=sites)
    return (firings_from_model(some, subject, saes, stream_documents(exp), progress),
            "a model re-run")


def explain_site(token: np.ndarray, feature: np.ndarray, n_features: int, spaces: dict, held: np.ndarray,
                 window: np.ndarray, max_keys: int = MAX_KEYS) -> tuple[Any, dict, dict]:
    """``(rules, why, scores)`` of one site from its firings ``(token, feature)`` over the stream."""
    index = np.cumsum(held) - 1, np.cumsum(~held) - 1  # token -> held-out / training index
    on_held = held[token]
    fire_train = firing_matrix(index[1][token[~on_held]], feature[~on_held], int((~held).sum()), n_features)
    fire_held = firing_matrix(index[0][token[on_held]], feature[on_held], int(held.sum()), n_features)
    rules, why = choose_rules(fire_train, _subset(spaces, ~held), max_keys)
    scores = score_rules(fire_held, _subset(spaces, held), window, rules)
    return rules, why, scores


class TooLittleTextError(ConfigError):
    """The experiment's corpus has too few documents to hold some out for scoring."""


@writes("explanations", stats_out)
def build_explanations(exp, out=None, subject=None, saes: dict | None = None, progress: bool = True,
                       heldout_every: int = HELDOUT_EVERY, window: int = WINDOW, max_keys: int = MAX_KEYS,
                       max_tokens: int = MAX_TOKENS) -> Path:
    """Choose, score and write every feature's explanation (see the module docstring)."""
    from tqdm.auto import tqdm

    from ..stats.artefacts import load_metadata
    from ..stats.codes import open_codes
    from ..subject.corpus import stream_documents
    from ..subject.models import load_subject, load_tokenizer, resolve_device
    from ..subject.saes import load_saes

    if heldout_every < 2 or window < 1 or max_keys < 1 or max_tokens < 1:
        raise ConfigError(f"heldout_every={heldout_every} must be >= 2, window={window}, "
                          f"max_keys={max_keys} and max_tokens={max_tokens} >= 1")
    out = Path(out) if out is not None else stats_dir(exp.stats_name)
    t0 = time.monotonic()
    stats = load_metadata(exp, out)  # refuses another experiment's statistics
    F = int(stats["n_features"])
    docs = stream_documents(exp)
    tokenizer = subject.tokenizer if subject is not None else load_tokenizer(exp)
    stream = token_stream(docs, tokenizer, exp.token_budget)
    if stream.n != int(stats["tokens"]):
        raise ConfigError(f"the corpus gives {stream.n} tokens, the statistics {stats['tokens']}: rebuild "
                          f"the statistics with `python -m helpers collect --experiment {exp.name}`")
    n_all = stream.n
    if stream.n > max_tokens:  # the stream's beginning only (see MAX_TOKENS)
        stream = stream.subset(np.arange(stream.n) < max_tokens)
    held = heldout_mask(stream.doc, heldout_every)
    if not held.any() or held.all():
        raise TooLittleTextError(f"holding out every {heldout_every}th document leaves no training or no "
                          "held-out text: use more documents")
    codes = open_codes(exp, out) if subject is None else None
    firing = None
    if codes is None:
        subject = subject or load_subject(exp.replace(device=str(resolve_device(exp.device))))
        saes = saes or load_saes(exp, device=subject.device)
        firing = firings_from_model(exp, subject, saes, docs, progress, stream.n)
    spaces = key_spaces(stream, len(tokenizer))
    win = windows(stream.subset(held), window)
    S, C = len(exp.sites), len(KINDS)
    res: dict[str, Any] = {n: np.full((S, F), np.nan) for n in SCORES}
    res.update(kind=np.full((S, F), -1, np.int8), rule_tokens=np.full((S, F, max_keys, 2), -1, np.int64),
               activating=np.zeros((S, F), np.int64), fired=np.zeros((S, F), np.int64),
               **{f"candidate_{n}": np.full((S, F, C), np.nan) for n in ("f1", "precision", "recall")})
    texts = np.full((S, F), "", dtype=object)
    cand_texts = np.full((S, F, C), "", dtype=object)
    for s, site in enumerate(tqdm(exp.sites, desc="explanations", unit="site", disable=not progress)):
        token, feature = codes.firings(site) if codes is not None else firing[site]
        if n_all > stream.n:
            keep = token < stream.n
            token, feature = token[keep], np.asarray(feature)[keep]
        rules, why, sc = explain_site(token, np.asarray(feature, np.int64), F, spaces, held, win, max_keys)
        res["detection_auroc"][s], res["balanced_accuracy"][s], res["fuzzing"][s] = (
            sc["auroc"], sc["balanced_accuracy"], sc["fuzzing"])
        res["activating"][s], res["fired"][s], res["kind"][s] = sc["activating"], sc["fired"], rules.kind
        for n in ("f1", "precision", "recall"):
            res[f"candidate_{n}"][s] = why[n]
        used = [spaces[k].tokens[why["keys"][:, i][why["keys"][:, i] >= 0]].ravel()
                for i, k in enumerate(KINDS) if k != "title"]
        strings = _token_strings(tokenizer, exp.model_spec.family, np.concatenate(used))
        for i, kind in enumerate(KINDS):
            keys = why["keys"][:, i]
            for f in np.flatnonzero((keys >= 0).any(1)):  # the texts: one string per rule
                cand_texts[s, f, i] = rule_text(spaces[kind], keys[f], strings)
            mine = rules.kind == i
            if kind != "title":
                k = rules.keys[mine]
                res["rule_tokens"][s][mine] = np.where(k[..., None] >= 0, spaces[kind].tokens[np.maximum(k, 0)], -1)
        ok = rules.kind >= 0
        texts[s, ok] = cand_texts[s, np.flatnonzero(ok), rules.kind[ok]]
    file = out / EXPLANATIONS_FILE
    atomic_save_npz(file, sites=np.array(exp.sites), kinds=np.array(KINDS), text=texts.astype(str),
                    candidate_text=cand_texts.astype(str), windows=np.int64(win.max(initial=-1) + 1), **res)
    seconds = time.monotonic() - t0
    atomic_write_json(out / EXPLANATIONS_META, {
        "experiment": exp.to_dict(),
        "options": {"heldout_every": heldout_every, "window": window, "max_keys": max_keys},
        "heldout": f"documents whose id is {heldout_every - 1} modulo {heldout_every}",
        "tokens": {"training": int((~held).sum()), "heldout": int(held.sum()), "stream": n_all},
        "documents_heldout": int(np.unique(stream.doc[held]).size),
        "firing_from": "the statistics pass's recorded codes" if codes is not None else "a model re-run",
        "seconds": round(seconds, 2), "statistics_sha256": stats.get("sha256", {}),
        "sha256": sha256_file(file), "bytes": file.stat().st_size,
    })
    log.info("explanations for %s: %d sites x %d features in %.1f s -> %s", exp.name, S, F, seconds, file)
    return file


def read_explanations_meta(exp, out=None) -> dict[str, Any]:
    """``explanations.json``, refused when missing or made for another experiment or statistics."""
    from ..stats.artefacts import read_derived_meta

    out = Path(out) if out is not None else stats_dir(exp.stats_name)
    return read_derived_meta(exp, out, EXPLANATIONS_META, "explanations", explain_command(exp))


def load_explanations(exp, out=None) -> dict[str, Any]:
    """The arrays of ``explanations.npz`` (checksum verified), with ``meta``."""
    out = Path(out) if out is not None else stats_dir(exp.stats_name)
    meta = read_explanations_meta(exp, out)
    data = load_npz(out / EXPLANATIONS_FILE, meta["sha256"], explain_command(exp))
    for key in ("sites", "kinds"):
        data[key] = [str(s) for s in data[key]]
    data["meta"] = meta
    return data


def explanations_ready(exp, out=None) -> bool:
    """Whether ``explanations.npz`` exists, belongs to ``exp`` and its statistics, and is intact."""
    from ..stats.artefacts import artefact_ready

    return artefact_ready(load_explanations, exp, out)


def explanations_or_none(exp, out=None) -> dict[str, Any] | None:
    """:func:`load_explanations`, or None where there are none: after ``prepare``, that is where
    it skipped them (:class:`TooLittleTextError`, too few documents to hold some out). A stale or
    corrupted file is still refused."""
    try:
        return load_explanations(exp, out)
    except MissingArtefactError:
        log.info("no explanations for %s (build them with `%s`)", exp.name, explain_command(exp))
        return None


def format_explanations(exp, file: Path, out=None) -> str:
    """One line per site: the median scores and the kinds chosen."""
    data = load_explanations(exp, out)
    lines = [f"explanations: {file} ({file.stat().st_size / 2**20:.1f} MiB, "
             f"{data['meta']['seconds']:.0f} s; held out: {data['meta']['heldout']})"]
    for s, site in enumerate(data["sites"]):
        kinds = ", ".join(f"{(data['kind'][s] == i).sum()} {k}" for i, k in enumerate(data["kinds"]))
        med = [np.nanmedian(data[n][s]) if np.isfinite(data[n][s]).any() else np.nan for n in SCORES]
        lines.append(f"  {site}: median detection AUROC {med[0]:.2f}, balanced accuracy {med[1]:.2f}, "
                     f"fuzzing {med[2]:.2f} ({kinds})")
    return "\n".join(lines)

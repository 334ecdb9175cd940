"""Write the static feature explorer: ``explorer.html`` and its data as script-tag chunks.

Layout of the output folder (``book/_explorer/`` by default; the book copies it next to its
pages through Sphinx's ``html_extra_path``)::

    explorer.html                  the page (routed by hash: #site=hidden.3&feature=117)
    explorer/explorer.js, .css     written by this project, nothing from the network
    explorer/data/meta.js          sites, token strings, document titles, bin edges, measures
    explorer/data/corpus.js        every document's token ids (3 characters each)
    explorer/data/site-<site>.js   every feature of one site (loaded on demand)
    explorer/build.json            what was built from what (reused when unchanged)

The cross-layer panel shows, per partner row, the causal effect where the matching pass measured
it (``matching.npz``, :mod:`helpers.evolution.measured_edges`), in either direction; without
the matching artefact the page says it was not measured and why.

Each data file is a ``<script>`` that calls ``EXPLORER.register(...)``, so the page works from
``file://`` (no ``fetch``).
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..experiment import Experiment
from ..io import REPO_ROOT, atomic_dir, atomic_write_text, require_space, stats_dir
from ..locks import ignore_interrupts, writes
from . import contexts as ctx
from . import pages

log = logging.getLogger(__name__)

ASSETS = Path(__file__).parent / "assets"
DEFAULT_OUT = REPO_ROOT / "book" / "_explorer"
#: a width sweep's explorer: ``widths/explorer.html`` of the built book (``book/_widths`` is copied in)
WIDTHS_OUT = REPO_ROOT / "book" / "_widths" / "widths"


def default_out(exp: Experiment) -> Path:
    """Where :func:`build_explorer` writes by default: the book's explorer, or the width sweep's."""
    return WIDTHS_OUT if exp.width_pairs else DEFAULT_OUT
ID_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
FORMAT = 2  # 2: the examples' integer columns packed (pack_ints)


@dataclass
class ExplorerResult:
    out: Path
    features: int
    seconds_rerun: float = 0.0
    seconds_build: float = 0.0
    tokens_rerun: int = 0
    batches_rerun: int = 0
    bytes: dict[str, int] = field(default_factory=dict)
    reused: bool = False
    from_codes: bool = False  # example contexts read from the pass's recorded codes (no model run)

    @property
    def total_bytes(self) -> int:
        return sum(self.bytes.values())

    def describe(self) -> str:
        if self.reused:
            return f"feature explorer reused ({self.out / 'explorer.html'})"
        return (f"feature explorer: {self.features:,} features in {self.out / 'explorer.html'}, "
                f"{self.total_bytes / 1e6:.1f} MB; example contexts "
                f"{'read from the recorded codes' if self.from_codes else 're-run'} for {self.tokens_rerun:,} "
                f"tokens in {self.seconds_rerun:.1f} s, pages built in {self.seconds_build:.1f} s "
                f"({self.features / max(self.seconds_build, 1e-9) * 60:,.0f} features/min)")


def _base64(a: np.ndarray, width: int) -> str:
    """Non-negative integers as ``width`` characters of :data:`ID_CHARS` each, most significant first."""
    lut = np.frombuffer(ID_CHARS.encode(), np.uint8)
    digits = np.stack([(a >> (6 * (width - 1 - j))) & 63 for j in range(width)], 1)
    return lut[digits.ravel()].tobytes().decode("ascii")


def encode_ids(ids: np.ndarray) -> str:
    """Token ids as 3 characters each (base 64, most significant first)."""
    return _base64(np.asarray(ids, dtype=np.int64).ravel(), 3)


def pack_ints(a) -> dict:
    """Non-negative integers as ``{"width": w, "chars": text}``: ``w`` base-64 characters each
    (:data:`ID_CHARS`, most significant first), the fewest that hold the largest. Vectorised (no
    per-value Python), and about half the bytes of a JSON list; ``explorer.js`` unpacks it into
    an ``Int32Array`` when the site's chunk arrives (:func:`unpack_ints` is the same in Python)."""
    a = np.asarray(a, dtype=np.int64).ravel()
    if a.size and a.min() < 0:
        raise ValueError("pack_ints packs non-negative integers only")
    top = int(a.max()) if a.size else 0
    width = 1
    while top >= 64**width:
        width += 1
    return {"width": width, "chars": _base64(a, width)}


def unpack_ints(packed: dict) -> np.ndarray:
    """The integers of :func:`pack_ints` (what ``explorer.js`` does on load)."""
    lut = np.zeros(256, np.int64)
    lut[np.frombuffer(ID_CHARS.encode(), np.uint8)] = np.arange(64)
    w = packed["width"]
    d = lut[np.frombuffer(packed["chars"].encode("ascii"), np.uint8)].reshape(-1, w)
    return (d << (6 * np.arange(w - 1, -1, -1))).sum(1)


#: the integer columns of a site's examples sent packed (:func:`pack_ints`)
PACKED_EXAMPLE_COLUMNS = ("kind", "doc", "pos", "left", "length")


def unpack_site(payload: dict) -> dict:
    """A site chunk's payload with its packed columns as integer arrays (as the page sees it)."""
    e = payload.get("examples", {})  # (meta and corpus chunks have none)
    for key in PACKED_EXAMPLE_COLUMNS:
        if isinstance(e.get(key), dict):
            e[key] = unpack_ints(e[key])
    return payload


def _stamp(exp: Experiment, out_stats: Path) -> str:
    meta = (out_stats / "metadata.json").read_bytes()
    # written after the pass (partner tables, matching results), when they exist
    for name in ("partners.npz", "matching.npz", "explanations.npz"):
        derived = out_stats / name
        if derived.is_file():
            meta += f"{name}:{derived.stat().st_size}:{derived.stat().st_mtime_ns}".encode()
    code = b"".join(p.read_bytes() for p in sorted(Path(__file__).parent.glob("*.py")))
    code += b"".join(p.read_bytes() for p in sorted(ASSETS.iterdir()))
    return hashlib.sha256(meta + code + exp.to_json().encode()).hexdigest()[:16]


def _js(kind: str, name: str, payload) -> str:
    body = json.dumps(payload, separators=(",", ":"), allow_nan=True)
    return f"EXPLORER.register({json.dumps(kind)},{json.dumps(name)},{body});\n"


def _round(a: np.ndarray, digits: int = 4) -> list:
    """Floats with ``digits`` significant digits (keeps the data small); NaN stays NaN."""
    a = np.asarray(a, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        mag = np.where((a != 0) & np.isfinite(a), np.floor(np.log10(np.abs(a))), 0)
    scale = 10.0 ** (digits - 1 - mag)
    return (np.round(a * scale) / scale).tolist()


def build_data(exp: Experiment, subject=None, saes=None, out_stats: str | Path | None = None,
               k_partners: int = 5, recolour: int = 2, recolour_examples: int = 8, context: int = ctx.CONTEXT,
               heldout_every: int = 5, progress: bool = False, use_codes: bool = True) -> dict:
    """Everything the pages show, for all features (see :mod:`.pages` and :mod:`.contexts`).

    ``recolour``: partners per direction (the strongest by the first measure) whose activations
    are stored on the contexts of the ``recolour_examples`` highest examples, for "recolour by
    partner" (8 of 20 keep the offline preset's data under 60 MB: 58 MB with the causal drops).
    """
    from ..evolution.measured_edges import measured_edges_or_note
    from ..stats import load_artefact
    from ..subject.corpus import stream_documents
    from ..subject.models import load_subject
    from ..subject.saes import load_saes

    summ = pages.summary(exp, out_stats)
    top = load_artefact(exp, "top_examples", out_stats)
    subject = subject or load_subject(exp)
    saes = saes or load_saes(exp, device=subject.device)
    S, F = len(exp.sites), exp.sae_width
    docs = stream_documents(exp)
    t0, c0 = time.perf_counter(), time.process_time()
    partners = pages.partner_tables(exp, k_partners, out_stats)
    measured, measured_note = measured_edges_or_note(exp, out_stats)
    ex = ctx.flatten_examples(top)
    with gc_paused():  # the tokenizer's lists of ids: a million small objects
        layout = ctx.stream_layout(exp, docs, subject.tokenizer, subject.special_tokens)
    ctx.locate(exp, ex, *layout)
    labels = ctx.token_labels(ex, layout[0], (S, F), heldout_every)
    # partners whose activations colour the same contexts: R per direction, by the first measure
    sel = np.full((S, F, 2 * recolour), -1, np.int64)
    offsets = (-1,) * recolour + (1,) * recolour
    for s in range(S):
        if s >= 1:
            sel[s, :, :recolour] = partners["up_index"][s - 1, 0][:, :recolour]
        if s < len(exp.site_pairs):
            sel[s, :, recolour:] = partners["down_index"][s, 0][:, :recolour]
    pf = sel[ex.site, ex.feature]
    recoloured = (ex.kind == 0) & (ex.rank < recolour_examples)
    pf[~recoloured] = -1  # the highest examples only (keeps the data small)
    t_prep, c_prep = time.perf_counter() - t0, time.process_time() - c0
    t1 = time.perf_counter()
    from ..stats.codes import open_codes

    codes = open_codes(exp, out_stats) if use_codes else None
    ex = ctx.example_contexts(exp, subject, saes, ex, pf, offsets, labels, context, heldout_every, docs, progress,
                              codes=codes)
    t_rerun = time.perf_counter() - t1
    t2, c2 = time.perf_counter(), time.process_time()
    precision, recall = ctx.label_scores(ex.heldout)
    dec_idx, dec_cos = pages.decoder_neighbours(saes, exp.sites, pages.DECODER_NEIGHBOURS)
    g_idx, g_cnt = pages.graph_neighbours(summ["graph"], (S, F), k_partners)
    present = np.unique(np.concatenate([np.zeros(0, np.int64), *layout[0].values()]))  # the corpus's tokens
    effect = pages.effect_tokens(subject, saes, exp.sites, present=present)
    explanations, explanations_note = explanations_or_note(exp, out_stats)
    splitting = None
    if exp.width_pairs:  # a width sweep's pass: each feature's parent and children at the other widths
        from ..evolution.splitting_artefact import load_splitting

        splitting = load_splitting(exp, out_stats)["pairs"]
    t_build = t_prep + time.perf_counter() - t2
    cpu_build = c_prep + time.process_time() - c2
    return {"summary": summ, "partners": partners, "examples": ex, "labels": labels, "precision": precision,
            "recall": recall, "decoder": (dec_idx, dec_cos), "graph": (g_idx, g_cnt), "effect": effect,
            "docs": docs, "doc_tokens": layout[0], "subject": subject, "recolour": recolour,
            "recolour_partners": sel, "recolour_examples": recolour_examples, "measured": measured,
            "measured_note": measured_note, "explanations": explanations, "explanations_note": explanations_note,
            "splitting": splitting,
            "seconds_rerun": t_rerun, "seconds_build": t_build, "cpu_build": cpu_build,
            "context": context, "heldout_every": heldout_every}


def site_payload(exp: Experiment, data: dict, s: int) -> dict:
    """One site's features as columns (lists over features), ready for JSON."""
    summ, ex, part = data["summary"], data["examples"], data["partners"]
    F = exp.sae_width
    P = len(exp.site_pairs)
    hist = summ["hist"][s].astype(np.int64)
    nz = hist > 0
    first = np.where(nz.any(1), nz.argmax(1), 0)
    last = np.where(nz.any(1), hist.shape[1] - 1 - nz[:, ::-1].argmax(1), -1)
    # histograms: [first bin, counts up to the last non-empty bin]; ragged, so one list per feature
    hist_rows = [[int(a)] + row[a : b + 1] for a, b, row in zip(first.tolist(), last.tolist(), hist.tolist())]
    mine = np.flatnonzero(ex.site == s)
    starts = np.searchsorted(ex.feature[mine], np.arange(F + 1))
    ok = ex.ok[mine]
    left = (ok[:, : data["context"]]).sum(1)
    length = ok.sum(1)
    scale = summ["max"][s][ex.feature[mine]][:, None]
    colours = pages.level_string(pages.levels(ex.acts[mine], scale)[ok])
    # partner colours: highest examples only, each partner slot over the same contexts
    hi = (ex.kind[mine] == 0) & (ex.rank[mine] < data["recolour_examples"])
    sites_of = np.array([s + o for o in ex.partner_offset])
    pscale = np.zeros(ex.partner_feature[mine].shape, np.float32)
    for r, other in enumerate(sites_of):
        if 0 <= other < len(exp.sites):
            pf = ex.partner_feature[mine, r]
            pscale[:, r] = np.where(pf >= 0, summ["max"][other][np.clip(pf, 0, None)], 0)
    pl = pages.levels(ex.partner_acts[mine], pscale[:, :, None])  # [E, R, W]
    pcol = pages.level_string(pl[hi][np.broadcast_to(ok[hi][:, None, :], pl[hi].shape)])
    recolour_partners = data["recolour_partners"][s]
    out = {
        # (a width sweep's narrower site: its own width; the columns are padded to the widest)
        "site": exp.sites[s], "index": s, "n_features": exp.site_widths[s],
        "fired": summ["fired"][s].tolist(), "max": _round(summ["max"][s]), "mean": _round(summ["mean"][s]),
        "hist": hist_rows,
        "label": data["labels"][s].tolist(),
        "label_precision": _round(data["precision"][s], 3), "label_recall": _round(data["recall"][s], 3),
        "examples": {
            "start": starts.tolist(), "kind": pack_ints(ex.kind[mine]), "doc": pack_ints(ex.doc[mine]),
            "pos": pack_ints(ex.pos[mine]), "value": _round(ex.value[mine]), "left": pack_ints(left),
            "length": pack_ints(length), "levels": colours,
        },
        "recolour": {"partners": recolour_partners.tolist(), "offsets": list(ex.partner_offset), "levels": pcol,
                     "examples": data["recolour_examples"]},
        "decoder": {"index": data["decoder"][0][s].tolist(), "cosine": _round(data["decoder"][1][s], 3)},
        "graph": {"index": data["graph"][0][s].tolist(), "count": data["graph"][1][s].tolist()},
        "effect": {k: (v[s].tolist() if "value" not in k else _round(v[s], 3)) for k, v in data["effect"].items()},
    }
    for direction, pair, ok_dir in (("down", s, s < P), ("up", s - 1, s >= 1)):
        if ok_dir:
            out[direction] = {"index": part[f"{direction}_index"][pair].transpose(1, 0, 2).tolist(),
                              "values": _round(part[f"{direction}_values"][pair].transpose(1, 0, 2, 3), 2),
                              "count": part[f"{direction}_count"][pair].transpose(1, 0, 2).tolist()}
    if data.get("explanations") is not None:
        out["explanation"] = explanation_columns(data["explanations"], s)
    if data.get("splitting") is not None:
        out["widths"] = width_columns(data["splitting"], s)
    if data.get("measured") is not None:
        cols = pages.measured_columns(data["measured"], s)
        out["measured"] = {d: {"feature": c["feature"].tolist(), "partner": c["partner"].tolist(),
                               "drop": _round(c["drop"], 3), "chosen_by": c["chosen_by"].tolist(),
                               "silent": c["silent"].astype(int).tolist()} for d, c in cols.items()}
    return _cut_columns(out, F, exp.site_widths[s]) if exp.site_widths[s] < F else out


#: payload entries that are not columns over the features (lists of other things, or already cut)
_NOT_COLUMNS = ("examples", "measured", "widths")


def _cut_columns(payload: dict, n: int, width: int) -> dict:
    """A width sweep's narrower site: every column over the ``n`` (padded) features cut to its ``width``."""
    def cut(value):
        if isinstance(value, dict):
            return {k: cut(v) for k, v in value.items()}
        return value[:width] if isinstance(value, list) and len(value) == n else value

    out = {k: (v if k in _NOT_COLUMNS else cut(v)) for k, v in payload.items()}
    out["examples"] = dict(payload["examples"], start=payload["examples"]["start"][: width + 1])
    return out


def width_columns(pairs: list, s: int) -> dict:
    """A width sweep's site ``s``: each feature's parent at the narrower width (best necessity) and its
    candidate children at the wider one, whether it splits, its union recall and one-to-one persistence
    (:mod:`helpers.evolution.splitting`)."""
    out: dict = {}
    if s >= 1:
        r = pairs[s - 1]
        out.update(parent=r.parent.tolist(), parent_necessity=_round(r.parent_necessity, 3),
                   new=r.is_new.astype(int).tolist())
    if s < len(pairs):
        r = pairs[s]
        out["children"] = {"ptr": r.children.ptr.tolist(), "child": r.children.child.tolist(),
                           "necessity": _round(r.children.necessity, 3)}
        out.update(splits=r.splits.astype(int).tolist(), recall=_round(r.recall, 3), persists=r.persists.tolist())
    return out


def meta_payload(exp: Experiment, data: dict) -> dict:
    from ..evolution.decoder import neuronpedia_url

    subject = data["subject"]
    # each site's Neuronpedia page base (its features are <base>/<index>), from the registry's ids
    np_pages = {site: url.rsplit("/", 1)[0] for site in exp.sites if (url := neuronpedia_url(exp, site, 0))}
    return {
        "format": FORMAT, "preset": exp.name, "description": exp.description, "sites": list(exp.sites),
        "n_features": exp.sae_width, "n_tokens": int(data["summary"]["n_tokens"]),
        "edges": _round(data["summary"]["edges"], 4), "measures": [str(m) for m in data["partners"]["measures"]],
        "causal": bool(subject.spec.causal), "context": data["context"],
        "tokens": pages.token_strings(subject.tokenizer, subject.spec.family),
        "titles": {str(d.doc_id): d.title for d in data["docs"]},
        "neuronpedia": np_pages or None,
        "heldout_tokens": int(data["examples"].heldout.get("tokens", 0)),
        "heldout_every": data["heldout_every"],
        "ablation": _ablation_meta(data),
        "explanations": _explanations_meta(data),
        "width_sweep": bool(exp.width_pairs), "site_widths": list(exp.site_widths),
    }


def explanations_or_note(exp: Experiment, out_stats) -> tuple[dict | None, str]:
    """``explanations.npz`` (:mod:`helpers.explain.artefact`) or why the pages go without it."""
    from ..errors import SaeEvolutionError
    from ..explain.artefact import explain_command, load_explanations

    try:
        return load_explanations(exp, out_stats), ""
    except SaeEvolutionError as err:
        log.info("explorer without explanations: %s", err)
        return None, f"explanations not built: run `{explain_command(exp)}`"


def explanation_columns(expl: dict, s: int) -> dict:
    """Site ``s``'s explanations as columns over features: text, kind, the three scores, and the
    best rule of every kind with its training F1 (why the explanation won)."""
    return {"text": expl["text"][s].tolist(), "kind": expl["kind"][s].tolist(),
            "detection": _round(expl["detection_auroc"][s], 3), "balanced": _round(expl["balanced_accuracy"][s], 3),
            "fuzzing": _round(expl["fuzzing"][s], 3), "activating": expl["activating"][s].tolist(),
            "candidates": expl["candidate_text"][s].tolist(), "candidate_f1": _round(expl["candidate_f1"][s], 3)}


def _explanations_meta(data: dict) -> dict:
    expl = data.get("explanations")
    if expl is None:
        return {"offered": False, "note": data.get("explanations_note") or "explanations not built"}
    meta = expl["meta"]
    return {"offered": True, "kinds": list(expl["kinds"]), "heldout": meta["heldout"],
            "window": meta["options"]["window"], "windows": int(expl["windows"]),
            "heldout_tokens": meta["tokens"]["heldout"]}


def _ablation_meta(data: dict) -> dict:
    """What the pages say about the causal effect: offered or not, why, by which methods."""
    measured = data.get("measured")
    if measured is None:
        return {"offered": False, "note": data.get("measured_note") or "causal effect not measured",
                "methods": [], "edges": 0}
    return {"offered": True, "note": data.get("measured_note", ""), "methods": list(measured.methods),
            "edges": len(measured)}


#: what the forked writers of :func:`write_site` read (set just before the fork, cleared after)
_FORKED: tuple | None = None


@contextlib.contextmanager
def gc_paused():
    """Pause the cyclic garbage collector: building a site's payload makes millions of small
    lists and numbers (none of them cycles), and the collector's repeated full scans of them
    took more than half the time of writing the site files (2.6 s against 1.2 s for the 7
    offline sites)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _write_site_file(s: int) -> None:
    exp, data, d = _FORKED
    site = exp.sites[s]
    with gc_paused():
        text = _js("site", site, site_payload(exp, data, s))
    (d / f"site-{site}.js").write_text(text)


def _writers(n_sites: int, workers: int | None) -> int:
    """How many processes write the site files: one per CPU core (at most one per site); one where
    ``fork`` is not available (the children inherit the data instead of receiving a copy)."""
    import multiprocessing

    if "fork" not in multiprocessing.get_all_start_methods():
        return 1
    return max(1, min(n_sites, workers if workers is not None else (os.cpu_count() or 1)))


def write_site(exp: Experiment, data: dict, out: Path, workers: int | None = None) -> dict[str, int]:
    """Write ``explorer.html``, its assets and data files into ``out`` (atomically, as a folder).

    The site files (numbers to JSON: the bulk of the work) are written by ``workers`` forked
    processes (default: one per CPU core), which share ``data`` with this one.
    """
    global _FORKED
    with atomic_dir(out) as tmp:
        (tmp / "explorer" / "data").mkdir(parents=True)
        shutil.copy(ASSETS / "explorer.html", tmp / "explorer.html")
        for name in ("explorer.js", "explorer.css"):
            shutil.copy(ASSETS / name, tmp / "explorer" / name)
        d = tmp / "explorer" / "data"
        n = _writers(len(exp.sites), workers)

        def shared_files() -> None:
            with gc_paused():
                meta = _js("meta", exp.name, meta_payload(exp, data))
                corpus = _js("corpus", exp.name, {str(k): encode_ids(v) for k, v in data["doc_tokens"].items()})
            (d / "meta.js").write_text(meta)
            (d / "corpus.js").write_text(corpus)

        _FORKED = (exp, data, d)
        try:
            if n == 1:
                shared_files()
                for s in range(len(exp.sites)):
                    _write_site_file(s)
            else:
                import multiprocessing
                from concurrent.futures import ProcessPoolExecutor

                with ProcessPoolExecutor(n, mp_context=multiprocessing.get_context("fork"),
                                         initializer=ignore_interrupts) as pool:
                    jobs = [pool.submit(_write_site_file, s) for s in range(len(exp.sites))]
                    shared_files()
                    for job in jobs:
                        job.result()  # a writer's error is raised here, and the folder is not swapped in
        finally:
            _FORKED = None
        sizes = {str(p.relative_to(tmp)): p.stat().st_size for p in tmp.rglob("*") if p.is_file()}
    return sizes


@writes("explorer", lambda a: a["out"] or default_out(a["exp"]), lambda a: a["out_stats"] or stats_dir(a["exp"].stats_name))
def build_explorer(exp: Experiment, out: str | Path | None = None, subject=None, saes=None,
                   out_stats: str | Path | None = None, force: bool = False, progress: bool = False,
                   **options) -> ExplorerResult:
    """Build the explorer for ``exp`` into ``out`` (default ``book/_explorer``); reuse it when the
    statistics and this code are unchanged."""
    out = Path(out) if out is not None else default_out(exp)
    stats = Path(out_stats) if out_stats is not None else stats_dir(exp.stats_name)
    pages.summary(exp, stats)  # clear errors first: no statistics, another experiment, no histograms
    stamp = _stamp(exp, stats)
    build = out / "explorer" / "build.json"
    if not force and build.is_file() and json.loads(build.read_text()).get("stamp") == stamp:
        return ExplorerResult(out, sum(exp.site_widths), reused=True)
    # measured: about 1.2 kB per feature and 70 B per example (RESULTS.md); the corpus's tokens
    per_feature = 1200 + 2 * exp.top_k_examples * 70
    require_space(out, sum(exp.site_widths) * per_feature + 4 * (exp.token_budget or 10**7),
                  "explorer", "free some space, or write it elsewhere (--out)")
    data = build_data(exp, subject, saes, stats, progress=progress, **options)
    t0 = time.perf_counter()
    sizes = write_site(exp, data, out)
    seconds_build = data["seconds_build"] + time.perf_counter() - t0
    ex = data["examples"]
    res = ExplorerResult(out, sum(exp.site_widths), data["seconds_rerun"], seconds_build,
                         ex.tokens_run, ex.batches_run, sizes, from_codes=ex.from_codes)
    atomic_write_text(build, json.dumps({"stamp": stamp, "preset": exp.name, "features": res.features,
                                         "seconds_rerun": res.seconds_rerun, "seconds_build": seconds_build,
                                         "tokens_rerun": res.tokens_rerun, "bytes": res.total_bytes}, indent=2))
    return res

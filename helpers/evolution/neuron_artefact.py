"""``neurons.npz``: every SAE feature against every MLP neuron of its block and the block before.

:func:`build_neurons` reads the experiment's token stream once (the first ``neuron_tokens``
tokens, batched as the statistics pass batches them), captures each site with the neurons of
its block and of the block before (:mod:`helpers.subject.neurons`), encodes the site with its
SAE and streams the exact Pearson r of every (feature, neuron) pair
(:class:`~helpers.stats.neuron_correlation.NeuronCorrelation`). The memory bill is logged
first and refused when it does not fit. It writes, atomically, per site and per block
("same": the site's own block, "before": the block before it):

- ``feature_best_neuron``, ``feature_best_r`` ``[S, 2, F]``: the neuron of largest ``|r|`` and
  its (signed) r; -1 and NaN where the feature never varied or the block does not exist;
- ``neuron_best_feature``, ``neuron_best_r`` ``[S, 2, M]``: the same, per neuron;
- ``layers`` ``[S, 2]`` (the blocks, -1: none), ``feature_fired`` ``[S, F]``, ``n_tokens``;

with ``neurons.json`` (the experiment, the tokens, the seconds, the bill, the checksums).
:func:`load_neurons` refuses another experiment's file, or one made from other statistics.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..errors import ArtefactMismatchError, ConfigError
from ..io import MORE_SPACE, atomic_save_npz, atomic_write_json, load_npz, require_space, sha256_file, stats_dir
from ..locks import stats_out, writes

log = logging.getLogger(__name__)

NEURONS_FILE = "neurons.npz"
NEURONS_META = "neurons.json"
#: experiment fields that change what the pass reads (on top of the statistics' fields)
NEURON_FIELDS = ("neuron_tokens",)
#: the two blocks each site is compared with
SLOTS = ("same", "before")


def neurons_command(exp) -> str:
    return f"python -m helpers neurons --experiment {exp.name}"


def neuron_budget(exp) -> int | None:
    """Tokens the pass reads: ``neuron_tokens``, at most ``token_budget`` (None: the corpus)."""
    given = [t for t in (exp.neuron_tokens, exp.token_budget) if t is not None]
    return min(given) if given else None


def neuron_plan(exp) -> dict[str, tuple[int | None, int | None]]:
    """``{site: (same, before)}``: the blocks whose neurons each site is compared with."""
    from ..subject.neurons import neuron_layers

    return {site: neuron_layers(exp.model_spec, site) for site in exp.sites}


def neuron_bill(exp, n_features: int, n_neurons: int, n_model_params: int) -> dict[str, int]:
    """Bytes the pass needs on its device, by item."""
    from ..stats.neuron_correlation import NeuronCorrelation

    plan = neuron_plan(exp)
    widths = [n_neurons * sum(layer is not None for layer in p) for p in plan.values()]
    layers = {layer for p in plan.values() for layer in p if layer is not None}
    tokens = exp.batch_size * exp.context_length
    d, f, sites = exp.model_spec.d_model, n_features, len(plan)
    widest = max(widths, default=0)
    return {
        "model": n_model_params * (2 if exp.dtype in ("bfloat16", "float16") else 4),
        "saes": sites * (2 * d * f + f + d) * 4,
        "correlation moments (float64)": sum(NeuronCorrelation.nbytes(f, w) for w in widths if w),
        "batch (residuals, neurons, one site's SAE codes)": tokens * (sites * d + len(layers) * n_neurons + f) * 4,
        "update scratch (float64 neurons and one slot's products)": tokens * widest * 8 * 2,
        "r of one site (float64, on the host)": f * widest * 8 * 3,
    }


def _gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB"


def check_bill(exp, bill: dict[str, int], device: torch.device, available: int | None = None) -> None:
    """Log the bill; refuse it (one line, with a way out) when it exceeds 90% of what is free."""
    from ..stats.memory import available_memory

    avail = available_memory(device) if available is None else available
    total = sum(bill.values())
    lines = ", ".join(f"{k} {_gib(v)}" for k, v in bill.items())
    log.info("neuron pass memory bill on %s: %s (%s); available %s", device, _gib(total), lines, _gib(avail))
    if total > 0.9 * avail:
        raise ConfigError(
            f"the neuron pass needs {_gib(total)} on {device} ({lines}) but only {_gib(avail)} are free: "
            "lower batch_size (--set batch_size=8), use fewer sites or narrower SAEs, or a device with more memory"
        )


def summarise(r: np.ndarray) -> dict[str, np.ndarray]:
    """Best partner of every row and of every column of ``r`` ``[F, M]`` by ``|r|``: indices
    (-1 where the row or column is all NaN) and their signed r (NaN there)."""
    a = np.nan_to_num(np.abs(r), nan=-1.0)
    out = {}
    for name, axis in (("feature", 1), ("neuron", 0)):
        best = a.argmax(axis=axis)
        valid = a.max(axis=axis) >= 0
        value = np.take_along_axis(r, np.expand_dims(best, axis), axis).squeeze(axis)
        out[f"{name}_best"] = np.where(valid, best, -1).astype(np.int32)
        out[f"{name}_r"] = np.where(valid, value, np.nan).astype(np.float32)
    return out


def _n_features(sae) -> int:
    return int(sae.W_enc.shape[1])


@torch.no_grad()
def run_neuron_pass(exp, subject, saes: dict, progress: bool = True, recorder=None
                    ) -> tuple[dict[str, dict], float]:
    """One pass over the first :func:`neuron_budget` tokens: ``({site: result}, seconds)``, each
    result that of a :class:`~helpers.stats.neuron_correlation.NeuronCorrelation` over the
    neurons of the site's blocks side by side (``same`` first); sites with no block are absent.
    ``recorder`` (a :class:`~helpers.explain.units.UnitRecorder` of those sites) keeps, on the
    way, what the features-against-neurons explanation scores need."""
    from ..stats.accumulators import SparseActs
    from ..stats.collect import _topk_bound
    from ..stats.neuron_correlation import NeuronCorrelation
    from ..subject.corpus import iter_token_batches, stream_documents
    from ..subject.neurons import capture_with_neurons, neuron_width

    plan = {s: tuple(layer for layer in p if layer is not None) for s, p in neuron_plan(exp).items()}
    for site, layers in plan.items():
        if not layers:
            log.info("site %s is the embeddings: no MLP before it, no neurons to compare with", site)
    plan = {s: layers for s, layers in plan.items() if layers}
    sites = tuple(plan)
    layers = sorted({layer for p in plan.values() for layer in p})
    m = neuron_width(subject.hf_model)
    device = subject.device
    accs = {s: NeuronCorrelation(_n_features(saes[s]), m * len(plan[s]), device) for s in sites}
    finite = torch.ones((), dtype=torch.bool, device=device)
    budget = neuron_budget(exp)
    t0 = time.perf_counter()
    if sites:
        docs = stream_documents(exp)
        stream = iter_token_batches(docs, subject.tokenizer, subject.special_tokens, exp.context_length,
                                    exp.batch_size, budget)
        bar = tqdm(total=budget, unit="tok", desc=f"features against neurons ({exp.name})", disable=not progress)
        for batch in stream:
            acts, neurons = capture_with_neurons(subject, batch.input_ids, batch.attention_mask, sites, layers)
            mask = batch.token_mask.to(device)
            neurons = {layer: v[mask] for layer, v in neurons.items()}
            for site in sites:
                sae = saes[site]
                codes = sae.encode(acts[site][mask].to(sae.W_enc.dtype))
                sparse = SparseActs.from_dense(codes, max_active=_topk_bound(sae), check_finite=False)
                y = torch.cat([neurons[layer] for layer in plan[site]], dim=1)
                finite &= sparse.finite & torch.isfinite(y).all()
                accs[site].update(sparse, y)
                if recorder is not None:
                    recorder.add(site, sparse.indices, sparse.values, neurons[plan[site][0]])
            bar.update(batch.n_tokens)
        bar.close()
    if not bool(finite):
        raise ConfigError(f"non-finite (NaN or inf) SAE activations or neurons in the neuron pass of "
                          f"{exp.name!r}: load the model in float32 (--set dtype=float32)")
    return {s: accs[s].result() for s in sites}, time.perf_counter() - t0


def unit_arrays(exp, tokenizer, recorder, n_features: int) -> dict[str, np.ndarray]:
    """The features-against-neurons explanation scores (:mod:`helpers.explain.units`) as arrays
    ``[S, SAMPLE]`` (padded with -1 and NaN): ``sample_feature``, ``sample_neuron`` (its rate-matched
    partner), ``sample_fired`` and ``sample_<unit>_<score>``."""
    from ..explain.stream import token_stream
    from ..explain.units import SAMPLE, UNIT_SCORES, compare_units
    from ..subject.corpus import stream_documents

    stream = token_stream(stream_documents(exp), tokenizer, neuron_budget(exp))
    scored = compare_units(recorder, stream, n_features, len(tokenizer), seed=exp.seed)
    s = len(exp.sites)
    out = {"sample_feature": np.full((s, SAMPLE), -1, np.int32), "sample_neuron": np.full((s, SAMPLE), -1, np.int32),
           "sample_fired": np.zeros((s, SAMPLE), np.int64),
           **{f"sample_{u}_{n}": np.full((s, SAMPLE), np.nan, np.float32) for u in ("feature", "neuron")
              for n in UNIT_SCORES}}
    for i, site in enumerate(exp.sites):
        if site not in scored:
            continue
        res = scored[site]
        k = res["features"].size
        out["sample_feature"][i, :k] = res["features"]
        out["sample_neuron"][i, :k] = recorder.neurons[site][:k]
        out["sample_fired"][i, :k] = res["fired"]
        for u in ("feature", "neuron"):
            for n in UNIT_SCORES:
                out[f"sample_{u}_{n}"][i, :k] = res[f"{u}_{n}"]
    return out


@writes("neurons", stats_out)
def build_neurons(exp, out=None, subject=None, saes: dict | None = None, progress: bool = True) -> Path:
    """Run the pass and write ``neurons.npz`` (+ ``neurons.json``) into the statistics folder."""
    from ..stats.artefacts import load_metadata
    from ..subject.models import load_subject, resolve_device
    from ..subject.neurons import neuron_width
    from ..explain.units import MIN_FIRINGS, SAMPLE, UnitRecorder
    from ..subject.saes import load_saes

    out = Path(out) if out is not None else stats_dir(exp.stats_name)
    plan = neuron_plan(exp)  # refuses a family without a known neuron site, before any loading
    stats = load_metadata(exp, out)  # refuses another experiment's statistics
    f = int(stats["n_features"])
    subject = subject or load_subject(exp.replace(device=str(resolve_device(exp.device))))
    m = neuron_width(subject.hf_model)
    s = len(exp.sites)
    require_space(out, s * 2 * (f + m) * 8 + s * f * 8 + (1 << 16), "neurons", MORE_SPACE)
    bill = neuron_bill(exp, f, m, sum(p.numel() for p in subject.hf_model.parameters()))
    check_bill(exp, bill, subject.device)
    saes = saes or load_saes(exp, device=subject.device)
    recorder = UnitRecorder([site for site, (same, _) in plan.items() if same is not None], m, seed=exp.seed)
    results, seconds = run_neuron_pass(exp, subject, saes, progress, recorder)
    arrays = {
        "layers": np.array([[-1 if layer is None else layer for layer in plan[site]] for site in exp.sites],
                           dtype=np.int32).reshape(s, 2),
        "feature_best_neuron": np.full((s, 2, f), -1, np.int32),
        "feature_best_r": np.full((s, 2, f), np.nan, np.float32),
        "neuron_best_feature": np.full((s, 2, m), -1, np.int32),
        "neuron_best_r": np.full((s, 2, m), np.nan, np.float32),
        "feature_fired": np.zeros((s, f), np.int64),
    }
    n_tokens = 0
    for i, site in enumerate(exp.sites):
        if site not in results:
            continue
        res = results[site]
        n_tokens = res["n_tokens"]
        fs = res["r"].shape[0]
        arrays["feature_fired"][i, :fs] = res["fired"]
        present = [j for j, layer in enumerate(plan[site]) if layer is not None]
        for col, j in enumerate(present):  # the columns hold the present blocks side by side
            best = summarise(res["r"][:, col * m:(col + 1) * m])
            arrays["feature_best_neuron"][i, j, :fs] = best["feature_best"]
            arrays["feature_best_r"][i, j, :fs] = best["feature_r"]
            arrays["neuron_best_feature"][i, j] = best["neuron_best"]
            arrays["neuron_best_r"][i, j] = best["neuron_r"]
    t1 = time.perf_counter()
    arrays.update(unit_arrays(exp, subject.tokenizer, recorder, f))
    seconds_scores = time.perf_counter() - t1
    file = out / NEURONS_FILE
    atomic_save_npz(file, sites=np.array(exp.sites), slots=np.array(SLOTS), n_tokens=np.int64(n_tokens),
                    **arrays)
    atomic_write_json(out / NEURONS_META, {
        "experiment": exp.to_dict(), "options": {name: getattr(exp, name) for name in NEURON_FIELDS},
        "tokens": n_tokens, "seconds": round(seconds, 2), "seconds_unit_scores": round(seconds_scores, 2),
        "unit_sample": {"per_site": SAMPLE, "min_firings": MIN_FIRINGS, "seed": exp.seed,
                        "firing": "features: activation > 0; neurons: rate-matched to a paired feature"},
        "n_features": f, "n_neurons": m,
        "neuron_site": exp.model_spec.family_spec.neurons, "memory_bill_bytes": bill,
        "statistics_sha256": stats.get("sha256", {}), "sha256": sha256_file(file), "bytes": file.stat().st_size,
    })
    log.info("features against neurons for %s: %d tokens in %.1f s -> %s", exp.name, n_tokens, seconds, file)
    return file


def read_neurons_meta(exp, out=None) -> dict[str, Any]:
    """``neurons.json``, refused when missing or made for another experiment or other statistics."""
    from ..stats.artefacts import STAT_FIELDS, read_derived_meta

    out = Path(out) if out is not None else stats_dir(exp.stats_name)
    return read_derived_meta(exp, out, NEURONS_META, "feature-neuron correlations", neurons_command(exp),
                             fields=STAT_FIELDS + NEURON_FIELDS)


def load_neurons(exp, out=None) -> dict[str, Any]:
    """The arrays of ``neurons.npz`` (checksum verified) and ``meta`` (``neurons.json``)."""
    out = Path(out) if out is not None else stats_dir(exp.stats_name)
    meta = read_neurons_meta(exp, out)
    data = load_npz(out / NEURONS_FILE, meta["sha256"], neurons_command(exp))
    if "sample_feature" not in data:
        raise ArtefactMismatchError(f"{out / NEURONS_FILE} predates the features-against-neurons explanation "
                                    f"scores: rebuild it with `{neurons_command(exp)}`")
    for key in ("sites", "slots"):
        data[key] = [str(v) for v in data[key]]
    data["meta"] = meta
    return data


def neurons_ready(exp, out=None) -> bool:
    """Whether ``neurons.npz`` exists, belongs to ``exp`` and its statistics, and is intact."""
    from ..stats.artefacts import artefact_ready

    return artefact_ready(load_neurons, exp, out)


def format_neurons(exp, file: Path, out=None) -> str:
    """A few lines for the command line: aligned features per site, unexplained neurons per block."""
    from .neuron_report import COVERED_R, alignment_rows, neuron_rows, neuron_totals, unit_score_rows

    data = load_neurons(exp, out if out is not None else file.parent)
    totals = neuron_totals(data)
    lines = [f"features against neurons: {file} ({file.stat().st_size / 2**20:.1f} MiB), "
             f"{totals['tokens']:,} tokens in {data['meta']['seconds']:.1f} s; {totals['aligned']:,} of "
             f"{totals['features']:,} features neuron-aligned (|r| >= {totals['aligned_r']:g}), "
             f"{totals['unexplained']:,} of {totals['neurons']:,} neurons with no feature at |r| >= "
             f"{totals['covered_r']:g}"]
    for row in alignment_rows(data):
        if row["block"] is None:
            lines.append(f"  {row['site']}: the embeddings, no MLP before it")
            continue
        lines.append(f"  {row['site']}: {row['aligned (either)']}/{row['features']} aligned "
                     f"(median best |r| {row['median best |r| (block)']:.2f} in block {row['block']})")
    for row in neuron_rows(data):
        lines.append(f"  block {row['block']}: {row[f'no feature at |r| >= {COVERED_R:g}']}/{row['neurons']} "
                     "neurons unexplained")
    pooled = [r for r in unit_score_rows(data) if r["site"] == "all sites"]
    if pooled:
        p = pooled[0]
        (lo, hi), mean_f, mean_n = p["95% interval"], p["features' mean"], p["neurons' mean"]
        lines.append(f"  explained alike (detection AUROC, held-out text): {p['features']} features {mean_f:.3f}, "
                     f"{p['neurons']} rate-matched neurons {mean_n:.3f}, difference {p['difference']:+.3f} "
                     f"(95% interval {lo:+.3f} to {hi:+.3f})")
    return "\n".join(lines)

"""Plain descriptions of experiments and results, for the CLI and the notebooks."""

from __future__ import annotations

from typing import Any

from .experiment import Experiment
from .io import sae_dir, stats_dir


def describe(exp: Experiment, count_tokens: bool = True) -> dict[str, Any]:
    """What an experiment is: model, sites, d_model, SAEs, corpus size, artefact folders."""
    from .subject.saes import REPORT_FILE, trained_saes_ready

    spec = exp.model_spec
    info: dict[str, Any] = {
        "preset": exp.name,
        "description": exp.description,
        "model": {"name": spec.name, "source": spec.source, "family": spec.family,
                  "n_layers": spec.n_layers, "d_model": spec.d_model, "causal": spec.causal},
        "sites": list(exp.sites),
        "saes": {"source": exp.sae_source, "release": exp.sae_release,
                 # a width sweep's pass: each site's own width
                 "width": "/".join(map(str, exp.site_widths)) if exp.width_pairs else exp.sae_width,
                 "k": exp.sae_k if exp.sae_source == "trained" else None},
        "corpus": {"name": exp.corpus, "max_documents": exp.max_documents},
        "token_budget": exp.token_budget,
        "context_length": exp.context_length,
        "artefacts": {"saes": str(sae_dir(exp.name)), "statistics": str(stats_dir(exp.stats_name))},
    }
    if exp.sae_source == "pretrained":
        info["saes"].update(_release_info(exp))
    if exp.sae_source == "trained":
        ready = trained_saes_ready(exp)
        info["saes"]["trained"] = ready
        if ready and not exp.width_pairs and (sae_dir(exp.name) / REPORT_FILE).is_file():
            from .subject.saes import training_report

            info["saes"]["quality"] = training_report(exp)["sites"]
        elif not ready and not exp.width_pairs:
            info["saes"].update(_training_progress(exp))
    if count_tokens and exp.corpus == "wiki-summaries":  # offline corpora only: no download
        from .subject.corpus import CORPUS_PARTS, corpus_part, count_tokens as _count, load_corpus
        from .subject.models import load_tokenizer

        docs = load_corpus(exp.corpus, exp.max_documents)
        tokenizer = load_tokenizer(exp)
        info["corpus"]["documents"] = len(docs)
        info["corpus"]["tokens"] = _count(docs, tokenizer)
        if exp.corpus_split:
            info["corpus"]["parts"] = {}
            for part in CORPUS_PARTS:
                chosen = corpus_part(exp, docs, part)
                info["corpus"]["parts"][part] = {"documents": len(chosen), "tokens": _count(chosen, tokenizer)}
    return info


def _training_progress(exp: Experiment) -> dict[str, Any]:
    """The sites trained so far in the staging folder of an unfinished set (resumable)."""
    import json

    from .subject.training import SITE_QUALITY_FILE, site_done, staging_dir

    staging = staging_dir(exp)
    done = [s for s in exp.sites if site_done(staging, s)] if (staging / "cfg.json").is_file() else []
    if not done:
        return {}
    return {"in_training": f"{len(done)} of {len(exp.sites)} sites trained in {staging}",
            "quality": {s: json.loads((staging / s / SITE_QUALITY_FILE).read_text()) for s in done}}


#: how a corpus part is named in the description
PART_NAMES = {"stats": "statistics", "sae_train": "SAE training", "sae_heldout": "SAE held-out"}


def _split_text(c: dict[str, Any]) -> str:
    parts = c.get("parts") or {}
    return "; ".join(f"{PART_NAMES[p]} {v['documents']:,} documents ({v['tokens']:,} tokens)" for p, v in parts.items())


def _release_info(exp: Experiment) -> dict[str, Any]:
    """What the registry says of a pretrained experiment's SAEs, offline: per site the SAE id, the
    hook it reads, its L0 and Neuronpedia id; the L0 variants offered; the trained twin preset."""
    from .subject.releases import get_release, release_saes, release_variants, twin_preset

    twin = twin_preset(get_release(exp.sae_release).model)
    return {"per_site": release_saes(exp), "l0_variants": release_variants(exp),
            "twin": twin.name if twin is not None else None}


def _release_rows(s: dict[str, Any]) -> list[tuple[str, str]]:
    from .subject.releases import layer_pattern

    per_site = s["per_site"]
    ids, hook, module = (layer_pattern(per_site, key) for key in ("sae_id", "hook", "module"))
    text = (f"{ids}, reading {hook} (Hugging Face {module})" if ids and hook and module
            else "; ".join(f"{r['site']}: {r['sae_id']}" for r in per_site))
    l0s = [r["l0"] for r in per_site if r["l0"] is not None]
    if l0s:
        text += f", registry L0 {min(l0s):g}" + (f"..{max(l0s):g}" if max(l0s) > min(l0s) else "")
    rows = [("SAE ids", text)]
    if len(s["l0_variants"]) > 1:
        taken = "/".join(sorted({r["variant"] for r in per_site if r["variant"]}))
        rows.append(("L0 variants", f"{', '.join(s['l0_variants'])} offered; {taken} taken (choose with --l0)"))
    pages = [r["neuronpedia"] for r in per_site if r["neuronpedia"]]
    rows.append(("Neuronpedia", f"{len(pages)} of {len(per_site)} SAEs have pages (e.g. {pages[0]})" if pages
                 else "the registry links none of these SAEs to a Neuronpedia page"))
    if s.get("twin"):
        rows.append(("twin", f"preset {s['twin']!r}: the same model with SAEs trained here"))
    return rows


def info_rows(info: dict[str, Any]) -> list[tuple[str, str]]:
    """The experiment's description (from :func:`describe`) as (field, value) pairs, in reading order."""
    m, s, c = info["model"], info["saes"], info["corpus"]
    return [
        ("experiment", f"{info['preset']}: {info['description']}"),
        ("model", f"{m['name']} ({m['source']}), {m['family']}, {m['n_layers']} layers, d_model {m['d_model']}"),
        ("sites", f"{len(info['sites'])}: {', '.join(info['sites'])}"),
        ("SAEs", ("trained here" if s["source"] == "trained" else s["source"])
         + (f" {s['release']}" if s.get("release") else "")
         + f", {s['width']} features" + (f", TopK k={s['k']}" if s.get("k") else "")
         + ("" if "trained" not in s else (", ready" if s["trained"] else
                                           f", not trained yet ({s['in_training']})" if s.get("in_training")
                                           else ", not trained yet"))),
        *(_release_rows(s) if s.get("per_site") else []),
        ("corpus", f"{c['name']}"
         + (f", {c['documents']} documents" if "documents" in c else "")
         + (f", {c['tokens']:,} tokens" if "tokens" in c else "")
         + (f" (first {c['max_documents']} documents)" if c.get("max_documents") else "")),
        *([("split", "by document, none in two parts: " + _split_text(c))] if c.get("parts") else []),
        ("tokens", f"{'whole corpus' if info['token_budget'] is None else format(info['token_budget'], ',')}"
                   f", context {info['context_length']}"),
        ("artefacts", f"SAEs: {info['artefacts']['saes']}"),
        ("", f"statistics: {info['artefacts']['statistics']}"),
    ]


def format_info(info: dict[str, Any]) -> str:
    lines = [f"{field:<12} {value}" for field, value in info_rows(info)]
    if info["saes"].get("quality"):
        lines.append(format_quality(info["saes"]["quality"]))
    return "\n".join(lines)


#: what the project asks of its trained SAEs at every site (dead: share of the width that never fires on
#: the held-out tokens)
FVU_TARGET = 0.25
LOSS_RECOVERED_TARGET = 85.0
DEAD_TARGET = 0.15


def format_quality(report: dict[str, dict[str, float]]) -> str:
    causal = all("loss_recovered" in q for q in report.values())
    rows = [f"{'site':<28} {'FVU':>7} {'L0':>7} {'dead':>7}" + (f" {'loss rec.':>10}" if causal else "")]
    for site, q in report.items():
        rows.append(f"{site:<28} {q['fvu']:>7.3f} {q['l0']:>7.1f} {q['dead_fraction']:>7.1%}"
                    + (f" {q['loss_recovered']:>9.1f}%" if causal else ""))
    return "\n".join(rows)


def format_training(result) -> str:
    head = f"SAEs for preset {result.preset!r} " + ("reused (already trained)" if result.reused else "trained")
    return head + f", in {sae_dir(result.preset)}\n" + format_quality(result.report)


def quality_table(report: dict[str, dict[str, float]]):
    """The per-site SAE quality report as a pandas DataFrame (one row per site): FVU, L0, dead and
    dense features (%), and for causal LMs the loss recovered (%) with the three losses."""
    import pandas as pd

    df = pd.DataFrame.from_dict(report, orient="index")
    df.index.name = "site"
    df["dead_%"] = 100 * df.pop("dead_fraction")
    columns = ["fvu", "l0", "dead_%"]
    if "dense_fraction" in df:
        df["dense_%"] = 100 * df.pop("dense_fraction")
        columns.append("dense_%")
    if "loss_recovered" in df:
        df = df.rename(columns={"loss_recovered": "loss_recovered_%"})
        columns += ["loss_recovered_%", "ce_clean", "ce_spliced", "ce_zero"]
    return df[columns + ["n_tokens", "train_tokens"]]


def missed_targets(report: dict[str, dict[str, float]]) -> list[str]:
    """One line per site whose SAE misses FVU <= 0.25, dead features <= 15% or (causal LMs) loss
    recovered >= 85%."""
    lines = []
    for site, q in report.items():
        misses = []
        if q["fvu"] > FVU_TARGET:
            misses.append(f"FVU {q['fvu']:.3f} > {FVU_TARGET}")
        if q["dead_fraction"] > DEAD_TARGET:
            misses.append(f"dead {q['dead_fraction']:.1%} > {DEAD_TARGET:.0%}")
        if q.get("loss_recovered", LOSS_RECOVERED_TARGET) < LOSS_RECOVERED_TARGET:
            misses.append(f"loss recovered {q['loss_recovered']:.1f}% < {LOSS_RECOVERED_TARGET:.0f}%")
        if misses:
            lines.append(f"{site}: " + ", ".join(misses))
    return lines


def quality_summary(exp: Experiment, table, report: dict[str, dict[str, float]] | None = None) -> str:
    """What the SAE quality table (:func:`quality_table`) says: width, k and held-out tokens; the
    range of FVU (and its worst site), mean L0 and the range of dead features; on a causal LM the
    range of loss recovered with the three losses. With the ``report`` it was made from, the
    sites that miss a target (:func:`missed_targets`), or that none does."""
    lines = [
        f"On preset {exp.name!r}, {len(table)} SAEs of {exp.sae_width} features each "
        f"(TopK, k={exp.sae_k}) were measured on {int(table['n_tokens'].iloc[0]):,} held-out tokens.",
        f"FVU ranges from {table['fvu'].min():.3f} to {table['fvu'].max():.3f} "
        f"(worst at {table['fvu'].idxmax()}); L0 is {table['l0'].mean():.1f} on average; "
        f"dead features range from {table['dead_%'].min():.1f}% to {table['dead_%'].max():.1f}% of the width.",
    ]
    if "loss_recovered_%" in table:
        lr = table["loss_recovered_%"]
        lines.append(
            f"Splicing an SAE in recovers {lr.min():.1f}% to {lr.max():.1f}% of the loss (clean CE "
            f"{table['ce_clean'].iloc[0]:.3f} nats/token, spliced {table['ce_spliced'].min():.3f}-"
            f"{table['ce_spliced'].max():.3f}, zero-ablated {table['ce_zero'].min():.3f}-"
            f"{table['ce_zero'].max():.3f}).")
    if report is not None:
        missed = missed_targets(report)
        target = f"FVU <= {FVU_TARGET}, dead <= {DEAD_TARGET:.0%}" + (
            f" and loss recovered >= {LOSS_RECOVERED_TARGET:.0f}%" if "loss_recovered_%" in table else "")
        lines += ([f"Sites that miss {target}:"] + [f"  {m}" for m in missed]) if missed else [
            f"Every site meets {target}."]
    return "\n".join(lines)


def format_pass(res) -> str:
    lines = [f"statistics: {res.tokens:,} tokens in {res.seconds:.1f} s ({res.tokens_per_second:,.0f} tokens/s) -> {res.out}"]
    if getattr(res, "plan", ""):
        lines.append(f"  plan: {res.plan}")
    if res.precision:
        lines.append(f"  pair counts {res.precision['pair_counts']}, sums of products {res.precision['product_sums']}")
    lines += [f"  {name:<26} {size / 2**20:8.2f} MiB" for name, size in res.files.items()]
    if getattr(res, "codes", None) is not None:
        size = sum(p.stat().st_size for p in res.codes.iterdir())
        lines.append(f"  {'codes/ (per-token codes)':<26} {size / 2**20:8.2f} MiB")
    return "\n".join(lines)


def format_convergence(study, rows) -> str:
    """The rows of a convergence study (:mod:`helpers.subject.convergence`) as a text table, each axis
    with its knee."""
    from .subject.convergence import axis_rows, knee

    lines = [f"convergence at {study.site} of {study.base.name} ({study.folder})"]
    for axis in ("samples", "tokens"):
        lines.append(f"{'samples/feature':>16} {'tokens':>9} {'epochs':>7} {'FVU':>7} {'dead':>7} {'loss rec.':>10}")
        for r in axis_rows(rows, axis):
            lr = r.get("loss_recovered")
            lines.append(f"{r['samples_per_feature']:>16.0f} {r['tokens']:>9,} {r['epochs']:>7.2f} {r['fvu']:>7.3f} "
                         f"{r['dead_fraction']:>7.1%} " + (f"{lr:>9.1f}%" if lr is not None else f"{'':>10}"))
        k = knee(rows, axis)
        lines.append(f"  knee ({axis}): " + ("not reached: the largest budget still improves" if k is None else
                     f"{k['samples_per_feature']:.0f} samples per feature on {k['tokens']:,} tokens"))
    return "\n".join(lines)


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
                 "width": exp.sae_width, "k": exp.sae_k if exp.sae_source == "trained" else None},
        "corpus": {"name": exp.corpus, "max_documents": exp.max_documents},
        "token_budget": exp.token_budget,
        "context_length": exp.context_length,
        "artefacts": {"saes": str(sae_dir(exp.name)), "statistics": str(stats_dir(exp.stats_name))},
    }
    if exp.sae_source == "trained":
        ready = trained_saes_ready(exp)
        info["saes"]["trained"] = ready
        if ready and (sae_dir(exp.name) / REPORT_FILE).is_file():
            from .subject.saes import training_report

            info["saes"]["quality"] = training_report(exp)["sites"]
    if count_tokens and exp.corpus == "wiki-summaries":  # offline corpora only: no download
        from .subject.corpus import count_tokens as _count, load_corpus
        from .subject.models import load_tokenizer

        docs = load_corpus(exp.corpus, exp.max_documents)
        info["corpus"]["documents"] = len(docs)
        info["corpus"]["tokens"] = _count(docs, load_tokenizer(exp))
    return info


def info_rows(info: dict[str, Any]) -> list[tuple[str, str]]:
    """The experiment's description (from :func:`describe`) as (field, value) pairs, in reading order."""
    m, s, c = info["model"], info["saes"], info["corpus"]
    return [
        ("experiment", f"{info['preset']}: {info['description']}"),
        ("model", f"{m['name']} ({m['source']}), {m['family']}, {m['n_layers']} layers, d_model {m['d_model']}"),
        ("sites", f"{len(info['sites'])}: {', '.join(info['sites'])}"),
        ("SAEs", f"{s['source']}" + (f" {s['release']}" if s.get("release") else "")
         + f", {s['width']} features" + (f", TopK k={s['k']}" if s.get("k") else "")
         + ("" if "trained" not in s else (", trained" if s["trained"] else ", not trained yet"))),
        ("corpus", f"{c['name']}"
         + (f", {c['documents']} documents" if "documents" in c else "")
         + (f", {c['tokens']:,} tokens" if "tokens" in c else "")
         + (f" (first {c['max_documents']} documents)" if c.get("max_documents") else "")),
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


def format_quality(report: dict[str, dict[str, float]]) -> str:
    rows = [f"{'site':<28} {'FVU':>7} {'L0':>7} {'dead':>7}"]
    for site, q in report.items():
        rows.append(f"{site:<28} {q['fvu']:>7.3f} {q['l0']:>7.1f} {q['dead_fraction']:>7.1%}")
    return "\n".join(rows)


def format_training(result) -> str:
    head = f"SAEs for preset {result.preset!r} " + ("reused (already trained)" if result.reused else "trained")
    return head + f", in {sae_dir(result.preset)}\n" + format_quality(result.report)


def quality_table(report: dict[str, dict[str, float]]):
    """The per-site SAE quality report as a pandas DataFrame (one row per site)."""
    import pandas as pd

    df = pd.DataFrame.from_dict(report, orient="index")
    df.index.name = "site"
    df["dead_%"] = 100 * df.pop("dead_fraction")
    return df[["fvu", "l0", "dead_%", "n_tokens", "train_tokens"]]


def quality_summary(exp: Experiment, table) -> str:
    """What the SAE quality table (:func:`quality_table`) says, in two lines: width, k and
    held-out tokens; the range of FVU (and its worst site), mean L0 and the range of dead
    features."""
    return (
        f"On preset {exp.name!r}, {len(table)} SAEs of {exp.sae_width} features each "
        f"(TopK, k={exp.sae_k}) were measured on {int(table['n_tokens'].iloc[0]):,} held-out tokens.\n"
        f"FVU ranges from {table['fvu'].min():.3f} to {table['fvu'].max():.3f} "
        f"(worst at {table['fvu'].idxmax()}); L0 is {table['l0'].mean():.1f} on average; "
        f"dead features range from {table['dead_%'].min():.1f}% to {table['dead_%'].max():.1f}% of the width."
    )


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

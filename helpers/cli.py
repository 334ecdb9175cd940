"""Command line: ``python -m helpers {info,train-saes,widths,collect,partners,gates,matching,neurons,explain,prepare,
explorer,browser} --experiment PRESET|FILE``,
``--release NAME [--layers A:B] [--width N] [--l0 VARIANT]`` instead of a preset, ``releases
[--model TEXT]`` and ``publish [--html DIR] [--remote NAME|URL]``.

Errors the helpers raise on purpose are printed as one line (``error: ...``)
with exit status 2, not as a traceback; so is an interruption (SIGINT, SIGTERM: what was done,
kept and the command that resumes, exit status 130 or 143), see :mod:`helpers.locks`.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Sequence

from .errors import ConfigError, SaeEvolutionError
from .experiment import DEFAULT_EXPERIMENT, EXPERIMENT_ENV, PRESETS, get_experiment


def _experiment_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--experiment",
        "-e",
        default=None,
        help=f"preset: one of {sorted(PRESETS)} (default: ${EXPERIMENT_ENV} or '{DEFAULT_EXPERIMENT}')",
    )
    parser.add_argument("--device", default=None, help="auto, cpu, cuda or cuda:N")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one experiment field (JSON value), e.g. --set token_budget=20000",
    )
    parser.add_argument(
        "--release",
        default=None,
        help="build the experiment from a sae_lens release (see `releases`), e.g. gemma-scope-2b-pt-res-canonical",
    )
    parser.add_argument("--layers", default=None, metavar="FIRST:LAST",
                        help="with --release: keep the SAEs of blocks FIRST..LAST (inclusive)")
    parser.add_argument("--width", type=int, default=None,
                        help="with --release: the SAE width, for releases that have several")
    parser.add_argument("--l0", default=None, metavar="VARIANT",
                        help="with --release: the L0 variant where a site has several SAEs: small, medium "
                             "or big (Gemma Scope 2), or a number (the nearest registry L0); default: the "
                             "one with a Neuronpedia page, else small, else the registry's first")
    parser.add_argument("--no-wait", action="store_true",
                        help="stop at once (one line) if another process is writing this experiment")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m helpers",
        description="SAE features across layers: train SAEs, describe experiments.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress messages")
    sub = parser.add_subparsers(dest="command", required=True)

    info = sub.add_parser("info", help="describe an experiment: model, sites, SAEs, corpus, artefacts")
    _experiment_arg(info)
    info.add_argument("--json", action="store_true", help="print JSON instead of text")
    info.add_argument(
        "--no-count", action="store_true", help="skip tokenizing the corpus to count its tokens"
    )

    train = sub.add_parser("train-saes", help="train one SAE per site (offline presets)")
    _experiment_arg(train)
    train.add_argument("--force", action="store_true", help="retrain even if matching SAEs exist")
    train.add_argument("--sites", default=None, metavar="S1,S2",
                       help="train only these sites now (the others later: training resumes site by site)")
    train.add_argument("--quiet", action="store_true", help="no progress bars")

    conv = sub.add_parser("convergence", help="SAE quality against the training budget at one site: samples per "
                                              "feature and distinct training tokens (where is the knee?)")
    _experiment_arg(conv)
    conv.add_argument("--site", default=None, help="the site (default: the preset's middle site)")
    conv.add_argument("--samples-per-feature", default=None, metavar="N1,N2,...",
                      help="at least 4 budgets of training samples per feature (default 75,150,300,600,1200)")
    conv.add_argument("--token-shares", default=None, metavar="S1,S2,...",
                      help="shares of the training tokens at the preset's own budget (default 0.125,0.25,0.5,1)")
    conv.add_argument("--quiet", action="store_true", help="no progress bars")

    wid = sub.add_parser("widths", help="a width sweep at one site: SAEs of widths each 4x the last on the same "
                                        "activations (FVU, L0, dead, loss recovered per width); with --release "
                                        "NAME --layers L: the official widths of one layer")
    _experiment_arg(wid)
    wid.add_argument("--site", default=None, help="the site (default: the preset's middle site)")
    wid.add_argument("--widths", default=None, metavar="W1,W2,W3",
                     help="at least 3 widths, each 4x the last (default: the preset's width /4, x1, x4); with "
                          "--release: widths the release has at the layer (default: all of them)")
    wid.add_argument("--tokens-per-feature", type=float, default=None, metavar="N",
                     help="training samples per feature, the same for every width (default: the preset's, "
                          "sae_train_tokens x sae_epochs / sae_width)")
    wid.add_argument("--ks", default=None, metavar="K1,K2,K3", help="TopK's k per width (default: the preset's sae_k)")
    wid.add_argument("--tokens", type=int, default=None,
                     help="with --release: held-out tokens measured (default: the experiment's sae_heldout_tokens)")
    wid.add_argument("--force", action="store_true", help="retrain every width even if it is on disk")
    wid.add_argument("--no-pass", action="store_true",
                     help="train only: no statistics pass over the widths (the width pairs and their splitting)")
    wid.add_argument("--quiet", action="store_true", help="no progress bars")

    prep = sub.add_parser(
        "prepare", help="make every artefact the book needs: train SAEs if needed, then the statistics pass"
    )
    _experiment_arg(prep)
    prep.add_argument("--quiet", action="store_true", help="no progress bars")

    rel = sub.add_parser("releases", help="list sae_lens' residual-stream releases the helpers can use (offline)")
    rel.add_argument("--model", default=None, help="only releases whose model name contains TEXT")

    col = sub.add_parser("collect", help="the statistics pass: every statistic in one pass over the tokens")
    _experiment_arg(col)
    col.add_argument("--out", default=None, help="output folder (default: artefacts/<preset>)")
    col.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --out")
    col.add_argument("--checkpoint-tokens", type=int, default=None, help="checkpoint every N tokens")
    col.add_argument("--quiet", action="store_true", help="no progress bar")
    col.add_argument("--plan", choices=("auto", "data", "pairs", "passes"), default="auto",
                     help="under torchrun: data-parallel, pair-parallel (each rank holds some of the "
                          "adjacent pairs, sees all tokens); in one process: passes (the pairs in several "
                          "passes over the tokens); auto: all pairs at once when they fit, else pairs or passes")
    col.add_argument("--passes", type=int, default=None, metavar="N",
                     help="with --plan passes (or auto): exactly N passes over the tokens, each holding "
                          "about 1/N of the adjacent pairs (default: the fewest that fit)")

    par = sub.add_parser("partners", help="partner tables: every feature's top-k partners in the adjacent sites")
    _experiment_arg(par)
    par.add_argument("--k", type=int, default=16, help="partners per feature, measure and direction (default 16)")
    par.add_argument("--quiet", action="store_true", help="no progress bar")

    mat = sub.add_parser("matching", help="which matching method is causal: ablate each method's top-1 partner")
    _experiment_arg(mat)
    mat.add_argument("--downstream", type=int, default=None,
                     help="downstream features evaluated per pair (default: 512, or all alive where fewer)")
    mat.add_argument("--quiet", action="store_true", help="no progress bar")
    gat = sub.add_parser("gates", help="verify AND/OR gate candidates and count upstream explanations (one pass)")
    _experiment_arg(gat)
    gat.add_argument("--masks", action="store_true", help="also store the firing-mask counts (large)")
    gat.add_argument("--quiet", action="store_true", help="no progress bar")

    neu = sub.add_parser("neurons", help="features against MLP neurons: Pearson r of every feature with every "
                                         "neuron of its block and the block before (one pass)")
    _experiment_arg(neu)
    neu.add_argument("--quiet", action="store_true", help="no progress bar")

    xpl = sub.add_parser("explain", help="explain every feature from its data, with detection and fuzzing scores "
                                         "on held-out documents (offline, no LLM)")
    _experiment_arg(xpl)
    xpl.add_argument("--quiet", action="store_true", help="no progress bar")

    exp_p = sub.add_parser("explorer", help="write the static feature explorer (every feature's page) for the book")
    _experiment_arg(exp_p)
    exp_p.add_argument("--out", default=None, help="output folder (default: book/_explorer, copied into the book; "
                                                    "a width sweep's: book/_widths/widths)")
    exp_p.add_argument("--widths", action="store_true",
                       help="also the explorer of the preset's width sweep (<preset>-widths), when prepared")
    exp_p.add_argument("--force", action="store_true", help="rebuild even if the statistics are unchanged")
    exp_p.add_argument("--quiet", action="store_true", help="no progress bar")
    bro = sub.add_parser("browser", help="write the static cross-layer browser (with curated prompt graphs and searches)")
    _experiment_arg(bro)
    bro.add_argument("--out", default=None, help="output folder (default: book/_browser, copied into the book)")
    bro.add_argument("--k-edges", type=int, default=None, help="partners per feature, measure and direction (default 8)")
    pub = sub.add_parser("publish", help="push the built book to a gh-pages branch with ghp-import (make publish)")
    pub.add_argument("--html", default="book/_build/html", help="the built book (default: book/_build/html)")
    pub.add_argument("--remote", default="origin", help="git remote name or URL to push to (default: origin)")
    pub.add_argument("--branch", default="gh-pages", help="branch to write (default: gh-pages)")
    pub.add_argument("--repo", default=".", help="the git repository whose branch is written (default: .)")
    return parser


def parse_overrides(items: Sequence[str]) -> dict:
    """``["key=value", ...]`` -> ``{key: value}``; values are JSON when they parse, else strings."""
    import dataclasses

    from .errors import ConfigError
    from .experiment import Experiment

    import typing

    hints = typing.get_type_hints(Experiment)
    names = {f.name for f in dataclasses.fields(Experiment)}
    out = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or key not in names:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE with KEY one of {sorted(names)}")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        text_field = hints[key] is str or (typing.get_origin(hints[key]) is not tuple
                                           and str in typing.get_args(hints[key]))
        if text_field and not isinstance(value, str) and value is not None:
            value = raw  # a text field keeps what was typed: --set name=2024
        out[key] = tuple(value) if isinstance(value, list) else value
    return out


def parse_layers(text: str | None) -> tuple[int, int] | None:
    """``"3:7"`` -> ``(3, 7)``; ``"5"`` -> ``(5, 5)``."""
    if text is None:
        return None
    first, _, last = text.partition(":")
    try:
        return int(first), int(last or first)
    except ValueError:
        raise ConfigError(f"--layers {text!r}: expected FIRST:LAST, e.g. --layers 0:11") from None


def build_experiment(args: argparse.Namespace):
    """The experiment the command line asks for: a preset, a file, or a release, with overrides."""
    overrides = parse_overrides(args.overrides)
    if args.release is None:
        if args.layers is not None or args.width is not None or args.l0 is not None:
            raise ConfigError("--layers, --width and --l0 go with --release NAME")
        return get_experiment(args.experiment, device=args.device, **overrides)
    if args.experiment is not None:
        raise ConfigError("give --experiment or --release, not both")
    from .subject.releases import experiment_from_release

    if args.device is not None:
        overrides["device"] = args.device
    return experiment_from_release(args.release, parse_layers(args.layers), args.width, l0=args.l0, **overrides)


def _numbers(text: str, flag: str) -> list[float]:
    """``"1,2.5,4"`` -> ``[1.0, 2.5, 4.0]`` (a ConfigError naming ``flag`` otherwise)."""
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"{flag} {text!r}: give numbers separated by commas, e.g. 75,150,300,600") from None


def _widths(args: argparse.Namespace) -> str:
    """``widths``: train (or reuse) a width sweep and give its table; with ``--release``, the official widths."""
    from .subject import widths as w

    widths = w.parse_widths(args.widths)
    if args.release is not None:
        layers = parse_layers(args.layers)
        if layers is None or layers[0] != layers[1] or args.experiment is not None or args.width is not None:
            raise ConfigError("widths --release NAME takes one layer (--layers L) and no --experiment nor --width: "
                              "e.g. `python -m helpers widths --release gemma-scope-2-270m-pt-res --layers 9`")
        fields = parse_overrides(args.overrides) | ({"device": args.device} if args.device else {})
        rows = w.official_width_rows(args.release, layers[0], widths, l0=args.l0, n_tokens=args.tokens,
                                     progress=not args.quiet, **fields)
        return w.format_width_rows(rows, f"official widths of {args.release} at {rows[0]['site']}")
    ks = w.parse_widths(args.ks) if args.ks else ()
    sweep = w.WidthSweep(build_experiment(args), site=args.site, widths=widths or (),
                         tokens_per_feature=args.tokens_per_feature, ks=ks)
    result = w.train_width_sweep(sweep, force=args.force, progress=not args.quiet)
    title = (f"width sweep at {sweep.site} of {sweep.base.name} ({sweep.tokens_per_feature:g} samples per feature"
             f", {sweep.folder}; {len(result.reused)} of {len(sweep.widths)} widths reused, "
             f"{result.seconds:.0f} s)")
    table = w.format_width_rows(result.rows, title)
    if args.no_pass:
        return table
    from .pipeline import prepare

    # the width pairs' statistics, partner tables and splitting: one pass over the base's stream
    return "\n".join([table, *prepare(sweep.pass_experiment(), progress=not args.quiet)])


def _widths_explorer(exp, args: argparse.Namespace) -> str:
    """``explorer --widths``: the width sweep's explorer beside the preset's, when its pass and splitting exist."""
    from .evolution.width_report import no_sweep_note, width_sweep_or_none
    from .explore import build_explorer

    wexp = width_sweep_or_none(exp)
    if wexp is None:
        return f"no width sweep explorer: {no_sweep_note(exp)}"
    return build_explorer(wexp, force=args.force, progress=not args.quiet).describe()


def main(argv: Sequence[str] | None = None) -> int:
    from .locks import catch_signals, exit_status, interruption, set_waiting

    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    set_waiting(not getattr(args, "no_wait", False))
    # long-running commands say what they do (memory bill, SAE quality) unless --quiet
    chatty = args.verbose or (args.command in ("collect", "prepare", "train-saes", "explorer", "neurons", "widths",
                                               "convergence")
                              and not args.quiet)
    logging.basicConfig(level=logging.INFO if chatty else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "urllib3", "filelock", "torch", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    restore = catch_signals()
    try:
        if args.command == "releases":
            from .subject.releases import format_releases, residual_releases

            found = residual_releases(args.model)
            if not found:
                raise ConfigError(f"no usable residual-stream release for a model matching {args.model!r}")
            print(format_releases(found))
            return 0
        if args.command == "publish":
            from .publish import publish_book

            print(publish_book(args.html, args.remote, args.branch, args.repo))
            return 0
        if args.command == "widths":
            print(_widths(args))
            return 0
        exp = build_experiment(args)
        if args.command == "info":
            from .report import describe

            info = describe(exp, count_tokens=not args.no_count)
            if args.json:
                print(json.dumps(info, indent=2, default=str))
            else:
                from .report import format_info

                print(format_info(info))
        elif args.command == "train-saes":
            from .report import format_training
            from .subject.training import train_saes

            sites = [x.strip() for x in args.sites.split(",") if x.strip()] if args.sites else None
            result = train_saes(exp, force=args.force, progress=not args.quiet, sites=sites)
            print(format_training(result))
        elif args.command == "convergence":
            from .report import format_convergence
            from .subject.convergence import ConvergenceStudy, run_convergence

            kw = {}
            if args.samples_per_feature:
                kw["samples_per_feature"] = tuple(_numbers(args.samples_per_feature, "--samples-per-feature"))
            if args.token_shares:
                kw["token_shares"] = tuple(_numbers(args.token_shares, "--token-shares"))
            study = ConvergenceStudy(base=exp, site=args.site, **kw)
            print(format_convergence(study, run_convergence(study, progress=not args.quiet)))
        elif args.command == "prepare":
            from .pipeline import prepare

            print("\n".join(prepare(exp, progress=not args.quiet)))
        elif args.command == "collect":
            from .stats import run_pass

            if args.checkpoint_tokens is not None and args.checkpoint_tokens <= 0:
                raise ConfigError(f"--checkpoint-tokens {args.checkpoint_tokens} must be > 0")
            res = run_pass(exp, out=args.out, resume=args.resume,
                           checkpoint_tokens=args.checkpoint_tokens, progress=not args.quiet, plan=args.plan,
                           passes=args.passes)
            if res.files:
                from .report import format_pass

                print(format_pass(res))
        elif args.command == "partners":
            from .evolution.partners import build_partners

            file = build_partners(exp, k=args.k, progress=not args.quiet)
            print(f"partner tables: {file} ({file.stat().st_size / 2**20:.1f} MiB)")
        elif args.command == "matching":
            from .evolution.matching_artefact import build_matching

            file = build_matching(exp, n_downstream=args.downstream, progress=not args.quiet)
            print(f"matching methods: {file} ({file.stat().st_size / 2**10:.0f} KiB)")
        elif args.command == "gates":
            from .evolution.gate_artefact import build_gates, format_gates

            print(format_gates(exp, build_gates(exp, progress=not args.quiet, keep_masks=args.masks)))
        elif args.command == "neurons":
            from .evolution.neuron_artefact import build_neurons, format_neurons

            print(format_neurons(exp, build_neurons(exp, progress=not args.quiet)))
        elif args.command == "explain":
            from .explain.artefact import build_explanations, format_explanations

            print(format_explanations(exp, build_explanations(exp, progress=not args.quiet)))
        elif args.command == "explorer":
            from .explore import build_explorer

            print(build_explorer(exp, out=args.out, force=args.force, progress=not args.quiet).describe())
            if args.widths:
                print(_widths_explorer(exp, args))
        elif args.command == "browser":
            from .explore.browser_site import build_browser

            print(build_browser(exp, out=args.out, k_edges=args.k_edges).describe())
    except SaeEvolutionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        print(interruption(exc, argv, args.command), file=sys.stderr)
        return exit_status(exc)
    finally:
        restore()
    return 0

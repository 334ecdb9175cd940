"""Command line: ``python -m helpers {info,train-saes,collect,partners,prepare} --experiment PRESET``.

Errors the helpers raise on purpose are printed as one line (``error: ...``)
with exit status 2, not as a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Sequence

from .errors import ConfigError, SaeEvolutionError
from .experiment import EXPERIMENT_ENV, PRESETS, get_experiment


def _experiment_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--experiment",
        "-e",
        default=None,
        help=f"preset: one of {sorted(PRESETS)} (default: ${EXPERIMENT_ENV} or 'offline')",
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
    train.add_argument("--quiet", action="store_true", help="no progress bars")

    prep = sub.add_parser(
        "prepare", help="make every artefact the book needs: train SAEs if needed, then the statistics pass"
    )
    _experiment_arg(prep)
    prep.add_argument("--quiet", action="store_true", help="no progress bars")

    col = sub.add_parser("collect", help="the statistics pass: every statistic in one pass over the tokens")
    _experiment_arg(col)
    col.add_argument("--out", default=None, help="output folder (default: artefacts/<preset>)")
    col.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --out")
    col.add_argument("--checkpoint-tokens", type=int, default=None, help="checkpoint every N tokens")
    col.add_argument("--quiet", action="store_true", help="no progress bar")

    par = sub.add_parser("partners", help="partner tables: every feature's top-k partners in the adjacent sites")
    _experiment_arg(par)
    par.add_argument("--k", type=int, default=16, help="partners per feature, measure and direction (default 16)")
    par.add_argument("--quiet", action="store_true", help="no progress bar")

    bro = sub.add_parser("browser", help="write the static cross-layer browser (with curated prompt graphs and searches)")
    _experiment_arg(bro)
    bro.add_argument("--out", default=None, help="output folder (default: book/_browser, copied into the book)")
    bro.add_argument("--k-edges", type=int, default=None, help="partners per feature, measure and direction (default 8)")
    return parser


def parse_overrides(items: Sequence[str]) -> dict:
    """``["key=value", ...]`` -> ``{key: value}``; values are JSON when they parse, else strings."""
    import dataclasses

    from .errors import ConfigError
    from .experiment import Experiment

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
        out[key] = tuple(value) if isinstance(value, list) else value
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # long-running commands say what they do (memory bill, SAE quality) unless --quiet
    chatty = args.verbose or (args.command in ("collect", "prepare", "train-saes") and not args.quiet)
    logging.basicConfig(level=logging.INFO if chatty else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "urllib3", "filelock", "torch", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        exp = get_experiment(args.experiment, device=args.device, **parse_overrides(args.overrides))
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
            from .subject.saes import train_saes

            result = train_saes(exp, force=args.force, progress=not args.quiet)
            print(format_training(result))
        elif args.command == "prepare":
            from .pipeline import prepare

            print("\n".join(prepare(exp, progress=not args.quiet)))
        elif args.command == "collect":
            from .stats import run_pass

            if args.checkpoint_tokens is not None and args.checkpoint_tokens <= 0:
                raise ConfigError(f"--checkpoint-tokens {args.checkpoint_tokens} must be > 0")
            res = run_pass(exp, out=args.out, resume=args.resume,
                           checkpoint_tokens=args.checkpoint_tokens, progress=not args.quiet)
            if res.files:
                from .report import format_pass

                print(format_pass(res))
        elif args.command == "partners":
            from .evolution.partners import build_partners

            file = build_partners(exp, k=args.k, progress=not args.quiet)
            print(f"partner tables: {file} ({file.stat().st_size / 2**20:.1f} MiB)")
        elif args.command == "browser":
            from .explore.browser_site import build_browser

            print(build_browser(exp, out=args.out, k_edges=args.k_edges).describe())
    except SaeEvolutionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0

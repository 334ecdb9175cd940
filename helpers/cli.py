"""Command line: ``python -m helpers {info,train-saes} --experiment PRESET``.

Errors the helpers raise on purpose are printed as one line (``error: ...``)
with exit status 2, not as a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Sequence

from .errors import SaeEvolutionError
from .experiment import EXPERIMENT_ENV, PRESETS, get_experiment


def _experiment_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--experiment",
        "-e",
        default=None,
        help=f"preset: one of {sorted(PRESETS)} (default: ${EXPERIMENT_ENV} or 'offline')",
    )
    parser.add_argument("--device", default=None, help="auto, cpu, cuda or cuda:N")


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
        "prepare", help="make every artefact the book needs (train SAEs if the preset trains its own)"
    )
    _experiment_arg(prep)
    prep.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        exp = get_experiment(args.experiment, device=args.device)
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
            from .saes import train_saes

            result = train_saes(exp, force=args.force, progress=not args.quiet)
            print(format_training(result))
        elif args.command == "prepare":
            from .report import format_training
            from .saes import train_saes

            if exp.sae_source == "trained":
                print(format_training(train_saes(exp, progress=not args.quiet)))
            else:
                print(f"preset {exp.name!r} uses the pretrained {exp.sae_release} SAEs: nothing to train")
    except SaeEvolutionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0

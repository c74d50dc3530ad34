"""Command line: one subcommand per stage. Thin: parse, load params, call the stage's run()."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Callable

from .config import load_params
from .errors import HsixaiError
from .paths import Paths


def _stages() -> dict[str, tuple[str, Callable]]:
    # Imported lazily so `hsixai --help` stays fast.
    from . import evaluate, select, sweep, train
    from .data import prepare, split, synthetic
    from .xai import attributions, consistency

    return {
        "synthesize": ("generate the synthetic PRISMA-like scene into data/synthetic", synthetic.run),
        "prepare": ("remove bands, min-max scale, 0-based labels -> data/prepared", prepare.run),
        "split": ("spatial train/dev split, band statistics, xAI sample -> data/split", split.run),
        "train": ("train train.instances models for (model, patch_size) -> models/ (torchrun-ready)", train.run),
        "evaluate": ("test-set metrics per instance, classification map -> metrics/evaluate.json", evaluate.run),
        "attribute": ("Integrated Gradients on the xAI sample -> data/attributions/profiles.npz", attributions.run),
        "consistency": ("Jensen-Shannon consistency of the explanations -> metrics/consistency.json",
                        consistency.run),
        "sweep": ("queue and run one DVC experiment per (model, patch size) of params 'sweep', then select",
                  sweep.run),
        "select": ("rank the experiments of this commit by consistency -> reports/selection.*", select.run),
    }


def build_parser(stages: dict[str, tuple[str, Callable]]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hsixai", description=__doc__)
    parser.add_argument("--root", default=None, help="repository root (default: the current directory)")
    parser.add_argument("--params", default=None, help="params file (default: <root>/params.yaml)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (help_, _) in stages.items():
        command = sub.add_parser(name, help=help_)
        if name == "sweep":
            command.add_argument("-j", "--jobs", type=int, default=None,
                                 help="parallel queue workers (default: sweep.jobs in params.yaml)")
            command.add_argument("--published", action="store_true",
                                 help="the published profile: patch sizes 5-21, 30 epochs, batch 256 (cnn2d) "
                                      "or 8 (vit), 512 xAI samples per class (hours on a CPU)")
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(format="%(levelname)s: %(message)s", level=logging.WARNING, stream=sys.stderr)
    logging.addLevelName(logging.WARNING, "warning")
    stages = _stages()
    args = build_parser(stages).parse_args(argv)
    paths = Paths.at(args.root)
    try:
        params = load_params(args.params or paths.params)
        extra = {"jobs": args.jobs, "published": args.published} if args.command == "sweep" else {}
        stages[args.command][1](params, paths, progress=not args.no_progress, **extra)
    except HsixaiError as exc:
        print(f"hsixai {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

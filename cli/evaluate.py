"""``scorebridge eval harmony|continuation|noise-injection``: the evaluations, each in its own module."""

from __future__ import annotations

import argparse
import importlib

__all__ = ["register"]

# Each module exposes ``add_parser(subparsers)``, which sets ``run`` like a command's.
_EVALUATIONS: tuple[str, ...] = ("cli.eval_harmony", "cli.eval_continuation", "cli.eval_noise")


def register(sub: argparse._SubParsersAction) -> None:
    evaluate = sub.add_parser("eval", help="evaluate the models (harmony, continuation, noise-injection probe)")
    evaluations = evaluate.add_subparsers(dest="evaluation", metavar="EVALUATION", required=True)
    for module in _EVALUATIONS:
        importlib.import_module(module).add_parser(evaluations)

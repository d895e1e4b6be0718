"""Command line: ``python -m training COMMAND``, for train, evaluate, export, group, tools, quantize, reproduce,
gate, groups, levels, tta, refresh, tune and visualize.

The commands live with their work and register themselves (:mod:`training.commands`); this module only
collects them. Every ``train`` option is also a configuration key (shown in brackets in ``--help``, see
:mod:`training.options`); an option given on the command line beats the ``--config`` file, which beats
the defaults in :mod:`training.config`.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from training.commands import registered

# The modules that register commands, in the order ``--help`` lists them.
COMMAND_MODULES = ("training.train", "training.evaluate", "training.grouped_artifact", "training.tools",
                   "training.quantize", "training.reproduce", "training.gate", "training.label_groupings",
                   "training.make_levels", "training.flip_skip", "training.references", "training.refresh",
                   "training.tune", "training.visualize")


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every registered command."""
    parser = argparse.ArgumentParser(
        prog="python -m training",
        description="Train, evaluate and prepare data for the car-photo classifier.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMAND_MODULES:
        importlib.import_module(module)
    # Sorted by module: a module imported by another (evaluate by train) registers first.
    for add_parser in sorted(registered().values(), key=lambda add: COMMAND_MODULES.index(add.__module__)):
        add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen command; returns the exit status."""
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

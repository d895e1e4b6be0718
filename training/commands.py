"""The registry of ``python -m training`` commands.

Each command module adds its sub-command with a function decorated by :func:`command`; the function
receives the sub-parsers, adds its parser and sets ``handler`` (called with the parsed arguments,
returns the exit status). :mod:`training.cli` imports the command modules and adds what they
registered, so no command module ever imports the command line.
"""

from __future__ import annotations

import argparse
from typing import Callable

AddParser = Callable[[argparse._SubParsersAction], None]
_REGISTERED: dict[str, AddParser] = {}


def command(name: str) -> Callable[[AddParser], AddParser]:
    """Register the decorated ``add_parser(subparsers)`` as the command ``name``."""

    def register(add_parser: AddParser) -> AddParser:
        if _REGISTERED.get(name, add_parser) is not add_parser:
            raise ValueError(f"two modules register the command {name!r}")
        _REGISTERED[name] = add_parser
        return add_parser

    return register


def registered() -> dict[str, AddParser]:
    """The commands registered so far, by name, in the order they were registered."""
    return dict(_REGISTERED)


def subcommand(subparsers, name: str, handler, *, summary: str, description: str
                ) -> tuple[argparse.ArgumentParser, argparse._ArgumentGroup]:
    """Add a command; returns its parser and its "required" option group."""
    parser = subparsers.add_parser(name, help=summary, description=description)
    parser.set_defaults(handler=handler)
    return parser, parser.add_argument_group("required")

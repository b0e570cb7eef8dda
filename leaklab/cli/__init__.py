"""The ``leaklab`` command (also ``python -m leaklab``).

Each subcommand lives in its own module of this package, with a ``register``
function that adds its parser to the subparsers. A user error (unknown name, bad
value) prints one line naming the valid choices and exits with status 2, and so does a
dataset that cannot be downloaded.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from ..data.download import DownloadError

__all__ = ["main", "UsageError", "build_parser"]

#: Modules of leaklab.cli that provide subcommands, in the order --help lists them.
COMMAND_MODULES = ["data", "linear", "reconstruct", "game", "defenses"]


class UsageError(Exception):
    """A mistake in how the command was called; printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, never the usage block or a traceback
        raise UsageError(f"{self.prog}: error: {message}")


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = _Parser(
        prog="leaklab",
        description="Measure how shared gradients leak private data.",
        epilog="Run 'leaklab COMMAND --help' for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"leaklab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    return parser


def main(argv=None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return int(args.func(args) or 0)
    except UsageError as exc:
        print(exc, file=sys.stderr)
        return 2
    except (ValueError, TypeError, DownloadError) as exc:
        print(f"leaklab: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("leaklab: interrupted", file=sys.stderr)
        return 130

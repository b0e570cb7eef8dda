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
COMMAND_MODULES = ["data", "linear", "reconstruct", "game", "defenses", "tradeoff", "audit", "flower"]


class UsageError(Exception):
    """A mistake in how the command was called; printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, never the usage block or a traceback
        # "leaklab: error: data show: argument --samples: ...": every error line starts alike
        command = self.prog.partition(" ")[2]
        raise UsageError(f"leaklab: error: {command + ': ' if command else ''}{' '.join(message.split())}")


def _one_line(exc: Exception) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def build_parser() -> argparse.ArgumentParser:
    from .._version import __version__

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
    """Run the command line ``argv`` (default ``sys.argv[1:]``); return the exit status.

    Bare ``leaklab`` prints the usage and the list of commands on stdout and exits with
    status 2 (as for any missing argument), with the one-line error on stderr.
    """
    from ..profiles import check_environment

    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        parser = build_parser()
        if not argv:
            sys.stdout.write(parser.format_help())
        args = parser.parse_args(argv)
        check_environment()      # an invalid LEAKLAB_PROFILE is an error for every command
        return int(args.func(args) or 0)
    except UsageError as exc:
        print(exc, file=sys.stderr)
        return 2
    except (ValueError, TypeError, DownloadError) as exc:
        print(f"leaklab: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except BrokenPipeError:      # the reader went away (``leaklab ... | head``): stop quietly
        import os
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as exc:       # a file that cannot be read or written
        where = f" {exc.filename}" if getattr(exc, "filename", None) else ""
        print(f"leaklab: error: {exc.strerror or exc}:{where}".rstrip(":"), file=sys.stderr)
        return 2
    except MemoryError:
        print("leaklab: error: out of memory; use fewer --trials, a smaller --batch-size or smaller images",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("leaklab: interrupted", file=sys.stderr)
        return 130

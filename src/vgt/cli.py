"""The `vgt` command line.

Each module in `vgt.commands` is one command (its first word) and adds its subcommands through `add_commands(tree)`;
`COMMANDS` lists them in the order a user needs them, which is the order of `vgt --help`. Handlers parse flags into
the library's typed configs and call the library; they import heavy libraries (torch, transformers) lazily to keep
`vgt --help` fast.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Sequence

import vgt

#: the command modules of `vgt.commands`, in the order `vgt --help` lists them
COMMANDS = ("generate", "inpaint", "demo", "train", "eval", "recipe", "shapes", "caption", "reconstruct",
            "cache_latents", "convert")


class ArgumentParser(argparse.ArgumentParser):
    """argparse with its usage errors in the one-line form of every other vgt error."""

    def error(self, message: str):
        self.exit(2, f"vgt: error: {self.prog}: {message} (see `{self.prog} --help`)\n")


class CommandTree:
    """Nested argparse subcommands addressed by path, e.g. `tree.command("eval shapes", ...)`."""

    def __init__(self, parser: argparse.ArgumentParser):
        self.parser = parser
        self._subparsers: dict[str, argparse._SubParsersAction] = {}
        self._parsers: dict[str, argparse.ArgumentParser] = {"": parser}

    def _subparsers_of(self, path: str) -> argparse._SubParsersAction:
        if path not in self._subparsers:
            self._subparsers[path] = self._parsers[path].add_subparsers(
                title="commands", metavar="COMMAND", dest=f"_cmd_{len(self._subparsers)}"
            )
        return self._subparsers[path]

    def group(self, path: str, help: str) -> None:
        """Declare a command group such as "train" or "eval" (idempotent)."""
        if path in self._parsers:
            return
        parent, _, name = path.rpartition(" ")
        if parent and parent not in self._parsers:
            raise ValueError(f"declare group {parent!r} before {path!r}")
        sub = self._subparsers_of(parent).add_parser(name, help=help, description=help)
        sub.set_defaults(func=lambda args, p=sub: p.print_help() or 0)
        self._parsers[path] = sub

    def command(self, path: str, func: Callable[[argparse.Namespace], int | None], help: str):
        """Add a leaf command; returns its parser so the caller can add arguments."""
        parent, _, name = path.rpartition(" ")
        if parent and parent not in self._parsers:
            raise ValueError(f"declare group {parent!r} before command {path!r}")
        sub = self._subparsers_of(parent).add_parser(
            name, help=help, description=help, formatter_class=argparse.ArgumentDefaultsHelpFormatter
        )
        sub.set_defaults(func=func)
        self._parsers[path] = sub
        return sub


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="vgt", description=vgt.__doc__)
    parser.add_argument("--version", action="version", version=f"vgt {vgt.__version__}")
    tree = CommandTree(parser)
    for name in COMMANDS:
        importlib.import_module(f"vgt.commands.{name}").add_commands(tree)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run a command; errors propagate (for callers and tests)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return 0
    return int(args.func(args) or 0)


def _user_errors() -> tuple[type[BaseException], ...]:
    """What an ordinary mistake or fault raises: bad values, missing/unwritable paths, a full disk (OSError),
    a non-finite loss, an unreadable safetensors file."""
    errors: list[type[BaseException]] = [OSError, ValueError, EOFError]
    if "vgt.train.engine" in sys.modules:
        errors.append(sys.modules["vgt.train.engine"].NonFiniteLossError)
    if "safetensors" in sys.modules:
        errors.append(sys.modules["safetensors"].SafetensorError)
    return tuple(errors)


def run(argv: Sequence[str] | None = None) -> int:
    """The console entry point: bad input is reported in one line that names the fix, not a traceback
    (`VGT_DEBUG=1` shows it). Exit status 2 for every such error, 130 when interrupted."""
    try:
        code = main(argv)
    except KeyboardInterrupt:
        print("vgt: interrupted", file=sys.stderr)
        code = 130
    except SystemExit as exit:  # argparse (its message already printed) or a command's SystemExit("message")
        if isinstance(exit.code, str):
            print(f"vgt: error: {exit.code}", file=sys.stderr)
        code = exit.code if isinstance(exit.code, int) else 0 if exit.code is None else 2
    except Exception as error:
        if os.environ.get("VGT_DEBUG") or not isinstance(error, _user_errors()):
            raise
        message = " ".join(str(error).split()) or type(error).__name__  # one line, whatever the error held
        print(f"vgt: error: {message}", file=sys.stderr)
        code = 2
    if "vgt.train.process" in sys.modules:  # only a training command can have started a multi-process run
        sys.modules["vgt.train.process"].end_distributed_process(code)
    return code


if __name__ == "__main__":
    sys.exit(run())

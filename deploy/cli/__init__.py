"""The `sidstream` command line: wiring only.

Each command group is one module of this package with a `register(commands, bench)` function that adds its
parsers; those modules import only light things (argparse, pathlib, settings). A parser names its handler as a
"module:function" string, which `main` imports when the command runs, so `sidstream --help` stays fast and a
command never pays for another room's heavy imports.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from deploy.cli import catalogue, demo, monitor, online, serve, stack, streams, trainer, worker


class CommandError(Exception):
    """A user-facing failure: printed as one line, exit code 1 (or `code`)."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


def parse_overrides(pairs: list[str]) -> dict:
    """`--set KEY=VALUE` strings -> dict with int/float/bool values where they parse."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CommandError(f"setting {pair!r} is not KEY=VALUE")
        for cast in (int, float):
            try:
                out[key] = cast(value)
                break
            except ValueError:
                continue
        else:
            out[key] = {"true": True, "false": False}.get(value.lower(), value)
    return out


# command groups in help order; `online` attaches `train online` under the `train` that `trainer` registered
GROUPS = (stack, worker, serve, catalogue, streams, trainer, online, monitor, demo)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sidstream", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    bench_parser = commands.add_parser("bench", help="benchmarks that print and write JSON")
    bench = bench_parser.add_subparsers(dest="bench", metavar="BENCHMARK")
    bench_parser.set_defaults(handler=None, usage_of=bench_parser)
    for group in GROUPS:
        group.register(commands, bench)
    return parser


def load_handler(name: str):
    """The function a "module:function" handler string names.

    The one deliberate lazy import of the CLI: handler modules pull in torch, feast or ray (seconds each), and
    importing feast before ray.init would change prometheus-client's mode for Ray's workers."""
    module, _, function = name.partition(":")
    return getattr(importlib.import_module(module), function)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:  # no command, or a group without its action: show what there is
        getattr(args, "usage_of", parser).print_help()
        return 2
    try:
        return int(load_handler(handler)(args) or 0)
    except CommandError as exc:
        print(f"sidstream: error: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        print("sidstream: interrupted", file=sys.stderr)
        return 130

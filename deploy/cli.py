"""The `sidstream` command line: wiring only.

Every room contributes its sub-commands through a `register(commands, bench)` function in its own
`<room>/cli.py`; this module only builds the parser and dispatches. Each handler imports what it needs
lazily, so `sidstream --help` stays fast and a command never pays for another room's heavy imports.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from deploy.errors import CommandError  # noqa: F401  (rooms raise it via deploy.cli)

# Rooms whose `cli.register` contributes commands, in help order. A room without a cli module yet is skipped.
ROOM_CLIS = ("deploy.stack_cli", "deploy.worker", "deploy.serve", "catalogue.cli", "streams.cli", "features.cli", "trainer.cli",
             "serving.cli", "deploy.online", "deploy.monitor_cli", "deploy.demo")  # deploy.online attaches `train online` under the trainer room's `train`




def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sidstream", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    bench_parser = commands.add_parser("bench", help="benchmarks that print and write JSON")
    bench = bench_parser.add_subparsers(dest="bench", metavar="BENCHMARK")
    bench_parser.set_defaults(func=lambda args: (bench_parser.print_help(), 2)[1])
    for module_name in ROOM_CLIS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:
                continue
            raise
        module.register(commands, bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except CommandError as exc:
        print(f"sidstream: error: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        print("sidstream: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

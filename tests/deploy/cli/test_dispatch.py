"""The command line's shape: every parser names a handler that exists, and building the parser stays light."""
import argparse
import json
import subprocess
import sys
from pathlib import Path

from deploy.cli import build_parser, load_handler, main

ROOT = Path(__file__).resolve().parents[3]


def handlers(parser: argparse.ArgumentParser, path=()) -> dict[tuple, str | None]:
    out = {path: parser.get_default("handler")}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out.update(handlers(sub, path + (name,)))
    return out


def test_every_handler_string_names_a_function():
    found = handlers(build_parser())
    named = {path: h for path, h in found.items() if h is not None}
    assert len(named) >= 25 and ("train", "online") in named and ("bench", "stream") in named
    for path, name in named.items():
        assert callable(load_handler(name)), f"sidstream {' '.join(path)}: {name}"


def test_a_group_without_its_action_prints_its_help(capsys):
    assert main(["catalogue"]) == 2 and "build" in capsys.readouterr().out
    assert main([]) == 2 and "COMMAND" in capsys.readouterr().out


def test_the_parser_imports_no_heavy_room():
    code = ("import sys, json; from deploy.cli import build_parser; build_parser(); "
            "print(json.dumps(sorted(m for m in ('torch', 'feast', 'ray', 'faust', 'kafka', 'matplotlib') "
            "if m in sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


def test_python_dash_m_runs_the_same_command_line():
    out = subprocess.run([sys.executable, "-m", "deploy.cli", "model", "--help"], cwd=ROOT, capture_output=True,
                         text=True)
    assert out.returncode == 0 and "rollback" in out.stdout

"""The house rules that keep imports flowing one way.

The layer contract lives in pyproject.toml ([tool.importlinter]: deploy > serving > trainer > streams >
catalogue | features) and is checked by import-linter; imports sit at the top of modules, and the few that
must wait (an optional heavy dependency) say why on the line itself.
"""
import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ROOMS = ("catalogue", "features", "streams", "trainer", "serving", "deploy")


def test_rooms_import_only_the_rooms_below_them():
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def function_level_imports(path: Path) -> list[tuple[int, str]]:
    """(line, text) of every import inside a function that carries no comment saying why it waits."""
    lines = path.read_text().splitlines()
    found = []
    for node in ast.walk(ast.parse("\n".join(lines))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for inner in ast.walk(node):
                if isinstance(inner, (ast.Import, ast.ImportFrom)):
                    text = lines[inner.lineno - 1]
                    if "#" not in text:
                        found.append((inner.lineno, text.strip()))
    return found


def test_a_function_level_import_says_why_it_waits():
    offenders = [f"{path.relative_to(ROOT)}:{line}: {text}"
                 for room in ROOMS for path in sorted((ROOT / room).rglob("*.py"))
                 for line, text in function_level_imports(path)]
    assert not offenders, ("imports belong at the top of the module; one that must wait (an optional heavy "
                           "dependency) says why in a comment on its line:\n" + "\n".join(offenders))

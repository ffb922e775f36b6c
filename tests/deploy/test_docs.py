"""The docs cannot drift from the code: the settings table, the relative links and the `sidstream` commands they name."""
from __future__ import annotations

import ast
import re
from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict

from deploy import settings_table
from deploy.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
ROOMS = ("catalogue", "features", "streams", "trainer", "serving", "deploy")
DOCS = sorted([ROOT / "README.md", *ROOT.glob("docs/*.md"), *(ROOT / room / "README.md" for room in ROOMS),
               ROOT / "deploy" / "k8s" / "README.md"])


def test_the_settings_table_matches_the_settings_classes():
    text = settings_table.README.read_text()
    assert settings_table.table_in(text) == settings_table.render_table(), (
        f"the settings table in deploy/README.md differs from the settings classes: run "
        f"`{settings_table.REGENERATE}` to regenerate it")


def test_the_table_covers_every_settings_class_of_the_rooms():
    known = {cls.__name__ for cls in settings_table.SETTINGS_CLASSES}
    defined = set()
    for room in ROOMS:
        for path in (ROOT / room).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ClassDef) and any(
                        (getattr(base, "id", None) or getattr(base, "attr", "")) in known | {"BaseSettings"}
                        for base in node.bases):
                    defined.add(node.name)
    assert defined == known, f"add the new settings classes to SETTINGS_CLASSES in deploy/settings_table.py: " \
                             f"{sorted(defined ^ known)}"


def test_a_changed_class_changes_the_table_and_a_rewrite_restores_it(tmp_path):
    class Extra(BaseSettings):
        model_config = SettingsConfigDict(env_prefix="SIDSTREAM_", extra="ignore")
        new_knob: int = 3

    Extra.__module__ = settings_table.StackSettings.__module__  # the table names each class's file
    longer = settings_table.render_table((*settings_table.SETTINGS_CLASSES, Extra))
    assert "| `SIDSTREAM_NEW_KNOB` | `3` | int | `Extra` |" in longer
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{settings_table.START}\nstale\n{settings_table.END}\nrest\n")
    assert settings_table.main(["--check", "--file", str(readme)]) == 1
    assert settings_table.main(["--file", str(readme)]) == 0
    text = readme.read_text()
    assert settings_table.table_in(text) == settings_table.render_table()
    assert text.startswith("intro\n") and text.endswith("\nrest\n")
    assert settings_table.main(["--check", "--file", str(readme)]) == 0


def test_relative_links_in_the_docs_point_at_files_that_exist():
    broken = []
    for doc in DOCS:
        assert doc.is_file(), f"{doc.relative_to(ROOT)} is missing"
        for target, anchor in re.findall(r"\]\(([^)#\s]+)(?:#([^)]*))?\)", doc.read_text()):
            if "://" in target:
                continue
            path = doc.parent / target
            if not path.exists():
                broken.append(f"{doc.relative_to(ROOT)} -> {target}")
            elif anchor and path.suffix == ".md" and anchor not in _anchors(path.read_text()):
                broken.append(f"{doc.relative_to(ROOT)} -> {target}#{anchor}")
    assert not broken, broken


def _anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    headings = re.findall(r"^#+ (.+)$", markdown, flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def test_the_readme_links_every_room_readme_and_the_architecture():
    text = (ROOT / "README.md").read_text()
    for target in [f"{room}/README.md" for room in ROOMS] + ["docs/architecture.md", "deploy/k8s/README.md"]:
        assert f"]({target})" in text, f"README.md does not link {target}"


def test_every_sidstream_command_the_docs_name_exists():
    commands = _choices(build_parser())
    missing = []
    for doc in DOCS:
        for words in re.findall(r"`sidstream ([a-z][a-z-]*)(?: ([a-z][a-z-]*))?", doc.read_text()):
            command, sub = words
            if command not in commands:
                missing.append(f"{doc.relative_to(ROOT)}: sidstream {command}")
                continue
            subcommands = _choices(commands[command])
            if sub and subcommands and sub not in subcommands:
                missing.append(f"{doc.relative_to(ROOT)}: sidstream {command} {sub}")
    assert not missing, missing


def _choices(parser) -> dict:
    for action in parser._actions:
        if action.__class__.__name__ == "_SubParsersAction":
            return dict(action.choices)
    return {}

"""The settings table of deploy/README.md, built from the pydantic-settings classes so that it cannot drift.

    python -m deploy.settings_table            rewrite the table between the markers in deploy/README.md
    python -m deploy.settings_table --check    exit 1 (and say so) when the file's table differs

`tests/deploy/test_docs.py` runs the check. One row per environment variable; a variable that several classes
read (SIDSTREAM_TORCH_THREADS, SIDSTREAM_CATALOGUE_DIR, ...) shows each class's default and type when they differ.
"""
from __future__ import annotations

import argparse
import os
import sys
import types
import typing
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel
from pydantic_settings import BaseSettings

from catalogue.settings import CatalogueSettings
from deploy.settings import MonitorSettings, StackSettings
from features.settings import FeatureSettings
from serving.settings import ServingSettings
from streams.settings import StreamSettings, WorkerSettings
from trainer.online_settings import OnlineSettings
from trainer.settings import TrainerSettings

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "deploy" / "README.md"
START, END = "<!-- settings:start -->", "<!-- settings:end -->"
REGENERATE = "python -m deploy.settings_table"

# Every settings class of the rooms, bottom room first (tests/deploy/test_docs.py checks none is missing).
SETTINGS_CLASSES: tuple[type[BaseSettings], ...] = (
    CatalogueSettings, FeatureSettings, StreamSettings, WorkerSettings, TrainerSettings, OnlineSettings,
    ServingSettings, StackSettings, MonitorSettings)

# deploy/settings.py takes its cache and state folders from these variables when set, at import time;
# the table shows the fallbacks, so it reads the same on every machine.
XDG_FALLBACKS = {"XDG_CACHE_HOME": "~/.cache", "XDG_STATE_HOME": "~/.local/state"}


@dataclass(frozen=True)
class Setting:
    variable: str
    owner: str  # the class that reads it
    type: str
    default: str


def render_type(annotation, metadata=()) -> str:
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        text = " \\| ".join(f"`{value}`" for value in typing.get_args(annotation))
    elif origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        text = " \\| ".join(render_type(a) for a in args)
        if len(args) < len(typing.get_args(annotation)):
            text += " or none"
    elif annotation is Path:
        text = "path"
    else:
        text = getattr(annotation, "__name__", str(annotation))
    bounds = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
    for item in metadata:
        for name, sign in bounds.items():
            if getattr(item, name, None) is not None:
                text += f", {sign} {getattr(item, name)}"
    return text


def render_default(value) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, Path):
        return f"`{render_path(value)}`"
    if value == "":
        return "empty"
    return f"`{value}`"


def render_path(path: Path) -> str:
    if not path.is_absolute():
        return str(path)
    for variable, fallback in XDG_FALLBACKS.items():
        base = os.environ.get(variable)
        if base and path.is_relative_to(base):
            return str(Path(fallback) / path.relative_to(base))
    if path.is_relative_to(ROOT.parent):  # beside the checkout, e.g. ../shared/data
        return str(Path("..") / path.relative_to(ROOT.parent))
    if path.is_relative_to(Path.home()):
        return str(Path("~") / path.relative_to(Path.home()))
    return str(path)


def settings_of(cls: type[BaseSettings]) -> list[Setting]:
    prefix = cls.model_config.get("env_prefix", "")
    delimiter = cls.model_config.get("env_nested_delimiter")
    rows = []
    for name, field in cls.model_fields.items():
        annotation = field.annotation
        if delimiter and isinstance(annotation, type) and issubclass(annotation, BaseModel):
            for sub, sub_field in annotation.model_fields.items():
                rows.append(Setting(f"{prefix}{name}{delimiter}{sub}".upper(), cls.__name__,
                                    render_type(sub_field.annotation, sub_field.metadata),
                                    render_default(getattr(field.default, sub))))
        else:
            rows.append(Setting(f"{prefix}{name}".upper(), cls.__name__, render_type(annotation, field.metadata),
                                render_default(field.default)))
    return rows


def per_owner(settings: list[Setting], attribute: str) -> str:
    """One value when every class agrees, else each value with the classes that have it."""
    values: dict[str, list[str]] = {}
    for s in settings:
        values.setdefault(getattr(s, attribute), []).append(s.owner)
    if len(values) == 1:
        return next(iter(values))
    return "; ".join(f"{value} ({', '.join(owners)})" for value, owners in values.items())


def render_table(classes=SETTINGS_CLASSES) -> str:
    by_variable: dict[str, list[Setting]] = {}
    for cls in classes:
        for setting in settings_of(cls):
            by_variable.setdefault(setting.variable, []).append(setting)
    lines = [f"<!-- generated by `{REGENERATE}` from the settings classes; do not edit by hand -->", "",
             "| class | file | env prefix | nested delimiter |", "| --- | --- | --- | --- |"]
    for cls in classes:
        config = cls.model_config
        file = Path(sys.modules[cls.__module__].__file__).resolve().relative_to(ROOT)
        delimiter = config.get("env_nested_delimiter")
        lines.append(f"| `{cls.__name__}` | `{file}` | `{config.get('env_prefix', '')}` | "
                     f"{f'`{delimiter}`' if delimiter else '-'} |")
    lines += ["", "| variable | default | type | read by |", "| --- | --- | --- | --- |"]
    for variable, settings in by_variable.items():
        owners = ", ".join(f"`{s.owner}`" for s in settings)
        lines.append(f"| `{variable}` | {per_owner(settings, 'default')} | {per_owner(settings, 'type')} | {owners} |")
    return "\n".join(lines)


def table_in(text: str) -> str:
    """The text between the markers (stripped); a missing marker is an error that names the fix."""
    if START not in text or END not in text:
        raise ValueError(f"{README.relative_to(ROOT)} has no {START} ... {END} markers")
    return text.split(START, 1)[1].split(END, 1)[0].strip()


def with_table(text: str, table: str) -> str:
    before, rest = text.split(START, 1)
    after = rest.split(END, 1)[1]
    return f"{before}{START}\n{table}\n{END}{after}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=REGENERATE, description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare only; exit 1 when the table differs")
    parser.add_argument("--file", type=Path, default=README)
    args = parser.parse_args(argv)
    text = args.file.read_text()
    table = render_table()
    if table_in(text) == table:
        print(f"{args.file}: settings table up to date")
        return 0
    if args.check:
        print(f"{args.file}: settings table differs from the settings classes; run `{REGENERATE}`")
        return 1
    args.file.write_text(with_table(text, table))
    print(f"{args.file}: settings table rewritten")
    return 0


if __name__ == "__main__":
    sys.exit(main())

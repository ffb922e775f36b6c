"""KEY=VALUE settings applied over a config's defaults: unknown keys and mistyped values fail at once."""
from __future__ import annotations


def refuse_unknown(defaults: dict, overrides: dict, what: str) -> None:
    unknown = set(overrides) - set(defaults)
    if unknown:
        raise ValueError(f"unknown {what} settings {sorted(unknown)}; known: {sorted(defaults)}")


def apply_overrides(defaults: dict, overrides: dict, what: str) -> dict:
    """`defaults` updated with the non-None `overrides`, each of its default's type (an int is a float here,
    a bool is not an int), so a mistyped value fails here rather than minutes into a run."""
    refuse_unknown(defaults, overrides, what)
    given = {k: v for k, v in overrides.items() if v is not None}
    for key, value in given.items():
        default = defaults[key]
        if isinstance(default, bool) or isinstance(value, bool):
            ok = isinstance(value, bool) and isinstance(default, bool)
        elif isinstance(default, float):
            ok = isinstance(value, (int, float))
        else:
            ok = isinstance(value, type(default))
        if not ok:
            raise ValueError(f"{what} setting {key} must be {type(default).__name__}, got {value!r}")
    return {**defaults, **given}

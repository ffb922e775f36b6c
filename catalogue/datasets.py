"""Readers for the evaluation datasets (item_meta.jsonl, sequences.txt). Read-only; nothing is copied."""
from __future__ import annotations

import json
from pathlib import Path


class DatasetError(ValueError):
    """A dataset file that is missing or malformed."""


def load_items_jsonl(path: str | Path) -> list[dict]:
    """One JSON object per line with at least `item_id`; ids become strings. A repeated id is an update:
    the later line replaces the earlier one in place (the item keeps its first position)."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"items file not found: {path}")
    items: dict[str, dict] = {}
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DatasetError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from None
            if not isinstance(row, dict) or row.get("item_id") in (None, ""):
                raise DatasetError(f"{path}:{lineno}: each line needs a non-empty item_id")
            row["item_id"] = str(row["item_id"])
            items[row["item_id"]] = row
    return list(items.values())


def load_item_meta(dataset_dir: str | Path) -> list[dict]:
    """item_meta.jsonl of a dataset directory; [] when the dataset has no item text (e.g. Sports)."""
    path = Path(dataset_dir) / "item_meta.jsonl"
    if not Path(dataset_dir).is_dir():
        raise DatasetError(f"dataset directory not found: {dataset_dir}")
    return load_items_jsonl(path) if path.is_file() else []


def load_sequences(dataset_dir: str | Path) -> dict[str, list[str]]:
    """sequences.txt: `user item item ...` per line, chronological -> {user: [item, ...]} (strings)."""
    path = Path(dataset_dir) / "sequences.txt"
    if not path.is_file():
        raise DatasetError(f"sequences file not found: {path}")
    out: dict[str, list[str]] = {}
    with path.open() as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 2:
                out[parts[0]] = parts[1:]
    return out


def sequence_items(sequences: dict[str, list[str]]) -> list[str]:
    """Distinct items in order of first appearance, numeric ids sorted numerically."""
    seen = {item for seq in sequences.values() for item in seq}
    return sorted(seen, key=lambda s: (0, int(s)) if s.isdigit() else (1, s))

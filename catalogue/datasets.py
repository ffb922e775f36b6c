"""Readers for the evaluation datasets. Read-only; nothing is copied.

Two layouts: Amazon 5-core (`sequences.txt` + optional `item_meta.jsonl`; every event a purchase) and
MovieLens-100K (`u.data` ratings with timestamps, `u.item`, `u.user`; ratings become action tokens through
a configurable mapping). `load_sequences`, `load_events`, `load_item_meta` and `catalogue_actions` read either.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from catalogue.vocab import ACTIONS


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
    """item_meta.jsonl of a dataset directory (MovieLens: u.item as title, year and genres); [] when the
    dataset has no item text (e.g. Sports)."""
    path = Path(dataset_dir) / "item_meta.jsonl"
    if not Path(dataset_dir).is_dir():
        raise DatasetError(f"dataset directory not found: {dataset_dir}")
    if is_movielens(dataset_dir):
        return load_movielens(dataset_dir).items
    return load_items_jsonl(path) if path.is_file() else []


AMAZON_ACTION = "purchase"  # every Amazon 5-core event is a purchase (a review of a bought item)


def load_events(dataset_dir: str | Path) -> dict[str, list[tuple[str, str]]]:
    """{user: [(item, action), ...]} in time order, for either layout (Amazon: every action a purchase)."""
    if is_movielens(dataset_dir):
        return load_movielens(dataset_dir).events()
    return {u: [(i, AMAZON_ACTION) for i in items] for u, items in load_sequences(dataset_dir).items()}


def catalogue_actions(dataset_dir: str | Path) -> tuple[str, ...]:
    """The actions a catalogue built for this dataset declares in its vocabulary. MovieLens: its rating
    mapping's actions; Amazon: the default list (its "purchase", and the live actions a stream may carry)."""
    if is_movielens(dataset_dir):
        return load_movielens(dataset_dir).actions
    return ACTIONS


def load_sequences(dataset_dir: str | Path) -> dict[str, list[str]]:
    """sequences.txt: `user item item ...` per line, chronological -> {user: [item, ...]} (strings).
    MovieLens: each user's rated items in (timestamp, item) order."""
    if is_movielens(dataset_dir):
        return {u: [i for i, _ in events] for u, events in load_movielens(dataset_dir).events().items()}
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


# ----- MovieLens-100K (GroupLens `README`, "DETAILED DESCRIPTIONS")
MOVIELENS_GENRES = ("unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
                    "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller",
                    "War", "Western")
# The default rating -> action token mapping (configurable: see parse_rating_actions)
RATING_ACTIONS: dict[int, str] = {1: "dislike", 2: "dislike", 3: "neutral", 4: "like", 5: "love"}


@dataclass(frozen=True)
class Rating:
    user: str
    item: str
    rating: int
    timestamp: int
    action: str


@dataclass(frozen=True)
class DatasetProblem:
    """A line the adapter could not use: counted and reported, never silently dropped or guessed."""
    file: str
    line: int
    reason: str
    text: str = ""  # the line as read, so a replay can dead-letter it whole

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.reason}"


@dataclass
class MovieLens:
    ratings: dict[str, list[Rating]]  # user -> ratings in (timestamp, item) order
    items: list[dict]  # item_id, title, year, categories (genres)
    users: dict[str, dict]  # user -> age, gender, occupation, zip
    actions: tuple[str, ...]  # distinct actions of the mapping, in rating order
    rating_actions: dict[int, str]
    problems: list[DatasetProblem] = field(default_factory=list)

    def events(self) -> dict[str, list[tuple[str, str]]]:
        return {u: [(r.item, r.action) for r in rs] for u, rs in self.ratings.items()}

    @property
    def num_ratings(self) -> int:
        return sum(len(rs) for rs in self.ratings.values())


def is_movielens(dataset_dir: str | Path) -> bool:
    return (Path(dataset_dir) / "u.data").is_file()


def parse_rating_actions(text: str | Mapping[int, str] | None) -> dict[int, str]:
    """'1=dislike,2=dislike,3=neutral,4=like,5=love' (or a mapping) -> {rating: action}; None: the default."""
    if text is None:
        return dict(RATING_ACTIONS)
    if isinstance(text, Mapping):
        pairs = [(str(k), str(v)) for k, v in text.items()]
    else:
        pairs = [part.strip().partition("=")[::2] for part in text.split(",") if part.strip()]
    out: dict[int, str] = {}
    for rating, action in pairs:
        if not re.fullmatch(r"[0-9]+", rating.strip()) or not re.fullmatch(r"[a-z][a-z0-9_]*", action.strip()):
            raise DatasetError(f"rating mapping entry {rating}={action} must be RATING=action_name, "
                               f"e.g. 1=dislike,2=dislike,3=neutral,4=like,5=love")
        out[int(rating)] = action.strip()
    if not out:
        raise DatasetError("the rating mapping is empty")
    return out


def _year(release: str, title: str) -> int | None:
    for text in (release, title):
        match = re.search(r"(1[89][0-9]{2}|20[0-9]{2})", text)
        if match:
            return int(match[1])
    return None


def load_movielens(dataset_dir: str | Path, rating_actions: str | Mapping[int, str] | None = None) -> MovieLens:
    """u.data + u.item + u.user -> MovieLens. A line with missing fields, an id that does not parse, a rating
    outside the mapping or an unknown item is recorded in `problems` with its line number and skipped."""
    root = Path(dataset_dir)
    mapping = parse_rating_actions(rating_actions)
    key = (root.resolve(), tuple(sorted(mapping.items())))
    cached = _MOVIELENS_CACHE.get(key)
    if cached is not None:
        return cached
    for name in ("u.data", "u.item"):
        if not (root / name).is_file():
            raise DatasetError(f"MovieLens file not found: {root / name}")
    problems: list[DatasetProblem] = []
    items: list[dict] = []
    with (root / "u.item").open(encoding="latin-1") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            parts = line.rstrip("\n").split("|")
            if len(parts) != 5 + len(MOVIELENS_GENRES) or not parts[0].isdigit():
                problems.append(DatasetProblem("u.item", lineno, f"expected movie id|title|release|video|url|"
                                               f"{len(MOVIELENS_GENRES)} genre flags, got {len(parts)} fields",
                                               line.rstrip("\n")))
                continue
            flags = parts[5:]
            genres = [g for g, f in zip(MOVIELENS_GENRES, flags) if f.strip() == "1" and g != "unknown"]
            title = parts[1].strip()
            item = {"item_id": parts[0], "title": "" if title == "unknown" else title, "categories": genres,
                    "year": _year(parts[2], title)}
            items.append(item)
    known_items = {i["item_id"] for i in items}
    users: dict[str, dict] = {}
    if (root / "u.user").is_file():
        with (root / "u.user").open(encoding="latin-1") as fh:
            for lineno, line in enumerate(fh, 1):
                parts = line.strip().split("|")
                if len(parts) != 5 or not parts[0].isdigit() or not parts[1].isdigit():
                    problems.append(DatasetProblem("u.user", lineno, "expected user id|age|gender|occupation|zip",
                                                   line.rstrip("\n")))
                    continue
                users[parts[0]] = {"age": int(parts[1]), "gender": parts[2], "occupation": parts[3],
                                   "zip": parts[4]}
    ratings: dict[str, list[Rating]] = {}
    with (root / "u.data").open(encoding="latin-1") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            parts = line.split()
            reason = None
            if len(parts) != 4:
                reason = f"expected user item rating timestamp, got {len(parts)} fields"
            elif not parts[0].isdigit():
                reason = f"user id {parts[0]!r} does not parse"
            elif not parts[1].isdigit():
                reason = f"item id {parts[1]!r} does not parse"
            elif not re.fullmatch(r"-?[0-9]+", parts[2]) or int(parts[2]) not in mapping:
                reason = f"rating {parts[2]!r} is outside the mapping {sorted(mapping)}"
            elif not parts[3].isdigit():
                reason = f"timestamp {parts[3]!r} does not parse"
            elif parts[1] not in known_items:
                reason = f"item {parts[1]} is not in u.item"
            if reason:
                problems.append(DatasetProblem("u.data", lineno, reason, line.rstrip("\n")))
                continue
            rating = int(parts[2])
            ratings.setdefault(parts[0], []).append(Rating(parts[0], parts[1], rating, int(parts[3]),
                                                           mapping[rating]))
    for user in ratings:
        ratings[user].sort(key=lambda r: (r.timestamp, int(r.item)))
    ordered = dict(sorted(ratings.items(), key=lambda kv: int(kv[0])))
    actions = tuple(dict.fromkeys(mapping[r] for r in sorted(mapping)))
    out = MovieLens(ordered, items, users, actions, mapping, problems)
    _MOVIELENS_CACHE.clear()  # one dataset at a time: it is small, and re-reading it costs ~0.5 s
    _MOVIELENS_CACHE[key] = out
    return out


_MOVIELENS_CACHE: dict = {}

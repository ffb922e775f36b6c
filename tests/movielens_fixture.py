"""A small MovieLens-100K-format folder for tests: ratings drawn from user bias + item quality + taste, so the
graded signal is learnable; optionally with unreadable lines (each kind the adapter must report)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from catalogue.datasets import MOVIELENS_GENRES

BAD_DATA_LINES = [
    "7\t3\t9\t880000000",  # a rating outside the mapping
    "x\t3\t4\t880000000",  # a user id that does not parse
    "7\t3\t4",  # a missing field
    "7\t999\t4\t880000000",  # an item that is not in u.item
]


def write_movielens(folder: Path, users: int = 40, items: int = 30, per_user: int = 25, seed: int = 0,
                    bad_lines: bool = False) -> Path:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    genres = len(MOVIELENS_GENRES)
    item_genre = rng.integers(1, genres, size=items)
    with (folder / "u.item").open("w", encoding="latin-1") as fh:
        for i in range(1, items + 1):
            flags = ["0"] * genres
            flags[item_genre[i - 1]] = "1"
            fh.write(f"{i}|Film {i} ({1980 + i % 20})|01-Jan-{1980 + i % 20}||http://example.invalid/{i}|"
                     + "|".join(flags) + "\n")
    with (folder / "u.user").open("w", encoding="latin-1") as fh:
        for u in range(1, users + 1):
            fh.write(f"{u}|{20 + u % 40}|{'MF'[u % 2]}|{['student', 'writer', 'other'][u % 3]}|0000{u % 10}\n")
    quality = rng.normal(0, 1.0, size=items)
    bias = rng.normal(0, 0.7, size=users)
    lines = []
    for u in range(users):
        chosen = rng.choice(items, size=min(per_user, items), replace=False)
        t0 = 880_000_000 + int(rng.integers(0, 1_000_000))
        for k, i in enumerate(chosen):
            score = 3 + quality[i] + bias[u] + rng.normal(0, 0.5)
            rating = int(np.clip(np.rint(score), 1, 5))
            lines.append(f"{u + 1}\t{i + 1}\t{rating}\t{t0 + 60 * k}")
    order = rng.permutation(len(lines))  # u.data is not ordered
    body = [lines[k] for k in order]
    if bad_lines:
        body = body[:3] + BAD_DATA_LINES + body[3:]
    (folder / "u.data").write_text("\n".join(body) + "\n")
    return folder

"""Event sources a user replays into Kafka (pure core: plain iterators, no Kafka)."""
from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from streams.schemas import InteractionEvent, ItemEvent

AMAZON_ACTION = "purchase"  # every Amazon 5-core event is a review, i.e. a positive purchase


def amazon_events(sequences: dict[str, list[str]], limit: int | None = None, start_ts: float | None = None,
                  users: Iterable[str] | None = None) -> Iterator[InteractionEvent]:
    """Interleave users round-robin by position (the data has no usable timestamps) so each user's events keep
    their order while the stream mixes users, as a live stream would. Event ids are `<user>:<position>`,
    so a replay of the same data is recognised by the workers' de-duplication."""
    start = time.time() if start_ts is None else start_ts
    chosen = list(users) if users is not None else list(sequences)
    emitted, position = 0, 0
    longest = max((len(sequences[u]) for u in chosen), default=0)
    while position < longest:
        for user in chosen:
            seq = sequences[user]
            if position < len(seq):
                yield InteractionEvent(event_id=f"{user}:{position}", user_id=user, item_id=seq[position],
                                       action=AMAZON_ACTION, ts=start + emitted * 1e-3)
                emitted += 1
                if limit is not None and emitted >= limit:
                    return
        position += 1


def jsonl_records(path: Path) -> Iterator[dict]:
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}:{line_no}: not JSON: {exc}") from None


def item_events(items: Iterable[dict], ts: float | None = None) -> Iterator[ItemEvent]:
    """Catalogue item dicts (as in item_meta.jsonl) as `items` topic events."""
    stamp = time.time() if ts is None else ts
    for item in items:
        cats = item.get("categories") or []
        yield ItemEvent(item_id=str(item["item_id"]), title=item.get("title") or "", brand=item.get("brand") or "",
                        categories=[str(c) for c in cats] if isinstance(cats, list) else [str(cats)],
                        price=item.get("price"), text=item.get("text") or "", ts=stamp)


class RateLimiter:
    """Paces a loop to `rate` iterations per second (0 or None: unpaced), correcting for drift."""

    def __init__(self, rate: float | None, clock=time.monotonic, sleep=time.sleep):
        self.rate = rate or 0
        self.clock, self.sleep = clock, sleep
        self.start = clock()
        self.count = 0

    def wait(self) -> None:
        self.count += 1
        if self.rate <= 0:
            return
        due = self.start + self.count / self.rate
        delay = due - self.clock()
        if delay > 0:
            self.sleep(delay)

"""Event sources a user replays into Kafka (pure core: plain iterators, no Kafka)."""
from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from catalogue.datasets import AMAZON_ACTION, Rating
from streams.schemas import InteractionEvent, ItemEvent


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


def rated_events(ratings: Iterable[Rating], speedup: float = 1.0, start_ts: float | None = None,
                 limit: int | None = None) -> Iterator[InteractionEvent]:
    """Graded feedback (MovieLens) as interactions with their real actions, all users merged in (timestamp,
    user, item) order. Event time starts at `start_ts` (now) and keeps the real gaps divided by `speedup`; ids
    are `ml:<user>:<item>` (one rating per pair), so a replay is recognised by the workers' de-duplication."""
    if not speedup > 0:  # checked here, not when the first event is drawn
        raise ValueError(f"speedup must be > 0, got {speedup}")
    ordered = sorted(ratings, key=lambda r: (r.timestamp, int(r.user) if r.user.isdigit() else 0, r.user, r.item))
    return _rated(ordered, speedup, time.time() if start_ts is None else start_ts, limit)


def _rated(ordered: list[Rating], speedup: float, start: float, limit: int | None) -> Iterator[InteractionEvent]:
    if not ordered:
        return
    first = ordered[0].timestamp
    for n, r in enumerate(ordered):
        if limit is not None and n >= limit:
            return
        yield InteractionEvent(event_id=f"ml:{r.user}:{r.item}", user_id=r.user, item_id=r.item, action=r.action,
                               ts=start + (r.timestamp - first) / speedup)


def at_event_time(events: Iterable[InteractionEvent], clock=time.time, sleep=time.sleep) -> Iterator[InteractionEvent]:
    """Each event when the clock reaches its event time (a replay at the speed its timestamps set)."""
    for event in events:
        delay = event.ts - clock()
        if delay > 0:
            sleep(delay)
        yield event


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

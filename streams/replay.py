"""Event sources a user replays into Kafka (pure core: plain iterators, no Kafka)."""
from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from catalogue.datasets import AMAZON_ACTION, Rating
from streams.schemas import InteractionEvent, ItemEvent


def amazon_event_id(user: str, position: int) -> str:
    """The id of a user's event at a position of an Amazon sequence (replays and backfills agree on it)."""
    return f"{user}:{position}"


def rating_event_id(user: str, item: str) -> str:
    """The id of a MovieLens rating (one per user and item; replays and backfills agree on it)."""
    return f"ml:{user}:{item}"


def past_length(events: int, share: float) -> int:
    """How many of a user's first events are the logged past when the data has no times (Amazon): the cut is by
    position, `share` of each user's events (rounded)."""
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"the past share must be within [0, 1], got {share}")
    return int(round(share * events))


def amazon_events(sequences: dict[str, list[str]], limit: int | None = None, start_ts: float | None = None,
                  users: Iterable[str] | None = None, after_share: float | None = None) -> Iterator[InteractionEvent]:
    """Interleave users round-robin by position (the data has no usable timestamps) so each user's events keep
    their order while the stream mixes users, as a live stream would. Event ids are `<user>:<position>`,
    so a replay of the same data is recognised by the workers' de-duplication. `after_share`: only the events
    after a backfill's cut (see `past_length`), the rest of what `logged_past(..., share=)` left out."""
    start = time.time() if start_ts is None else start_ts
    chosen = list(users) if users is not None else list(sequences)
    first = {u: past_length(len(sequences[u]), after_share) if after_share is not None else 0 for u in chosen}
    emitted, position = 0, 0
    longest = max((len(sequences[u]) for u in chosen), default=0)
    while position < longest:
        for user in chosen:
            seq = sequences[user]
            if first[user] <= position < len(seq):
                yield InteractionEvent(event_id=amazon_event_id(user, position), user_id=user, item_id=seq[position],
                                       action=AMAZON_ACTION, ts=start + emitted * 1e-3)
                emitted += 1
                if limit is not None and emitted >= limit:
                    return
        position += 1


def rated_events(ratings: Iterable[Rating], speedup: float = 1.0, start_ts: float | None = None,
                 limit: int | None = None, after: float | None = None) -> Iterator[InteractionEvent]:
    """Graded feedback (MovieLens) as interactions with their real actions, all users merged in (timestamp,
    user, item) order. Event time starts at `start_ts` (now) and keeps the real gaps divided by `speedup`; ids
    are `ml:<user>:<item>` (one rating per pair), so a replay is recognised by the workers' de-duplication.
    `after`: only ratings later than a backfill's cut (`logged_past(ratings, until=after)` holds the others)."""
    if not speedup > 0:  # checked here, not when the first event is drawn
        raise ValueError(f"speedup must be > 0, got {speedup}")
    ordered = sorted((r for r in ratings if after is None or r.timestamp > after),
                     key=lambda r: (r.timestamp, int(r.user) if r.user.isdigit() else 0, r.user, r.item))
    return _rated(ordered, speedup, time.time() if start_ts is None else start_ts, limit)


def _rated(ordered: list[Rating], speedup: float, start: float, limit: int | None) -> Iterator[InteractionEvent]:
    if not ordered:
        return
    first = ordered[0].timestamp
    for n, r in enumerate(ordered):
        if limit is not None and n >= limit:
            return
        yield InteractionEvent(event_id=rating_event_id(r.user, r.item), user_id=r.user, item_id=r.item, action=r.action,
                               ts=start + (r.timestamp - first) / speedup)


# (event_id, user_id, item_id, action, event_ms): one logged event, as streams.sequencer.build_sequences takes it
PastEvent = tuple[str, str, str, str, int]


def logged_past(sequences: dict[str, list[str]] | None = None, ratings: Iterable[Rating] | None = None,
                until: float | None = None, share: float | None = None) -> list[PastEvent]:
    """The events a backfill writes, in each user's order, with the ids a replay gives them.

    Ratings (MovieLens) are cut by event time: the past is every rating with `timestamp <= until` (all of them
    without `until`), and a replay with `rated_events(after=until)` sends exactly the others. Sequences (Amazon,
    no times) are cut by position: each user's first `past_length(n, share)` events (all without `share`), and
    `amazon_events(after_share=share)` sends exactly the others. So the event at the cut is on one side only.
    Amazon events have no time: their event_ms is 0."""
    if (sequences is None) == (ratings is None):
        raise ValueError("give either sequences (Amazon) or ratings (MovieLens)")
    if ratings is not None:
        if share is not None:
            raise ValueError("ratings have times: cut them with until, not share")
        chosen = [r for r in ratings if until is None or r.timestamp <= until]
        chosen.sort(key=lambda r: (r.timestamp, r.item))
        return [(rating_event_id(r.user, r.item), r.user, r.item, r.action, int(r.timestamp * 1000)) for r in chosen]
    if until is not None:
        raise ValueError("Amazon sequences have no times: cut them with share, not until")
    out: list[PastEvent] = []
    for user, items in sequences.items():
        keep = len(items) if share is None else past_length(len(items), share)
        out.extend((amazon_event_id(user, k), user, item, AMAZON_ACTION, 0) for k, item in enumerate(items[:keep]))
    return out


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

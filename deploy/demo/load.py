"""The demo's load: the world's stream replayed into Kafka at a fixed rate, and a trickle of recommendation
requests for the users just streamed."""
from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

import numpy as np

from deploy.demo.worlds import World
from streams.producer import EventProducer
from streams.schemas import InteractionEvent, ItemEvent

ITEM_LEAD_S = 8.0  # a new item is announced this long before its first interaction (MiniLM + trie + replicas)


@dataclass(frozen=True)
class TasteShift:
    """From `at_s` seconds into the replay on, every event's item is drawn from `items` (the items of a few
    level-1 codes): the users' tastes move to one corner of the catalogue, a real shift for the monitor to see."""
    at_s: float
    codes: tuple[int, ...]
    items: tuple[str, ...]


def taste_shift(at_s: float, first_codes: dict[str, int], n_codes: int = 2, min_items: int = 20,
                seed: int = 0) -> TasteShift:
    """A shift to `n_codes` level-1 codes drawn at random among those holding at least `min_items` items
    (`first_codes`: item -> its level-1 code)."""
    by_code: dict[int, list[str]] = {}
    for item, code in first_codes.items():
        by_code.setdefault(int(code), []).append(item)
    eligible = sorted(c for c, items in by_code.items() if len(items) >= min_items) or sorted(by_code)
    if not eligible:
        raise ValueError("a taste shift needs a catalogue with items")
    rng = np.random.default_rng(seed)
    codes = tuple(sorted(int(c) for c in rng.choice(eligible, size=min(n_codes, len(eligible)), replace=False)))
    return TasteShift(float(at_s), codes, tuple(sorted(i for c in codes for i in by_code[c])))


class Replayer(threading.Thread):
    """Sends the world's stream to Kafka at a fixed rate; each held-back item goes to `items` ITEM_LEAD_S
    before its first interaction. With a `shift`, events after `shift.at_s` name the shift's items instead."""

    def __init__(self, world: World, bootstrap: str, topics, rate: float, shift: TasteShift | None = None):
        super().__init__(name="demo-replayer", daemon=True)
        self.world, self.bootstrap, self.topics, self.rate = world, bootstrap, topics, rate
        self.shift = shift
        self.shifted_at: float | None = None  # wall time of the first shifted event
        self.stop_event = threading.Event()
        self.sent = 0
        self.items_sent = 0
        self.error: str | None = None

    def run(self) -> None:
        lead = int(ITEM_LEAD_S * self.rate)
        announce_at: dict[int, list[str]] = {}
        seen = set()
        for n, (_, item, _) in enumerate(self.world.stream):
            if item in self.world.held and item not in seen:
                seen.add(item)
                announce_at.setdefault(max(0, n - lead), []).append(item)
        producer = None
        rng = np.random.default_rng(0)
        start, t0 = time.monotonic(), time.time()
        try:
            producer = EventProducer(self.bootstrap)
            for n, (user, item, action) in enumerate(self.world.stream):
                if self.stop_event.is_set():
                    break
                for new_item in announce_at.get(n, ()):
                    record = self.world.held[new_item]
                    producer.send(self.topics.items, ItemEvent(
                        item_id=new_item, title=str(record.get("title") or ""), brand=str(record.get("brand") or ""),
                        categories=[str(c) for c in record.get("categories") or []],
                        price=record.get("price") if isinstance(record.get("price"), (int, float)) else None,
                        ts=time.time()))
                    self.items_sent += 1
                if self.shift is not None and time.monotonic() - start >= self.shift.at_s:
                    if self.shifted_at is None:
                        self.shifted_at = time.time()
                    item = self.shift.items[int(rng.integers(len(self.shift.items)))]
                producer.send(self.topics.interactions, InteractionEvent(
                    event_id=f"demo:{user}:{n}", user_id=user, item_id=item, action=action, ts=t0 + n / self.rate))
                self.sent += 1
                delay = start + (n + 1) / self.rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
        except Exception as exc:  # shown in the live view; the rest of the demo keeps running
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            if producer is not None:
                producer.close()


class QueryLoad(threading.Thread):
    """A trickle of real users asking for recommendations: users the replay just streamed, so every answer reads a
    sequence the worker wrote seconds ago. Records latency, the model version served and the sequence's age."""

    def __init__(self, url: str, replayer: Replayer, rate: float = 2.0):
        super().__init__(name="demo-queries", daemon=True)
        self.url, self.replayer, self.rate = url, replayer, rate
        self.stop_event = threading.Event()
        self.latencies_ms: list[float] = []
        self.sequence_age_ms: list[float] = []
        self.statuses: dict[str, int] = {}
        self.version: str | None = None

    def run(self) -> None:
        stream = self.replayer.world.stream
        while not self.stop_event.wait(1.0 / self.rate):
            sent = self.replayer.sent
            if not sent:
                continue
            user = stream[sent - 1][0]
            body = json.dumps({"user_id": user, "k": 10}).encode()
            request = urllib.request.Request(self.url, data=body, headers={"content-type": "application/json"})
            started = time.perf_counter()
            try:
                with urllib.request.urlopen(request, timeout=10) as response:
                    answer = json.loads(response.read())
                    status = str(response.status)
                self.version = answer.get("model_version")
                if answer.get("sequence_age_ms") is not None:
                    self.sequence_age_ms.append(float(answer["sequence_age_ms"]))
            except urllib.error.HTTPError as exc:
                status = str(exc.code)
            except Exception as exc:  # timeouts, refused connections: counted, shown
                status = type(exc).__name__
            self.latencies_ms.append((time.perf_counter() - started) * 1000)
            self.statuses[status] = self.statuses.get(status, 0) + 1

    def summary(self) -> str:
        if not self.latencies_ms:
            return "queries: none yet"
        lat, age = np.asarray(self.latencies_ms[-200:]), np.asarray(self.sequence_age_ms[-200:] or [np.nan])
        return (f"queries: {dict(sorted(self.statuses.items()))}; latency p50 {np.median(lat):.0f} ms p99 "
                f"{np.percentile(lat, 99):.0f} ms; sequence age p50 {np.nanmedian(age) / 1000:.1f} s; "
                f"answered by {self.version or '-'}")

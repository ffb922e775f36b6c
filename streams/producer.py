"""Sending events to sidstream's topics (adapter: kafka-python), with progress output."""
from __future__ import annotations

import sys
import time
from collections.abc import Iterable

from pydantic import BaseModel

from streams.replay import RateLimiter
from streams.schemas import InteractionEvent, ItemEvent, now_ms
from kafka import KafkaProducer


class EventProducer:
    def __init__(self, bootstrap: str, **config):

        self.producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks="all",
                                      enable_idempotence=True, **config)

    def send(self, topic: str, event: BaseModel | bytes, key: str | None = None):
        """Send one event; `produced_ms` is stamped now so freshness is measured from the producer."""
        if isinstance(event, (InteractionEvent, ItemEvent)):
            key = key or (event.user_id if isinstance(event, InteractionEvent) else event.item_id)
            event = event.model_copy(update={"produced_ms": now_ms()})
        value = event if isinstance(event, bytes) else event.model_dump_json(exclude_none=True).encode()
        return self.producer.send(topic, key=key.encode() if key else None, value=value)

    def send_all(self, topic: str, events: Iterable[BaseModel | bytes], rate: float | None = None,
                 progress_every_s: float = 2.0, out=sys.stderr) -> int:
        limiter, sent = RateLimiter(rate), 0
        started = last = time.monotonic()
        for event in events:
            limiter.wait()
            self.send(topic, event)
            sent += 1
            now = time.monotonic()
            if progress_every_s and now - last >= progress_every_s:
                print(f"produce: {sent} events to {topic} ({sent / (now - started):.0f} ev/s)", file=out, flush=True)
                last = now
        self.producer.flush()
        elapsed = time.monotonic() - started
        if progress_every_s:
            print(f"produce: done, {sent} events to {topic} in {elapsed:.1f} s "
                  f"({sent / max(elapsed, 1e-9):.0f} ev/s)", file=out, flush=True)
        return sent

    def close(self) -> None:
        self.producer.flush()
        self.producer.close()

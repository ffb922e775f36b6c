"""A round trip through the running stack: Kafka produce/consume, then Feast push/read."""
from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

from kafka import KafkaConsumer, KafkaProducer

from features.sequences import UserSequence
from features.settings import FeatureSettings
from features.store import UserSequenceStore
from streams.settings import StreamSettings


def run_smoke(online_store: str = "sqlite", bootstrap: str | None = None, redis_url: str | None = None,
              repo_dir: Path | None = None) -> int:
    bootstrap = bootstrap or StreamSettings().kafka_bootstrap_servers
    topic = f"sidstream-smoke-{uuid.uuid4().hex[:8]}"
    t0 = time.monotonic()
    producer = KafkaProducer(bootstrap_servers=bootstrap, value_serializer=lambda v: json.dumps(v).encode(),
                             bootstrap_timeout_ms=10_000)
    sent = [{"n": i, "user_id": f"smoke-{i % 3}"} for i in range(100)]
    for msg in sent:
        producer.send(topic, msg)
    producer.flush()
    producer.close()
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             consumer_timeout_ms=10_000, value_deserializer=json.loads)
    received = []
    for record in consumer:  # stop at the last message instead of idling out the timeout
        received.append(record.value)
        if len(received) == len(sent):
            break
    consumer.close()
    if received != sent:
        print(f"smoke: Kafka round trip FAILED: sent {len(sent)}, got {len(received)}")
        return 1
    print(f"smoke: Kafka {bootstrap}: 100 messages produced and consumed in order "
          f"({(time.monotonic() - t0) * 1000:.0f} ms)")

    settings = FeatureSettings(online_store=online_store, **({"redis_url": redis_url} if redis_url else {}))
    t1 = time.monotonic()
    store = UserSequenceStore(settings, repo_dir=repo_dir)
    store.apply()
    now_ms = int(time.time() * 1000)
    rows = [UserSequence(f"smoke-{u}", [1, 4 + u, 300 + u, 600, 1030], 1, now_ms) for u in range(3)]
    store.push(rows)
    back = store.read([r.user_id for r in rows])
    if any(back[r.user_id] is None or back[r.user_id].tokens != r.tokens for r in rows):
        print(f"smoke: Feast ({online_store}) round trip FAILED: {back}")
        return 1
    print(f"smoke: Feast {online_store} online store at {store.repo_dir}: 3 user sequences pushed and read back "
          f"({(time.monotonic() - t1) * 1000:.0f} ms incl. feast import)")
    print("smoke: OK")
    return 0

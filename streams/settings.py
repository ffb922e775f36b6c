"""Stream settings (env prefix SIDSTREAM_): the Kafka cluster and the topic names of ARCHITECTURE.md."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel
from pydantic_settings import BaseSettings, SettingsConfigDict


class Topics(BaseModel):
    interactions: str = "interactions"
    items: str = "items"
    catalogue: str = "catalogue"  # compacted
    training: str = "training"
    model_updates: str = "model-updates"
    dead_letters: str = "dead-letters"


class StreamSettings(BaseSettings):
    # Nested names use a double underscore: SIDSTREAM_TOPICS__INTERACTIONS=...
    model_config = SettingsConfigDict(env_prefix="SIDSTREAM_", env_nested_delimiter="__", extra="ignore")

    kafka_bootstrap_servers: str = "127.0.0.1:9092"  # where `sidstream up` puts its broker
    topics: Topics = Topics()
    partitions: int = 4


class WorkerSettings(StreamSettings):
    app_id: str = "sidstream-streams"
    faust_datadir: str = "var/faust"
    window_events: int = 50  # events kept per user sequence
    unknown_item_wait_s: float = 2.0  # how long an interaction waits for its item before it is dead-lettered
    feast_flush_interval_s: float = 0.05  # micro-batch period of pushes to the Feast online store
    feast_flush_rows: int = 1000
    # The interactions agent takes events in batches (at most this many, waiting at most this long for more):
    # one read of the online store per batch fetches the stored rows of the users the worker has no state of;
    # 1 (or 0): event by event, one read per first-seen user
    batch_max_events: int = 1000
    batch_within_s: float = 0.01
    # longest the broker may hold the worker's fetch when it has nothing new (Faust's own is 1,500 ms, which
    # turned any brief pause of the agent into a 1.5 s lag: see streams/faust_fetch.py)
    fetch_max_wait_ms: int = 100
    fetch_min_bytes: int = 1
    # Faust processing guarantee: "exactly_once" makes table changelog writes and offset commits one Kafka
    # transaction (a rebalance cannot then commit an offset whose table write the new owner never sees)
    processing_guarantee: str = "at_least_once"
    table_standby_replicas: int = 1  # Faust's default
    # The worker's asyncio event loop: "uvloop" (libuv) or "asyncio" (the standard library's). Faust spends much
    # of each event in loop machinery (callbacks, futures, socket writes); uvloop made a worker draining a
    # backlog 2 to 8% faster (see streams/worker.py: use_event_loop)
    event_loop: Literal["uvloop", "asyncio"] = "uvloop"
    # Prometheus metrics of the worker on this port (0: off); several workers on one host need one port each
    worker_metrics_port: int = 0

"""Serving settings (env prefix SIDSTREAM_): the HTTP API's limits, the replicas and where models come from."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServingSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SIDSTREAM_", extra="ignore")

    # --- the HTTP API
    api_key: str | None = None  # when set, every route but /healthz and /readyz needs `Authorization: Bearer <key>`
    max_k: int = Field(100, ge=1)
    max_history_events: int = Field(200, ge=1)  # events in a /recommend/history body
    max_body_bytes: int = Field(64 * 1024, ge=256)
    max_user_id_chars: int = Field(200, ge=1)
    http_host: str = "127.0.0.1"
    http_port: int = 8000
    # haproxy: Ray Serve's HAProxy ingress - HAProxy on http_port forwards straight to each replica's own HTTP
    # server. proxy: Ray's Python proxy, which hands every request to a replica through a Ray actor call; on this
    # 2-core machine that path alone costs more CPU than generation (measured: 119 vs 242 req/s at 32 clients).
    ingress: Literal["haproxy", "proxy"] = "haproxy"
    # haproxy only: how long a stopping replica keeps answering while HAProxy drops it from its backends. Ray's
    # default (30 s) is sized for load balancers on other nodes; a local HAProxy reloads in under a second.
    ingress_drain_s: float = Field(2.0, ge=0)

    # --- replicas
    replicas: int = Field(1, ge=1)
    cpus_per_replica: float = Field(1.0, gt=0)
    torch_threads: int = Field(1, ge=1)  # per replica; replicas x threads should not exceed the cores
    batch_max_size: int = Field(32, ge=1)  # @serve.batch
    batch_wait_s: float = Field(0.002, ge=0)
    # False (default): a batch runs on the replica's event loop; requests arriving meanwhile queue up and form
    # the next batch together (measured: mean batch 6 at 32 clients). True: on a generation thread, which keeps
    # the loop responsive, but on a busy 2-core machine arrivals then trickle in one by one (mean batch ~1.2).
    generation_thread: bool = False

    # --- generation
    beam_size: int = Field(20, ge=1)  # widened to k when a request asks for more items than beams
    order_by: Literal["logprob", "value", "expected_value"] = "logprob"
    # the dense channel's index. memory: each replica composes its model's item vectors into an in-process
    # index (exact below 200,000 items, faiss HNSW above). qdrant: one collection per model version
    # (item-vectors-<version>) on the Qdrant server at SIDSTREAM_QDRANT_URL, shared by the replicas
    dense_index: Literal["memory", "qdrant"] = "memory"

    # --- models and catalogue
    model_dir: Path = Path("var/models/current")  # registry model directory served at start
    model_name: str = "sidstream"  # key of this model's messages on the model-updates topic
    catalogue_dir: Path = Path("var/catalogue")  # the same SIDSTREAM_CATALOGUE_DIR as catalogue.settings
    follow_updates: bool = True  # follow the model-updates and catalogue topics
    # the monitor's history file (sidstream monitor's JSONL); GET /monitor serves its newest snapshot to the live
    # page's freshness strip (None: the page shows no strip)
    monitor_file: Path | None = None
    update_poll_s: float = Field(0.1, gt=0)

"""Local-stack settings (env prefix SIDSTREAM_)."""
from __future__ import annotations

import os
from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict


def _xdg(var: str, fallback: str) -> Path:
    return Path(os.environ.get(var) or Path.home() / fallback)


class StackSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SIDSTREAM_", extra="ignore")

    # When set, `sidstream up` starts nothing and everything uses this cluster.
    kafka_bootstrap_servers: str | None = None
    redis_url: str | None = None
    kafka_version: str = "3.9.1"
    kafka_port: int = 9092
    kafka_controller_port: int = 9093
    kafka_heap: str = "512m"
    redis_port: int = 6379
    # Resolved Kafka jars live outside the repository so a second start costs nothing.
    cache_dir: Path = _xdg("XDG_CACHE_HOME", ".cache") / "sidstream"
    # pids, ports, logs and data of the processes `up` started
    state_dir: Path = _xdg("XDG_STATE_HOME", ".local/state") / "sidstream" / "stack"
    ready_timeout_s: float = 60.0

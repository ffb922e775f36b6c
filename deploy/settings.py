"""Local-stack settings (env prefix SIDSTREAM_)."""
from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field
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


class MonitorSettings(BaseSettings):
    """`sidstream monitor`: what it watches and when it raises an alert (env prefix SIDSTREAM_MONITOR_...)."""

    model_config = SettingsConfigDict(env_prefix="SIDSTREAM_MONITOR_", extra="ignore")

    # Prometheus endpoints to scrape, `name=url` comma-separated; names worker*, trainer*, serving* are read
    scrape: str = ""
    metrics_port: int = 0  # export the monitor's own gauges (drift, lags, alert states) on this port (0: off)
    interval_s: float = 5.0
    history_file: Path = Path("var/monitor/history.jsonl")  # one JSON snapshot per line, for `--plot`
    reference_events: int = 5000  # stream events in the drift reference window (the stretch before `recent`)
    recent_events: int = 1000  # stream events in the recent window
    overload_factor: float = 4.0  # a code holding more than this many uniform shares of items is overloaded
    psi_warn: float = 0.1
    psi_alert: float = 0.25
    lag_warn: float = 10_000
    lag_alert: float = 100_000
    event_to_feast_warn_s: float = 1.0
    event_to_feast_alert_s: float = 10.0
    item_to_trie_warn_s: float = 2.0
    item_to_trie_alert_s: float = 30.0
    model_age_warn_s: float = 300.0
    model_age_alert_s: float = 900.0
    event_to_served_warn_s: float = 30.0  # the online trainer's goal: event to served weights p50 <= 30 s
    event_to_served_alert_s: float = 120.0
    publish_to_serve_warn_s: float = 5.0
    publish_to_serve_alert_s: float = 60.0
    quality_drop_warn: float = 0.3
    quality_drop_alert: float = 0.6
    dead_letter_warn: float = 0.01
    dead_letter_alert: float = 0.1
    # a state worse than the one shown is shown only once it has held this long (one noisy snapshot is not an
    # alert); a better one only once it has held alert_clear_s (an alert does not flap off and on)
    alert_hold_s: float = Field(30.0, ge=0)
    alert_clear_s: float = Field(60.0, ge=0)

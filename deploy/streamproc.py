"""Running stream workers as real processes with isolated topics (wiring: used by `sidstream bench stream`
and the integration tests)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from kafka import KafkaConsumer, TopicPartition
from streams.settings import WorkerSettings
from features.settings import FeatureSettings


@dataclass
class StreamEnv:
    bootstrap: str
    root: Path
    redis_url: str | None = None
    online_store: str = "sqlite"
    suffix: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    extra: dict = field(default_factory=dict)

    def topic(self, kind: str) -> str:
        return f"{kind}-{self.suffix}"

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SIDSTREAM_")}
        env.update({
            "SIDSTREAM_KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "SIDSTREAM_APP_ID": f"sidstream-test-{self.suffix}",
            "SIDSTREAM_FEAST_REPO_PATH": str(self.root / "feast"),
            "SIDSTREAM_FEAST_PROJECT": f"t{self.suffix}",
            "SIDSTREAM_ONLINE_STORE": self.online_store,
            "SIDSTREAM_UNKNOWN_ITEM_WAIT_S": "0.5",
            "SIDSTREAM_PARTITIONS": "4",
        })
        if self.redis_url:
            env["SIDSTREAM_REDIS_URL"] = self.redis_url
        for kind in ("interactions", "items", "catalogue", "training", "model_updates", "dead_letters"):
            env[f"SIDSTREAM_TOPICS__{kind.upper()}"] = self.topic(kind.replace("_", "-"))
        env.update(self.extra)
        return env

    def settings(self):

        old = dict(os.environ)
        os.environ.update(self.env)
        try:
            return WorkerSettings()
        finally:
            os.environ.clear()
            os.environ.update(old)

    def feature_settings(self):

        return FeatureSettings(feast_project=f"t{self.suffix}", online_store=self.online_store,
                               **({"redis_url": self.redis_url} if self.redis_url else {}))


class WorkerProcess:
    def __init__(self, env: StreamEnv, catalogue_dir: Path, name: str = "w0"):
        self.env, self.catalogue_dir, self.name = env, catalogue_dir, name
        self.log_path = env.root / f"worker-{name}.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> "WorkerProcess":
        worker_env = dict(self.env.env, SIDSTREAM_FAUST_DATADIR=str(self.env.root / f"faust-{self.name}"))
        self.log = open(self.log_path, "a")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "deploy.cli", "worker", "--catalogue", str(self.catalogue_dir), "--no-qdrant"],
            cwd=self.env.root,
            env=worker_env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        if self.alive():
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.alive():
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()
        if hasattr(self, "log"):
            self.log.close()

    def last_stats(self) -> dict:
        """The worker's last stats line (every 10 s; empty before the first)."""
        lines = [line for line in self.tail(10_000_000).splitlines() if " stats {" in line]
        return json.loads(lines[-1].split(" stats ", 1)[1]) if lines else {}

    def tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""


def read_topic(bootstrap: str, topic: str, timeout_s: float = 5.0) -> list:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in parts]
        if not tps:
            return []
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        end = consumer.end_offsets(tps)
        out, deadline = [], time.monotonic() + timeout_s
        while any(consumer.position(tp) < end[tp] for tp in tps) and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=200).values():
                out.extend(records)
        return out
    finally:
        consumer.close()

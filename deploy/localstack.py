"""A real local stack without Docker: an Apache Kafka broker in KRaft mode run from Maven Central jars,
and Debian's redis-server for the Feast Redis online store.

`LocalStack.up()` starts the processes in their own process groups, waits until each answers, and records
pids, ports and log files in a state folder; `down()` stops exactly what `up()` recorded, by pid. Any failure
part-way through stops what was already started, so a failed `up` leaves no orphan processes.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from dataclasses import asdict
from pathlib import Path

import redis

from deploy.kafka_local import KafkaBroker, kafka_cluster_id  # noqa: F401  (kafka_cluster_id: the stack's API)
from deploy.processes import (Log, Service, StackError, last_log_line, pid_alive, port_in_use,  # noqa: F401
                              stop_pid)
from deploy.settings import StackSettings


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LocalStack:
    def __init__(self, settings: StackSettings | None = None, log: Log = print):
        self.settings = settings or StackSettings()
        self.log = log
        self.state_dir = Path(self.settings.state_dir)
        self.state_file = self.state_dir / "state.json"

    # ---- state -------------------------------------------------------------------------------------------
    def services(self) -> dict[str, Service]:
        if not self.state_file.exists():
            return {}
        raw = json.loads(self.state_file.read_text())
        return {name: Service(**rec) for name, rec in raw.get("services", {}).items()}

    def _record(self, services: dict[str, Service]) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"services": {n: asdict(s) for n, s in services.items()}}, indent=2))
        tmp.replace(self.state_file)

    @property
    def kafka_bootstrap(self) -> str:
        return f"127.0.0.1:{self.settings.kafka_port}"

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.settings.redis_port}"

    # ---- Kafka broker ------------------------------------------------------------------------------------
    def kafka_jars(self) -> Path:
        """The folder of broker jars, resolved with Maven on first use and cached outside the repository."""
        return KafkaBroker(self.settings, self.state_dir, self.log).jars()

    def start_kafka(self) -> Service:
        return KafkaBroker(self.settings, self.state_dir, self.log).start()

    # ---- Redis -------------------------------------------------------------------------------------------
    def redis_binary(self) -> str:
        binary = shutil.which("redis-server")
        if binary:
            return binary
        if os.geteuid() != 0 or not shutil.which("apt-get"):
            raise StackError("redis-server not found: install it (Debian: apt-get install redis-server)")
        self.log("redis-server not found: installing Debian's redis-server with apt-get ...")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "redis-server"]):
            result = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if result.returncode != 0:
                raise StackError(f"'{' '.join(cmd)}' failed: {(result.stderr or result.stdout).strip()[-300:]}")
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not Path(binary).exists():
            raise StackError("redis-server is still missing after apt-get install redis-server")
        return binary

    def start_redis(self) -> Service:
        port = self.settings.redis_port
        binary = self.redis_binary()
        if port_in_use(port):
            raise StackError(f"port {port} (Redis) is already in use: stop what holds it, or set SIDSTREAM_REDIS_PORT")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        log_file = self.state_dir / "redis.log"
        # No persistence: the online store is rebuilt from Kafka; nothing here must survive a restart.
        proc = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--daemonize", "no", "--dir", str(self.state_dir), "--logfile", str(log_file)],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        service = Service("redis", proc.pid, port, str(log_file), self.redis_url)
        try:
            wait_for_redis(self.redis_url, self.settings.ready_timeout_s, proc, log_file)
        except BaseException:
            stop_pid(proc.pid)
            raise
        return service

    # ---- the verbs ---------------------------------------------------------------------------------------
    def up(self, redis: bool = False) -> dict[str, Service]:
        """Start what is not running yet; on any failure stop whatever this call started."""
        running = {n: s for n, s in self.services().items() if pid_alive(s.pid)}
        started: dict[str, Service] = {}
        wanted = [("kafka", self.start_kafka)] + ([("redis", self.start_redis)] if redis else [])
        try:
            for name, start in wanted:
                if name in running:
                    self.log(f"{name} already running (pid {running[name].pid}, {running[name].address})")
                    continue
                t0 = time.monotonic()
                service = start()
                started[name] = service
                self._record({**running, **started})
                self.log(f"{name} ready at {service.address} in {time.monotonic() - t0:.1f} s "
                         f"(pid {service.pid}, log {service.log})")
        except BaseException:
            for service in started.values():
                stop_pid(service.pid)
            self._record(running)
            raise
        return {**running, **started}

    def down(self, purge: bool = False) -> list[str]:
        stopped = []
        for name, service in self.services().items():
            if stop_pid(service.pid):
                stopped.append(name)
        if self.state_file.exists():
            self.state_file.unlink()
        if purge:
            shutil.rmtree(self.state_dir / "kafka-data", ignore_errors=True)
        return stopped

    def status(self) -> dict[str, dict]:
        report = {}
        for name, service in self.services().items():
            alive = pid_alive(service.pid)
            report[name] = {**asdict(service), "running": alive, "answering": alive and port_in_use(service.port)}
        return report


def wait_for_redis(url: str, timeout_s: float, proc: subprocess.Popen | None = None,
                   log_file: Path | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise StackError(f"redis-server exited with code {proc.returncode} while starting: {last_log_line(log_file)}")
        try:
            if redis.Redis.from_url(url, socket_timeout=1).ping():
                return
        except Exception:
            time.sleep(0.1)
    raise StackError(f"Redis at {url} did not answer within {timeout_s:.0f} s; log: {log_file}")

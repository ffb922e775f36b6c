"""A real local stack without Docker: an Apache Kafka broker in KRaft mode run from Maven Central jars,
and Debian's redis-server for the Feast Redis online store.

`LocalStack.up()` starts the processes in their own process groups, waits until each answers, and records
pids, ports and log files in a state folder; `down()` stops exactly what `up()` recorded, by pid. Any failure
part-way through stops what was already started, so a failed `up` leaves no orphan processes.
"""
from __future__ import annotations

import base64
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from deploy.settings import StackSettings

POM = Path(__file__).with_name("kafka-pom.xml")
KAFKA_MAIN = "kafka.Kafka"
STORAGE_TOOL = "kafka.tools.StorageTool"
MIN_JAVA = 17

Log = Callable[[str], None]


class StackError(Exception):
    """A one-line, user-facing reason why the stack could not be brought up."""


@dataclass
class Service:
    name: str
    pid: int
    port: int
    log: str
    address: str
    started_at: float = field(default_factory=time.time)


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped by its parent) counts as gone.
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ", 1)[1][:1] != "Z"
    except OSError:
        return True


def stop_pid(pid: int, timeout_s: float = 15.0) -> bool:
    """SIGTERM the process group, then SIGKILL it if it lingers. Returns False if it was not running."""
    if not pid_alive(pid):
        return False
    for sig, wait in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return True
        except PermissionError:
            os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not pid_alive(pid):
                return True
            time.sleep(0.1)
    return True


def java_binary() -> str:
    java = shutil.which("java")
    if java is None and os.environ.get("JAVA_HOME"):
        candidate = Path(os.environ["JAVA_HOME"]) / "bin" / "java"
        java = str(candidate) if candidate.exists() else None
    if java is None:
        raise StackError(f"java not found: install Java {MIN_JAVA}+ (or use Docker: deploy/compose.yaml)")
    out = subprocess.run([java, "-version"], capture_output=True, text=True).stderr
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out)
    major = int(match.group(1)) if match else 0
    if major == 1 and match and match.group(2):  # "1.8.0" style
        major = int(match.group(2))
    if major < MIN_JAVA:
        raise StackError(f"Java {MIN_JAVA}+ is needed for the Kafka broker, found: {out.splitlines()[0] if out else java}")
    return java


def kafka_cluster_id() -> str:
    """Kafka's Uuid text form: base64url of 16 random bytes, no padding. Like Kafka's own `Uuid.randomUuid`, it
    never starts with '-': `kafka-storage format -t -x...` reads such an id as an option and fails (1 start in 64)."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


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

    # ---- Kafka jars --------------------------------------------------------------------------------------
    def kafka_jars(self) -> Path:
        """The folder of broker jars, resolved with Maven on first use and cached outside the repository."""
        version = self.settings.kafka_version
        jar_dir = Path(self.settings.cache_dir) / f"kafka-{version}"
        if (jar_dir / ".complete").exists():
            return jar_dir
        mvn = shutil.which("mvn")
        if mvn is None:
            raise StackError("Maven (mvn) not found: it resolves the Kafka broker from Maven Central once; install Maven")
        jar_dir.parent.mkdir(parents=True, exist_ok=True)
        partial = jar_dir.with_name(jar_dir.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        mvn_log = jar_dir.with_name(f"mvn-kafka-{version}.log")
        self.log(f"resolving org.apache.kafka:kafka_2.13:{version} from Maven Central into {jar_dir} (once) ...")
        started = time.monotonic()
        with open(mvn_log, "w") as out:
            result = subprocess.run(
                [mvn, "-B", "-f", str(POM), "dependency:copy-dependencies", f"-Dkafka.version={version}",
                 f"-DoutputDirectory={partial}", "-DincludeScope=runtime"],
                stdout=out, stderr=subprocess.STDOUT, cwd=jar_dir.parent)
        if result.returncode != 0 or not list(partial.glob(f"kafka_2.13-{version}.jar")):
            shutil.rmtree(partial, ignore_errors=True)
            raise StackError(f"Maven could not resolve org.apache.kafka:kafka_2.13:{version} (log: {mvn_log})")
        shutil.rmtree(jar_dir, ignore_errors=True)
        partial.rename(jar_dir)
        (jar_dir / ".complete").write_text(version)
        self.log(f"resolved Kafka {version} in {time.monotonic() - started:.1f} s")
        return jar_dir

    # ---- Kafka broker ------------------------------------------------------------------------------------
    def _kafka_config(self, data_dir: Path) -> Path:
        s = self.settings
        props = self.state_dir / "kafka-server.properties"
        props.write_text("\n".join([
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.voters=1@127.0.0.1:{s.kafka_controller_port}",
            f"listeners=PLAINTEXT://127.0.0.1:{s.kafka_port},CONTROLLER://127.0.0.1:{s.kafka_controller_port}",
            f"advertised.listeners=PLAINTEXT://127.0.0.1:{s.kafka_port}",
            "controller.listener.names=CONTROLLER",
            "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name=PLAINTEXT",
            f"log.dirs={data_dir}",
            "num.partitions=1",
            # single node: internal topics cannot be replicated
            "offsets.topic.replication.factor=1",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "group.initial.rebalance.delay.ms=0",
            "auto.create.topics.enable=true",
            "log.retention.hours=168",
        ]) + "\n")
        log4j = self.state_dir / "kafka-log4j.properties"
        log4j.write_text("\n".join([
            "log4j.rootLogger=WARN, stdout",
            "log4j.appender.stdout=org.apache.log4j.ConsoleAppender",
            "log4j.appender.stdout.layout=org.apache.log4j.PatternLayout",
            "log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n",
            "log4j.logger.kafka.server.KafkaRaftServer=INFO",
            "log4j.logger.kafka.server.BrokerServer=INFO",
        ]) + "\n")
        return props

    def start_kafka(self) -> Service:
        s = self.settings
        java = java_binary()
        for port, what in ((s.kafka_port, "Kafka broker"), (s.kafka_controller_port, "Kafka controller")):
            if port_in_use(port):
                raise StackError(f"port {port} ({what}) is already in use: stop what holds it, or choose another "
                                 f"with SIDSTREAM_KAFKA_PORT / SIDSTREAM_KAFKA_CONTROLLER_PORT")
        jars = self.kafka_jars()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        data_dir = self.state_dir / "kafka-data"
        props = self._kafka_config(data_dir)
        classpath = f"{jars}/*"
        log_file = self.state_dir / "kafka.log"
        if not (data_dir / "meta.properties").exists():
            fmt = subprocess.run(
                [java, "-cp", classpath, f"-Dlog4j.configuration=file:{self.state_dir / 'kafka-log4j.properties'}",
                 STORAGE_TOOL, "format", "-t", kafka_cluster_id(), "-c", str(props), "--ignore-formatted"],
                capture_output=True, text=True)
            if fmt.returncode != 0:
                raise StackError(f"formatting the KRaft log directory failed: {(fmt.stderr or fmt.stdout).strip()[-300:]}")
        with open(log_file, "ab") as out:
            proc = subprocess.Popen(
                [java, f"-Xmx{s.kafka_heap}", f"-Xms{s.kafka_heap}", "-XX:+UseG1GC", "-Djava.awt.headless=true",
                 f"-Dlog4j.configuration=file:{self.state_dir / 'kafka-log4j.properties'}",
                 "-cp", classpath, KAFKA_MAIN, str(props)],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        service = Service("kafka", proc.pid, s.kafka_port, str(log_file), self.kafka_bootstrap)
        try:
            wait_for_kafka(self.kafka_bootstrap, s.ready_timeout_s, proc, log_file)
        except BaseException:
            stop_pid(proc.pid)
            raise
        return service

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


def wait_for_kafka(bootstrap: str, timeout_s: float, proc: subprocess.Popen | None = None,
                   log_file: Path | None = None) -> None:
    """Wait until the broker answers a metadata request (not merely until its port opens)."""
    from kafka import KafkaAdminClient

    deadline = time.monotonic() + timeout_s
    last_error = "no answer"
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise StackError(f"Kafka exited with code {proc.returncode} while starting: {_last_line(log_file)}")
        host, port = bootstrap.split(",")[0].rsplit(":", 1)
        if not _port_open(host, int(port)):
            time.sleep(0.2)
            continue
        try:
            admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000,
                                     bootstrap_timeout_ms=5000, client_id="sidstream-ready")
            try:
                admin.describe_cluster()
                return
            finally:
                admin.close()
        except Exception as exc:  # not ready yet: keep polling until the deadline
            last_error = f"{type(exc).__name__}: {exc}"
            time.sleep(0.3)
    raise StackError(f"Kafka at {bootstrap} did not answer within {timeout_s:.0f} s ({last_error}); "
                     f"log: {log_file}")


def wait_for_redis(url: str, timeout_s: float, proc: subprocess.Popen | None = None,
                   log_file: Path | None = None) -> None:
    import redis

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise StackError(f"redis-server exited with code {proc.returncode} while starting: {_last_line(log_file)}")
        try:
            if redis.Redis.from_url(url, socket_timeout=1).ping():
                return
        except Exception:
            time.sleep(0.1)
    raise StackError(f"Redis at {url} did not answer within {timeout_s:.0f} s; log: {log_file}")


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _last_line(log_file: Path | None) -> str:
    if log_file is None or not Path(log_file).exists():
        return "(no log)"
    lines = [ln for ln in Path(log_file).read_text(errors="replace").splitlines() if ln.strip()]
    errors = [ln for ln in lines if "ERROR" in ln or "Exception" in ln]
    return (errors or lines or ["(empty log)"])[-1][:300]

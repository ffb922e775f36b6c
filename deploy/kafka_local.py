"""The local Kafka broker: KRaft mode, run from Maven Central jars (resolved once with Maven and cached outside
the repository), its server and log4j configuration, and the wait until it answers a metadata request."""
from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
import time
import uuid
from pathlib import Path

from kafka import KafkaAdminClient

from deploy.processes import Log, Service, StackError, last_log_line, port_in_use, port_open, stop_pid
from deploy.settings import StackSettings

POM = Path(__file__).with_name("kafka-pom.xml")
KAFKA_MAIN = "kafka.Kafka"
STORAGE_TOOL = "kafka.tools.StorageTool"
MIN_JAVA = 17


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


class KafkaBroker:
    """One single-node broker+controller whose files live in `state_dir`."""

    def __init__(self, settings: StackSettings, state_dir: Path, log: Log):
        self.settings, self.state_dir, self.log = settings, state_dir, log

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.settings.kafka_port}"

    def jars(self) -> Path:
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

    def _config(self, data_dir: Path) -> Path:
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

    def start(self) -> Service:
        s = self.settings
        java = java_binary()
        for port, what in ((s.kafka_port, "Kafka broker"), (s.kafka_controller_port, "Kafka controller")):
            if port_in_use(port):
                raise StackError(f"port {port} ({what}) is already in use: stop what holds it, or choose another "
                                 f"with SIDSTREAM_KAFKA_PORT / SIDSTREAM_KAFKA_CONTROLLER_PORT")
        jars = self.jars()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        data_dir = self.state_dir / "kafka-data"
        props = self._config(data_dir)
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
        service = Service("kafka", proc.pid, s.kafka_port, str(log_file), self.bootstrap)
        try:
            wait_for_kafka(self.bootstrap, s.ready_timeout_s, proc, log_file)
        except BaseException:
            stop_pid(proc.pid)
            raise
        return service


def wait_for_kafka(bootstrap: str, timeout_s: float, proc: subprocess.Popen | None = None,
                   log_file: Path | None = None) -> None:
    """Wait until the broker answers a metadata request (not merely until its port opens)."""
    deadline = time.monotonic() + timeout_s
    last_error = "no answer"
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise StackError(f"Kafka exited with code {proc.returncode} while starting: {last_log_line(log_file)}")
        host, port = bootstrap.split(",")[0].rsplit(":", 1)
        if not port_open(host, int(port)):
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

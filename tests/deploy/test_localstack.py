"""The local stack's verbs and its bad-input behaviour: one clear line, non-zero exit, no orphan processes."""
import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from deploy.localstack import LocalStack, StackError, free_port, kafka_cluster_id, pid_alive, port_in_use
from deploy.settings import StackSettings


def processes_mentioning(text: str) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline and pid_alive(int(proc.name)):
            pids.append(int(proc.name))
    return pids


def sidstream(args, tmp_path, **env):
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("SIDSTREAM_")}
    full_env.update({"SIDSTREAM_STATE_DIR": str(tmp_path / "state"), **env})
    return subprocess.run([sys.executable, "-m", "deploy.cli", *args], capture_output=True, text=True,
                          env=full_env, timeout=300)


def assert_one_line_error(result, pattern):
    assert result.returncode != 0
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, result.stderr
    assert re.search(pattern, lines[0]), lines[0]


def test_cluster_id_is_kafka_uuid_text():
    ids = {kafka_cluster_id() for _ in range(2000)}  # 1 in 64 raw ids starts with '-': ~31 would here
    assert len(ids) == 2000
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{22}", i) for i in ids)
    assert not any(i.startswith("-") for i in ids)  # the storage tool would read such an id as an option


def test_port_in_use_sees_a_listening_socket():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        assert port_in_use(sock.getsockname()[1])
    assert not port_in_use(free_port())


def test_down_when_nothing_runs_says_so(tmp_path):
    result = sidstream(["down"], tmp_path)
    assert result.returncode == 0
    assert "nothing is running" in result.stdout


def test_status_when_nothing_runs(tmp_path):
    result = sidstream(["status"], tmp_path)
    assert result.returncode == 0 and "nothing is running" in result.stdout


def test_up_with_port_taken_fails_in_one_line(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        result = sidstream(["up"], tmp_path, SIDSTREAM_KAFKA_PORT=str(port))
    assert_one_line_error(result, rf"port {port} .*already in use")
    assert processes_mentioning(str(tmp_path)) == []


def test_up_without_java_fails_in_one_line(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    result = sidstream(["up"], tmp_path, PATH=str(bin_dir))  # no java, no mvn on PATH
    assert_one_line_error(result, r"java not found")
    assert processes_mentioning(str(tmp_path)) == []


@pytest.mark.skipif(shutil.which("java") is None, reason="needs java on this machine")
def test_up_without_maven_fails_in_one_line(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "java").symlink_to(shutil.which("java"))
    result = sidstream(["up"], tmp_path, PATH=str(bin_dir), SIDSTREAM_CACHE_DIR=str(tmp_path / "cache"),
                       SIDSTREAM_KAFKA_PORT=str(free_port()), SIDSTREAM_KAFKA_CONTROLLER_PORT=str(free_port()))
    assert_one_line_error(result, r"Maven \(mvn\) not found")


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("mvn") is None or shutil.which("java") is None, reason="needs java and mvn")
def test_up_when_maven_cannot_resolve_fails_in_one_line(tmp_path):
    result = sidstream(["up"], tmp_path, SIDSTREAM_CACHE_DIR=str(tmp_path / "cache"),
                       SIDSTREAM_KAFKA_VERSION="0.0.0-no-such-version",
                       SIDSTREAM_KAFKA_PORT=str(free_port()), SIDSTREAM_KAFKA_CONTROLLER_PORT=str(free_port()))
    assert_one_line_error(result, r"Maven could not resolve org\.apache\.kafka:kafka_2\.13:0\.0\.0-no-such-version")
    assert not (tmp_path / "cache" / "kafka-0.0.0-no-such-version").exists()
    assert processes_mentioning(str(tmp_path)) == []


def test_up_with_external_cluster_starts_nothing(tmp_path):
    result = sidstream(["up"], tmp_path, SIDSTREAM_KAFKA_BOOTSTRAP_SERVERS="broker.example:9092")
    assert result.returncode == 0 and "starting nothing" in result.stdout
    assert not (tmp_path / "state" / "state.json").exists()


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.skipif(shutil.which("java") is None, reason="needs java")
def test_failed_redis_start_stops_the_kafka_it_started(tmp_path):
    """A failure part-way through `up` must not leave the already-started broker behind."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        settings = StackSettings(kafka_bootstrap_servers=None, state_dir=tmp_path / "state", kafka_port=free_port(),
                                 kafka_controller_port=free_port(), redis_port=sock.getsockname()[1])
        stack = LocalStack(settings, log=lambda _: None)
        with pytest.raises(StackError, match="already in use"):
            stack.up(redis=True)
    assert processes_mentioning(str(tmp_path)) == []
    assert stack.services() == {}


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.skipif(shutil.which("java") is None, reason="needs java")
def test_up_status_down_cycle(tmp_path):
    env = dict(SIDSTREAM_KAFKA_PORT=str(free_port()), SIDSTREAM_KAFKA_CONTROLLER_PORT=str(free_port()),
               SIDSTREAM_REDIS_PORT=str(free_port()))
    try:
        up = sidstream(["up", "--redis"], tmp_path, **env)
        assert up.returncode == 0, up.stderr
        assert "stack ready" in up.stdout
        status = sidstream(["status", "--json"], tmp_path, **env)
        assert status.returncode == 0, status.stderr
        report = json.loads(status.stdout)
        assert set(report) == {"kafka", "redis"}
        assert all(svc["running"] and svc["answering"] for svc in report.values())
        pids = [svc["pid"] for svc in report.values()]
    finally:
        down = sidstream(["down", "--purge"], tmp_path, **env)
    assert down.returncode == 0 and "kafka" in down.stdout and "redis" in down.stdout
    assert not any(pid_alive(pid) for pid in pids)
    assert processes_mentioning(str(tmp_path)) == []

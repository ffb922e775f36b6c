"""Shared fixtures. `services` yields a real Kafka broker (and Redis) for integration tests, from the first of:

1. env settings: SIDSTREAM_KAFKA_BOOTSTRAP_SERVERS (and SIDSTREAM_REDIS_URL) name running services;
2. testcontainers (Kafka in KRaft mode, Redis) when a Docker daemon answers;
3. otherwise the local stack of `deploy/` (Kafka from Maven Central jars, Debian's redis-server) on free
   ports, in a temporary state folder, stopped at the end of the session.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import pytest


@dataclass
class Services:
    backend: str  # "env" | "testcontainers" | "local"
    kafka_bootstrap: str
    redis_url: str | None


def docker_available() -> bool:
    try:
        import docker

        client = docker.from_env(timeout=3)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


def _report(config, line: str) -> None:
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(line)


@pytest.fixture(scope="session")
def services(request, tmp_path_factory):
    env_kafka = os.environ.get("SIDSTREAM_KAFKA_BOOTSTRAP_SERVERS")
    if env_kafka:
        svc = Services("env", env_kafka, os.environ.get("SIDSTREAM_REDIS_URL"))
        _report(request.config, f"\n[services] backend=env kafka={svc.kafka_bootstrap} redis={svc.redis_url}")
        yield svc
        return

    if docker_available():
        from testcontainers.community.kafka import KafkaContainer
        from testcontainers.community.redis import RedisContainer

        with KafkaContainer("confluentinc/cp-kafka:7.6.0").with_kraft() as kafka, RedisContainer() as redis_c:
            redis_url = f"redis://{redis_c.get_container_host_ip()}:{redis_c.get_exposed_port(6379)}"
            svc = Services("testcontainers", kafka.get_bootstrap_server(), redis_url)
            _report(request.config, f"\n[services] backend=testcontainers kafka={svc.kafka_bootstrap} redis={redis_url}")
            yield svc
        return

    from deploy.localstack import LocalStack, free_port
    from deploy.settings import StackSettings

    state_dir = tmp_path_factory.mktemp("stack")
    settings = StackSettings(kafka_bootstrap_servers=None, state_dir=state_dir, kafka_port=free_port(),
                             kafka_controller_port=free_port(), redis_port=free_port())
    stack = LocalStack(settings, log=lambda line: _report(request.config, f"[services] {line}"))
    try:
        stack.up(redis=True)
        svc = Services("local", stack.kafka_bootstrap, stack.redis_url)
        _report(request.config, f"[services] backend=local (no Docker daemon) kafka={svc.kafka_bootstrap} "
                                f"redis={svc.redis_url} state={state_dir}")
        yield svc
    finally:
        stack.down(purge=True)


@pytest.fixture
def redis_url(services):
    if not services.redis_url:
        pytest.skip("no Redis in this services backend (set SIDSTREAM_REDIS_URL)")
    return services.redis_url

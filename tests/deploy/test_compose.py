"""deploy/compose.yaml parses and agrees with the settings the local stack uses."""
from pathlib import Path

import yaml

from deploy.settings import StackSettings

COMPOSE = Path(__file__).resolve().parents[2] / "deploy" / "compose.yaml"


def test_compose_has_the_external_services_on_the_default_ports():
    spec = yaml.safe_load(COMPOSE.read_text())
    services = spec["services"]
    assert set(services) >= {"kafka", "redis", "qdrant"}
    defaults = StackSettings(kafka_bootstrap_servers=None)
    kafka_env = services["kafka"]["environment"]
    assert kafka_env["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft, like the local stack
    assert f":{defaults.kafka_port}" in kafka_env["KAFKA_ADVERTISED_LISTENERS"]
    assert services["kafka"]["image"].endswith(defaults.kafka_version)
    assert f"{defaults.redis_port}:6379" in services["redis"]["ports"]
    # the comment block documents the same settings names the code reads
    text = COMPOSE.read_text()
    for name in ("SIDSTREAM_KAFKA_BOOTSTRAP_SERVERS", "SIDSTREAM_REDIS_URL", "SIDSTREAM_QDRANT_URL"):
        assert name in text

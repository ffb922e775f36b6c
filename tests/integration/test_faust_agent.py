"""A real faust-streaming worker (its own process) turns one topic into another on the real broker."""
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from kafka import KafkaConsumer, KafkaProducer

pytestmark = pytest.mark.integration

APP = Path(__file__).with_name("faust_upper_app.py")


def test_faust_agent_turns_one_topic_into_another(services, tmp_path):
    suffix = uuid.uuid4().hex[:8]
    source, sink = f"faust-in-{suffix}", f"faust-out-{suffix}"
    env = dict(os.environ, FAUST_TEST_APP_ID=f"sidstream-test-{suffix}", FAUST_TEST_BROKER=services.kafka_bootstrap,
               FAUST_TEST_DATADIR=str(tmp_path / "faust"), FAUST_TEST_SOURCE=source, FAUST_TEST_SINK=sink,
               PYTHONPATH=str(APP.parent))
    log = open(tmp_path / "worker.log", "w")
    worker = subprocess.Popen([sys.executable, "-m", "faust", "-A", "faust_upper_app", "worker", "-l", "warn",
                               "--without-web"], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        producer = KafkaProducer(bootstrap_servers=services.kafka_bootstrap,
                                 value_serializer=lambda v: json.dumps(v).encode())
        sent = [{"n": i, "text": f"event {i}"} for i in range(200)]
        for event in sent:
            producer.send(source, event)
        producer.flush()
        producer.close()

        consumer = KafkaConsumer(sink, bootstrap_servers=services.kafka_bootstrap, auto_offset_reset="earliest",
                                 consumer_timeout_ms=1000, value_deserializer=json.loads)
        got, deadline = [], time.monotonic() + 90
        while len(got) < len(sent) and time.monotonic() < deadline:
            assert worker.poll() is None, f"faust worker died: {(tmp_path / 'worker.log').read_text()[-2000:]}"
            got.extend(record.value for record in consumer)
        consumer.close()
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
        log.close()
    assert got == [{"n": e["n"], "text": e["text"].upper()} for e in sent], \
        (tmp_path / "worker.log").read_text()[-2000:]

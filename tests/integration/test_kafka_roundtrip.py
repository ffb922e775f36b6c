"""10,000 messages through the real broker with kafka-python: each arrives exactly once, in order per partition."""
import collections
import uuid

import pytest
from kafka import KafkaConsumer, KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic

pytestmark = pytest.mark.integration

MESSAGES = 10_000
PARTITIONS = 4


def test_ten_thousand_messages_exactly_once_in_partition_order(services):
    topic = f"roundtrip-{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(bootstrap_servers=services.kafka_bootstrap)
    admin.create_topics([NewTopic(topic, num_partitions=PARTITIONS, replication_factor=1)])
    admin.close()

    producer = KafkaProducer(bootstrap_servers=services.kafka_bootstrap, acks="all", linger_ms=5,
                             enable_idempotence=True)
    sent_per_key = collections.defaultdict(list)
    for seq in range(MESSAGES):
        key = f"user-{seq % 97}"
        sent_per_key[key].append(seq)
        producer.send(topic, key=key.encode(), value=str(seq).encode())
    producer.flush()
    producer.close()

    consumer = KafkaConsumer(topic, bootstrap_servers=services.kafka_bootstrap, auto_offset_reset="earliest",
                             enable_auto_commit=False, consumer_timeout_ms=10_000, group_id=None)
    received = []
    offsets_per_partition = collections.defaultdict(list)
    for record in consumer:
        received.append((record.key.decode(), int(record.value)))
        offsets_per_partition[record.partition].append(record.offset)
        if len(received) >= MESSAGES:
            break
    consumer.close()

    assert len(received) == MESSAGES
    values = [v for _, v in received]
    assert len(set(values)) == MESSAGES, "a message arrived twice"
    assert set(values) == set(range(MESSAGES)), "a message was lost"
    # one key lives in one partition, so per key the order must be the production order
    got_per_key = collections.defaultdict(list)
    for key, value in received:
        got_per_key[key].append(value)
    assert got_per_key == sent_per_key
    assert len(offsets_per_partition) == PARTITIONS, "keys should spread over every partition"
    for offsets in offsets_per_partition.values():
        assert offsets == sorted(offsets) and len(offsets) == len(set(offsets))

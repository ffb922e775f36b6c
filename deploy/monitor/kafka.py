"""The monitor's Kafka side: the topics it watches and the consumer-group lags, read without a group."""
from __future__ import annotations

import json
import time

from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

from deploy.monitor.core import MonitorCore


class KafkaReadings:
    """Reads the topics the monitor watches, without a consumer group (it never moves anyone's offsets).

    training: the newest `window_events` of each partition at start (then follows), fed in timestamp order so
    "recent" means recent across partitions; catalogue and model-updates: from the beginning. A watched topic
    that does not exist yet is picked up when it appears. End offsets of interactions, training, items and
    dead-letters give rates; the committed offsets of consumer groups on this deployment's topics give lags."""

    def __init__(self, bootstrap: str, topics, window_events: int):
        self.topics, self.window_events = topics, window_events
        self.ours = set(topics.model_dump().values())
        self.admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="sidstream-monitor")
        self.consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                      client_id="sidstream-monitor")
        self.offsets_consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                              client_id="sidstream-monitor-offsets")
        self.watched = [topics.training, topics.catalogue, topics.model_updates]
        self.counted = [topics.interactions, topics.training, topics.items, topics.dead_letters]
        self.assigned: set = set()
        self.missing: list[str] = list(self.watched)
        self._refresh_assignment()

    def _refresh_assignment(self) -> None:
        wanted = set()
        for topic in self.watched:
            for p in self.consumer.partitions_for_topic(topic) or ():
                wanted.add(TopicPartition(topic, p))
        new = wanted - self.assigned
        self.missing = [t for t in self.watched if not any(tp.topic == t for tp in wanted)]
        if not new:
            return
        positions = {tp: self.consumer.position(tp) for tp in self.assigned}
        self.consumer.assign(sorted(wanted, key=lambda tp: (tp.topic, tp.partition)))
        for tp, offset in positions.items():  # assign() forgets positions: keep where we were
            self.consumer.seek(tp, offset)
        training = [tp for tp in new if tp.topic == self.topics.training]
        if training:
            ends, begins = self.consumer.end_offsets(training), self.consumer.beginning_offsets(training)
            for tp in training:  # the whole window from every partition: keys are rarely spread evenly
                self.consumer.seek(tp, max(begins[tp], ends[tp] - self.window_events))
        others = [tp for tp in new if tp.topic != self.topics.training]
        if others:
            self.consumer.seek_to_beginning(*others)
        self.assigned = wanted

    def poll(self, core: MonitorCore, max_seconds: float = 2.0) -> int:
        """Feed everything available into the core, in timestamp order per poll; returns records read."""
        if self.missing:
            self._refresh_assignment()
        read, deadline = 0, time.monotonic() + max_seconds
        while time.monotonic() < deadline:
            batch = self.consumer.poll(timeout_ms=100, max_records=20000)
            if not batch:
                break
            records = sorted((r for rs in batch.values() for r in rs), key=lambda r: r.timestamp)
            for record in records:
                self._feed(core, record.topic, record.value)
            read += len(records)
        return read

    def _feed(self, core: MonitorCore, topic: str, value: bytes | None) -> None:
        try:
            data = json.loads(value) if value else None
        except ValueError:
            return
        if topic == self.topics.catalogue and value is None:
            return
        if not isinstance(data, dict):
            return
        if topic == self.topics.training and isinstance(data.get("tokens"), list):
            core.add_training_example(data["tokens"])
        elif topic == self.topics.catalogue and isinstance(data.get("item_id"), str):
            core.add_catalogue_entry(data["item_id"], data.get("sid"))
        elif topic == self.topics.model_updates:
            core.add_model_update(data)

    def end_offsets(self) -> dict[str, int]:
        out = {}
        for topic in self.counted:
            partitions = self.offsets_consumer.partitions_for_topic(topic)
            if not partitions:
                continue
            ends = self.offsets_consumer.end_offsets([TopicPartition(topic, p) for p in partitions], timeout_ms=5000)
            out[topic] = int(sum(ends.values()))
        return out

    def lags(self) -> dict[str, dict[str, int]]:
        """{group: {topic: messages behind}} for every consumer group with offsets on this deployment's topics
        (other deployments' and finished runs' groups on a shared broker are not ours to judge)."""
        out: dict[str, dict[str, int]] = {}
        groups = [g["group_id"] for g in self.admin.list_groups()
                  if g.get("protocol_type") in ("consumer", "") and not g["group_id"].startswith("sidstream-monitor")]
        if not groups:
            return out
        offsets = self.admin.list_group_offsets(groups)
        for group_id in groups:
            committed = {tp: m for tp, m in (offsets.get(group_id) or {}).items()
                         if tp.topic in self.ours and m.offset is not None and m.offset >= 0}
            if not committed:
                continue
            ends = self.offsets_consumer.end_offsets(list(committed), timeout_ms=5000)
            per_topic: dict[str, int] = {}
            for tp, meta in committed.items():
                per_topic[tp.topic] = per_topic.get(tp.topic, 0) + max(0, ends.get(tp, 0) - meta.offset)
            out[str(group_id)] = per_topic
        return out

    def close(self) -> None:
        for c in (self.consumer, self.offsets_consumer):
            c.close()
        self.admin.close()

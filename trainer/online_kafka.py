"""Kafka adapter of the online post-trainer: a consumer-group source on `training`, a producer for `model-updates`,
and a follower of the `catalogue` topic.

The consumer never auto-commits: `OnlineLoop` commits offsets only after the checkpoint holding their effect is
written, and after a restart it seeks every assigned partition to the checkpoint's offsets (partitions the
checkpoint does not know start from the group's committed offset, else from the earliest record).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.structs import OffsetAndMetadata

from catalogue.trie import SidTrie, apply_catalogue_change
from catalogue.vocab import Vocabulary
from streams.follow import RecordSource, WholeTopicReader
from streams.schemas import parse_catalogue_entry
from trainer.online import Record, offset_key
from trainer.registry import model_update_message

log = logging.getLogger("sidstream.trainer.online")


class KafkaTrainingSource:
    def __init__(self, bootstrap: str, topic: str, group_id: str, client_id: str = "sidstream-online-trainer"):
        self.topic = topic
        self._seek_to: dict[str, int] = {}
        source = self

        class _OnAssign(ConsumerRebalanceListener):
            def on_partitions_revoked(self, revoked):
                pass

            def on_partitions_assigned(self, assigned):
                for tp in assigned:
                    want = source._seek_to.get(offset_key(tp.topic, tp.partition))
                    if want is not None:
                        source.consumer.seek(tp, want)

        self.consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group_id, client_id=client_id,
                                      enable_auto_commit=False, auto_offset_reset="earliest",
                                      max_poll_records=500, session_timeout_ms=10000, heartbeat_interval_ms=2000)
        self.consumer.subscribe([topic], listener=_OnAssign())

    def seek(self, offsets: dict[str, int]) -> None:
        """Remember the checkpoint's offsets; applied as partitions are assigned (and now, for those already held)."""
        self._seek_to = dict(offsets)
        for tp in self.consumer.assignment():
            want = self._seek_to.get(offset_key(tp.topic, tp.partition))
            if want is not None:
                self.consumer.seek(tp, want)

    def poll(self, max_records: int, timeout_s: float) -> list[Record]:
        batches = self.consumer.poll(timeout_ms=int(timeout_s * 1000), max_records=max(1, max_records))
        out = []
        for tp, records in batches.items():
            out.extend(Record(r.topic, r.partition, r.offset, r.value, r.key) for r in records)
        return out

    def commit(self, offsets: dict[str, int]) -> None:
        mine = {}
        assigned = self.consumer.assignment()
        for key, offset in offsets.items():
            topic, _, partition = key.rpartition(":")
            tp = TopicPartition(topic, int(partition))
            if tp in assigned:
                mine[tp] = OffsetAndMetadata(int(offset), "", -1)
        if mine:
            try:
                self.consumer.commit(mine)
            except Exception as exc:  # a rebalance: the checkpoint's offsets stay authoritative for us
                log.warning("offset commit failed (%r); the checkpoint still holds them", exc)

    def close(self) -> None:
        self.consumer.close(autocommit=False)


class ModelUpdatePublisher:
    """Announces a registry version directory on `model-updates` (trainer.registry.model_update_message)."""

    def __init__(self, bootstrap: str, topic: str, name: str = "sidstream"):
        self.topic, self.name = topic, name
        self.producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0)

    def __call__(self, directory: Path) -> dict:
        message = model_update_message(directory, self.name)
        self.producer.send(self.topic, key=self.name.encode(), value=json.dumps(message).encode()).get(timeout=30)
        return message

    def close(self) -> None:
        self.producer.close(timeout=5)


class CatalogueFollower:
    """Keeps the trainer's trie in step with the compacted `catalogue` topic, so examples naming items that
    arrived after start are scored against a trie that holds them. Read whole (streams.follow.WholeTopicReader);
    `drain()` is called between micro-batches (same thread as prediction: no locking, no follower thread).
    Entries change the trie by catalogue.trie.apply_catalogue_change; refusals are counted and logged."""

    def __init__(self, trie: SidTrie, vocab: Vocabulary, source: RecordSource):
        self.trie, self.vocab, self.source = trie, vocab, source
        self.applied = self.refused = 0

    @classmethod
    def from_kafka(cls, trie: SidTrie, vocab: Vocabulary, bootstrap: str, topic: str) -> "CatalogueFollower":
        return cls(trie, vocab, WholeTopicReader(bootstrap, topic, client_id=f"sidstream-online-{topic}"))

    def drain(self, timeout_s: float = 0.0) -> int:
        """Apply what the topic has now; returns how many entries changed the trie."""
        changed = 0
        for _, value in self.source.poll(timeout_s):
            try:
                change = parse_catalogue_entry(value, self.vocab)
            except ValueError as exc:
                self.refused += 1
                log.warning("catalogue entry refused: %s", exc)
                continue
            outcome = apply_catalogue_change(self.trie, change)
            if outcome.status == "applied":
                changed += 1
            elif outcome.status == "refused":
                self.refused += 1
                log.warning("catalogue entry refused: %s", outcome.reason)
        self.applied += changed
        return changed

    def close(self) -> None:
        self.source.close()

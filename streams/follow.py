"""The one way sidstream follows a topic it reads whole: every partition, no consumer group, a daemon thread.

`WholeTopicReader` is the kafka-python reader (each reader gets all of the topic; nothing is committed);
`TopicFollower` polls any source with `poll(timeout_s) -> [(key, value)]` and hands each batch to a handler, so
its logic is tested without a broker. The stream worker's catalogue view, the online trainer's catalogue follower
and the serving replicas' `catalogue` and `model-updates` followers are built from these two.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Literal, Protocol, Sequence

from kafka import KafkaConsumer, TopicPartition

log = logging.getLogger("sidstream.streams.follow")

Records = Sequence[tuple[bytes | None, bytes]]


class RecordSource(Protocol):
    """What a follower polls. A source may also define `reached_end() -> bool` (WholeTopicReader does): whether it
    has read up to where the topic ended when it started; a follower then uses it for `caught_up`."""

    def poll(self, timeout_s: float) -> Records: ...

    def close(self) -> None: ...


class WholeTopicReader:
    """Every partition of one topic, read without a consumer group (every reader reads everything).

    start="beginning" replays the topic (the compacted catalogue); start="last" begins at each partition's last
    record (model-updates: only the newest model matters to a replica that starts now). A topic that does not
    exist yet is an error (a TopicFollower retries), not a guess at its partitions."""

    def __init__(self, bootstrap: str, topic: str, start: Literal["beginning", "last"] = "beginning",
                 client_id: str | None = None):
        if start not in ("beginning", "last"):
            raise ValueError(f"start must be 'beginning' or 'last', got {start!r}")
        self.topic = topic
        self.consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None,
                                      fetch_max_wait_ms=50, client_id=client_id or f"sidstream-{topic}-reader")
        try:
            partitions = self.consumer.partitions_for_topic(topic)
            if not partitions:
                raise RuntimeError(f"topic {topic!r} does not exist yet")
            self.partitions = [TopicPartition(topic, p) for p in sorted(partitions)]
            self.consumer.assign(self.partitions)
            self._end = self.consumer.end_offsets(self.partitions)
            if start == "last":
                begin = self.consumer.beginning_offsets(self.partitions)
                for tp in self.partitions:
                    self.consumer.seek(tp, max(begin[tp], self._end[tp] - 1))
            else:
                self.consumer.seek_to_beginning(*self.partitions)
        except Exception:
            self.consumer.close()
            raise
        self._reached_end = False

    def poll(self, timeout_s: float) -> list[tuple[bytes | None, bytes]]:
        batches = self.consumer.poll(timeout_ms=int(timeout_s * 1000))
        return [(r.key, r.value) for tp in sorted(batches, key=lambda t: t.partition) for r in batches[tp]]

    def reached_end(self) -> bool:
        """Whether every partition has been read up to where it ended when this reader started."""
        if not self._reached_end:
            self._reached_end = all(self.consumer.position(tp) >= end for tp, end in self._end.items())
        return self._reached_end

    def close(self) -> None:
        self.consumer.close()


class TopicFollower:
    """A daemon thread: poll the source, hand each non-empty batch to `handle`; errors are logged, never fatal (a
    source that fails is polled again, one that cannot be built is built again).

    `caught_up` is set once the backlog has been handled: when the source says it reached the end it saw at start
    (`reached_end()`), or, for a source that cannot tell, after the first poll that returns nothing."""

    def __init__(self, name: str, source_factory: Callable[[], RecordSource], handle: Callable[[Records], object],
                 poll_s: float = 0.1):
        self.name, self._factory, self._handle, self.poll_s = name, source_factory, handle, poll_s
        self.stop_event = threading.Event()
        self.caught_up = threading.Event()
        self.batches = 0
        self.errors = 0
        self._thread = threading.Thread(target=self._run, name=f"follow-{name}", daemon=True)

    def start(self) -> "TopicFollower":
        self._thread.start()
        return self

    def _run(self) -> None:
        source = None
        while not self.stop_event.is_set():
            try:
                if source is None:
                    source = self._factory()
                records = source.poll(self.poll_s)
                if records:
                    self._handle(records)
                    self.batches += 1
                if not self.caught_up.is_set() and _at_end(source, records):
                    self.caught_up.set()
            except Exception:  # a broken broker connection or a bug in a handler must not end following
                self.errors += 1
                log.exception("%s follower: poll or apply failed; retrying", self.name)
                time.sleep(min(1.0, self.poll_s * 10))
        if source is not None:
            try:
                source.close()
            except Exception:
                log.debug("%s follower: close failed", self.name, exc_info=True)

    def stop(self, timeout_s: float = 5.0) -> None:
        self.stop_event.set()
        self._thread.join(timeout_s)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()


def _at_end(source: RecordSource, records: Records) -> bool:
    reached_end = getattr(source, "reached_end", None)
    return reached_end() if callable(reached_end) else not records

"""Prometheus metrics of a stream worker, in a registry of their own (several apps in one test process must not
collide, and Feast switches prometheus-client's global state into multiprocess mode when it is imported)."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LAG_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)


class StreamMetrics:
    def __init__(self):
        self.registry = r = CollectorRegistry(auto_describe=True)
        self.events = Counter("sidstream_stream_events", "interactions by result (appended, duplicate, dead_letter)",
                              ["result"], registry=r)
        self.rewinds = Counter("sidstream_stream_rewinds", "holes found in a partition's input offsets and read "
                               "again (messages the consumer skipped)", registry=r)
        self.items = Counter("sidstream_stream_items", "item events by result (assigned, dead_letter)", ["result"],
                             registry=r)
        self.event_to_feast = Histogram("sidstream_stream_event_to_feast_seconds",
                                        "event produced -> its tokens pushed to the Feast online store",
                                        buckets=LAG_BUCKETS, registry=r)
        self.item_to_catalogue = Histogram("sidstream_stream_item_to_catalogue_seconds",
                                           "item produced -> its SID on the catalogue topic", buckets=LAG_BUCKETS,
                                           registry=r)
        self.feast_push = Histogram("sidstream_stream_feast_push_seconds", "one micro-batch push to Feast",
                                    buckets=LAG_BUCKETS, registry=r)
        self.pending_rows = Gauge("sidstream_stream_pending_rows", "user rows waiting for the next Feast push",
                                  registry=r)
        self.catalogue_items = Gauge("sidstream_stream_catalogue_items", "items this worker can resolve",
                                     registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)

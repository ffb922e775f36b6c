"""Prometheus metrics of one replica, in a registry of their own (never prometheus-client's global one, so
several services in one process - tests - do not collide, and Feast's multiprocess switch cannot leak in)."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

SCORE_BUCKETS = (-50, -20, -12, -10, -8, -6, -5, -4, -3, -2, -1, -0.5, -0.1, 0, 0.1, 0.25, 0.5, 1, 2, 5, 10)
LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)


class ServingMetrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self):
        self.registry = r = CollectorRegistry(auto_describe=True)
        self.requests = Counter("sidstream_serving_requests", "HTTP requests by route and status", ["route", "status"],
                                registry=r)
        self.latency = Histogram("sidstream_serving_request_seconds", "request latency in the replica", ["route"],
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.stage = Histogram("sidstream_serving_stage_seconds", "time per batch in each stage", ["stage"],
                               buckets=LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("sidstream_serving_batch_size", "requests per generation batch",
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128), registry=r)
        self.cold_starts = Counter("sidstream_serving_cold_starts", "requests for users without a sequence",
                                   registry=r)
        self.model_swaps = Counter("sidstream_serving_model_swaps", "models swapped in", registry=r)
        self.model_refused = Counter("sidstream_serving_model_refused", "model updates refused", registry=r)
        self.catalogue_updates = Counter("sidstream_serving_catalogue_updates", "catalogue entries applied",
                                         registry=r)
        self.catalogue_refused = Counter("sidstream_serving_catalogue_refused", "catalogue entries refused",
                                         registry=r)
        self.swap_lag = Histogram("sidstream_serving_model_swap_lag_seconds",
                                  "manifest created -> serving in this replica",
                                  buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60), registry=r)
        self.item_lag = Histogram("sidstream_serving_item_lag_seconds",
                                  "item produced (or SID assigned) -> in this replica's trie",
                                  buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10), registry=r)
        self.model_info = Gauge("sidstream_serving_model_info", "1 for the model version served", ["version"],
                                registry=r)
        # what the replica returns, for the monitor's score-drift check: log-probability of each returned item
        # under the model, and its value-function score
        self.score = Histogram("sidstream_serving_score", "score of each returned item, by kind (log_prob, value)",
                               ["kind"], buckets=SCORE_BUCKETS, registry=r)
        self.trie_items = Gauge("sidstream_serving_trie_items", "items in the live trie", registry=r)

    def set_model(self, old: str | None, new: str) -> None:
        if old is not None and old != new:
            try:
                self.model_info.remove(old)
            except KeyError:  # never labelled (a refused first load)
                pass
        self.model_info.labels(new).set(1)

    def render(self) -> bytes:
        return generate_latest(self.registry)

"""Prometheus metrics of the online post-trainer, in a registry of its own (see serving/metrics.py for why)."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LAG_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


class TrainerMetrics:
    def __init__(self):
        self.registry = r = CollectorRegistry(auto_describe=True)
        self.examples = Counter("sidstream_trainer_examples", "training examples by result (trained, invalid)",
                                ["result"], registry=r)
        self.steps = Counter("sidstream_trainer_steps", "gradient steps", registry=r)
        self.loss = Gauge("sidstream_trainer_loss", "loss of the last gradient step", registry=r)
        self.recall = Gauge("sidstream_trainer_prequential_recall_at_10",
                            "prequential recall@10 over the rolling window (predicted before trained on)",
                            registry=r)
        self.ndcg = Gauge("sidstream_trainer_prequential_ndcg_at_10", "prequential NDCG@10, rolling window",
                          registry=r)
        self.action_logloss = Gauge("sidstream_trainer_action_logloss", "prequential action log-loss, rolling",
                                    registry=r)
        self.prequential_events = Gauge("sidstream_trainer_prequential_events",
                                        "events in the rolling prequential window", registry=r)
        for gauge in (self.recall, self.ndcg, self.action_logloss):
            gauge.set(float("nan"))  # not 0.0: nothing measured yet must not read as a collapse of quality
        self.versions = Counter("sidstream_trainer_versions", "versions by gate decision (published, refused)",
                                ["result"], registry=r)
        self.last_publish = Gauge("sidstream_trainer_last_publish_timestamp_seconds",
                                  "unix time of the newest published version", registry=r)
        self.event_to_trained = Histogram("sidstream_trainer_event_to_trained_seconds",
                                          "event appended by the stream worker -> trained on", buckets=LAG_BUCKETS,
                                          registry=r)

    def observe_rolling(self, rolling: dict) -> None:
        self.prequential_events.set(rolling.get("events", 0))
        if rolling.get("events"):
            self.recall.set(rolling["recall@10"])
            self.ndcg.set(rolling["ndcg@10"])
            self.action_logloss.set(rolling["action_logloss"])

    def render(self) -> bytes:
        return generate_latest(self.registry)

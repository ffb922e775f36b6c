"""The monitor's Prometheus side: parsing the scrapes of the worker, trainer and replicas (exposition text ->
families, histogram buckets, gauges, counters) and exporting the monitor's own view as gauges."""
from __future__ import annotations

import urllib.request
from typing import Iterable

from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.parser import text_string_to_metric_families

from deploy.monitor.alerts import STATE_CODES

# histogram name -> (hop name in the snapshot, scrape source prefix)
FRESHNESS_HISTOGRAMS = {
    "sidstream_stream_event_to_feast_seconds": ("event_to_feast_s", "worker"),
    "sidstream_stream_item_to_catalogue_seconds": ("item_to_catalogue_s", "worker"),
    "sidstream_serving_item_lag_seconds": ("item_to_trie_s", "serving"),
    "sidstream_trainer_event_to_trained_seconds": ("event_to_trained_s", "trainer"),
    "sidstream_serving_model_swap_lag_seconds": ("publish_to_serve_s", "serving"),
}

def parse_metrics(text: str) -> dict[str, list[tuple[str, dict[str, str], float]]]:
    """Prometheus exposition text -> {family name: [(sample name, labels, value)]}."""
    out: dict[str, list] = {}
    for family in text_string_to_metric_families(text):
        out.setdefault(family.name, []).extend((s.name, dict(s.labels), float(s.value)) for s in family.samples)
    return out


def histogram_of(families: dict, name: str, **labels: str) -> dict[float, float]:
    """Cumulative buckets {le: count} of a histogram family, summed over label sets (and replicas)."""
    out: dict[float, float] = {}
    for sample, sample_labels, value in families.get(name, []):
        if sample != f"{name}_bucket" or any(sample_labels.get(k) != v for k, v in labels.items()):
            continue
        le = float(sample_labels["le"])
        out[le] = out.get(le, 0.0) + value
    return out


def gauge_of(families: dict, name: str) -> float | None:
    values = [v for sample, _, v in families.get(name, []) if sample == name]
    return max(values) if values else None


def counter_of(families: dict, name: str, **labels: str) -> float:
    return sum(v for sample, sl, v in families.get(name, [])
               if sample in (name, f"{name}_total") and all(sl.get(k) == x for k, x in labels.items()))


def merge_families(many: Iterable[dict]) -> dict:
    out: dict[str, list] = {}
    for families in many:
        for name, samples in families.items():
            out.setdefault(name, []).extend(samples)
    return out


def parse_targets(spec: str) -> dict[str, str]:
    """`worker=http://h:9101/metrics,serving=http://h:8000/metrics` -> {name: url}; a clear error otherwise."""
    targets = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, sep, url = part.partition("=")
        if not sep or not name.strip() or not url.strip().startswith(("http://", "https://")):
            raise ValueError(f"scrape target {part!r} is not name=http(s)://host:port/path")
        targets[name.strip()] = url.strip()
    return targets


def scrape(url: str, timeout_s: float = 2.0, headers: dict | None = None) -> dict:
    request = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        return parse_metrics(response.read().decode("utf-8", errors="replace"))


class MonitorMetrics:
    """The monitor's own view as Prometheus gauges (the Grafana dashboard reads these)."""

    def __init__(self):
        self.registry = r = CollectorRegistry(auto_describe=True)
        self.lag = Gauge("sidstream_monitor_consumer_lag", "messages behind, per group and topic",
                         ["group", "topic"], registry=r)
        self.model_age = Gauge("sidstream_monitor_model_age_seconds", "now - newest announced version", registry=r)
        self.freshness = Gauge("sidstream_monitor_freshness_seconds", "hop latency quantiles", ["hop", "quantile"],
                               registry=r)
        self.psi = Gauge("sidstream_monitor_drift_psi", "PSI per signal", ["signal"], registry=r)
        self.kl = Gauge("sidstream_monitor_drift_kl", "KL(recent || reference) per signal", ["signal"], registry=r)
        self.dead = Gauge("sidstream_monitor_dead_codes", "codes no item uses, per level", ["level"], registry=r)
        self.overloaded = Gauge("sidstream_monitor_overloaded_codes", "overloaded codes, per level", ["level"],
                                registry=r)
        self.alert = Gauge("sidstream_monitor_alert", "alert state: -1 unknown, 0 ok, 1 warn, 2 alert", ["name"],
                           registry=r)
        self.recall = Gauge("sidstream_monitor_prequential_recall_at_10", "prequential recall@10", registry=r)

    def update(self, snap: dict) -> None:
        for gauge in (self.lag, self.freshness, self.psi, self.kl, self.dead, self.overloaded, self.alert):
            gauge.clear()  # label sets that vanished (a finished group, a hop gone unknown) must not linger
        self.model_age.set(float("nan"))
        self.recall.set(float("nan"))

        for group, topics in snap["lag"]["groups"].items():
            for topic, lag in topics.items():
                self.lag.labels(group, topic).set(lag)
        fresh = snap["freshness"]
        if fresh.get("model_age_s") is not None:
            self.model_age.set(fresh["model_age_s"])
        for hop in (h for h, _ in FRESHNESS_HISTOGRAMS.values()):
            for q in ("p50", "p99"):
                if fresh.get(hop) and fresh[hop].get(q) is not None:
                    self.freshness.labels(hop, q).set(fresh[hop][q])
        for signal, values in snap["drift"]["signals"].items():
            self.psi.labels(signal).set(values["psi"])
            self.kl.labels(signal).set(values["kl"])
        if snap["score"]["psi"] is not None:
            self.psi.labels("score").set(snap["score"]["psi"])
            self.kl.labels("score").set(snap["score"]["kl"])
        for level, usage in snap["catalogue"]["code_usage"].items():
            self.dead.labels(level).set(usage["dead"])
            self.overloaded.labels(level).set(usage["overloaded"])
        for a in snap["alerts"]:
            self.alert.labels(a["name"]).set(STATE_CODES[a["state"]])
        if snap["quality"]["recall@10"] is not None:
            self.recall.set(snap["quality"]["recall@10"])

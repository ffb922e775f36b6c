"""`sidstream monitor`: freshness along the chain and drift of the stream, with alert states.

Two halves:
- `MonitorCore` (pure): takes what was read - stream events from the `training` topic, catalogue entries, model
  announcements, consumer-group lags, end offsets, Prometheus scrapes of the worker, trainer and replicas - and
  turns it into one snapshot dict: freshness per hop, drift per signal (`streams/drift.py`), code usage of new
  items, quality trend, alert states (`deploy/alerts.py`). Unit-tested without any server.
- `KafkaReadings` + `scrape` (adapters): read those inputs from the real broker and the metrics endpoints.

Freshness hops (ARCHITECTURE.md): consumer lag per group and topic; event produced -> in Feast (worker
histogram); item produced -> SID on the catalogue topic (worker) -> in a replica's trie (serving histogram);
event appended -> trained on (trainer histogram); model version age (now - newest announced version's
`created`); publish -> serving (replica swap histogram). Histogram quantiles are taken over the observations
between the last two scrapes when there were any, else over everything since the process started.
"""
from __future__ import annotations

import json
import math
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from deploy.alerts import evaluate, rules_from, worst
from streams.drift import (EventWindows, StreamEvent, bucket_counts, code_usage, compare, histogram_delta,
                           histogram_quantile, last_event, new_item_codes, sum_histograms)

# histogram name -> (hop name in the snapshot, scrape source prefix)
FRESHNESS_HISTOGRAMS = {
    "sidstream_stream_event_to_feast_seconds": ("event_to_feast_s", "worker"),
    "sidstream_stream_item_to_catalogue_seconds": ("item_to_catalogue_s", "worker"),
    "sidstream_serving_item_lag_seconds": ("item_to_trie_s", "serving"),
    "sidstream_trainer_event_to_trained_seconds": ("event_to_trained_s", "trainer"),
    "sidstream_serving_model_swap_lag_seconds": ("publish_to_serve_s", "serving"),
}
MIN_SCORE_OBSERVATIONS = 50  # per window, before a score PSI means anything
FRESHNESS_SCRAPES = 12  # hop quantiles cover the observations of the last 12 scrapes (1 min at 5 s)
SCORE_RECENT_SCRAPES, SCORE_REFERENCE_SCRAPES = 3, 12
MIN_QUALITY_EVENTS = 500  # a prequential recall over fewer events is too noisy to compare


# ----------------------------------------------------------------------------------------------- scrapes
def parse_metrics(text: str) -> dict[str, list[tuple[str, dict[str, str], float]]]:
    """Prometheus exposition text -> {family name: [(sample name, labels, value)]}."""
    from prometheus_client.parser import text_string_to_metric_families

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
    import urllib.request

    request = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        return parse_metrics(response.read().decode("utf-8", errors="replace"))


# ----------------------------------------------------------------------------------------------- core
@dataclass
class ModelAnnouncement:
    version: str
    created: float | None
    step: int | None
    recall: float | None  # prequential recall@10 of the candidate window it was published on
    newest_appended_ms: float | None = None  # the newest trained event's append time (stream worker clock)


@dataclass
class MonitorCore:
    """Everything the monitor has seen, and the snapshot it makes of it."""

    settings: Any  # deploy.settings.MonitorSettings
    vocab: Any  # catalogue.vocab.Vocabulary
    base_codes: np.ndarray  # (items, levels) semantic codes of the catalogue the system started from
    base_ids: list[str]  # their item ids, in the same order
    topics: Any = None  # streams.settings.Topics (defaults when None)
    windows: EventWindows = field(init=False)
    new_items: dict[str, tuple[int, ...]] = field(default_factory=dict)
    catalogue_items: dict[str, tuple[int, ...]] = field(default_factory=dict)
    models: dict[str, ModelAnnouncement] = field(default_factory=dict)
    # (histogram, scrape source) -> cumulative buckets at the last scrape; deltas are taken per process so a
    # restart of one (counters reset) is seen as such
    _previous_scrape: dict = field(default_factory=dict)
    _hop_deltas: dict = field(default_factory=dict)  # hop -> deque of per-scrape delta histograms
    _score_deltas: deque = field(default_factory=lambda: deque(maxlen=SCORE_RECENT_SCRAPES + SCORE_REFERENCE_SCRAPES))
    _quality_history: deque = field(default_factory=lambda: deque(maxlen=50))
    _previous_ends: dict = field(default_factory=dict)
    _previous_time: float | None = None

    def __post_init__(self) -> None:
        self.windows = EventWindows(self.vocab.levels, self.vocab.codes_per_level, len(self.vocab.actions),
                                    self.settings.reference_events, self.settings.recent_events)
        self.rules = rules_from(self.settings)
        self.base_items = set(self.base_ids)
        self.catalogue_items = {i: tuple(int(c) for c in row) for i, row in zip(self.base_ids, self.base_codes)}
        if self.topics is None:
            from streams.settings import Topics

            self.topics = Topics()

    # ----- inputs
    def add_training_example(self, tokens: list[int]) -> bool:
        event = last_event(tokens, self.vocab)
        if event is not None:
            self.windows.add(event)
        return event is not None

    def add_event(self, event: StreamEvent) -> None:
        self.windows.add(event)

    def add_catalogue_entry(self, item_id: str, sid: list[int] | None) -> None:
        if sid is None:  # a deletion (tombstone)
            self.catalogue_items.pop(item_id, None)
            self.new_items.pop(item_id, None)
            return
        codes = tuple(int(c) for c in sid[: self.vocab.levels])
        self.catalogue_items[item_id] = codes
        if item_id not in self.base_items:
            self.new_items[item_id] = codes

    def add_model_update(self, message: dict) -> None:
        version = message.get("version")
        if not isinstance(version, str):
            return
        metrics = message.get("metrics") or {}
        recall = (metrics.get("prequential") or {}).get("recall@10")
        stream = message.get("stream") if isinstance(message.get("stream"), dict) else {}
        self.models[version] = ModelAnnouncement(version, _float(message.get("created")), message.get("step"),
                                                 _float(recall), _float(stream.get("newest_appended_ms")))

    # ----- the snapshot
    def snapshot(self, now: float, lags: dict[str, dict[str, int]] | None = None,
                 end_offsets: dict[str, int] | None = None, scrapes: dict[str, dict] | None = None,
                 scrape_errors: dict[str, str] | None = None) -> dict:
        scrapes = scrapes or {}
        interval = None if self._previous_time is None else max(1e-6, now - self._previous_time)
        snap: dict[str, Any] = {"time": now, "interval_s": interval}
        snap["throughput"] = self._throughput(end_offsets or {}, interval)
        lag_max = max((v for g in (lags or {}).values() for v in g.values()), default=None)
        snap["lag"] = {"groups": lags or {}, "max": lag_max}
        snap["freshness"] = self._freshness(now, scrapes)
        snap["catalogue"] = self._catalogue()
        snap["drift"] = self.windows.report()
        snap["score"] = self._score(scrapes)
        snap["quality"] = self._quality(scrapes)
        snap["sources"] = {name: "ok" for name in scrapes} | {n: f"error: {e}" for n, e in (scrape_errors or {}).items()}
        readings = self._readings(snap)
        states = evaluate(self.rules, readings)
        snap["alerts"] = [s.as_dict() for s in states]
        snap["status"] = worst(states)
        self._previous_time = now
        return snap

    def _throughput(self, end_offsets: dict[str, int], interval: float | None) -> dict:
        out = {"end_offsets": dict(end_offsets)}
        for topic, end in end_offsets.items():
            before = self._previous_ends.get(topic)
            out[f"{topic}_per_s"] = None if before is None or interval is None else max(0, end - before) / interval
        self._previous_ends = dict(end_offsets)
        return out

    def _freshness(self, now: float, scrapes: dict[str, dict]) -> dict:
        out: dict[str, Any] = {}
        for name, (hop, prefix) in FRESHNESS_HISTOGRAMS.items():
            window = self._hop_deltas.setdefault(hop, deque(maxlen=FRESHNESS_SCRAPES))
            window.append(self._delta(name, {src: f for src, f in scrapes.items() if src.startswith(prefix)}))
            recent = sum_histograms(window)
            count = recent.get(float("inf"), 0.0)
            # no observations in the window: unknown, not the lifetime numbers (a stalled hop must not look fine)
            out[hop] = {"p50": histogram_quantile(recent, 0.5), "p99": histogram_quantile(recent, 0.99),
                        "count": int(count)} if count > 0 else None
        newest = max(self.models.values(), key=lambda m: m.created or 0.0, default=None)
        out["model_version"] = newest.version if newest else None
        out["model_age_s"] = (max(0.0, now - newest.created) if newest and newest.created is not None else None)
        out["models_announced"] = len(self.models)
        swap = (out.get("publish_to_serve_s") or {}).get("p50") or 0.0
        out["event_to_served_s"] = event_to_served(list(self.models.values()), swap)
        serving = merge_families(f for source, f in scrapes.items() if source.startswith("serving"))
        served = [labels.get("version") for sample, labels, v in serving.get("sidstream_serving_model_info", [])
                  if v == 1]
        out["served_versions"] = sorted(set(filter(None, served)))
        return out

    def _delta(self, name: str, sources: dict[str, dict], **labels: str) -> dict[float, float]:
        """Observations of histogram `name` since the last scrape, summed over the sources (processes)."""
        deltas = []
        for source, families in sources.items():
            cumulative = histogram_of(families, name, **labels)
            if cumulative:
                deltas.append(histogram_delta(self._previous_scrape.get((name, source)), cumulative))
                self._previous_scrape[(name, source)] = cumulative
        return sum_histograms(deltas)

    def _catalogue(self) -> dict:
        levels, k = self.vocab.levels, self.vocab.codes_per_level
        current = np.asarray(list(self.catalogue_items.values()), dtype=np.int64).reshape(-1, levels)
        new = np.asarray(list(self.new_items.values()), dtype=np.int64).reshape(-1, levels)
        return {"items": int(len(current)), "new_items": int(len(new)),
                "code_usage": code_usage(current, k, self.settings.overload_factor),
                "new_item_codes": new_item_codes(self.base_codes, new, k, self.settings.overload_factor)}

    def _score(self, scrapes: dict[str, dict]) -> dict:
        """Served log-probabilities: the last few scrapes against the stretch of scrapes before them."""
        delta = self._delta("sidstream_serving_score",
                            {src: f for src, f in scrapes.items() if src.startswith("serving")}, kind="log_prob")
        out = {"recent": 0, "reference": 0, "psi": None, "kl": None, "excess": None}
        if not delta:
            return out
        self._score_deltas.append(bucket_counts(delta))
        if len({len(d) for d in self._score_deltas}) != 1:  # bucket layout changed (a new serving version)
            self._score_deltas.clear()
            return out
        deltas = list(self._score_deltas)
        recent = np.sum(deltas[-SCORE_RECENT_SCRAPES:], axis=0)
        before = deltas[:-SCORE_RECENT_SCRAPES]
        reference = np.sum(before, axis=0) if before else np.zeros_like(recent)
        out.update(recent=int(recent.sum()), reference=int(reference.sum()))
        if recent.sum() >= MIN_SCORE_OBSERVATIONS and reference.sum() >= MIN_SCORE_OBSERVATIONS:
            out.update({k: v for k, v in compare(reference, recent).items() if k != "noise"})
        return out

    def _quality(self, scrapes: dict[str, dict]) -> dict:
        """Prequential recall@10: the trainer's rolling window when it is full enough, else the newest
        announced version's; the baseline is the median of earlier full-window readings (a max would be a lucky
        outlier)."""
        trainer = merge_families(f for source, f in scrapes.items() if source.startswith("trainer"))
        live, events = (_float(gauge_of(trainer, "sidstream_trainer_prequential_recall_at_10")),
                        _float(gauge_of(trainer, "sidstream_trainer_prequential_events")) or 0.0)
        trend = [(m.created, m.recall) for m in sorted(self.models.values(), key=lambda m: m.created or 0.0)
                 if m.recall is not None]
        baseline = float(np.median(self._quality_history)) if len(self._quality_history) >= 3 else None
        current, source = None, None
        if live is not None and events >= MIN_QUALITY_EVENTS:
            current, source = live, "trainer"
            self._quality_history.append(live)
        elif trend:
            current, source = trend[-1][1], "announcements"
        return {"recall@10": current, "baseline_recall@10": baseline, "events": int(events), "source": source,
                "trend": [r for _, r in trend[-20:]]}

    def _readings(self, snap: dict) -> dict[str, float | None]:
        fresh = snap["freshness"]

        def p99(hop):
            return fresh[hop]["p99"] if fresh.get(hop) else None

        # drift rules judge the PSI in excess of what sampling noise alone gives at these window sizes
        served = fresh.get("event_to_served_s")
        readings = {"consumer_lag": snap["lag"]["max"], "event_to_feast_p99": p99("event_to_feast_s"),
                    "event_to_served_p50": served["p50"] if served else None,
                    "item_to_trie_p99": p99("item_to_trie_s"), "model_age": fresh.get("model_age_s"),
                    "publish_to_serve_p99": p99("publish_to_serve_s"), "drift_score": snap["score"]["excess"]}
        drift = snap["drift"]
        for signal, values in drift["signals"].items():
            readings[f"drift_{signal}"] = values["excess"] if drift["ready"] else None
        level1 = snap["catalogue"]["new_item_codes"]["levels"].get("level_1")
        if level1 is not None and snap["catalogue"]["new_items"] >= 20:
            readings["drift_new_items"] = level1["excess"]
        q = snap["quality"]
        if q["source"] == "trainer" and q["baseline_recall@10"]:
            readings["prequential_drop"] = max(0.0, 1.0 - q["recall@10"] / q["baseline_recall@10"])
        t = snap["throughput"]
        interactions = t.get(f"{self.topics.interactions}_per_s")
        dead = t.get(f"{self.topics.dead_letters}_per_s")
        if interactions and dead is not None:
            readings["dead_letter_rate"] = min(1.0, dead / interactions)
        return readings


def event_to_served(models: list[ModelAnnouncement], swap_s: float = 0.0, last: int = 20) -> dict | None:
    """Event appended -> in weights that serve, from the announcements alone. The events a version adds are
    those appended after the previous version's newest trained event and up to its own; each is served from
    `created + swap_s`. Taking arrivals as uniform within a window, each window's lags are uniform on
    [created - own newest, created - previous newest]; p50 and max are over all windows, weighted by length."""
    timed = sorted((m for m in models if m.created is not None and m.newest_appended_ms is not None),
                   key=lambda m: m.created)[-(last + 1):]
    windows = []
    for prev, cur in zip(timed, timed[1:]):
        span = (cur.newest_appended_ms - prev.newest_appended_ms) / 1000
        if span > 0:
            low = cur.created - cur.newest_appended_ms / 1000 + swap_s
            windows.append((max(0.0, low), max(0.0, low + span), span))
    if not windows:
        return None
    grid = np.concatenate([np.linspace(lo, hi, 200) for lo, hi, _ in windows])
    weights = np.concatenate([np.full(200, span / 200) for _, _, span in windows])
    order = np.argsort(grid)
    cumulative = np.cumsum(weights[order]) / weights.sum()
    return {"p50": float(grid[order][np.searchsorted(cumulative, 0.5)]), "max": float(max(hi for _, hi, _ in windows)),
            "versions": len(windows)}


def _float(value) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


# ----------------------------------------------------------------------------------------------- Kafka side
class KafkaReadings:
    """Reads the topics the monitor watches, without a consumer group (it never moves anyone's offsets).

    training: the newest `window_events` of each partition at start (then follows), fed in timestamp order so
    "recent" means recent across partitions; catalogue and model-updates: from the beginning. A watched topic
    that does not exist yet is picked up when it appears. End offsets of interactions, training, items and
    dead-letters give rates; the committed offsets of consumer groups on this deployment's topics give lags."""

    def __init__(self, bootstrap: str, topics, window_events: int):
        from kafka import KafkaAdminClient, KafkaConsumer

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
        from kafka import TopicPartition

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
        from kafka import TopicPartition

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


# ----------------------------------------------------------------------------------------------- exported gauges
class MonitorMetrics:
    """The monitor's own view as Prometheus gauges (the Grafana dashboard reads these)."""

    def __init__(self):
        from prometheus_client import CollectorRegistry, Gauge

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
        from deploy.alerts import STATE_CODES

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


# ----------------------------------------------------------------------------------------------- the view
def _fmt(value, unit: str = "", digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if unit == "s" and value >= 120:
            return f"{value / 60:.1f} min"
        return f"{value:.{digits}f}{(' ' + unit) if unit else ''}"
    return f"{value}{(' ' + unit) if unit else ''}"


def render(snap: dict, header: list[str] | None = None) -> str:
    """The terminal view of one snapshot."""
    lines = list(header or [])
    t = snap["throughput"]
    rates = ", ".join(f"{k[:-6]} {_fmt(v, digits=0)}/s" for k, v in t.items() if k.endswith("_per_s"))
    lines.append(f"status {snap['status'].upper()}   {time.strftime('%H:%M:%S', time.localtime(snap['time']))}   "
                 f"{rates or 'rates: first interval'}")
    lag = snap["lag"]
    groups = "; ".join(f"{g}: " + ", ".join(f"{tp} {n}" for tp, n in sorted(ts.items()))
                       for g, ts in sorted(lag["groups"].items()))
    lines.append(f"consumer lag  {groups or '-'}")
    f = snap["freshness"]
    hops = []
    for hop in ("event_to_feast_s", "item_to_catalogue_s", "item_to_trie_s", "event_to_trained_s",
                "publish_to_serve_s"):
        h = f.get(hop)
        hops.append(f"{hop[:-2].replace('_', ' ')} p50 {_fmt(h and h['p50'], 's')} p99 {_fmt(h and h['p99'], 's')}")
    lines.append("freshness     " + " | ".join(hops[:2]))
    lines.append("              " + " | ".join(hops[2:]))
    served = f.get("event_to_served_s")
    lines.append(f"              event to served (in serving weights) p50 {_fmt(served and served['p50'], 's', 1)} "
                 f"max {_fmt(served and served['max'], 's', 1)}")
    lines.append(f"model         newest {f.get('model_version') or '-'} age {_fmt(f.get('model_age_s'), 's', 0)}; "
                 f"served {', '.join(f.get('served_versions') or []) or '-'}; {f.get('models_announced', 0)} announced")
    c = snap["catalogue"]
    dead = ", ".join(f"{lvl} {u['dead']}/{u['overloaded']}" for lvl, u in c["code_usage"].items())
    lines.append(f"catalogue     {c['items']} items, {c['new_items']} new; dead/overloaded codes {dead or '-'}")
    d = snap["drift"]
    signals = " ".join(f"{s} {v['psi']:.3f}/{v['noise']:.3f}" for s, v in d["signals"].items())
    lines.append(f"drift         PSI/noise floor {signals or '-'} | score {_fmt(snap['score']['psi'], digits=3)}   "
                 f"[{d['reference_events']} reference vs {d['recent_events']} recent events"
                 f"{'' if d['ready'] else ', warming up'}]")
    q = snap["quality"]
    trend = " ".join(f"{r:.3f}" for r in q["trend"][-6:])
    lines.append(f"quality       prequential recall@10 {_fmt(q['recall@10'], digits=4)} over {q['events']} events "
                 f"(baseline {_fmt(q['baseline_recall@10'], digits=4)}); per version: {trend or '-'}")
    firing = [a for a in snap["alerts"] if a["state"] in ("warn", "alert")]
    lines.append("alerts        " + (", ".join(f"{a['name']}={a['state']} ({_fmt(a['value'], a['unit'], 3)})"
                                              for a in firing) or "none"))
    errors = [f"{n}: {s}" for n, s in snap.get("sources", {}).items() if s != "ok"]
    if errors:
        lines.append("unreachable   " + "; ".join(errors))
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------- the plot
def plot_history(history_file: Path, out_png: Path, psi_alert: float = 0.25, psi_warn: float = 0.1) -> dict:
    """Freshness, drift, lag/throughput and quality over time from a monitor history file -> PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    snaps = [json.loads(line) for line in Path(history_file).read_text().splitlines() if line.strip()]
    if not snaps:
        raise ValueError(f"{history_file} holds no snapshots: run `sidstream monitor` (or the demo) first")
    t0 = snaps[0]["time"]
    x = [(s["time"] - t0) / 60 for s in snaps]

    def series(get):
        out = []
        for s in snaps:
            try:
                v = get(s)
            except (KeyError, TypeError):
                v = None
            out.append(np.nan if v is None else float(v))
        return out

    fig, axes = plt.subplots(4, 1, figsize=(11, 12), sharex=True)
    ax = axes[0]
    for hop in ("event_to_feast_s", "item_to_trie_s", "event_to_trained_s", "publish_to_serve_s"):
        ax.plot(x, series(lambda s, h=hop: s["freshness"][h]["p99"]), label=f"{hop[:-2]} p99")
    ax.plot(x, series(lambda s: s["freshness"]["model_age_s"]), label="model age", linestyle="--")
    ax.set_yscale("symlog", linthresh=0.1)
    ax.set_ylabel("seconds")
    ax.set_title("freshness along the chain")
    ax.legend(fontsize=8, loc="upper left")
    ax = axes[1]
    signals = sorted({k for s in snaps for k in s["drift"]["signals"]})
    for signal in signals:
        ax.plot(x, series(lambda s, g=signal: s["drift"]["signals"][g]["excess"] if s["drift"]["ready"] else None),
                label=signal)
    ax.plot(x, series(lambda s: s["score"]["excess"]), label="score")
    ax.plot(x, series(lambda s: s["catalogue"]["new_item_codes"]["levels"]["level_1"]["excess"]
                      if s["catalogue"]["new_items"] >= 20 else None), label="new items L1", linestyle=":")
    ax.axhline(psi_warn, color="orange", linewidth=0.8)
    ax.axhline(psi_alert, color="red", linewidth=0.8)
    ax.set_ylabel("PSI - noise floor")
    ax.set_title("drift: recent stream vs reference window, PSI above sampling noise (orange warn, red alert)")
    ax.legend(fontsize=8, loc="upper left", ncol=3)
    ax = axes[2]
    ax.plot(x, series(lambda s: s["lag"]["max"]), label="max consumer lag (messages)")
    rate_keys = sorted({k for s in snaps for k in s["throughput"] if k.endswith("_per_s")})
    ax2 = ax.twinx()
    for key in rate_keys:
        ax2.plot(x, series(lambda s, k=key: s["throughput"].get(k)), linestyle="--", label=key.replace("_per_s", "/s"))
    ax.set_ylabel("lag")
    ax2.set_ylabel("messages/s")
    ax.set_title("consumer lag and topic rates")
    ax.legend(fontsize=8, loc="upper left")
    ax2.legend(fontsize=8, loc="upper right")
    ax = axes[3]
    ax.plot(x, series(lambda s: s["quality"]["recall@10"]), label="prequential recall@10")
    ax.set_ylabel("recall@10")
    ax.set_xlabel("minutes")
    ax.set_title("prequential quality")
    alert_x = [xi for xi, s in zip(x, snaps) if s.get("status") == "alert"]
    for a in axes:
        for xi in alert_x:
            a.axvline(xi, color="red", alpha=0.08, linewidth=4)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=90)
    plt.close(fig)
    return {"snapshots": len(snaps), "minutes": x[-1], "alert_snapshots": len(alert_x), "out": str(out_png)}

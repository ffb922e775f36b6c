"""The monitor's pure core: what was read - stream events from the `training` topic, catalogue entries, model
announcements, consumer-group lags, end offsets, Prometheus scrapes of the worker, trainer and replicas - turned
into one snapshot dict: freshness per hop, drift per signal (`streams/drift.py`), code usage of new items, quality
trend, the readings the alert rules judge and their states (`deploy/monitor/alerts.py`). Unit-tested without any
server; the adapters that read those inputs are `deploy/monitor/kafka.py` and `deploy/monitor/prometheus.py`.

Freshness hops (ARCHITECTURE.md): consumer lag per group and topic; event produced -> in Feast (worker
histogram); item produced -> SID on the catalogue topic (worker) -> in a replica's trie (serving histogram);
event appended -> trained on (trainer histogram); model version age (now - newest announced version's
`created`); publish -> serving (replica swap histogram). Histogram quantiles are taken over the observations
between the last two scrapes when there were any, else over everything since the process started.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from deploy.monitor.alerts import AlertHold, evaluate, rules_from, worst
from deploy.monitor.prometheus import FRESHNESS_HISTOGRAMS, counter_of, gauge_of, histogram_of, merge_families
from streams.drift import (EventWindows, StreamEvent, bucket_counts, code_usage, compare, histogram_delta,
                           histogram_quantile, last_event, new_item_codes, sum_histograms)
from streams.settings import Topics

MIN_SCORE_OBSERVATIONS = 50  # per window, before a score PSI means anything
FRESHNESS_SCRAPES = 12  # hop quantiles cover the observations of the last 12 scrapes (1 min at 5 s)
SCORE_RECENT_SCRAPES, SCORE_REFERENCE_SCRAPES = 3, 12
MIN_QUALITY_EVENTS = 500  # a prequential recall over fewer events is too noisy to compare



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
    _served_swaps: float | None = None  # serving's model-swap count at the last scrape

    def __post_init__(self) -> None:
        self.windows = EventWindows(self.vocab.levels, self.vocab.codes_per_level, len(self.vocab.actions),
                                    self.settings.reference_events, self.settings.recent_events)
        self.rules = rules_from(self.settings)
        self.hold = AlertHold(self.settings.alert_hold_s, self.settings.alert_clear_s)
        self.base_items = set(self.base_ids)
        self.catalogue_items = {i: tuple(int(c) for c in row) for i, row in zip(self.base_ids, self.base_codes)}
        if self.topics is None:
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
        states = self.hold.apply(evaluate(self.rules, readings), now)
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
        serving = {src: f for src, f in scrapes.items() if src.startswith("serving")}
        delta = self._delta("sidstream_serving_score", serving, kind="log_prob")
        out = {"recent": 0, "reference": 0, "psi": None, "kl": None, "excess": None, "reset_by_swap": False}
        # a new model version moves the served scores by design: that alone is not drift, so the comparison
        # starts again from the first scrape after a swap
        swaps = sum(counter_of(f, "sidstream_serving_model_swaps") for f in serving.values())
        if self._served_swaps is not None and swaps != self._served_swaps:
            self._score_deltas.clear()
            out["reset_by_swap"] = True
            self._served_swaps = swaps
            return out
        self._served_swaps = swaps
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

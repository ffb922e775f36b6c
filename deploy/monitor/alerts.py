"""Alert states of the monitor: a reading against a warn and an alert threshold (pure; the thresholds are
`MonitorSettings`). States: ok (0), warn (1), alert (2), and unknown (-1) when the reading is missing, which
is not the same as healthy: a monitor that cannot see a hop says so. `AlertHold` adds hold times, so one noisy
snapshot neither raises nor clears an alert."""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

STATE_CODES = {"unknown": -1, "ok": 0, "warn": 1, "alert": 2}


@dataclass(frozen=True)
class Rule:
    name: str
    warn: float
    alert: float
    unit: str = ""
    higher_is_worse: bool = True
    help: str = ""

    def judge(self, value: float | None) -> str:
        if value is None or value != value:  # None or NaN: not measured
            return "unknown"
        v = value if self.higher_is_worse else -value
        warn, alert = (self.warn, self.alert) if self.higher_is_worse else (-self.warn, -self.alert)
        if v >= alert:
            return "alert"
        if v >= warn:
            return "warn"
        return "ok"


@dataclass(frozen=True)
class AlertState:
    name: str
    state: str
    value: float | None
    warn: float
    alert: float
    unit: str
    help: str
    raw: str = ""  # this snapshot's reading alone, before the hold times (empty: the same as `state`)

    @property
    def code(self) -> int:
        return STATE_CODES[self.state]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def rules_from(settings) -> list[Rule]:
    """The monitor's rules, thresholds from settings (`SIDSTREAM_MONITOR_*`)."""
    s = settings
    drift = [Rule(f"drift_{signal}", s.psi_warn, s.psi_alert, "psi", help=f"PSI of the {signal} distribution, "
                  "recent stream vs the window before it") for signal in ("sid_level_1", "sid_level_2", "sid_level_3",
                                                                           "action")]
    return [
        Rule("consumer_lag", s.lag_warn, s.lag_alert, "messages", help="largest consumer-group lag on any topic"),
        Rule("event_to_feast_p99", s.event_to_feast_warn_s, s.event_to_feast_alert_s, "s",
             help="event produced -> its tokens in the Feast online store (worker histogram)"),
        Rule("item_to_trie_p99", s.item_to_trie_warn_s, s.item_to_trie_alert_s, "s",
             help="item produced -> in a serving replica's trie"),
        Rule("model_age", s.model_age_warn_s, s.model_age_alert_s, "s",
             help="seconds since the newest announced model version was published"),
        Rule("event_to_served_p50", s.event_to_served_warn_s, s.event_to_served_alert_s, "s",
             help="event appended -> in model weights that serve (from version announcements)"),
        Rule("publish_to_serve_p99", s.publish_to_serve_warn_s, s.publish_to_serve_alert_s, "s",
             help="version published -> serving in a replica"),
        *drift,
        Rule("drift_new_items", s.psi_warn, s.psi_alert, "psi",
             help="PSI of new items' level-1 codes vs the catalogue's (a new item cluster)"),
        Rule("drift_score", s.psi_warn, s.psi_alert, "psi", help="PSI of served scores, last interval vs before"),
        Rule("prequential_drop", s.quality_drop_warn, s.quality_drop_alert, "ratio",
             help="1 - (recent prequential recall@10 / median of earlier full-window readings)"),
        Rule("dead_letter_rate", s.dead_letter_warn, s.dead_letter_alert, "ratio",
             help="share of interactions sent to dead letters in the last interval"),
    ]


def evaluate(rules: list[Rule], readings: dict[str, float | None]) -> list[AlertState]:
    return [AlertState(r.name, r.judge(readings.get(r.name)), readings.get(r.name), r.warn, r.alert, r.unit, r.help)
            for r in rules]


class AlertHold:
    """Hold times on top of the rules: a state worse than the one shown replaces it only once readings have been
    at least that bad for `hold_s`, and a better one only once they have been better for `clear_s`. A missing
    reading (unknown) is shown at once: not seeing a hop is never hidden."""

    def __init__(self, hold_s: float, clear_s: float):
        self.hold_s, self.clear_s = hold_s, clear_s
        self.shown: dict[str, str] = {}
        self.since: dict[str, tuple[str, float]] = {}  # rule -> (direction "worse"/"better", since when)

    def apply(self, states: list[AlertState], now: float) -> list[AlertState]:
        return [self._one(s, now) for s in states]

    def _one(self, state: AlertState, now: float) -> AlertState:
        name, raw = state.name, state.state
        shown = self.shown.get(name, "ok")
        if raw == "unknown" or shown == "unknown" or raw == shown:
            self.since.pop(name, None)
            self.shown[name] = raw
            return replace(state, raw=raw)
        direction = "worse" if STATE_CODES[raw] > STATE_CODES[shown] else "better"
        started = self.since.get(name)
        if started is None or started[0] != direction:
            started = self.since[name] = (direction, now)
        if now - started[1] >= (self.hold_s if direction == "worse" else self.clear_s):
            self.shown[name] = shown = raw
            self.since.pop(name, None)
        return replace(state, state=shown, raw=raw)


def worst(states: list[AlertState]) -> str:
    known = [s.state for s in states if s.state != "unknown"]
    for level in ("alert", "warn"):
        if level in known:
            return level
    return "ok" if known else "unknown"

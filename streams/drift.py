"""Drift of the stream, as pure functions over token windows (no Kafka here; `deploy/monitor.py` feeds them).

What drifts in a generative recommender over semantic IDs:
- the SID-token distribution per level: which regions of the item space users touch now versus the window the
  model was trained on (a new item cluster shows up as mass on codes that were rare);
- the action distribution: click/skip/like rates (a changed UI or a broken client shows here first);
- the codes new items land on: dead codes (no item at all), overloaded codes (far above a uniform share),
  and how the new items' codes compare with the catalogue's;
- the score distribution of what serving returns (histogram buckets scraped from the replicas).

Each comparison is a PSI (population stability index, symmetric) and a KL divergence KL(recent || reference),
both on smoothed histograms so an empty bin never makes them infinite. The usual reading of PSI: < 0.1 stable,
0.1-0.25 moderate shift, > 0.25 major shift; those are the default warn/alert thresholds in `deploy/alerts.py`.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np

SMOOTHING = 0.5  # pseudo-count per bin (Jeffreys prior): no infinite divergence from one empty bin


def smoothed(counts: Sequence[float], smoothing: float = SMOOTHING) -> np.ndarray:
    c = np.asarray(counts, dtype=np.float64) + smoothing
    return c / c.sum()


def psi(reference: Sequence[float], recent: Sequence[float], smoothing: float = SMOOTHING) -> float:
    """Population stability index between two histograms of counts over the same bins."""
    if len(reference) != len(recent):
        raise ValueError(f"histograms differ in bins: {len(reference)} vs {len(recent)}")
    p, q = smoothed(reference, smoothing), smoothed(recent, smoothing)
    return float(np.sum((q - p) * np.log(q / p)))


def kl(reference: Sequence[float], recent: Sequence[float], smoothing: float = SMOOTHING) -> float:
    """KL(recent || reference) in nats: how surprising the recent stream is under the reference."""
    if len(reference) != len(recent):
        raise ValueError(f"histograms differ in bins: {len(reference)} vs {len(recent)}")
    p, q = smoothed(reference, smoothing), smoothed(recent, smoothing)
    return float(np.sum(q * np.log(q / p)))


def psi_noise(reference: Sequence[float], recent: Sequence[float]) -> float:
    """The PSI two samples of these sizes show with no drift at all: PSI is Jeffreys' divergence, and under the
    null hypothesis n_eff * PSI is about chi-square with (occupied bins - 1) degrees of freedom, n_eff =
    n1 n2 / (n1 + n2). With 256 codes per level and 1,000 recent events that is ~0.3 - above the usual alert
    threshold - so the monitor judges the PSI in excess of this floor, not the raw PSI."""
    ref, rec = np.asarray(reference, dtype=np.float64), np.asarray(recent, dtype=np.float64)
    n1, n2 = ref.sum(), rec.sum()
    if n1 <= 0 or n2 <= 0:
        return float("inf")
    occupied = int(((ref + rec) > 0).sum())
    return max(0, occupied - 1) * (n1 + n2) / (n1 * n2)


def compare(reference: Sequence[float], recent: Sequence[float]) -> dict:
    """PSI, KL, the no-drift PSI floor for these sample sizes, and the excess PSI the alerts judge."""
    value, noise = psi(reference, recent), psi_noise(reference, recent)
    return {"psi": value, "kl": kl(reference, recent), "noise": noise, "excess": max(0.0, value - noise)}


@dataclass(frozen=True)
class StreamEvent:
    """One event as the drift monitor sees it: the item's semantic codes (levels only) and the action index."""

    codes: tuple[int, ...]
    action: int


def last_event(tokens: Sequence[int], vocab) -> StreamEvent | None:
    """The newest event of a token window (a `training` message): its last `sid_length + 1` tokens are
    `s1..sL suffix action`. None when the window does not end in a whole event group."""
    group = vocab.sid_length + 1
    if len(tokens) < group:
        return None
    sid, action = tokens[-group:-1], tokens[-1]
    if not vocab.is_action(action):
        return None
    try:
        codes = vocab.tokens_to_sid(sid)
    except ValueError:
        return None
    return StreamEvent(tuple(codes[: vocab.levels]), int(action) - vocab.action_range.start)


@dataclass
class EventWindows:
    """A sliding reference window followed by a recent window of stream events.

    The reference is the stretch the online model has just been trained on (the `reference_size` events before
    the recent ones); recent is the newest `recent_size`. A sudden shift shows as a gap between the two until
    the reference catches up, which is also roughly how long the online trainer needs to adapt.
    """

    levels: int
    codes_per_level: int
    actions: int
    reference_size: int = 5000
    recent_size: int = 1000
    events: deque = field(init=False)

    def __post_init__(self) -> None:
        if self.reference_size < 1 or self.recent_size < 1:
            raise ValueError("window sizes must be >= 1")
        self.events = deque(maxlen=self.reference_size + self.recent_size)

    def add(self, event: StreamEvent) -> None:
        self.events.append(event)

    def extend(self, events: Iterable[StreamEvent]) -> None:
        self.events.extend(events)

    def split(self) -> tuple[list[StreamEvent], list[StreamEvent]]:
        events = list(self.events)
        cut = max(0, len(events) - self.recent_size)
        return events[:cut], events[cut:]

    def ready(self, min_reference: int = 200) -> bool:
        ref, recent = self.split()
        return len(ref) >= min(min_reference, self.reference_size) and len(recent) >= min(100, self.recent_size)

    def histograms(self, events: Sequence[StreamEvent]) -> dict[str, np.ndarray]:
        out = {}
        codes = np.asarray([e.codes for e in events], dtype=np.int64).reshape(-1, self.levels)
        for level in range(self.levels):
            out[f"sid_level_{level + 1}"] = np.bincount(codes[:, level], minlength=self.codes_per_level)
        out["action"] = np.bincount(np.asarray([e.action for e in events], dtype=np.int64), minlength=self.actions)
        return out

    def report(self) -> dict:
        """Per signal: PSI, KL, and the reference/recent sizes; `ready` False until both windows hold enough."""
        reference, recent = self.split()
        out = {"reference_events": len(reference), "recent_events": len(recent), "ready": self.ready(),
               "signals": {}}
        if not reference or not recent:
            return out
        ref_h, rec_h = self.histograms(reference), self.histograms(recent)
        for name in ref_h:
            out["signals"][name] = compare(ref_h[name], rec_h[name])
        ref_a, rec_a = smoothed(ref_h["action"], 0.0), smoothed(rec_h["action"], 0.0)
        out["action_rates"] = {"reference": ref_a.round(4).tolist(), "recent": rec_a.round(4).tolist()}
        return out


def code_usage(codes: np.ndarray, codes_per_level: int, overload_factor: float = 4.0) -> dict:
    """Per level: how many codes no item uses (dead) and how many hold more than `overload_factor` times a
    uniform share of the items (overloaded). `codes` is an (items, levels) array of semantic codes."""
    codes = np.asarray(codes, dtype=np.int64)
    out = {}
    if codes.ndim != 2 or not len(codes):
        return out
    uniform = len(codes) / codes_per_level
    for level in range(codes.shape[1]):
        counts = np.bincount(codes[:, level], minlength=codes_per_level)
        out[f"level_{level + 1}"] = {"dead": int((counts == 0).sum()),
                                     "overloaded": int((counts > overload_factor * max(uniform, 1.0)).sum()),
                                     "max_share": float(counts.max() / len(codes))}
    return out


def new_item_codes(base: np.ndarray, new: np.ndarray, codes_per_level: int, overload_factor: float = 4.0) -> dict:
    """How new items use the codes, compared with the catalogue they joined (`base`, items x levels).

    `into_dead`: new items whose level code no base item had; `into_overloaded`: new items landing on codes
    already overloaded in the base; PSI/KL of the new items' per-level code histogram against the base's.
    A burst of items from one new cluster piles onto few codes: high PSI and many items in overloaded codes."""
    base, new = np.asarray(base, dtype=np.int64), np.asarray(new, dtype=np.int64)
    out = {"new_items": int(len(new)), "levels": {}}
    if base.ndim != 2 or new.ndim != 2 or not len(new) or not len(base):
        return out
    uniform = len(base) / codes_per_level
    for level in range(min(base.shape[1], new.shape[1])):
        base_counts = np.bincount(base[:, level], minlength=codes_per_level)
        new_counts = np.bincount(new[:, level], minlength=codes_per_level)
        dead = base_counts == 0
        overloaded = base_counts > overload_factor * max(uniform, 1.0)
        out["levels"][f"level_{level + 1}"] = {
            "into_dead": int(new_counts[dead].sum()), "into_overloaded": int(new_counts[overloaded].sum()),
            **compare(base_counts, new_counts)}
    return out


def histogram_delta(before: dict[float, float] | None, after: dict[float, float]) -> dict[float, float]:
    """Cumulative buckets ({le: count}) observed between two scrapes of one process's histogram. A bucket that
    went down means the process restarted (counters reset): everything since the restart is the delta."""
    if not before or any(after.get(le, 0.0) < count for le, count in before.items()):
        return dict(after)
    return {le: after[le] - before.get(le, 0.0) for le in after}


def sum_histograms(histograms: Iterable[dict[float, float]]) -> dict[float, float]:
    out: dict[float, float] = {}
    for h in histograms:
        for le, count in h.items():
            out[le] = out.get(le, 0.0) + count
    return out


def bucket_counts(cumulative: dict[float, float]) -> np.ndarray:
    """Cumulative `le` buckets -> per-bin counts, in `le` order."""
    bounds = sorted(cumulative)
    values = np.asarray([cumulative[b] for b in bounds], dtype=np.float64)
    return np.diff(values, prepend=0.0).clip(min=0.0)


def histogram_quantile(cumulative: dict[float, float], q: float) -> float | None:
    """Prometheus-style quantile from cumulative buckets (linear inside the bucket); None without data."""
    bounds = sorted(cumulative)
    if len(bounds) < 2 or bounds[-1] != float("inf"):
        return None
    total = cumulative[bounds[-1]]
    if total <= 0:
        return None
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for b in bounds:
        count = cumulative[b]
        if count >= rank:
            if b == bounds[0] and b <= 0:  # Prometheus: the first bucket's lower bound is 0 only for positive bounds
                return b
            if b == float("inf"):
                return lower_bound
            if count == lower_count:
                return b
            return lower_bound + (b - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = b, count
    return bounds[-1]

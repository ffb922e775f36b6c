"""Appending events to user token sequences (pure core: no Kafka, no Faust, no Feast).

A user's sequence is the flat token stream of ARCHITECTURE.md, one group per event: `s1 s2 s3 s4 action`
(optionally preceded by context tokens), oldest first, trimmed to the last `window_events` events.
Appends are idempotent: the state remembers the ids of its recent events, so an event redelivered after a
crash (at-least-once) is recognised and skipped instead of appended twice.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from catalogue.vocab import Vocabulary
from features.sequences import ROW_EVENT_IDS, UserSequence

# How many recent event ids a user remembers for de-duplication. Redeliveries after a crash come from the
# uncommitted tail of a partition, a handful of events per user; this bound keeps state small.
DEDUPE_MEMORY = 256


def event_tokens(vocab: Vocabulary, sid_codes: Sequence[int], action: str,
                 context: Sequence[str] = ()) -> list[int]:
    """The tokens one event appends: context tokens, the item's SID tokens (levels + suffix), the action."""
    return [vocab.context_token(c) for c in context] + vocab.sid_to_tokens(sid_codes) + [vocab.action_token(action)]


@dataclass
class SequenceState:
    """What a stream worker keeps per user (in a Faust table: its changelog lives in Kafka)."""

    tokens: list[int] = field(default_factory=list)
    event_lengths: list[int] = field(default_factory=list)  # tokens per event still in the window
    event_count: int = 0
    last_event_ms: int = 0
    recent_event_ids: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"tokens": self.tokens, "event_lengths": self.event_lengths, "event_count": self.event_count,
                "last_event_ms": self.last_event_ms, "recent_event_ids": self.recent_event_ids}

    @classmethod
    def from_json(cls, data: dict | None) -> "SequenceState":
        if not data:
            return cls()
        return cls(tokens=list(data["tokens"]), event_lengths=list(data["event_lengths"]),
                   event_count=int(data["event_count"]), last_event_ms=int(data["last_event_ms"]),
                   recent_event_ids=list(data["recent_event_ids"]))


def state_from_row(vocab: Vocabulary, tokens: Sequence[int], event_count: int, last_event_ms: int,
                   recent_event_ids: Sequence[str] = ()) -> SequenceState:
    """The state that continues a row of the online store (a backfilled past, or a row a worker wrote) for a user
    the worker has no state of. Each event's tokens end with its action token, which gives the per-event lengths
    the window trims by; the row's newest event ids seed the de-duplication, so those events, delivered again
    (the event at a backfill's cut, a crash's redelivered tail), are not appended twice."""
    lengths, start = [], 0
    for i, token in enumerate(tokens):
        if vocab.is_action(token):
            lengths.append(i + 1 - start)
            start = i + 1
    if start != len(tokens):
        raise ValueError(f"a stored sequence must end with an action token; {len(tokens) - start} tokens follow "
                         "the last one")
    return SequenceState(tokens=[int(t) for t in tokens], event_lengths=lengths,
                         event_count=max(int(event_count), len(lengths)), last_event_ms=int(last_event_ms),
                         recent_event_ids=[str(e) for e in recent_event_ids])


def append_event(state: SequenceState, event_id: str, tokens: Sequence[int], event_ms: int,
                 window_events: int) -> bool:
    """Append one event's tokens in place. Returns False (and changes nothing) for an event already applied."""
    if window_events < 1:
        raise ValueError(f"window_events must be at least 1, got {window_events}")
    if event_id in state.recent_event_ids:
        return False
    state.tokens.extend(tokens)
    state.event_lengths.append(len(tokens))
    state.event_count += 1
    state.last_event_ms = max(state.last_event_ms, int(event_ms))
    state.recent_event_ids.append(event_id)
    if len(state.recent_event_ids) > DEDUPE_MEMORY:
        del state.recent_event_ids[: len(state.recent_event_ids) - DEDUPE_MEMORY]
    overflow = len(state.event_lengths) - window_events
    if overflow > 0:
        drop = sum(state.event_lengths[:overflow])
        del state.tokens[:drop]
        del state.event_lengths[:overflow]
    return True


def build_sequences(vocab: Vocabulary, sid_of: dict[str, Sequence[int]],
                    events: Sequence[tuple[str, str, str, str, int]], window_events: int) -> dict[str, SequenceState]:
    """Reference fold over (event_id, user_id, item_id, action, event_ms) events, the same logic the worker
    applies one event at a time; tests compare the live store against it."""
    states: dict[str, SequenceState] = {}
    for event_id, user_id, item_id, action, event_ms in events:
        state = states.setdefault(user_id, SequenceState())
        append_event(state, event_id, event_tokens(vocab, sid_of[item_id], action), event_ms, window_events)
    return states


def backfill_rows(vocab: Vocabulary, sid_of: dict[str, Sequence[int]],
                  events: Sequence[tuple[str, str, str, str, int]], window_events: int
                  ) -> tuple[list[UserSequence], int]:
    """The online-store rows of users' logged pasts, folded by the same appends as the stream (build_sequences),
    each with the ids of its newest events; events whose item has no SID are left out. Returns (rows, left out)."""
    known = [e for e in events if e[2] in sid_of]
    states = build_sequences(vocab, sid_of, known, window_events)
    rows = [UserSequence(user, list(s.tokens), s.event_count, s.last_event_ms, 0, s.recent_event_ids[-ROW_EVENT_IDS:])
            for user, s in states.items()]
    return rows, len(events) - len(known)

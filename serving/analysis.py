"""What-if and attribution (`POST /whatif`, `POST /explain`), the pure part: a user's history as the events the
model reads, edits on it, and the edited and occluded histories as token streams. No model here: the service
scores the histories with the generation engine's `score_items`.

An event keeps its own tokens, so an event whose item has since left the catalogue (its item id is then None)
is still read exactly as the model reads it; an added event must name a catalogue item.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from serving.api import RequestError


@dataclass(frozen=True)
class Event:
    item_id: str | None  # None: the item is no longer in the catalogue
    action: str
    tokens: tuple[int, ...]  # its SID tokens and its action token

    def as_dict(self) -> dict:
        return {"item_id": self.item_id, "action": self.action}


@dataclass(frozen=True)
class Edit:
    op: str  # add | remove | set_action
    index: int | None = None  # the event edited (remove, set_action) or the place an added one goes (default: last)
    item_id: str | None = None
    action: str | None = None


def events_of_tokens(tokens: Sequence[int], vocab, trie) -> list[Event]:
    """A stored token sequence (whole `SID tokens + action` groups, BOS dropped) as events."""
    group = vocab.sid_length + 1
    tokens = list(tokens)
    if tokens and tokens[0] == vocab.BOS:
        tokens = tokens[1:]
    if len(tokens) % group:
        raise RequestError(f"the stored sequence has {len(tokens)} tokens, not whole events of {group}", 409)
    events = []
    for start in range(0, len(tokens), group):
        part = tuple(tokens[start : start + group])
        try:
            item = trie.item_at(vocab.tokens_to_sid(part[:-1]))
            action = vocab.action_name(part[-1])
        except ValueError as exc:
            raise RequestError(f"the stored sequence is not made of events: {exc}", 409) from None
        events.append(Event(item, action, part))
    return events


def new_event(item_id: str, action: str, vocab, trie, where: str) -> Event:
    if item_id not in trie:
        raise RequestError(f"{where}: item {item_id!r} is not in the catalogue")
    return Event(item_id, action, (*vocab.sid_to_tokens(trie.codes_of(item_id)), action_token(vocab, action, where)))


def action_token(vocab, action: str, where: str) -> int:
    if action not in vocab.actions:
        raise RequestError(f"{where}: unknown action {action!r}; this catalogue's actions: {list(vocab.actions)}")
    return vocab.action_token(action)


def apply_edits(events: Sequence[Event], edits: Sequence[Edit], vocab, trie) -> list[Event]:
    """The history after the edits, applied in order (each edit's index counts the events as the edits before
    it left them)."""
    out = list(events)
    for n, edit in enumerate(edits):
        where = f"edit {n} ({edit.op})"
        if edit.op == "add":
            if edit.item_id is None or edit.action is None:
                raise RequestError(f"{where} needs item_id and action")
            at = len(out) if edit.index is None else edit.index
            if not 0 <= at <= len(out):
                raise RequestError(f"{where}: index {at} is outside 0..{len(out)} (the history has {len(out)} "
                                   f"events)")
            out.insert(at, new_event(edit.item_id, edit.action, vocab, trie, where))
            continue
        if edit.op not in ("remove", "set_action"):
            raise RequestError(f"{where}: op must be add, remove or set_action")
        if edit.index is None:
            raise RequestError(f"{where} needs the index of the event it changes")
        if not 0 <= edit.index < len(out):
            raise RequestError(f"{where}: there is no event {edit.index}; the history has {len(out)} events"
                               + (f" (0..{len(out) - 1})" if out else ""))
        if edit.op == "remove":
            del out[edit.index]
        else:
            if edit.action is None:
                raise RequestError(f"{where} needs the new action")
            old = out[edit.index]
            out[edit.index] = Event(old.item_id, edit.action,
                                    (*old.tokens[:-1], action_token(vocab, edit.action, where)))
    return out


def history_tokens(events: Sequence[Event], bos: int) -> list[int]:
    """BOS + the events' tokens: what the engine reads."""
    return [bos] + [t for e in events for t in e.tokens]


def occlusions(events: Sequence[Event]) -> list[list[Event]]:
    """The history with each event left out in turn (leave-one-out occlusion), in event order."""
    return [list(events[:i]) + list(events[i + 1 :]) for i in range(len(events))]


ATTENTION_METHOD = ("attention (a heuristic): the share of attention each event's tokens get from the item's SID "
                    "positions, averaged over heads, layers and those positions")


def attention_by_event(weights: Sequence[Sequence[float]], events: Sequence[Event],
                       query_rows: Sequence[int]) -> list[float]:
    """Per event, the attention its tokens get from the `query_rows` positions (the scored item's own SID tokens,
    which predict its next code and its action), mean over those rows, of a [T, T] map already averaged over heads
    and layers. A heuristic: attention is where the model looks, not what changes its answer (occlusion is that)."""
    spans, start = [], 1  # position 0 is BOS
    for event in events:
        spans.append((start, start + len(event.tokens)))
        start += len(event.tokens)
    rows = [weights[r] for r in query_rows]
    return [sum(sum(row[a:b]) for row in rows) / max(1, len(rows)) for a, b in spans]


def ranked_by(changes: Sequence[float]) -> list[int]:
    """Event indices, the one whose removal lowers the score most first (ties: the later event first)."""
    return sorted(range(len(changes)), key=lambda i: (-changes[i], -i))

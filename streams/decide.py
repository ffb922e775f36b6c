"""What the interactions agent decides about each message (pure core: no Faust, no Kafka, no Feast).

The agent in streams/worker.py is a thin adapter around these: it takes a batch of messages, asks
`users_to_read` whose stored rows to fetch, runs each message through `check_interaction` (parse, key, action,
context, item), waits for an item the catalogue may still be assigning (`Waiting`), and then appends with
streams.sequencer (whose de-duplication by event id is the duplicate check). The offset guard is
streams/offsets.py. Every refusal carries the dead-letter reason, `kind: detail`, and the kind is what the stats
count.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from catalogue.vocab import Vocabulary
from streams.schemas import InteractionEvent, parse
from streams.sequencer import event_tokens


@dataclass(frozen=True)
class Refused:
    """The message goes to `dead-letters` with this reason."""

    reason: str

    @property
    def kind(self) -> str:
        return self.reason.split(":", 1)[0]


@dataclass(frozen=True)
class Waiting:
    """A valid event whose item has no SID yet: it may be on its way through the items agent."""

    event: InteractionEvent


@dataclass(frozen=True)
class Accepted:
    """A valid event and the tokens it appends."""

    event: InteractionEvent
    tokens: list[int]


Decision = Refused | Waiting | Accepted


def check_interaction(value: bytes, key: bytes | None, vocab: Vocabulary,
                      sid_of: Mapping[str, tuple[int, ...]]) -> Decision:
    """Validate one `interactions` message against the vocabulary and the worker's item -> SID map."""
    try:
        event = parse(InteractionEvent, value or b"")
    except ValueError as exc:
        return Refused(f"malformed: {exc}")
    user_key = (key or b"").decode(errors="replace")
    if user_key != event.user_id:
        # the topic is partitioned by user: a wrong key would put the user's state in two partitions
        return Refused(f"bad key: message key {user_key!r} is not the user_id {event.user_id!r}")
    if event.action not in vocab.actions:
        return Refused(f"unknown action: {event.action!r} (known: {', '.join(vocab.actions)})")
    if event.context and any(c not in vocab.contexts for c in event.context.values()):
        return Refused(f"unknown context: {event.context}")
    codes = sid_of.get(event.item_id)
    if codes is None:
        return Waiting(event)
    return Accepted(event, _tokens(vocab, event, codes))


def _tokens(vocab: Vocabulary, event: InteractionEvent, codes: tuple[int, ...]) -> list[int]:
    return event_tokens(vocab, codes, event.action, tuple(event.context.values()) if event.context else ())


def after_waiting(vocab: Vocabulary, event: InteractionEvent, codes: tuple[int, ...] | None,
                  waited_s: float) -> Accepted | Refused:
    """A `Waiting` event once the wait is over: accepted with the item's SID, or refused if it never came."""
    if codes is None:
        return Refused(f"unknown item: {event.item_id!r} not in the catalogue after {waited_s:g} s")
    return Accepted(event, _tokens(vocab, event, codes))


def users_to_read(keys: Iterable[bytes | None], has_state: Callable[[str], bool]) -> list[str]:
    """The users of a batch (message keys) that the worker holds no state of: their stored rows are fetched in
    one read before the batch is applied. A message whose key is not its user is refused later anyway."""
    users = sorted({key.decode(errors="replace") for key in keys if key})
    return [user for user in users if not has_state(user)]

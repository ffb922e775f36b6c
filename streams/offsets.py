"""Input offsets kept with the state they produced, so a skipped message is noticed and read again.

Why: the worker's state lives in a Faust table whose changelog is written in processing order, so the table
is always a prefix of what the worker processed. faust-streaming 0.15.3 can, around restarts and
rebalances, drop a fetched message without handing it to the agent and later commit past it (a gap in the
consumer's read offsets is counted as acknowledged). Offsets alone then lose events. Each user's state
therefore records the input (partition, offset) of its last event; after a rebalance the worker knows, per
partition, the next offset its state expects, and `OffsetGuard` checks every message against it:

- offset == expected: the next message; process it.
- offset <  expected: a redelivery. If this worker already handled that offset since the rebalance (a seek
  that landed after the missing messages had arrived anyway), it is a duplicate: skip it, or a bad message
  would be dead-lettered twice. Otherwise (the consumer restarted from an older commit) process it; the
  idempotent append skips what the state already holds.
- offset >  expected: messages in between were never processed. Skip this one (it will be read again),
  rewind the consumer to `expected`, and keep skipping until `expected` arrives.

A partition whose state records no offset yet has had nothing applied, so it expects the first offset in its
log (not the group's committed offset, which Faust may have moved past skipped messages): a skipped head is
caught too. A hole at the tail has no later message to reveal it:
`stalled` reports a partition whose log end is past the expected offset while no message of it has been seen
for `idle_s`, and the worker rewinds it the same way.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Iterable, Mapping


class Verdict(Enum):
    PROCESS = "process"
    SKIP = "skip"  # after a hole, waiting for the rewound consumer to deliver the missing offset
    REWIND = "rewind"  # a hole was just found: seek the partition back to `expected(partition)`
    DUPLICATE = "duplicate"  # already handled by this worker since the last rebalance


@dataclass
class OffsetGuard:
    rewind_retry_s: float = 5.0  # re-issue the seek if the missing offset has not arrived by then
    idle_s: float = 10.0  # no message of a partition for this long while its log end is ahead: a tail hole
    _expected: dict[int, int] = field(default_factory=dict)
    _seen: dict[int, float] = field(default_factory=dict)  # partition -> when a message of it last arrived
    _rewound_at: dict[int, float] = field(default_factory=dict)  # partition -> when the last seek was issued
    # partition -> first offset handled since the rebalance: [start, expected) is what this worker handled
    _start: dict[int, int] = field(default_factory=dict)
    rewinds: int = 0

    def reset(self, expected: Mapping[int, int], now: float = 0.0) -> None:
        """After a rebalance: the next offset each owned partition's state expects (absent: unguarded)."""
        self._expected = dict(expected)
        self._start = dict(expected)
        self._seen = {partition: now for partition in expected}
        self._rewound_at.clear()

    def expected(self, partition: int) -> int | None:
        return self._expected.get(partition)

    def check(self, partition: int, offset: int, now: float) -> Verdict:
        self._seen[partition] = now
        expected = self._expected.get(partition)
        if expected is None or offset <= expected:
            self._rewound_at.pop(partition, None)
            if expected is not None and self._start.get(partition, expected) <= offset < expected:
                return Verdict.DUPLICATE
            return Verdict.PROCESS
        return Verdict.REWIND if self._start_rewind(partition, now) else Verdict.SKIP

    def stalled(self, log_ends: Mapping[int, int], now: float) -> list[int]:
        """Partitions to rewind because their log end is past the expected offset and nothing arrived for
        `idle_s` (and no rewind of theirs is still within `rewind_retry_s`)."""
        out = []
        for partition, end in log_ends.items():
            expected = self._expected.get(partition)
            if expected is None or end <= expected or now - self._seen.get(partition, now) < self.idle_s:
                continue
            if self._start_rewind(partition, now):
                out.append(partition)
        return out

    def _start_rewind(self, partition: int, now: float) -> bool:
        """Record a rewind of `partition` unless one was issued less than `rewind_retry_s` ago."""
        rewound = self._rewound_at.get(partition)
        if rewound is not None and now - rewound < self.rewind_retry_s:
            return False
        self._rewound_at[partition] = now
        self.rewinds += 1
        return True

    def processed(self, partition: int, offset: int) -> None:
        """A message was handled (appended, deduplicated or dead-lettered): the state now covers it."""
        self._start.setdefault(partition, offset)
        if offset + 1 > self._expected.get(partition, -1):
            self._expected[partition] = offset + 1


def expected_offsets(states: Iterable[Mapping], owned: Iterable[int]) -> dict[int, int]:
    """Per owned partition, one past the highest input offset recorded in the users' states."""
    owned = set(owned)
    out: dict[int, int] = {}
    for value in states:
        if not value:
            continue
        partition, offset = value.get("partition"), value.get("offset")
        if partition in owned and offset is not None and offset + 1 > out.get(partition, -1):
            out[partition] = offset + 1
    return out

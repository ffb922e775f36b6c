"""The faust-streaming app of sidstream (the streams room's adapter to Kafka).

Agents:
- interactions, in batches: validate and look up the item's SID (the decisions are streams/decide.py's pure
  functions), append `SID tokens + action` to the user's sequence in a Faust table (its changelog lives in
  Kafka; a user the worker has no state of continues its stored row, read once per batch), emit the window to
  `training`, and queue the row for the Feast online store, which a timer pushes in micro-batches.
- items: validate, encode the content, give the item a SID with the frozen codebooks, index it (Qdrant), and
  append the SID to the compacted `catalogue` topic.
A background follower (streams/follow.py) reads the whole `catalogue` topic so every worker knows every item's
SID; entries change the worker's trie by the one rule of catalogue.trie.apply_catalogue_change.

Delivery is at-least-once with idempotent appends: each user's state remembers its recent event ids, so a
redelivered event is skipped. `streams/faust_commit.py` makes Faust's commit wait until the table's changelog
writes have reached the Kafka driver (faust-streaming 0.15.3 could commit ahead of them), and each state records
the input offset of its last event so `streams/offsets.py` can notice messages the consumer skipped and read
them again. After every rebalance (a restart included) the worker re-pushes the rows of the
partitions it now owns to Feast, so an offset committed before its Feast push was flushed loses nothing.
Invalid input never stops the worker: it goes to `dead-letters` with the reason and the original bytes.
"""
from __future__ import annotations

import asyncio
import functools
import json
import logging
import threading
import time
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, Sequence

import faust
from faust.streams import _current_event as faust_current_event  # the context variable current_event() reads
from kafka import KafkaConsumer, TopicPartition

from catalogue.catalogue import ItemCatalogue
from catalogue.trie import ChangeOutcome, apply_catalogue_change
from features.sequences import ROW_EVENT_IDS, UserSequence
from streams import faust_commit, faust_fetch
from streams.follow import Records, TopicFollower, WholeTopicReader
from streams.offsets import OffsetGuard, Verdict, expected_offsets
from streams.schemas import (CatalogueChange, CatalogueEntry, DeadLetter, ItemEvent, now_ms,
                             parse, parse_catalogue_entry, training_example_json)
from streams.decide import Refused, Waiting, after_waiting, check_interaction, users_to_read
from streams.sequencer import SequenceState, append_event, state_from_row
from streams.metrics import StreamMetrics
from streams.settings import WorkerSettings

log = logging.getLogger("sidstream.streams")


# Rows per call into the online store. The push runs on the event loop, not in a thread: in a thread, each of
# its many short GIL releases (one per SQLite statement or Redis reply) waited up to the 5 ms switch interval
# behind the busy agent, so a push of 250 rows took 0.2 to 0.8 s instead of about 25 ms, rows piled up, and the
# agent blocked on the flush once 1,000 were pending.
PUSH_CHUNK_ROWS = 500


class SequenceSink(Protocol):
    def push(self, rows: Sequence[UserSequence]) -> int: ...


# user ids -> their stored rows in the online store (None: no row); the Feast facade's `read` in production
StoredRows = Callable[[list[str]], dict[str, UserSequence | None]]


# (item_id, embedding, sid codes, item dict) -> None: indexes a newly assigned item (Qdrant in production)
ItemIndexer = Callable[[str, Any, tuple, dict], None]
# item dict -> embedding vector for the frozen codebooks
ItemEncoder = Callable[[dict], Any]


@dataclass
class WorkerStats:
    interactions: int = 0
    appended: int = 0
    duplicates: int = 0
    dead_letters: int = 0
    items: int = 0
    pushed_rows: int = 0
    pushes: int = 0
    rewinds: int = 0  # holes in a partition's offsets, each read again (see streams/offsets.py)
    catalogue_refused: int = 0  # catalogue entries not applied (malformed, other codebooks, a SID held by another)
    continued: int = 0  # users whose sequence continued a stored row (a backfilled past) instead of starting empty
    row_reads: int = 0  # batched reads of the online store for users the worker had no state of
    reasons: dict[str, int] = field(default_factory=dict)


class CatalogueView:
    """The item -> SID map every worker needs, kept current from the `catalogue` topic.

    The follower thread writes, agents read; a lock covers the trie because the items agent places new items
    into the same catalogue (a plain dict read needs no lock in CPython).
    """

    def __init__(self, catalogue: ItemCatalogue):
        self.catalogue = catalogue
        self.lock = threading.Lock()
        self.sid_of: dict[str, tuple[int, ...]] = catalogue.sid_map()

    def apply(self, change: CatalogueChange) -> ChangeOutcome:
        with self.lock:
            outcome = apply_catalogue_change(self.catalogue.trie, change)
            if outcome.status == "applied":
                if change.codes is None:
                    self.sid_of.pop(change.item_id, None)
                else:
                    self.sid_of[change.item_id] = change.codes
        return outcome

    def apply_records(self, records: Records, stats: WorkerStats | None = None) -> int:
        """A batch of `catalogue` topic values; returns how many changed the view. Refusals are logged with the
        reason and counted in `stats`."""
        applied = 0
        for _, value in records:
            try:
                outcome = self.apply(parse_catalogue_entry(value, self.catalogue.vocab))
            except ValueError as exc:
                outcome = ChangeOutcome("refused", str(exc))
            if outcome.status == "refused":
                if stats is not None:
                    stats.catalogue_refused += 1
                log.warning("catalogue entry refused: %s", outcome.reason)
            applied += outcome.status == "applied"
        return applied


def catalogue_follower(view: CatalogueView, settings: WorkerSettings, stats: WorkerStats | None = None,
                       poll_s: float = 0.2) -> TopicFollower:
    """A follower (not started) that reads the whole `catalogue` topic from the beginning, then keeps following it."""
    topic = settings.topics.catalogue
    return TopicFollower(
        "catalogue",
        lambda: WholeTopicReader(settings.kafka_bootstrap_servers, topic, client_id="sidstream-catalogue-follower"),
        functools.partial(view.apply_records, stats=stats), poll_s=poll_s)


def first_offsets(bootstrap: str, topic: str, partitions: Sequence[int]) -> dict[int, int]:
    """The first offset still in the log of each partition."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        return {tp.partition: offset for tp, offset in
                consumer.beginning_offsets([TopicPartition(topic, p) for p in partitions]).items()}
    finally:
        consumer.close()


def make_current(event) -> None:
    """Make `event` the current one in this task, as Faust's per-event iteration does: a table write finds its
    changelog partition through it, and a batch from `take_events` leaves it unset. Only the context variable is
    set: `Stream._set_current_event` also sets the stream's own attribute, which the batch's background reader
    takes each new event from (setting it there made the batches drop and repeat events)."""
    faust_current_event.set(weakref.ref(event))


def use_event_loop(name: str) -> None:
    """Choose the worker's event loop; call it before anything creates a loop (before `build_app`).

    Faust spends much of each event in event-loop machinery (callbacks, futures, socket writes), which libuv
    does in C: in back-to-back runs draining 60,000 backlogged events, uvloop gave 2 to 8% more events/s."""
    if name == "asyncio":
        asyncio.set_event_loop_policy(asyncio.DefaultEventLoopPolicy())
        return
    if name != "uvloop":
        raise ValueError(f"unknown event loop {name!r}: use 'uvloop' or 'asyncio' (SIDSTREAM_EVENT_LOOP)")
    try:
        import uvloop  # optional: only imported when chosen, and its absence is a readable error
    except ImportError as exc:
        raise ValueError(f"SIDSTREAM_EVENT_LOOP=uvloop but uvloop cannot be imported ({exc}); install it or set "
                         "SIDSTREAM_EVENT_LOOP=asyncio") from None
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def faust_app(settings: WorkerSettings, app_id: str) -> faust.App:
    """A Faust app with the worker's consumer, producer and commit settings (the bare-agent benchmark uses the
    same, so the two are measured alike)."""
    faust_commit.install()  # a commit must never overtake the changelog writes of the events it covers
    faust_fetch.install(settings.fetch_max_wait_ms, settings.fetch_min_bytes)
    return faust.App(app_id, broker=f"kafka://{settings.kafka_bootstrap_servers}",
                     datadir=settings.faust_datadir, topic_partitions=settings.partitions, web_enabled=False,
                     broker_commit_interval=1.0, producer_linger_ms=5, stream_buffer_maxsize=16384,
                     broker_max_poll_records=2000, producer_max_batch_size=262144,
                     processing_guarantee=settings.processing_guarantee,
                     table_standby_replicas=settings.table_standby_replicas)


def build_app(settings: WorkerSettings, catalogue: ItemCatalogue, sequence_sink: SequenceSink,
              encode_item: ItemEncoder | None = None, index_item: ItemIndexer | None = None,
              metrics: StreamMetrics | None = None, stored_rows: StoredRows | None = None):
    """Assemble the Faust app. Sinks are injected by `deploy/` (Feast facade, Qdrant store); `metrics` is
    exposed by `deploy/` on the worker's metrics port. `stored_rows` reads the online store: a user the worker
    has no state of continues its stored row (a backfilled past) instead of starting empty."""
    app = faust_app(settings, settings.app_id)
    vocab = catalogue.vocab
    topics = settings.topics
    interactions_topic = app.topic(topics.interactions, key_serializer="raw", value_serializer="raw")
    items_topic = app.topic(topics.items, key_serializer="raw", value_serializer="raw")
    catalogue_topic = app.topic(topics.catalogue, key_serializer="raw", value_serializer="raw")
    dead_topic = app.topic(topics.dead_letters, key_serializer="raw", value_serializer="raw")
    # keys are user ids (raw bytes on the changelog), values JSON (the app's default value serializer)
    sequences = app.Table("user-sequences", partitions=settings.partitions, key_type=str)

    view = CatalogueView(catalogue)
    stats = WorkerStats()
    metrics = metrics or StreamMetrics()
    pending: dict[str, UserSequence] = {}
    produced_at: dict[str, int] = {}  # user -> produced_ms of the oldest event waiting in `pending`
    resync = {"needed": False}
    guard = OffsetGuard()
    follower = catalogue_follower(view, settings, stats)
    app.sidstream = {"stats": stats, "view": view, "pending": pending, "caught_up": follower.caught_up,
                     "metrics": metrics, "catalogue_follower": follower}

    # the labelled children, looked up once: `labels()` hashes its arguments under a lock on every call
    appended_count = metrics.events.labels("appended")
    duplicate_count = metrics.events.labels("duplicate")

    def on_training_sent(user_id: str, event_id: str, fut: asyncio.Future) -> None:
        problem = "cancelled" if fut.cancelled() else fut.exception()
        if problem is not None:
            log.error("the training example of event %r (user %r) was not delivered to %s: %r", event_id, user_id,
                      topics.training, problem)

    async def dead_letter(reason: str, event) -> None:
        stats.dead_letters += 1
        (metrics.items if event.message.topic == topics.items else metrics.events).labels("dead_letter").inc()
        kind = reason.split(":", 1)[0]
        stats.reasons[kind] = stats.reasons.get(kind, 0) + 1
        msg = event.message
        letter = DeadLetter.of(reason, msg.value or b"", msg.topic, key=msg.key, partition=msg.partition,
                               offset=msg.offset)
        await dead_topic.send(key=msg.key, value=letter.model_dump_json().encode())

    async def sid_for(item_id: str) -> tuple[int, ...] | None:
        codes = view.sid_of.get(item_id)
        deadline = time.monotonic() + settings.unknown_item_wait_s
        while codes is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)  # the item may be on its way through the items agent
            codes = view.sid_of.get(item_id)
        return codes

    async def rows_to_continue(batch) -> dict[str, UserSequence | None]:
        """The stored rows of the batch's users that have no table state, in one read of the online store.
        A failed read is retried until it succeeds: starting those users empty would overwrite their pasts."""
        if stored_rows is None:
            return {}
        users = users_to_read((e.message.key for e in batch), lambda user: sequences.get(user) is not None)
        while users:
            try:
                rows = stored_rows(users)
                stats.row_reads += 1
                return rows
            except Exception as exc:  # e.g. the online store is down: the stream waits, nothing is lost
                log.warning("could not read %d stored rows (%r); retrying in 1 s", len(users), exc)
                await asyncio.sleep(1.0)
        return {}

    async def interaction(event, stored: dict[str, UserSequence | None]) -> None:
        stats.interactions += 1
        decision = check_interaction(event.message.value, event.message.key, vocab, view.sid_of)
        if isinstance(decision, Waiting):
            codes = await sid_for(decision.event.item_id)
            decision = after_waiting(vocab, decision.event, codes, settings.unknown_item_wait_s)
        if isinstance(decision, Refused):
            return await dead_letter(decision.reason, event)
        ev, tokens = decision.event, decision.tokens
        value = sequences.get(ev.user_id)
        row = stored.get(ev.user_id) if value is None else None
        if row is not None:
            try:
                state = state_from_row(vocab, row.tokens, row.event_count, row.last_event_ms, row.recent_event_ids)
            except ValueError as exc:
                return await dead_letter(f"unreadable stored row: user {ev.user_id!r}: {exc}", event)
            stats.continued += 1
        else:
            state = SequenceState.from_json(value)
        event_ms = int(ev.ts * 1000)
        if not append_event(state, ev.event_id, tokens, event_ms, settings.window_events):
            stats.duplicates += 1
            duplicate_count.inc()
            return
        stats.appended += 1
        appended_count.inc()
        appended = now_ms()
        example = training_example_json(ev.user_id, state.tokens, ev.event_id, state.event_count, event_ms,
                                        ev.produced_ms, appended)
        # the example is queued before the changelog write: a crash between the two then repeats the example
        # (the event is not in the saved state, so it is appended and sent again) instead of losing it.
        # It goes straight to the producer `Topic.send` would use (Faust's own, or its transaction manager under
        # exactly-once), without `Topic.send`'s per-message bookkeeping (a future message, sensor calls, a
        # callback); the offset commit still waits for it: every commit flushes the Kafka driver first
        # (Faust's own at-least-once commit, and streams/faust_commit.py for exactly-once).
        producer = await app.maybe_start_producer()
        sent = await producer.send(topics.training, ev.user_id.encode(), example, None, None, None)
        sent.add_done_callback(functools.partial(on_training_sent, ev.user_id, ev.event_id))
        # the partition rides along so a resync after a rebalance pushes only the users this worker owns, and
        # the offset so the worker can tell, after a rebalance, which input its state already covers
        sequences[ev.user_id] = {**state.to_json(), "partition": event.message.partition,
                                 "offset": event.message.offset}
        pending[ev.user_id] = UserSequence(ev.user_id, list(state.tokens), state.event_count,
                                           state.last_event_ms, 0, state.recent_event_ids[-ROW_EVENT_IDS:])
        if ev.produced_ms is not None:
            produced_at.setdefault(ev.user_id, ev.produced_ms)
        if len(pending) >= settings.feast_flush_rows:
            await flush()

    async def rewind(tp, offset: int, why: str) -> None:
        stats.rewinds += 1
        metrics.rewinds.inc()
        log.warning("partition %d: %s; reading again from %d", tp.partition, why, offset)
        # seek_wait runs the seek on the consumer's own thread: Faust's plain seek() touches aiokafka's fetcher
        # from this loop and raced with a fetch (KeyError in fetched_records, and the fetcher crashed)
        try:
            await app.consumer.seek_wait({tp: offset})
        except Exception as exc:  # e.g. the partition was revoked meanwhile; the guard asks again later
            log.warning("rewind of %s to %d failed (%s); it is retried", tp, offset, exc)

    async def apply(event, stored: dict[str, UserSequence | None]) -> None:
        make_current(event)
        msg = event.message
        verdict = guard.check(msg.partition, msg.offset, time.monotonic())
        if verdict is Verdict.REWIND:
            target = guard.expected(msg.partition)
            await rewind(msg.tp, target, f"got offset {msg.offset} but the state expects {target} "
                                         "(messages skipped by the consumer)")
        if verdict is Verdict.DUPLICATE:
            stats.duplicates += 1
            duplicate_count.inc()
            return
        if verdict is not Verdict.PROCESS:
            return  # acknowledged but not applied: the rewound consumer delivers it again
        await interaction(event, stored)
        guard.processed(msg.partition, msg.offset)

    @app.agent(interactions_topic)
    async def interactions(stream):
        if settings.batch_max_events <= 1:  # event by event: a stored-row read per first-seen user
            async for event in stream.events():
                await apply(event, await rows_to_continue([event]))
            return
        # batches: one read of the online store covers the batch's new users; Faust acknowledges a batch's
        # events once the loop body has run for all of them, so a crash mid-batch redelivers the batch
        async for batch in stream.take_events(settings.batch_max_events, settings.batch_within_s):
            stored = await rows_to_continue(batch)
            for event in batch:
                await apply(event, stored)

    @app.agent(items_topic)
    async def items(stream):
        async for event in stream.events():
            try:
                item = parse(ItemEvent, event.message.value or b"")
            except ValueError as exc:
                await dead_letter(f"malformed: {exc}", event)
                continue
            try:
                # off the event loop: a text encode takes tens to hundreds of ms on a busy CPU, and interactions
                # (and the consumer's fetches) must not stop for it (seen in the demo: the loop starved, 4 ev/s)
                vector = await asyncio.get_running_loop().run_in_executor(None, encode_item, item.as_item()) \
                    if encode_item else None
                if vector is None:
                    raise ValueError("no encoder configured for new items")
                with view.lock:
                    codes = catalogue.add_item(item.item_id, vector, title=item.title or None)
            except ValueError as exc:  # includes SuffixSpaceExhausted and NaN embeddings
                await dead_letter(f"unassignable item: {exc}", event)
                continue
            view.sid_of[item.item_id] = codes
            stats.items += 1
            metrics.items.labels("assigned").inc()
            if index_item is not None:
                await asyncio.get_running_loop().run_in_executor(None, index_item, item.item_id, vector, codes,
                                                                 item.as_item())
            entry = CatalogueEntry(item_id=item.item_id, sid=list(codes), catalogue_version=catalogue.version,
                                   item_produced_ms=item.produced_ms, assigned_ms=now_ms(),
                                   title=item.title or None)
            await catalogue_topic.send(key=item.item_id.encode(), value=entry.model_dump_json().encode())
            if item.produced_ms is not None:
                metrics.item_to_catalogue.observe(max(0.0, (now_ms() - item.produced_ms) / 1000))

    push_lock = asyncio.Lock()

    async def flush() -> None:
        async with push_lock:
            if resync["needed"]:
                resync["needed"] = False
                owned = {tp.partition for tp in app.assignor.assigned_actives() if tp.topic == topics.interactions}
                for user, value in list(sequences.items()):
                    if value and value.get("partition") in owned and user not in pending:
                        s = SequenceState.from_json(value)
                        pending[user] = UserSequence(user, s.tokens, s.event_count, s.last_event_ms, 0,
                                                     s.recent_event_ids[-ROW_EVENT_IDS:])
            if not pending:
                return
            rows = list(pending.values())
            produced = list(produced_at.values())
            pending.clear()
            produced_at.clear()
            started = time.perf_counter()
            for chunk_start in range(0, len(rows), PUSH_CHUNK_ROWS):
                sequence_sink.push(rows[chunk_start:chunk_start + PUSH_CHUNK_ROWS])
                await asyncio.sleep(0)  # a resync's thousands of rows must not hold the loop in one piece
            metrics.feast_push.observe(time.perf_counter() - started)
            pushed = now_ms()
            for ms in produced:  # the oldest waiting event per user: the worst freshness of that row
                metrics.event_to_feast.observe(max(0.0, (pushed - ms) / 1000))
            stats.pushed_rows += len(rows)
            stats.pushes += 1

    @app.timer(interval=settings.feast_flush_interval_s)
    async def flush_timer():
        await flush()

    @app.on_partitions_revoked.connect
    async def on_revoked(sender, *args, **kwargs):
        # sent once the agents have finished their current events and before the partitions move: rows still
        # pending here would otherwise be pushed after the new owner's resync and overwrite newer rows
        try:
            await flush()
        except Exception as exc:  # e.g. the online store is down: the new owner's resync pushes these rows
            log.warning("could not push pending rows before a rebalance: %r", exc)

    @app.on_rebalance_complete.connect
    async def on_rebalance(sender, **kwargs):
        # sent after table recovery and before the streams resume: the table now holds what this worker owns
        resync["needed"] = True
        owned = {tp.partition for tp in app.assignor.assigned_actives() if tp.topic == topics.interactions}
        expected = expected_offsets(sequences.values(), owned)
        # no state yet means nothing of that partition was ever applied: expect its first offset. Not the group's
        # committed offset: Faust can commit past messages it skipped (seen here: 4,000 at a partition's head).
        fresh = sorted(owned - set(expected))
        if fresh:
            expected.update(await asyncio.get_running_loop().run_in_executor(
                None, first_offsets, settings.kafka_bootstrap_servers, topics.interactions, fresh))
        guard.reset(expected, time.monotonic())
        # at warning level, like the stats line: operators (and the tests) see when a worker starts owning work
        log.warning("rebalance complete: this worker owns %s partitions %s", topics.interactions, sorted(owned))

    @app.timer(interval=2.0)
    async def find_tail_holes():
        owned = [tp for tp in app.assignor.assigned_actives() if tp.topic == topics.interactions]
        if not owned or app.in_recovery:
            return
        try:
            log_ends = {tp.partition: end for tp, end in (await app.consumer.highwaters(*owned)).items()}
        except Exception as exc:  # e.g. a rebalance in progress: the next tick asks again
            log.info("log end offsets unavailable: %s", exc)
            return
        for partition in guard.stalled(log_ends, time.monotonic()):
            tp = next(tp for tp in owned if tp.partition == partition)
            target = guard.expected(partition)
            await rewind(tp, target, f"its log ends at {log_ends[partition]} but the state expects {target} and "
                                     f"nothing arrived for {guard.idle_s:.0f} s")

    @app.task
    async def start_follower():
        follower.start()

    @app.timer(interval=10.0)
    async def report():
        metrics.catalogue_items.set(len(view.sid_of))
        metrics.pending_rows.set(len(pending))
        log.warning("stats %s", json.dumps(stats.__dict__))

    return app

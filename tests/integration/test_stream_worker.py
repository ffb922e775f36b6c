"""The stream worker on the real broker and a real Feast store: replayed Beauty interactions become exactly the
token sequences built directly from the data (a backfilled past continued by the stream too, through SIGKILLs);
bad events are dead-lettered with reasons, none lost."""
import json
import time

import pytest

from deploy.streams import backfill
from features.store import UserSequenceStore
from streams.producer import EventProducer
from streams.replay import amazon_events, logged_past
from streams.schemas import ItemEvent
from streams.sequencer import build_sequences
from streams.topics import ensure_topics
from tests.integration.stream_harness import (BEAUTY, StreamEnv, WorkerProcess, build_test_catalogue,
                                              choose_users, dead_letter_reasons, read_topic, wait_for)

pytestmark = [pytest.mark.integration, pytest.mark.slow,
              pytest.mark.skipif(not (BEAUTY / "sequences.txt").exists(), reason="needs ../shared/data")]

REPLAY_EVENTS = 20_000


@pytest.fixture(scope="module")
def beauty(tmp_path_factory):
    out = tmp_path_factory.mktemp("catalogue")
    catalogue, sequences = build_test_catalogue(BEAUTY, out)
    return out, catalogue, sequences


def beauty_replay(services, catalogue, sequences, tmp_path, events: int):
    """Isolated topics, and the first `events` Beauty interactions with the sequences they must build."""
    env = StreamEnv(services.kafka_bootstrap, tmp_path)
    settings = env.settings()
    ensure_topics(settings)
    users = choose_users(sequences, events)
    replay = list(amazon_events({u: sequences[u] for u in users}, limit=events))
    return env, settings, replay, expected_states(catalogue, replay, settings.window_events)


def expected_states(catalogue, events, window):
    sid_of = {item: catalogue.codes_of(item) for item in {e.item_id for e in events}}
    rows = [(e.event_id, e.user_id, e.item_id, e.action, int(e.ts * 1000)) for e in events]
    return build_sequences(catalogue.vocab, sid_of, rows, window)


def worker_interactions(worker: WorkerProcess) -> int:
    """Interactions the worker reported in its last stats line (0 before the first one)."""
    return worker.last_stats().get("interactions", 0)


def owns_partitions(worker: WorkerProcess) -> bool:
    """Whether the worker's last rebalance gave it at least one interactions partition."""
    lines = [line for line in worker.tail(200_000).splitlines() if "rebalance complete:" in line]
    return bool(lines) and not lines[-1].rstrip().endswith("[]")


def mismatches(store: UserSequenceStore, expected) -> int:
    got = store.read(list(expected))
    return sum(1 for user, state in expected.items()
               if got[user] is None or got[user].tokens != state.tokens or got[user].event_count != state.event_count)


def test_replay_builds_exact_sequences_and_dead_letters_bad_events(services, beauty, tmp_path):
    catalogue_dir, catalogue, sequences = beauty
    env = StreamEnv(services.kafka_bootstrap, tmp_path)
    settings = env.settings()
    ensure_topics(settings)
    users = choose_users(sequences, REPLAY_EVENTS)
    events = list(amazon_events({u: sequences[u] for u in users}, limit=REPLAY_EVENTS))
    assert len(events) == REPLAY_EVENTS

    worker = WorkerProcess(env, catalogue_dir).start()
    try:
        producer = EventProducer(env.bootstrap)
        topic = settings.topics.interactions
        bad = [  # (key, raw value) -> reason prefix
            ("u-bad", b"{not json", "malformed"),
            ("u-bad", json.dumps({"event_id": "x1", "user_id": "u-bad", "ts": 1}).encode(), "malformed"),
            ("u-bad", json.dumps({"event_id": "x2", "user_id": "u-bad", "item_id": "1", "action": "teleport",
                                  "ts": 1}).encode(), "unknown action"),
            ("u-bad", json.dumps({"event_id": "x3", "user_id": "u-bad", "item_id": "no-such-item",
                                  "action": "click", "ts": 1}).encode(), "unknown item"),
            ("someone-else", json.dumps({"event_id": "x4", "user_id": "u-bad", "item_id": "1", "action": "click",
                                         "ts": 1}).encode(), "bad key"),
        ]
        for i, event in enumerate(events):
            producer.send(topic, event)
            if i % 4000 == 0:  # bad events mixed into the stream, not only at its end
                for key, raw, _ in bad:
                    producer.send(topic, raw, key=key)
        producer.send(settings.topics.items, b"\x00\x01 not an item", key="broken-item")
        producer.close()
        n_bad = len(bad) * len(range(0, REPLAY_EVENTS, 4000)) + 1

        expected = expected_states(catalogue, events, settings.window_events)
        store = UserSequenceStore(env.feature_settings(), repo_dir=tmp_path / "feast")
        wait_for(lambda: mismatches(store, expected) == 0 or f"{mismatches(store, expected)} mismatched users",
                 240, "every user's Feast sequence to match", worker, interval=2.0)
        wait_for(lambda: len(dead_letter_reasons(env.bootstrap, settings.topics.dead_letters)) >= n_bad
                 or len(dead_letter_reasons(env.bootstrap, settings.topics.dead_letters)),
                 60, "the dead letters", worker)
        assert worker.alive(), "the worker must survive bad data"
    finally:
        worker.stop()

    reasons = dead_letter_reasons(env.bootstrap, settings.topics.dead_letters)
    assert len(reasons) == n_bad
    rounds = len(range(0, REPLAY_EVENTS, 4000))
    for prefix in {p for _, _, p in bad}:
        expected_count = rounds * sum(p == prefix for _, _, p in bad) + (prefix == "malformed")  # + the bad item
        assert sum(r.startswith(prefix) for r in reasons) == expected_count, prefix
    assert sum(r.startswith("malformed: invalid ItemEvent") for r in reasons) == 1
    # every good event produced one training example, in user order
    training = read_topic(env.bootstrap, settings.topics.training, timeout_s=30)
    assert len(training) == REPLAY_EVENTS
    assert mismatches(store, expected) == 0


def test_new_item_gets_a_sid_and_becomes_usable(services, beauty, tmp_path):
    catalogue_dir, catalogue, _ = beauty
    env = StreamEnv(services.kafka_bootstrap, tmp_path)
    settings = env.settings()
    ensure_topics(settings)
    worker = WorkerProcess(env, catalogue_dir).start()
    try:
        producer = EventProducer(env.bootstrap)
        producer.send(settings.topics.items, ItemEvent(item_id="new-1", title="Glitter top coat", ts=1))
        # an interaction for the item right behind it: it waits briefly for the item instead of failing
        from streams.schemas import InteractionEvent
        producer.send(settings.topics.interactions,
                      InteractionEvent(event_id="n1", user_id="fresh-user", item_id="new-1", action="like", ts=2))
        producer.close()
        store = UserSequenceStore(env.feature_settings(), repo_dir=tmp_path / "feast")
        wait_for(lambda: store.read(["fresh-user"])["fresh-user"] is not None, 90, "the new item's event", worker)
    finally:
        worker.stop()
    entries = [json.loads(r.value) for r in read_topic(env.bootstrap, settings.topics.catalogue)]
    (entry,) = [e for e in entries if e["item_id"] == "new-1"]
    sid = tuple(entry["sid"])
    assert len(sid) == catalogue.vocab.sid_length
    assert catalogue.trie.item_at(sid) is None, "the new SID must not collide with an existing item"
    row = store.read(["fresh-user"])["fresh-user"]
    assert row.tokens == catalogue.vocab.sid_to_tokens(sid) + [catalogue.vocab.action_token("like")]


def replay_through_three_sigkills(env, settings, catalogue_dir, store, events, expected, upfront: int, chunk: int,
                                  progress: int) -> None:
    """Send `upfront` events and start the worker; three times wait for `progress` more training examples,
    SIGKILL the worker, send `chunk` more events and restart it; send the rest; wait until Feast equals
    `expected`; then check every user's window and event count (zero lost, zero duplicated tokens)."""
    training_end = lambda: len(read_topic(env.bootstrap, settings.topics.training, timeout_s=10))  # noqa: E731
    producer = EventProducer(env.bootstrap)
    for event in events[:upfront]:
        producer.send(settings.topics.interactions, event)
    producer.producer.flush()
    worker = WorkerProcess(env, catalogue_dir).start()
    kills, produced = 0, upfront
    try:
        while kills < 3:
            before = training_end()
            wait_for(lambda: training_end() > before + progress or f"{training_end()} processed", 180,
                     "the worker to make progress", worker, interval=0.5)
            worker.kill()
            kills += 1
            for event in events[produced: produced + chunk]:
                producer.send(settings.topics.interactions, event)
            producer.producer.flush()
            produced = min(len(events), produced + chunk)
            worker = WorkerProcess(env, catalogue_dir, name="w0").start()
        for event in events[produced:]:
            producer.send(settings.topics.interactions, event)
        producer.close()
        wait_for(lambda: mismatches(store, expected) == 0 or f"{mismatches(store, expected)} mismatched users",
                 300, "every sequence to match after three SIGKILLs", worker, interval=2.0)
    finally:
        worker.stop()
    got = store.read(list(expected))
    assert all(got[u].tokens == s.tokens and got[u].event_count == s.event_count for u, s in expected.items())


def test_sigkill_three_times_loses_and_duplicates_nothing(services, beauty, tmp_path):
    """SIGKILL the worker three times during a 50,000-event replay, restarting each time."""
    catalogue_dir, catalogue, sequences = beauty
    env, settings, events, expected = beauty_replay(services, catalogue, sequences, tmp_path, 50_000)
    store = UserSequenceStore(env.feature_settings(), repo_dir=tmp_path / "feast")
    # half up front, half while the worker is being killed
    replay_through_three_sigkills(env, settings, catalogue_dir, store, events, expected, upfront=25_000, chunk=8000,
                                  progress=2000)


def test_backfilled_pasts_continued_by_the_stream_are_exact_through_three_sigkills(services, beauty, tmp_path):
    """Backfill each user's first half through Feast (offline parquet + materialisation, Redis), replay the rest
    through a worker SIGKILLed three times: every sequence equals the one built from the whole data."""
    catalogue_dir, catalogue, sequences = beauty
    env = StreamEnv(services.kafka_bootstrap, tmp_path, redis_url=services.redis_url,
                    online_store="redis" if services.redis_url else "sqlite")
    settings = env.settings()
    ensure_topics(settings)
    data = {u: sequences[u] for u in choose_users(sequences, 30_000)}
    store = UserSequenceStore(env.feature_settings(), repo_dir=tmp_path / "feast")
    store.apply()
    past = logged_past(sequences=data, share=0.5)
    result = backfill(catalogue, past, store, settings.window_events)
    assert result["mismatches"] == 0 and result["newer_rows_kept"] == 0
    assert result["users"] == len({e[1] for e in past}) and result["events"] == len(past)
    assert (tmp_path / "feast" / "data" / "user_sequence.parquet").is_file()  # the offline store holds the pasts

    stream = list(amazon_events(data, after_share=0.5))
    assert len(past) + len(stream) == sum(len(s) for s in data.values())
    # the event at the cut sent again first (a producer that replays a little too much): it must not count twice
    at_cut = {e[1]: e[0] for e in past}
    resent = [ev for ev in amazon_events(data) if at_cut.get(ev.user_id) == ev.event_id][:200]
    expected = expected_states(catalogue, list(amazon_events(data)), settings.window_events)
    replay_through_three_sigkills(env, settings, catalogue_dir, store, resent + stream, expected,
                                  upfront=len(stream) // 2, chunk=len(stream) // 8, progress=1000)
    # the stream continued the stored pasts: a user with events on both sides of the cut matches the whole data
    # only if the worker appended to the backfilled row (a stats line, every 10 s, may never come before a kill)
    assert {e[1] for e in past} & {ev.user_id for ev in stream}


def test_a_second_worker_joining_mid_stream_shares_partitions_and_agrees_with_one(services, beauty, tmp_path):
    catalogue_dir, catalogue, sequences = beauty
    env, settings, events, expected = beauty_replay(services, catalogue, sequences, tmp_path, 10_000)
    training_end = lambda: len(read_topic(env.bootstrap, settings.topics.training, timeout_s=10))  # noqa: E731
    first = WorkerProcess(env, catalogue_dir, name="a").start()
    second = None
    try:
        producer = EventProducer(env.bootstrap)
        for event in events[:5_000]:
            producer.send(settings.topics.interactions, event)
        producer.producer.flush()
        # the second worker joins mid-stream: a rebalance moves partitions (and their table state) to it
        wait_for(lambda: training_end() > 1_000 or f"{training_end()} processed", 180,
                 "the first worker to make progress", first, interval=0.5)
        second = WorkerProcess(env, catalogue_dir, name="b").start()
        # the rest is sent only once the second worker owns partitions: on a busy machine its start-up alone
        # can outlast the ~20 s of sending, and the first worker would then have handled every event
        wait_for(lambda: owns_partitions(second) or "no partitions yet", 180, "the second worker to join", second)
        for start in range(5_000, len(events), 250):  # over ~20 s, so the join lands mid-stream
            for event in events[start:start + 250]:
                producer.send(settings.topics.interactions, event)
            producer.producer.flush()
            time.sleep(1.0)
        producer.close()
        store = UserSequenceStore(env.feature_settings(), repo_dir=tmp_path / "feast")
        wait_for(lambda: mismatches(store, expected) == 0 or f"{mismatches(store, expected)} mismatched users",
                 240, "two workers to build every sequence", first, interval=2.0)
        assert second.alive(), second.tail()
        # both stay up, and both applied events (the stats line comes every 10 s)
        wait_for(lambda: worker_interactions(first) > 0 and worker_interactions(second) > 0
                 or f"interactions a={worker_interactions(first)} b={worker_interactions(second)}", 30,
                 "both workers to report events they handled", first)
    finally:
        first.stop()
        if second is not None:
            second.stop()

"""`sidstream produce --dataset` on a MovieLens folder through a real broker: every rating arrives with its real
action in timestamp order, and every unreadable line is on the dead-letter topic with its line number."""
import json
import uuid

import pytest
from kafka import KafkaConsumer

from catalogue.datasets import load_movielens
from deploy.cli import main
from streams.schemas import DeadLetter, InteractionEvent
from tests.movielens_fixture import BAD_DATA_LINES, write_movielens

pytestmark = pytest.mark.integration


def _read(bootstrap: str, topic: str, expected: int) -> list[bytes]:
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             enable_auto_commit=False, consumer_timeout_ms=10_000, group_id=None)
    out = []
    for record in consumer:
        out.append(record.value)
        if len(out) >= expected:
            break
    consumer.close()
    return out


def test_movielens_replay_sends_real_actions_and_dead_letters_bad_lines(services, tmp_path, monkeypatch):
    run = uuid.uuid4().hex[:8]
    monkeypatch.setenv("SIDSTREAM_KAFKA_BOOTSTRAP_SERVERS", services.kafka_bootstrap)
    monkeypatch.setenv("SIDSTREAM_TOPICS__INTERACTIONS", f"ml-interactions-{run}")
    monkeypatch.setenv("SIDSTREAM_TOPICS__DEAD_LETTERS", f"ml-dead-{run}")
    data = write_movielens(tmp_path / "ml", users=8, items=15, per_user=6, bad_lines=True)
    assert main(["produce", "--dataset", str(data), "--speedup", "1e9"]) == 0

    events = [InteractionEvent.model_validate_json(v) for v in _read(services.kafka_bootstrap,
                                                                     f"ml-interactions-{run}", 48)]
    ml = load_movielens(data)
    expected = sorted((r for rs in ml.ratings.values() for r in rs), key=lambda r: (r.timestamp, int(r.user), r.item))
    by_user = {}
    for e in events:
        by_user.setdefault(e.user_id, []).append((e.item_id, e.action))
    assert len(events) == 48
    for user, ratings in ml.ratings.items():  # per user (one partition each): time order, real actions
        assert by_user[user] == [(r.item, r.action) for r in ratings]
    assert {e.action for e in events} == {r.action for r in expected}

    letters = [DeadLetter.model_validate(json.loads(v)) for v in _read(services.kafka_bootstrap,
                                                                        f"ml-dead-{run}", len(BAD_DATA_LINES))]
    assert [letter.original().decode() for letter in letters] == BAD_DATA_LINES
    assert [letter.reason.split(":")[1] for letter in letters] == ["4", "5", "6", "7"]  # u.data line numbers
    assert all(letter.source_topic == "replay:ml/u.data" for letter in letters)

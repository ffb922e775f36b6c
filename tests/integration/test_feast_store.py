"""`feast apply` on sidstream's feature repository, then push and read back through SQLite and Redis."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from features.sequences import UserSequence
from features.settings import FeatureSettings
from features.store import BackfillRefused, UserSequenceStore, write_repo

pytestmark = pytest.mark.integration

FEAST = Path(sys.executable).with_name("feast")


def feast_apply(repo_dir: Path) -> str:
    result = subprocess.run([str(FEAST), "-c", str(repo_dir), "apply"], capture_output=True, text=True,
                            env=dict(os.environ), timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def round_trip(store: UserSequenceStore) -> None:
    rows = [UserSequence(f"u{i}", list(range(i, i + 5 * (i + 1))), i + 1, 1_700_000_000_000 + i) for i in range(50)]
    assert store.push(rows) == 50
    back = store.read([r.user_id for r in rows] + ["never-seen"])
    assert back["never-seen"] is None
    for row in rows:
        got = back[row.user_id]
        assert got.tokens == row.tokens and got.event_count == row.event_count
        assert got.last_event_ms == row.last_event_ms and got.pushed_ms > 0
    # a later push replaces the window, even when its event time is the same millisecond (rows are stamped with
    # their write time; with the event time, a Redis store with Feast's dedup on would skip it)
    newer = UserSequence("u3", rows[3].tokens + [7, 8, 9, 10, 11], 5, rows[3].last_event_ms)
    store.push([newer])
    assert store.read(["u3"])["u3"].tokens == newer.tokens


@pytest.mark.parametrize("write_path", ["provider", "push_source"])
@pytest.mark.parametrize("online_store", ["sqlite", "redis"])
def test_feast_apply_push_and_read(online_store, write_path, services, tmp_path):
    if online_store == "redis" and not services.redis_url:
        pytest.skip("no Redis in this services backend")
    settings = FeatureSettings(online_store=online_store, feast_project=f"sidstream_{online_store}_{write_path}",
                               feast_write_path=write_path,
                               **({"redis_url": services.redis_url} if services.redis_url else {}))
    repo = write_repo(tmp_path / "feast", settings)
    out = feast_apply(repo)
    assert "user_sequence" in out
    store = UserSequenceStore(settings, repo_dir=repo)
    assert store.feature_service().name == "user_sequence_service"
    round_trip(store)


@pytest.mark.parametrize("online_store", ["sqlite", "redis"])
def test_backfill_materialises_the_past_and_never_replaces_a_newer_row(online_store, services, tmp_path):
    if online_store == "redis" and not services.redis_url:
        pytest.skip("no Redis in this services backend")
    settings = FeatureSettings(online_store=online_store, feast_project=f"sidstream_backfill_{online_store}",
                               **({"redis_url": services.redis_url} if services.redis_url else {}))
    store = UserSequenceStore(settings, repo_dir=tmp_path / "feast")
    store.apply()
    past = [UserSequence(f"b{i}", [1, 2, 3, 1030] * (i + 1), i + 1, 880_000_000_000 + i, 0, [f"b{i}:{i}"])
            for i in range(20)]
    result = store.backfill(past)
    assert result["users"] == 20 and result["materialized_users"] == 20 and result["newer_rows_kept"] == 0
    back = store.read([r.user_id for r in past])
    assert all(back[r.user_id].tokens == r.tokens and back[r.user_id].recent_event_ids == r.recent_event_ids
               for r in past)
    # Feast's own tools see the same data: the parquet of the batch source, and `feast feature-views list`
    assert (tmp_path / "feast" / "data" / "user_sequence.parquet").is_file()
    listed = subprocess.run([str(FEAST), "-c", str(tmp_path / "feast"), "feature-views", "list"], capture_output=True,
                            text=True, env=dict(os.environ), timeout=300)
    assert "user_sequence" in listed.stdout, listed.stdout + listed.stderr

    # a stream row for b3 (stamped with its write time), then the same backfill again
    stream_row = UserSequence("b3", past[3].tokens + [4, 5, 6, 1031], 5, 1_700_000_000_000, 0, ["b3:3", "s1"])
    store.push([stream_row])
    if online_store == "sqlite":  # Feast's SQLite store cannot skip older writes: refused, nothing written
        with pytest.raises(BackfillRefused, match="b3"):
            store.backfill(past)
    else:  # Redis: materialised with Feast's timestamp check, which keeps the newer row
        assert store.backfill(past)["newer_rows_kept"] == 1
    assert store.read(["b3"])["b3"].tokens == stream_row.tokens

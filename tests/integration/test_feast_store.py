"""`feast apply` on sidstream's feature repository, then push and read back through SQLite and Redis."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from features.sequences import UserSequence
from features.settings import FeatureSettings
from features.store import UserSequenceStore, write_repo

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

"""A small typed facade over Feast for user sequences (the adapter of the features room).

`write_repo` lays out a Feast repository (feature_store.yaml generated from settings + the definitions in
`features/repo/definitions.py`), `UserSequenceStore.apply()` registers it (what `feast apply` does), `push`
writes rows to the online store (through Feast's provider), and `read` fetches them back.
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Iterable, Sequence

from features.sequences import (FEATURES, USER_SEQUENCE_PUSH, USER_SEQUENCE_SERVICE, USER_SEQUENCE_VIEW,
                                UserSequence)
from features.settings import FeatureSettings
import importlib.util
from datetime import datetime, timedelta, timezone
import pandas as pd

DEFINITIONS = Path(__file__).with_name("repo") / "definitions.py"


# The same repository with Feast's per-row timestamp check on, for backfills (see UserSequenceStore.backfill);
# `feast -f backfill_store.yaml materialize ...` in the repository does what a backfill does.
BACKFILL_YAML = "backfill_store.yaml"


def feature_store_yaml(repo_dir: Path, settings: FeatureSettings, skip_dedup: bool = True) -> str:
    if settings.online_store == "redis":
        url = settings.redis_url.removeprefix("redis://").rstrip("/")
        # skip_dedup: one round trip per push instead of two. Without it Feast first reads every row's stored
        # timestamp to drop writes that are not newer. Rows are stamped with their write time (see push()), so
        # that read could only ever drop a write after a clock step or skew between hosts; it never stopped a
        # stale row that arrives late (the worker pushes its pending rows before giving partitions away)
        online = (f"online_store:\n  type: redis\n  connection_string: \"{url}\"\n"
                  f"  skip_dedup: {'true' if skip_dedup else 'false'}\n")
    else:
        online = f"online_store:\n  type: sqlite\n  path: {repo_dir / 'data' / 'online_store.db'}\n"
    return (
        f"project: {settings.feast_project}\n"
        f"registry: {repo_dir / 'data' / 'registry.db'}\n"
        "provider: local\n"
        f"{online}"
        "offline_store:\n  type: file\n"
        "entity_key_serialization_version: 3\n"
    )


def write_repo(repo_dir: Path, settings: FeatureSettings | None = None) -> Path:
    """Create (or refresh) a Feast repository folder that `feast -c <repo_dir> apply` accepts."""
    settings = settings or FeatureSettings()
    repo_dir = Path(repo_dir).resolve()
    (repo_dir / "data").mkdir(parents=True, exist_ok=True)
    (repo_dir / "feature_store.yaml").write_text(feature_store_yaml(repo_dir, settings))
    (repo_dir / BACKFILL_YAML).write_text(feature_store_yaml(repo_dir, settings, skip_dedup=False))
    shutil.copyfile(DEFINITIONS, repo_dir / "definitions.py")
    return repo_dir


class BackfillRefused(RuntimeError):
    """A backfill that would overwrite newer online rows (see UserSequenceStore.backfill)."""


def _aware(stamp: datetime) -> datetime:
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=timezone.utc)


def _frame(rows: Sequence[UserSequence], stamps, pushed_ms: int | None = None) -> pd.DataFrame:
    """Rows as the feature view's columns (the push source's and the batch source's shape); `pushed_ms` fills
    rows that carry none."""
    return pd.DataFrame({
        "user_id": [r.user_id for r in rows],
        "tokens": [list(r.tokens) for r in rows],
        "event_count": [int(r.event_count) for r in rows],
        "last_event_ms": [int(r.last_event_ms) for r in rows],
        "pushed_ms": [int(r.pushed_ms or pushed_ms or 0) for r in rows],
        "recent_event_ids": [list(r.recent_event_ids) for r in rows],
        "event_timestamp": stamps,
    })


def _row_stamp(row: UserSequence) -> datetime:
    """A backfilled row's Feast timestamp: its newest event's time, or the epoch's first second when unknown."""
    return datetime.fromtimestamp(max(int(row.last_event_ms), 1000) / 1000, tz=timezone.utc)


class UserSequenceStore:
    def __init__(self, settings: FeatureSettings | None = None, repo_dir: Path | None = None):
        self.settings = settings or FeatureSettings()
        self.repo_dir = write_repo(Path(repo_dir or self.settings.feast_repo_path), self.settings)
        # import feast here: it takes seconds and switches prometheus-client into multiprocess mode
        from feast import FeatureStore  # lazy: see the line above

        self._fs = FeatureStore(repo_path=str(self.repo_dir))
        self._refs = [f"{USER_SEQUENCE_VIEW}:{name}" for name in FEATURES]
        self._view = None  # the registered feature view, fetched once on the first push

    @property
    def feature_store(self):
        return self._fs

    def apply(self) -> None:
        """Register the entity, feature view, push source and feature service (idempotent)."""
        spec = importlib.util.spec_from_file_location("sidstream_feast_definitions", self.repo_dir / "definitions.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        self._fs.apply([module.user, module.user_sequence_push, module.user_sequence, module.user_sequence_service])

    def push(self, sequences: Iterable[UserSequence]) -> int:
        """Write rows to the online store through Feast's provider; returns the number of rows written.

        This is what `FeatureStore.push(..., to=ONLINE)` does minus its pandas/arrow round trip, which cost
        the stream workers most of their time: rows become Feast value protos directly.
        """
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey  # lazy: feast (see FeatureStore above)
        from feast.protos.feast.types.Value_pb2 import Int64List, StringList, Value  # lazy: feast

        rows = list(sequences)
        if not rows:
            return 0
        if self.settings.feast_write_path == "push_source":
            return self.push_via_push_source(rows)
        now_ms = int(time.time() * 1000)
        now = datetime.now(timezone.utc)
        data = []
        for r in rows:
            values = {
                # the tokens are ints already (UserSequence checks): the list goes to protobuf as it is, 11.7 µs
                # per 250-token row against 31.8 µs with a per-token int()
                "tokens": Value(int64_list_val=Int64List(val=r.tokens)),
                "event_count": Value(int64_val=int(r.event_count)),
                "last_event_ms": Value(int64_val=int(r.last_event_ms)),
                "pushed_ms": Value(int64_val=int(r.pushed_ms or now_ms)),
                "recent_event_ids": Value(string_list_val=StringList(val=r.recent_event_ids)),
            }
            key = EntityKey(join_keys=["user_id"], entity_values=[Value(string_val=r.user_id)])
            # The row's Feast timestamp is its write time, not the event time: two events of a user can share a
            # millisecond, and a Redis store with Feast's dedup on skips a write whose timestamp is not newer
            # than the stored one. One worker owns a user, so its writes are already in order.
            data.append((key, values, now, now))
        if self._view is None:
            self._view = self._fs.get_feature_view(USER_SEQUENCE_VIEW)
        self._fs._get_provider().online_write_batch(self._fs.config, self._view, data, None)
        return len(rows)

    def push_via_push_source(self, rows: Sequence[UserSequence]) -> int:
        """The same rows through the push source (`FeatureStore.push`, online only)."""
        from feast.data_source import PushMode  # lazy: feast

        # stamped with the write time: see push()
        frame = _frame(rows, pd.Timestamp.now(tz="UTC"), pushed_ms=int(time.time() * 1000))
        self._fs.push(USER_SEQUENCE_PUSH, frame, to=PushMode.ONLINE)
        return len(rows)

    def backfill(self, rows: Sequence[UserSequence]) -> dict:
        """Users' logged pasts: written to the offline store (the batch source's parquet file, replaced) and loaded
        into the online store by Feast's own materialisation, so `feast` commands in the repository see them.

        A backfilled row is stamped with its newest event's time (the epoch's first second where the data has no
        times), older than any row a stream worker writes (stamped with its write time, see push()), and it never
        replaces a newer row: on Redis the materialisation runs with Feast's per-row timestamp check on (this
        store's `skip_dedup` is for the stream's pushes only); Feast's SQLite store has no such check, so there a
        backfill over users whose stored rows are newer is refused before anything is written.
        Returns {"users", "events", "materialized_users", "newer_rows_kept", "seconds"}.
        """
        from feast import FeatureStore  # lazy: feast (see __init__)

        started = time.perf_counter()
        rows = list(rows)
        if not rows:
            return {"users": 0, "events": 0, "materialized_users": 0, "newer_rows_kept": 0, "seconds": 0.0}
        stamps = [_row_stamp(r) for r in rows]
        newer = self.newer_rows(rows, stamps)
        if newer and self.settings.online_store != "redis":
            raise BackfillRefused(
                f"{len(newer):,} of these users already have newer rows in the online store (e.g. "
                f"{', '.join(sorted(newer)[:3])}): Feast's SQLite store cannot skip older writes per row, so a "
                "backfill would overwrite them. Backfill before the stream starts, or use the Redis store "
                "(SIDSTREAM_ONLINE_STORE=redis), which keeps the newer rows.")
        frame = _frame(rows, pd.to_datetime(stamps, utc=True))
        path = self.repo_dir / "data" / "user_sequence.parquet"
        tmp = path.with_suffix(".parquet.tmp")
        frame.to_parquet(tmp, index=False)
        tmp.replace(path)  # a reader never sees half a file
        store = self._fs
        if self.settings.online_store == "redis":
            store = FeatureStore(repo_path=str(self.repo_dir), fs_yaml_file=self.repo_dir / BACKFILL_YAML)
        start, end = min(stamps), max(stamps)
        store.materialize(start_date=start - timedelta(seconds=1), end_date=end + timedelta(seconds=1),
                          feature_views=[USER_SEQUENCE_VIEW])
        return {"users": len(rows), "events": int(sum(r.event_count for r in rows)),
                "materialized_users": len(rows) - len(newer), "newer_rows_kept": len(newer),
                "seconds": round(time.perf_counter() - started, 3)}

    def newer_rows(self, rows: Sequence[UserSequence], stamps: Sequence[datetime]) -> set[str]:
        """Users whose stored row is stamped later than the given one (Feast's own timestamps, read per row)."""
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey  # lazy: feast
        from feast.protos.feast.types.Value_pb2 import Value  # lazy: feast

        view = self._fs.get_feature_view(USER_SEQUENCE_VIEW)
        provider = self._fs._get_provider()
        newer: set[str] = set()
        for chunk_start in range(0, len(rows), 1000):
            chunk = rows[chunk_start:chunk_start + 1000]
            keys = [EntityKey(join_keys=["user_id"], entity_values=[Value(string_val=r.user_id)]) for r in chunk]
            stored = provider.online_read(self._fs.config, view, keys)
            for row, stamp, (stored_at, _) in zip(chunk, stamps[chunk_start:], stored):
                if stored_at is not None and _aware(stored_at) > stamp:
                    newer.add(row.user_id)
        return newer

    def read(self, user_ids: Sequence[str]) -> dict[str, UserSequence | None]:
        """Fetch rows; a user never pushed maps to None."""
        if not user_ids:
            return {}
        result = self._fs.get_online_features(
            features=self._refs, entity_rows=[{"user_id": str(u)} for u in user_ids]).to_dict()
        out: dict[str, UserSequence | None] = {}
        for i, user_id in enumerate(result["user_id"]):
            tokens = result["tokens"][i]
            if tokens is None and result["event_count"][i] is None:
                out[user_id] = None
                continue
            out[user_id] = UserSequence(
                user_id=user_id,
                tokens=[int(t) for t in (tokens or [])],
                event_count=int(result["event_count"][i] or 0),
                last_event_ms=int(result["last_event_ms"][i] or 0),
                pushed_ms=int(result["pushed_ms"][i] or 0),
                recent_event_ids=[str(e) for e in (result["recent_event_ids"][i] or [])],
            )
        return out

    def feature_service(self):
        return self._fs.get_feature_service(USER_SEQUENCE_SERVICE)

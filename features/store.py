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
from datetime import datetime, timezone
import pandas as pd

DEFINITIONS = Path(__file__).with_name("repo") / "definitions.py"


def feature_store_yaml(repo_dir: Path, settings: FeatureSettings) -> str:
    if settings.online_store == "redis":
        url = settings.redis_url.removeprefix("redis://").rstrip("/")
        # skip_dedup: one round trip per push instead of two. Without it Feast first reads every row's stored
        # timestamp to drop writes that are not newer. Rows are stamped with their write time (see push()), so
        # that read could only ever drop a write after a clock step or skew between hosts; it never stopped a
        # stale row that arrives late (the worker pushes its pending rows before giving partitions away)
        online = f"online_store:\n  type: redis\n  connection_string: \"{url}\"\n  skip_dedup: true\n"
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
    shutil.copyfile(DEFINITIONS, repo_dir / "definitions.py")
    return repo_dir


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
        from feast.protos.feast.types.Value_pb2 import Int64List, Value  # lazy: feast

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
                "tokens": Value(int64_list_val=Int64List(val=[int(t) for t in r.tokens])),
                "event_count": Value(int64_val=int(r.event_count)),
                "last_event_ms": Value(int64_val=int(r.last_event_ms)),
                "pushed_ms": Value(int64_val=int(r.pushed_ms or now_ms)),
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

        now_ms = int(time.time() * 1000)
        frame = pd.DataFrame({
            "user_id": [r.user_id for r in rows],
            "tokens": [[int(t) for t in r.tokens] for r in rows],
            "event_count": [int(r.event_count) for r in rows],
            "last_event_ms": [int(r.last_event_ms) for r in rows],
            "pushed_ms": [int(r.pushed_ms or now_ms) for r in rows],
            "event_timestamp": pd.Timestamp.now(tz="UTC"),  # write time: see push()
        })
        self._fs.push(USER_SEQUENCE_PUSH, frame, to=PushMode.ONLINE)
        return len(rows)

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
            )
        return out

    def feature_service(self):
        return self._fs.get_feature_service(USER_SEQUENCE_SERVICE)

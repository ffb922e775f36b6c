"""The generated feature_store.yaml (pure: no Feast import)."""
import json

from features.settings import FeatureSettings
from features.store import BACKFILL_YAML, feature_store_yaml, write_repo


def _lines(text):
    return [line.strip() for line in text.splitlines()]


def test_redis_store_skips_feasts_timestamp_read(tmp_path):
    text = feature_store_yaml(tmp_path, FeatureSettings(online_store="redis", redis_url="redis://10.0.0.5:6380"))
    lines = _lines(text)
    assert "type: redis" in lines
    assert f"connection_string: {json.dumps('10.0.0.5:6380')}" in lines
    # one worker owns a user and writes its rows in order: the read-before-write only cost a round trip
    assert "skip_dedup: true" in lines


def test_sqlite_store_lives_in_the_repository(tmp_path):
    text = feature_store_yaml(tmp_path, FeatureSettings(online_store="sqlite"))
    assert f"path: {tmp_path / 'data' / 'online_store.db'}" in _lines(text)
    assert "skip_dedup" not in text



def test_the_backfill_configuration_keeps_feasts_timestamp_check(tmp_path):
    settings = FeatureSettings(online_store="redis", redis_url="redis://10.0.0.5:6380")
    repo = write_repo(tmp_path / "feast", settings)
    assert "skip_dedup: true" in _lines((repo / "feature_store.yaml").read_text())
    # a backfill must never replace a newer stream row: its materialisation reads the stored timestamps
    assert "skip_dedup: false" in _lines((repo / BACKFILL_YAML).read_text())

import json
import threading
import time

import pytest

from serving.updates import (TopicFollower, UpdateRefused, check_model_update, model_update_message,
                             parse_catalogue_entry, parse_model_update)
from tests.serving.serving_world import OTHER_VOCAB, VOCAB, publish


def test_message_of_a_published_model_passes_the_checks(tmp_path):
    manifest = publish(tmp_path / "m1")
    message = model_update_message(tmp_path / "m1", name="sidstream")
    assert message["version"] == manifest["version"] and message["sha256"] == manifest["sha256"]
    assert message["name"] == "sidstream" and message["uri"] == str((tmp_path / "m1").resolve())
    parsed = parse_model_update(json.dumps(message).encode())
    assert check_model_update(parsed, VOCAB) == tmp_path / "m1"


def test_corrupt_weights_are_refused(tmp_path):
    publish(tmp_path / "m1")
    message = model_update_message(tmp_path / "m1")
    weights = tmp_path / "m1" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(UpdateRefused, match="sha256"):
        check_model_update(message, VOCAB)


def test_message_that_disagrees_with_the_manifest_is_refused(tmp_path):
    publish(tmp_path / "m1")
    message = model_update_message(tmp_path / "m1")
    with pytest.raises(UpdateRefused, match="sha256"):
        check_model_update({**message, "sha256": "0" * 64}, VOCAB)
    with pytest.raises(UpdateRefused, match="version"):
        check_model_update({**message, "version": "deadbeef"}, VOCAB)
    with pytest.raises(UpdateRefused, match="not found"):
        check_model_update({**message, "uri": str(tmp_path / "nowhere")}, VOCAB)


def test_other_codebook_version_is_refused(tmp_path):
    publish(tmp_path / "m1", vocab=OTHER_VOCAB)
    with pytest.raises(UpdateRefused, match="codebook version"):
        check_model_update(model_update_message(tmp_path / "m1"), VOCAB)


@pytest.mark.parametrize("raw, reason", [(b"{not json", "not JSON"), (b"[1, 2]", "JSON object"),
                                         (b'{"uri": "x"}', "lacks")])
def test_malformed_model_updates_are_refused(raw, reason):
    with pytest.raises(UpdateRefused, match=reason):
        parse_model_update(raw)


def test_catalogue_entries_parse_and_other_versions_are_refused():
    entry = {"item_id": "new", "sid": [1, 2, 3], "catalogue_version": VOCAB.version, "assigned_ms": 5,
             "item_produced_ms": 4}
    change = parse_catalogue_entry(json.dumps(entry).encode(), VOCAB)
    assert change.item_id == "new" and change.codes == (1, 2, 3) and change.item_produced_ms == 4
    assert parse_catalogue_entry(json.dumps({**entry, "sid": None}), VOCAB).codes is None
    with pytest.raises(UpdateRefused, match="codebook version"):
        parse_catalogue_entry(json.dumps({**entry, "catalogue_version": "other"}), VOCAB)
    with pytest.raises(UpdateRefused, match="codes"):
        parse_catalogue_entry(json.dumps({**entry, "sid": [1, 2]}), VOCAB)
    with pytest.raises(UpdateRefused):
        parse_catalogue_entry(b"garbage", VOCAB)


class ListSource:
    def __init__(self, batches):
        self.batches = list(batches)
        self.closed = False

    def poll(self, timeout_s):
        if self.batches:
            item = self.batches.pop(0)
            if isinstance(item, Exception):
                raise item
            return item
        time.sleep(timeout_s)
        return []

    def close(self):
        self.closed = True


def test_follower_hands_batches_over_survives_errors_and_stops():
    seen, done = [], threading.Event()
    source = ListSource([[(b"k", b"1")], RuntimeError("broker went away"), [(b"k", b"2"), (b"k", b"3")]])

    def handle(records):
        seen.extend(v for _, v in records)
        if len(seen) == 3:
            done.set()

    follower = TopicFollower("test", lambda: source, handle, poll_s=0.01).start()
    assert done.wait(5)
    assert follower.caught_up.wait(5)
    follower.stop()
    assert seen == [b"1", b"2", b"3"] and follower.errors == 1
    assert not follower.alive and source.closed

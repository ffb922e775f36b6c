import json

import pytest

from streams.schemas import (CatalogueChange, CatalogueEntry, DeadLetter, InteractionEvent, ItemEvent,
                             TrainingExample, parse, parse_catalogue_entry, training_example_json)


def test_interaction_round_trip():
    ev = InteractionEvent(event_id="e1", user_id="u1", item_id="i1", action="click", ts=1.5)
    back = parse(InteractionEvent, ev.model_dump_json())
    assert back == ev and back.schema_version == 1


@pytest.mark.parametrize("raw, where", [
    (b"not json", "value"),
    (json.dumps({"event_id": "e", "user_id": "u", "item_id": "i", "ts": 1}), "action"),
    (json.dumps({"event_id": "e", "user_id": " ", "item_id": "i", "action": "click", "ts": 1}), "user_id"),
    (json.dumps({"event_id": "e", "user_id": "u", "item_id": "i", "action": "click", "ts": -1}), "ts"),
    (json.dumps({"event_id": "e", "user_id": "u", "item_id": "i", "action": "click", "ts": 1, "extra": 1}), "extra"),
    (json.dumps({"schema_version": 2, "event_id": "e", "user_id": "u", "item_id": "i", "action": "click", "ts": 1}),
     "schema_version"),
])
def test_invalid_interactions_give_one_readable_reason(raw, where):
    with pytest.raises(ValueError) as info:
        parse(InteractionEvent, raw)
    message = str(info.value)
    assert message.startswith("invalid InteractionEvent") and where in message


def test_item_event_as_item_feeds_the_encoder():
    item = ItemEvent(item_id="42", title="Red nail polish", categories=["Beauty", "Nails"], price=7.5, ts=0)
    assert item.as_item() == {"item_id": "42", "title": "Red nail polish", "brand": "", "text": "",
                              "categories": ["Beauty", "Nails"], "price": 7.5}


def test_dead_letter_keeps_the_original_bytes():
    raw = b"\xff\x00garbage"
    letter = DeadLetter.of("malformed: x", raw, "interactions", key=b"u1", partition=2, offset=17)
    back = DeadLetter.model_validate_json(letter.model_dump_json())
    assert back.original() == raw and back.key == "u1" and back.offset == 17


def test_catalogue_entry_and_training_example_serialise():
    entry = CatalogueEntry(item_id="i", sid=[1, 2, 3, 0], catalogue_version="v", assigned_ms=5)
    assert parse(CatalogueEntry, entry.model_dump_json()).sid == [1, 2, 3, 0]
    removal = CatalogueEntry(item_id="i", sid=None, catalogue_version="v", assigned_ms=6)
    assert parse(CatalogueEntry, removal.model_dump_json()).sid is None
    ex = TrainingExample(user_id="u", tokens=[1, 2], event_id="e", event_count=1, event_ms=1, appended_ms=2)
    assert parse(TrainingExample, ex.model_dump_json()) == ex


def test_fast_training_example_json_is_a_valid_training_example():
    raw = training_example_json("u", [5, 6, 7], "e9", 3, 1000, None, 1005)
    assert parse(TrainingExample, raw) == TrainingExample(user_id="u", tokens=[5, 6, 7], event_id="e9", event_count=3,
                                                          event_ms=1000, produced_ms=None, appended_ms=1005)


class _Codebooks:  # what parse_catalogue_entry checks against (a catalogue.vocab.Vocabulary)
    version = "tinyvocab0000001"
    sid_length = 3


def test_catalogue_entries_parse_and_other_versions_are_refused():
    vocab = _Codebooks()
    entry = {"item_id": "new", "sid": [1, 2, 3], "catalogue_version": vocab.version, "assigned_ms": 5,
             "item_produced_ms": 4}
    change = parse_catalogue_entry(json.dumps(entry).encode(), vocab)
    assert change == CatalogueChange("new", (1, 2, 3), 4, 5)
    assert parse_catalogue_entry(json.dumps({**entry, "sid": None}), vocab).codes is None
    assert parse_catalogue_entry(entry, vocab) == change
    assert parse_catalogue_entry({**entry, "title": "Rose soap"}, vocab).title == "Rose soap"  # new items' titles
    with pytest.raises(ValueError, match="codebook version"):
        parse_catalogue_entry(json.dumps({**entry, "catalogue_version": "other"}), vocab)
    with pytest.raises(ValueError, match="codes"):
        parse_catalogue_entry(json.dumps({**entry, "sid": [1, 2]}), vocab)
    with pytest.raises(ValueError, match="invalid CatalogueEntry"):
        parse_catalogue_entry(b"garbage", vocab)

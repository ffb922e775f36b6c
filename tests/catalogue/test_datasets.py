import pytest

from catalogue.datasets import DatasetError, load_item_meta, load_items_jsonl, load_sequences, sequence_items


def test_items_jsonl_repeated_id_is_an_update(tmp_path):
    p = tmp_path / "items.jsonl"
    p.write_text('{"item_id": 1, "title": "a"}\n\n{"item_id": "2", "title": "b"}\n{"item_id": 1, "title": "a2"}\n')
    items = load_items_jsonl(p)
    assert [(i["item_id"], i["title"]) for i in items] == [("1", "a2"), ("2", "b")]


@pytest.mark.parametrize("text,match", [('{"title": "x"}\n', "item_id"), ("not json\n", "valid JSON")])
def test_items_jsonl_errors(tmp_path, text, match):
    p = tmp_path / "items.jsonl"
    p.write_text(text)
    with pytest.raises(DatasetError, match=match):
        load_items_jsonl(p)


def test_sequences_and_missing_meta(tmp_path):
    (tmp_path / "sequences.txt").write_text("1 10 2 3\n2 3 10\n")
    seqs = load_sequences(tmp_path)
    assert seqs == {"1": ["10", "2", "3"], "2": ["3", "10"]}
    assert sequence_items(seqs) == ["2", "3", "10"]
    assert load_item_meta(tmp_path) == []
    with pytest.raises(DatasetError):
        load_sequences(tmp_path / "nope")

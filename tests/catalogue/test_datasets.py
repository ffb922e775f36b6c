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


# ----- MovieLens
from catalogue.datasets import (RATING_ACTIONS, catalogue_actions, is_movielens, load_events, load_movielens,
                                parse_rating_actions)
from catalogue.vocab import ACTIONS
from tests.movielens_fixture import BAD_DATA_LINES, write_movielens


def test_movielens_ratings_become_actions_in_time_order(tmp_path):
    folder = write_movielens(tmp_path / "ml", users=5, items=12, per_user=8)
    ml = load_movielens(folder)
    assert is_movielens(folder) and not ml.problems
    assert ml.actions == ("dislike", "neutral", "like", "love") == catalogue_actions(folder)
    for user, ratings in ml.ratings.items():
        assert [(r.timestamp, int(r.item)) for r in ratings] == sorted((r.timestamp, int(r.item)) for r in ratings)
        assert all(r.action == RATING_ACTIONS[r.rating] for r in ratings)
    assert load_events(folder)["1"] == [(r.item, r.action) for r in ml.ratings["1"]]
    assert load_sequences(folder)["1"] == [r.item for r in ml.ratings["1"]]
    film = next(i for i in load_item_meta(folder) if i["item_id"] == "3")
    assert film["title"] == "Film 3 (1983)" and film["year"] == 1983 and len(film["categories"]) == 1
    assert ml.users["1"]["gender"] == "F" and ml.users["2"]["age"] == 22


def test_movielens_bad_lines_are_reported_with_their_line_numbers(tmp_path):
    folder = write_movielens(tmp_path / "ml", users=5, items=12, per_user=8, bad_lines=True)
    ml = load_movielens(folder)
    assert [(p.file, p.line) for p in ml.problems] == [("u.data", n) for n in (4, 5, 6, 7)]
    reasons = [p.reason for p in ml.problems]
    assert "outside the mapping" in reasons[0] and "user id" in reasons[1]
    assert "fields" in reasons[2] and "not in u.item" in reasons[3]
    assert [p.text for p in ml.problems] == BAD_DATA_LINES
    assert ml.num_ratings == 5 * 8  # every good line kept


def test_movielens_custom_mapping(tmp_path):
    folder = write_movielens(tmp_path / "ml", users=3, items=10, per_user=6)
    ml = load_movielens(folder, "1=bad,2=bad,3=bad,4=good,5=good")
    assert ml.actions == ("bad", "good")
    assert {r.action for rs in ml.ratings.values() for r in rs} <= {"bad", "good"}
    partial = load_movielens(folder, "4=good,5=good")  # ratings 1-3 are then outside the mapping: reported
    assert partial.problems and all("outside the mapping" in p.reason for p in partial.problems)
    assert partial.num_ratings + len(partial.problems) == ml.num_ratings
    with pytest.raises(DatasetError, match="RATING=action_name"):
        parse_rating_actions("1=Dislike!")
    with pytest.raises(DatasetError, match="empty"):
        parse_rating_actions(" , ")


def test_amazon_catalogues_keep_the_default_actions(tmp_path):
    (tmp_path / "sequences.txt").write_text("1 10 2 3\n")
    assert catalogue_actions(tmp_path) == ACTIONS
    assert load_events(tmp_path) == {"1": [("10", "purchase"), ("2", "purchase"), ("3", "purchase")]}

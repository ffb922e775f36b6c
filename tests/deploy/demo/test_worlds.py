"""The demo's worlds: the past and the stream split each history, held-back items never appear in the past."""
import pytest

from catalogue.settings import CatalogueSettings
from deploy.cli import main
from deploy.demo.load import taste_shift
from deploy.demo.worlds import beauty_world, dataset_world, synthetic_world

BEAUTY = CatalogueSettings().data_dir / "amazon_beauty_2014"
MOVIELENS = CatalogueSettings().data_dir / "movielens_100k"


def _check(world):
    past_items = {i for events in world.past.values() for i, _ in events}
    assert not past_items & set(world.held), "a held-back item leaked into the logged past"
    streamed = {i for _, i, _ in world.stream}
    known = {str(record["item_id"]) for record in world.items}
    assert streamed <= known, "the stream carries an item the demo has no record of"
    assert set(world.held) <= known, "a held-back item has no record to announce it with"
    assert all(str(record["item_id"]) == item for item, record in world.held.items())
    assert any(i in world.held for _, i, _ in world.stream), "no new item ever arrives"
    assert len(world.stream) > 1000


def test_synthetic_world_splits_at_a_time_and_holds_back_late_items():
    world = synthetic_world()
    _check(world)
    assert {a for _, _, a in world.stream} >= {"click", "skip"}
    assert all(r.get("title") for r in world.held.values())


@pytest.mark.skipif(not (BEAUTY / "sequences.txt").is_file(), reason="Beauty not in SIDSTREAM_DATA_DIR")
def test_beauty_world_keeps_each_users_order():
    world = beauty_world(BEAUTY)
    _check(world)
    assert 0.02 < len(world.held) / len(world.items) < 0.04
    first = world.stream[0][0]
    assert first in world.past  # every streamed user has a logged past


@pytest.mark.skipif(not (MOVIELENS / "u.data").is_file(), reason="MovieLens not in SIDSTREAM_DATA_DIR")
def test_movielens_world_replays_real_ratings_in_time_order():
    world = dataset_world(MOVIELENS)
    _check(world)
    assert world.actions == ("dislike", "neutral", "like", "love")
    assert {a for _, _, a in world.stream} == set(world.actions)  # the real actions, not purchases
    assert len(world.stream) == 30_000 and sum(map(len, world.past.values())) == 70_000
    first_rated = {}
    for _, item, _ in world.stream:
        first_rated.setdefault(item, True)
    assert set(world.held) <= set(first_rated)  # a new film is one first rated in the stream


def test_demo_rejects_bad_arguments_with_a_clear_error(capsys):
    assert main(["demo", "--rate", "0"]) == 1
    assert "--rate must be > 0" in capsys.readouterr().err
    assert main(["demo", "--shift-at", "-1"]) == 1
    assert "--shift-at must be >= 0" in capsys.readouterr().err


def test_a_taste_shift_names_only_items_of_its_few_level_1_codes():
    first_codes = {f"i{n}": n % 10 for n in range(500)} | {f"rare{n}": 99 for n in range(3)}
    shift = taste_shift(30.0, first_codes, n_codes=2, min_items=20, seed=1)
    assert shift.at_s == 30.0 and len(shift.codes) == 2 and 99 not in shift.codes  # too few items to shift to
    assert set(shift.items) == {i for i, c in first_codes.items() if c in shift.codes} and len(shift.items) == 100
    assert taste_shift(30.0, first_codes, seed=1) == shift  # seeded
    with pytest.raises(ValueError, match="needs a catalogue"):
        taste_shift(1.0, {})

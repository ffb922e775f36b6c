"""apply_catalogue_change: the one collision rule of every catalogue follower, one test per outcome."""
from typing import NamedTuple

from catalogue.trie import ChangeOutcome, SidTrie, apply_catalogue_change
from catalogue.vocab import Vocabulary

VOCAB = Vocabulary(levels=2, codes_per_level=4, suffix_size=2)


class Change(NamedTuple):  # the two fields the trie reads (streams.schemas.CatalogueChange has more)
    item_id: str
    codes: tuple[int, ...] | None


def trie_with(**items):
    trie = SidTrie(VOCAB)
    for item, codes in items.items():
        trie.insert(item, codes)
    return trie


def test_a_new_item_is_applied():
    trie = trie_with(a=(0, 0, 0))
    assert apply_catalogue_change(trie, Change("b", (1, 2, 1))) == ChangeOutcome("applied", None)
    assert trie.codes_of("b") == (1, 2, 1)


def test_an_item_given_a_new_sid_moves():
    trie = trie_with(a=(0, 0, 0))
    assert apply_catalogue_change(trie, Change("a", (3, 3, 1))).status == "applied"
    assert trie.codes_of("a") == (3, 3, 1) and trie.item_at((0, 0, 0)) is None and len(trie) == 1


def test_the_same_item_with_the_same_sid_is_unchanged():
    trie = trie_with(a=(0, 0, 0))
    version = trie.version
    assert apply_catalogue_change(trie, Change("a", (0, 0, 0))) == ChangeOutcome("unchanged", None)
    assert trie.version == version


def test_a_sid_held_by_another_item_is_refused_and_names_the_holder():
    trie = trie_with(a=(0, 0, 0), b=(1, 1, 0))
    outcome = apply_catalogue_change(trie, Change("b", (0, 0, 0)))
    assert outcome.status == "refused" and "'a'" in outcome.reason and "'b'" in outcome.reason
    assert trie.codes_of("a") == (0, 0, 0) and trie.codes_of("b") == (1, 1, 0)  # the holder keeps it, b stays
    outcome = apply_catalogue_change(trie, Change("new", (0, 0, 0)))
    assert outcome.status == "refused" and "'a'" in outcome.reason and "new" not in trie


def test_a_removal_applies_and_the_removal_of_an_absent_item_is_unchanged():
    trie = trie_with(a=(0, 0, 0))
    assert apply_catalogue_change(trie, Change("a", None)).status == "applied"
    assert "a" not in trie and trie.children(()) == []
    assert apply_catalogue_change(trie, Change("a", None)) == ChangeOutcome("unchanged", None)


def test_a_sid_the_trie_cannot_hold_is_refused():
    trie = trie_with(a=(0, 0, 0))
    for codes in [(9, 0, 0), (0, 0), (0, 0, 0, 0)]:
        outcome = apply_catalogue_change(trie, Change("x", codes))
        assert outcome.status == "refused" and "x" in outcome.reason
    assert apply_catalogue_change(trie, Change("", (1, 1, 1))).status == "refused"
    assert trie.item_ids() == ["a"]

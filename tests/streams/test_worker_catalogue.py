"""The stream worker's catalogue view: topic values -> apply_catalogue_change on the worker's trie and SID map."""
import json

from catalogue.trie import SidTrie
from catalogue.vocab import Vocabulary
from streams.worker import CatalogueView, WorkerStats

VOCAB = Vocabulary(levels=2, codes_per_level=8, suffix_size=4, version="tinyvocab0000001")


class TinyCatalogue:  # the parts of catalogue.catalogue.ItemCatalogue the view uses
    def __init__(self, items):
        self.vocab = VOCAB
        self.trie = SidTrie(VOCAB)
        for item, codes in items.items():
            self.trie.insert(item, codes)

    def sid_map(self):
        return {i: tuple(self.trie.codes_of(i)) for i in self.trie.item_ids()}


def entry(item, sid, version=VOCAB.version):
    return None, json.dumps({"item_id": item, "sid": sid, "catalogue_version": version, "assigned_ms": 1}).encode()


def test_view_applies_moves_removes_and_counts_refusals():
    view = CatalogueView(TinyCatalogue({"a": (0, 0, 0), "b": (1, 1, 0)}))
    stats = WorkerStats()
    applied = view.apply_records([
        entry("new", [2, 3, 0]),            # applied
        entry("a", [4, 4, 1]),              # moved: applied
        entry("b", [1, 1, 0]),              # same SID: unchanged
        entry("intruder", [2, 3, 0]),       # held by "new": refused
        entry("b", None),                   # removal: applied
        entry("ghost", None),               # removal of an absent item: unchanged
        entry("x", [5, 5, 0], "othercodes"),  # other codebooks: refused
        (None, b"not json"),                # malformed: refused
    ], stats=stats)
    assert applied == 3 and stats.catalogue_refused == 3
    assert view.sid_of == {"new": (2, 3, 0), "a": (4, 4, 1)}
    assert view.catalogue.trie.codes_of("a") == (4, 4, 1) and "b" not in view.catalogue.trie
    assert "intruder" not in view.catalogue.trie and view.catalogue.trie.item_at((2, 3, 0)) == "new"

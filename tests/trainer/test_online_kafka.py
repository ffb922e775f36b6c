"""CatalogueFollower's apply logic over a list-backed source (the Kafka reader is exercised in integration)."""
import json

from catalogue.trie import SidTrie
from catalogue.vocab import Vocabulary
from trainer.online_kafka import CatalogueFollower

VOCAB = Vocabulary(levels=2, codes_per_level=8, suffix_size=4, version="tinyvocab0000001")


class ListSource:
    def __init__(self, values):
        self.values = list(values)

    def poll(self, timeout_s):
        out, self.values = [(None, v) for v in self.values], []
        return out

    def close(self):
        pass


def entry(item, sid, version=VOCAB.version):
    return json.dumps({"schema_version": 1, "item_id": item, "sid": sid, "catalogue_version": version,
                       "assigned_ms": 1}).encode()


def test_follower_inserts_moves_removes_and_refuses_other_codebooks():
    trie = SidTrie(VOCAB)
    trie.insert("old", (1, 1, 0))
    follower = CatalogueFollower(trie, VOCAB, ListSource([
        entry("new", [2, 3, 0]), entry("old", [4, 4, 1]), entry("gone", None), entry("x", [5, 5, 0], "othercodes"),
        b"not json"]))
    assert follower.drain() == 2
    assert trie.codes_of("new") == (2, 3, 0) and trie.codes_of("old") == (4, 4, 1)
    assert follower.refused == 2 and "x" not in trie
    follower.source.values = [entry("new", None), entry("new", [2, 3, 0])]
    assert follower.drain() == 2 and "new" in trie

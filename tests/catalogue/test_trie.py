import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from catalogue.trie import IntHashTable, SidCollisionError, SidTrie, TrieError, UnknownItemError
from catalogue.vocab import Vocabulary
from tests.catalogue.reference_trie import ReferenceTrie

SMALL = Vocabulary(levels=2, codes_per_level=3, suffix_size=2)


def all_prefixes(vocab, t):
    sizes = vocab.level_sizes[:t]
    rows = [[vocab.sid_token(level, c) for level, c in enumerate(p)] for p in itertools.product(*map(range, sizes))]
    return torch.tensor(rows, dtype=torch.long).reshape(len(rows), t)


def assert_same(trie, ref):
    vocab = trie.vocab
    assert len(trie) == len(ref.codes)
    assert {i: trie.codes_of(i) for i in trie} == ref.codes
    for t in range(vocab.sid_length):
        prefixes = all_prefixes(vocab, t)
        assert torch.equal(trie.next_token_mask(prefixes), ref.next_token_mask(prefixes)), f"mask differs at t={t}"
        for row in prefixes.tolist():
            codes = vocab.tokens_to_prefix(row)
            assert trie.items_with_prefix(codes) == ref.items_with_prefix(codes)
    for codes in itertools.product(*map(range, vocab.level_sizes)):
        assert trie.item_at(codes) == ref.item_at(codes)


ops = st.lists(st.tuples(st.sampled_from(["insert", "remove"]), st.integers(0, 7),
                         st.tuples(st.integers(0, 2), st.integers(0, 2), st.integers(0, 1))), max_size=60)


@settings(max_examples=150, deadline=None)
@given(ops)
def test_trie_matches_reference(operations):
    trie, ref = SidTrie(SMALL, capacity=4), ReferenceTrie(SMALL)
    for op, item, codes in operations:
        item = f"i{item}"
        if op == "insert":
            holder = ref.item_at(codes)
            if holder is not None and holder != item:
                with pytest.raises(SidCollisionError):
                    trie.insert(item, codes)
                continue
            trie.insert(item, codes)
            ref.insert(item, codes)
        elif item in ref.codes:
            trie.remove(item)
            ref.remove(item)
        else:
            with pytest.raises(UnknownItemError):
                trie.remove(item)
    assert_same(trie, ref)


@settings(max_examples=40, deadline=None)
@given(st.sets(st.tuples(st.integers(0, 2), st.integers(0, 2), st.integers(0, 1)), max_size=18))
def test_bulk_build_equals_inserts(sids):
    sids = sorted(sids)
    ids = [f"x{k}" for k in range(len(sids))]
    bulk = SidTrie.from_codes(SMALL, ids, np.array(sids, dtype=np.int64).reshape(len(sids), 3))
    ref = ReferenceTrie(SMALL)
    for item, codes in zip(ids, sids):
        ref.insert(item, codes)
    assert_same(bulk, ref)


def test_reinsert_moves_item_and_same_sid_is_noop():
    trie = SidTrie(SMALL)
    trie.insert("a", (0, 1, 0))
    trie.insert("a", (0, 1, 0))
    assert len(trie) == 1
    trie.insert("a", (2, 2, 1))
    assert trie.item_at((0, 1, 0)) is None and trie.item_at((2, 2, 1)) == "a" and len(trie) == 1
    mask = trie.next_token_mask(torch.zeros((1, 0), dtype=torch.long))
    assert mask.nonzero()[:, 1].tolist() == [SMALL.sid_token(0, 2)]


def test_unknown_or_invalid_prefix_gives_all_false_row():
    trie = SidTrie(SMALL)
    trie.insert("a", (1, 1, 0))
    prefixes = torch.tensor([[SMALL.sid_token(0, 1)], [SMALL.sid_token(0, 0)], [0], [SMALL.sid_token(1, 1)]])
    mask = trie.next_token_mask(prefixes)
    assert mask[0].sum() == 1 and mask[0, SMALL.sid_token(1, 1)]
    assert not mask[1:].any()
    assert trie.items_with_prefix((0,)) == [] and trie.items_with_prefix((9, 9)) == []
    assert trie.item_at((5, 5, 5)) is None


def test_bad_arguments():
    trie = SidTrie(SMALL)
    with pytest.raises(TrieError):
        trie.insert("a", (0, 0))
    with pytest.raises(TrieError):
        trie.insert("a", (0, 3, 0))
    with pytest.raises(TrieError):
        trie.insert("", (0, 0, 0))
    with pytest.raises(TrieError):
        trie.next_token_mask(torch.zeros((2, 3), dtype=torch.long))  # nothing left to generate
    with pytest.raises(UnknownItemError):
        trie.codes_of("nope")
    with pytest.raises(SidCollisionError):
        SidTrie.from_codes(SMALL, ["a", "b"], np.array([[0, 0, 0], [0, 0, 0]]))


def test_free_suffix_and_exhaustion():
    trie = SidTrie(SMALL)
    assert trie.free_suffix((1, 2)) == 0
    trie.insert("a", (1, 2, 0))
    assert trie.free_suffix((1, 2)) == 1
    trie.insert("b", (1, 2, 1))
    assert trie.free_suffix((1, 2)) is None
    trie.remove("a")
    assert trie.free_suffix((1, 2)) == 0


def test_hash_table_growth_and_vectorised_lookup():
    table = IntHashTable(16)
    rng = np.random.default_rng(0)
    keys = rng.choice(10**12, size=5000, replace=False)
    for k in keys[:2500]:
        table.set(int(k), int(k) % 97)
    table.bulk_set(keys[2500:], keys[2500:] % 97)
    assert table.count == 5000
    probe = np.concatenate([keys, keys + 10**12])
    got = table.lookup(probe)
    assert (got[:5000] == keys % 97).all() and (got[5000:] == -1).all()
    assert table.get(int(keys[7])) == keys[7] % 97


def test_snapshot_is_independent():
    trie = SidTrie(SMALL)
    trie.insert("a", (0, 0, 0))
    copy = trie.snapshot()
    trie.insert("b", (1, 1, 1))
    assert "b" not in copy  # the copy did not change
    copy.remove("a")
    assert "a" in trie and "b" in trie and "a" not in copy  # nor did the original


def test_million_items_memory_and_mask(request):
    # a smaller stand-in for the 1M benchmark that still exercises the hash tables at scale
    from catalogue.bench import synthetic_sids

    vocab = Vocabulary()
    codes = synthetic_sids(100_000, vocab)
    trie = SidTrie.from_codes(vocab, [str(i) for i in range(len(codes))], codes)
    assert len(trie) == 100_000
    assert trie.memory_bytes()["total"] / len(trie) < 400
    ref_children = set(codes[codes[:, 0] == codes[0, 0], 1].tolist())
    mask = trie.next_token_mask(torch.tensor([[vocab.sid_token(0, int(codes[0, 0]))]] * 64))
    got = {t - vocab.level_offset(1) for t in mask[0].nonzero().flatten().tolist()}
    assert got == ref_children and mask.shape == (64, vocab.size)


WIDE = Vocabulary(levels=2, codes_per_level=130, suffix_size=70)  # multi-word bitsets, bit 63 and word edges
EDGE = st.sampled_from([0, 1, 62, 63, 64, 65, 127, 128, 129])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["insert", "remove"]), st.integers(0, 9),
                          st.tuples(EDGE, EDGE, st.sampled_from([0, 63, 64, 69]))), max_size=40))
def test_wide_bitsets_match_reference(operations):
    trie, ref = SidTrie(WIDE), ReferenceTrie(WIDE)
    for op, item, codes in operations:
        item = f"w{item}"
        if op == "insert" and ref.item_at(codes) in (None, item):
            trie.insert(item, codes)
            ref.insert(item, codes)
        elif op == "remove" and item in ref.codes:
            trie.remove(item)
            ref.remove(item)
    prefixes = [[]] + [[WIDE.sid_token(0, a)] for a in (0, 63, 64, 129)]
    prefixes += [[WIDE.sid_token(0, a), WIDE.sid_token(1, b)] for a in (0, 63, 64, 128) for b in (1, 63, 64, 127)]
    for t in range(3):
        rows = [p for p in prefixes if len(p) == t]
        batch = torch.tensor(rows, dtype=torch.long).reshape(len(rows), t)
        assert torch.equal(trie.next_token_mask(batch), ref.next_token_mask(batch))
    assert {i: trie.codes_of(i) for i in trie} == ref.codes


def test_items_with_prefix_large_subtree_uses_same_order():
    vocab = Vocabulary(levels=2, codes_per_level=40, suffix_size=8)
    rng = np.random.default_rng(0)
    sids = {(int(a), int(b), int(c)) for a, b, c in zip(rng.integers(0, 2, 3000), rng.integers(0, 40, 3000),
                                                          rng.integers(0, 8, 3000))}
    trie, ref = SidTrie(vocab), ReferenceTrie(vocab)
    for k, sid in enumerate(sorted(sids, key=lambda s: (s[2], s[1]))):
        trie.insert(f"i{k}", sid)
        ref.insert(f"i{k}", sid)
    trie.remove("i5")
    ref.remove("i5")
    assert trie.count_with_prefix((0,)) > 256
    assert trie.items_with_prefix((0,)) == ref.items_with_prefix((0,))
    assert trie.items_with_prefix(()) == ref.items_with_prefix(())


def test_items_at_matches_item_at():
    trie = SidTrie(SMALL)
    trie.insert("a", (0, 1, 0))
    trie.insert("b", (2, 2, 1))
    trie.insert("c", (0, 1, 1))
    trie.remove("c")
    queries = [(0, 1, 0), (2, 2, 1), (0, 1, 1), (9, 0, 0), (-1, 0, 0), (1, 1, 1)]
    assert trie.items_at(queries) == [trie.item_at(q) for q in queries] == ["a", "b", None, None, None, None]
    assert trie.items_at(torch.tensor(queries[:2])) == ["a", "b"]
    assert trie.items_at([]) == []


def test_counts_with_prefixes_is_count_with_prefix_for_many_at_once():
    vocab = Vocabulary(levels=2, codes_per_level=4, suffix_size=2)
    trie = SidTrie(vocab)
    rng = np.random.default_rng(0)
    sids = [(a, b, c) for a in range(4) for b in range(4) for c in range(2)]
    for i, j in enumerate(rng.choice(len(sids), size=20, replace=False)):
        trie.insert(f"i{i}", sids[j])
    trie.remove("i3")
    for d in (1, 2):
        prefixes = np.array([p[:d] for p in sids] + [[9] * d])  # the last one is out of range: 0 items
        expected = [trie.count_with_prefix(p) for p in prefixes.tolist()]
        assert trie.counts_with_prefixes(prefixes).tolist() == expected
    with pytest.raises(TrieError, match="shorter than a SID"):
        trie.counts_with_prefixes(np.array([[0, 0, 0]]))

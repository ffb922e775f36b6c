import threading

import numpy as np
import pytest
import torch
from qdrant_client import QdrantClient

from catalogue.qdrant_store import QdrantItemStore
from catalogue.trie import SidTrie
from catalogue.vocab import Vocabulary
from trainer.item_index import (ExactIndex, HnswIndex, ItemIndexError, compose_item_vectors, item_index_for,
                                prune_vector_collections, publish_item_vectors, stale_vector_collections,
                                vector_collection)
from trainer.model import ModelConfig, Transformer

VOCAB = Vocabulary(levels=2, codes_per_level=4, suffix_size=2, actions=("click", "like"))


def random_items(n, d=16, seed=0):
    rng = np.random.default_rng(seed)
    return [f"i{i}" for i in range(n)], rng.normal(size=(n, d)).astype(np.float32)


def brute_force(vectors, items, query, k, exclude=()):
    scores = vectors @ query
    order = [i for i in np.argsort(-scores) if items[i] not in exclude]
    return [items[i] for i in order[:k]]


def test_exact_index_is_the_brute_force_top_k_with_seen_items_excluded_inside_the_search():
    items, vectors = random_items(300)
    index = ExactIndex(items, vectors)
    queries = torch.from_numpy(np.random.default_rng(1).normal(size=(4, 16)).astype(np.float32))
    exclude = [set(), {"i1", "i2"}, set(brute_force(vectors, items, queries[2].numpy(), 10)), {"nope"}]
    found, scores = index.search(queries, 10, exclude)
    for b in range(4):
        assert found[b] == brute_force(vectors, items, queries[b].numpy(), 10, exclude[b])
        assert len(found[b]) == 10  # the excluded items never took a slot
        expected = vectors[[items.index(i) for i in found[b]]] @ queries[b].numpy()
        np.testing.assert_allclose(scores[b].numpy(), expected, rtol=1e-5)


def test_exact_index_upsert_and_remove_leave_the_old_snapshot_alone():
    items, vectors = random_items(20)
    index = ExactIndex(items, vectors)
    query = torch.ones(1, 16)
    added = index.upsert(["new"], 100 * np.ones((1, 16), dtype=np.float32))
    assert added.search(query, 1)[0] == [["new"]] and "new" not in index
    removed = added.remove(["new"])
    assert removed.search(query, 1)[0] != [["new"]] and "new" in added and len(removed) == 20
    np.testing.assert_allclose(added.vectors_of(["i3"]).numpy()[0], vectors[3])
    with pytest.raises(ItemIndexError, match="no vector"):
        index.vectors_of(["new"])


def test_exact_index_gives_fewer_items_only_when_fewer_remain():
    items, vectors = random_items(5)
    found, scores = ExactIndex(items, vectors).search(torch.ones(1, 16), 4, [{"i0", "i1", "i2"}])
    assert sorted(found[0]) == ["i3", "i4"] and torch.isinf(scores[0, 2:]).all()


def test_hnsw_index_finds_what_the_exact_scan_finds_and_excludes_inside_the_search():
    items, vectors = random_items(3000, d=32, seed=2)
    hnsw, exact = HnswIndex(items, vectors), ExactIndex(items, vectors)
    queries = torch.from_numpy(np.random.default_rng(3).normal(size=(20, 32)).astype(np.float32))
    found, _ = hnsw.search(queries, 10)
    truth, _ = exact.search(queries, 10)
    recall = np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth)])
    assert recall >= 0.9
    exclude = [set(t[:5]) for t in truth]
    found, _ = hnsw.search(queries, 10, exclude)
    for f, seen in zip(found, exclude):
        assert len(f) == 10 and not set(f) & seen
    hnsw.remove([truth[0][5]])
    assert truth[0][5] not in hnsw.search(queries[:1], 10)[0][0]


def test_index_kind_is_chosen_by_size_or_by_name():
    items, vectors = random_items(10)
    assert item_index_for(items, vectors).kind == "exact"
    assert item_index_for(items, vectors, "hnsw").kind == "hnsw"
    with pytest.raises(ItemIndexError, match="unknown index kind"):
        item_index_for(items, vectors, "annoy")


def dense_model(trie, items):
    torch.manual_seed(0)
    model = Transformer(ModelConfig(vocab_size=VOCAB.size, max_len=32, d_model=16, n_layers=1, n_heads=2,
                                    dropout=0.0, dense_items=len(items), sid_length=VOCAB.sid_length))
    with torch.no_grad():
        model.item_sid_tokens.copy_(torch.tensor([VOCAB.sid_to_tokens(trie.codes_of(i)) for i in items]))
    return model


def test_item_vectors_are_the_sid_embeddings_plus_a_residual_that_starts_at_zero():
    trie = SidTrie(VOCAB)
    trie.insert("a", (0, 1, 0))
    trie.insert("b", (0, 1, 1))
    model = dense_model(trie, ["a", "b"])
    assert torch.count_nonzero(model.item_residual.weight) == 0
    with torch.no_grad():
        model.item_residual.weight[1] = 1.0
    trie.insert("new", (2, 3, 0))  # arrived after training: no residual row
    items, vectors = compose_item_vectors(model, VOCAB, trie)
    emb = model.tok_emb.weight.detach()
    for item, vector in zip(items, vectors):
        sid = emb[VOCAB.sid_to_tokens(trie.codes_of(item))].sum(0)
        expected = sid + (1.0 if item == "b" else 0.0)
        np.testing.assert_allclose(vector, expected.numpy(), rtol=1e-5, atol=1e-6)


def test_a_model_without_dense_head_says_what_to_rebuild():
    trie = SidTrie(VOCAB)
    trie.insert("a", (0, 1, 0))
    model = Transformer(ModelConfig(vocab_size=VOCAB.size, max_len=32, d_model=16, n_layers=1, n_heads=2))
    with pytest.raises(ItemIndexError, match="no dense head.*retrain"):
        compose_item_vectors(model, VOCAB, trie)


def test_each_model_version_gets_its_own_qdrant_collection_and_matches_the_exact_scan():
    trie = SidTrie(VOCAB)
    items = []
    for n, codes in enumerate([(a, b, c) for a in range(4) for b in range(4) for c in range(2)][:24]):
        trie.insert(f"i{n}", codes)
        items.append(f"i{n}")
    client = QdrantClient(":memory:")  # local mode: the real Qdrant engine, in process
    v1 = dense_model(trie, items)
    v2 = dense_model(trie, items)
    with torch.no_grad():
        v2.item_residual.weight.normal_()
    index1 = publish_item_vectors(v1, VOCAB, trie, "v1", client=client)
    index2 = publish_item_vectors(v2, VOCAB, trie, "v2", client=client)
    assert {c.name for c in client.get_collections().collections} >= {vector_collection("v1"), vector_collection("v2")}
    queries = torch.randn(3, 16)
    exclude = [set(), {"i0", "i5"}, set(items[:20])]
    for model, index in ((v1, index1), (v2, index2)):
        exact = ExactIndex(*compose_item_vectors(model, VOCAB, trie))
        found, scores = index.search(queries, 4, exclude)
        truth, truth_scores = exact.search(queries, 4, exclude)
        assert found == truth and len(found[2]) == 4 and not set(found[2]) & exclude[2]
        np.testing.assert_allclose(scores.numpy(), truth_scores.numpy(), rtol=1e-4, atol=1e-5)
    trie.insert("new", (3, 3, 1))
    index1.upsert(*compose_item_vectors(v1, VOCAB, trie, ["new"]))
    assert "new" in index1 and "new" not in index2  # a change reaches the live version's collection only
    trie.remove("new")
    index1.remove(["new"])
    assert "new" not in index1 and len(index1) == 24
    assert publish_item_vectors(v1, VOCAB, trie, "v1", client=client).store.count() == 24  # reused, not rewritten


def test_hnsw_changes_while_searches_run_never_break_a_search():
    items, vectors = random_items(2000, d=16, seed=4)
    index = HnswIndex(items, vectors)
    queries = torch.from_numpy(np.random.default_rng(5).normal(size=(8, 16)).astype(np.float32))
    errors, done = [], threading.Event()

    def search_until_done():
        while not done.is_set():
            try:
                found, _ = index.search(queries, 10)
                assert all(len(f) == 10 for f in found)
            except Exception as exc:  # collected: a failure in the thread must fail the test
                errors.append(exc)
                return

    thread = threading.Thread(target=search_until_done)
    thread.start()
    rng = np.random.default_rng(6)
    for n in range(200):
        index.upsert([f"new{n}"], rng.normal(size=(1, 16)).astype(np.float32))
        index.remove([f"i{n}"])
    done.set()
    thread.join()
    assert not errors and len(index) == 2000 and "new199" in index and "i0" not in index


def test_old_version_collections_are_dropped_and_other_collections_kept():
    assert stale_vector_collections(["items", "item-vectors-v1", "item-vectors-v2", "item-vectors-v3"],
                                    {"v3", "v1"}) == ["item-vectors-v2"]
    trie = SidTrie(VOCAB)
    items = []
    for n, codes in enumerate([(0, 1, 0), (1, 2, 0), (2, 3, 1)]):
        trie.insert(f"i{n}", codes)
        items.append(f"i{n}")
    client = QdrantClient(":memory:")  # local mode: the real Qdrant engine, in process
    QdrantItemStore(16, "items", client=client)  # the catalogue's own collection
    for version in ("v1", "v2", "v3"):
        publish_item_vectors(dense_model(trie, items), VOCAB, trie, version, client=client)
    assert prune_vector_collections(client, {"v3"}) == [vector_collection("v1"), vector_collection("v2")]
    assert {c.name for c in client.get_collections().collections} == {"items", vector_collection("v3")}

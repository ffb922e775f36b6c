import numpy as np
import pytest

from catalogue.qdrant_store import QdrantItemStore, QdrantStoreError, point_id


@pytest.fixture()
def store():
    s = QdrantItemStore(dim=4, collection="test_items")  # local in-memory mode
    yield s
    s.close()


def test_upsert_nearest_and_prefix(store):
    rows = [("1", [1, 0, 0, 0], (0, 1, 2, 0), {"title": "a"}),
            ("2", [0.9, 0.1, 0, 0], (0, 1, 3, 0), {"title": "b"}),
            ("3", [0, 0, 1, 0], (5, 1, 2, 0), None)]
    assert store.upsert_many(rows) == 3
    assert store.count() == 3
    hits = store.nearest([1, 0, 0, 0], k=2)
    assert [h[0] for h in hits] == ["1", "2"] and hits[0][1] == pytest.approx(1.0, abs=1e-5)
    assert store.items_with_prefix((0, 1)) == ["1", "2"]
    assert store.items_with_prefix((0, 1, 3)) == ["2"]
    assert store.items_with_prefix((7,)) == []
    assert {h[0] for h in store.nearest([0, 0, 1, 0], k=3, sid_prefix=(0,))} == {"1", "2"}
    assert store.get("1")["title"] == "a" and store.get("1")["sid"] == [0, 1, 2, 0]


def test_repeated_item_is_an_update(store):
    store.upsert("7", [1, 0, 0, 0], (1, 1, 1, 0), {"v": 1})
    store.upsert("7", [0, 1, 0, 0], (2, 2, 2, 0), {"v": 2})
    assert store.count() == 1 and store.get("7")["v"] == 2 and store.get("7")["sid"] == [2, 2, 2, 0]
    store.delete("7")
    assert store.count() == 0 and store.get("7") is None


def test_bad_vectors(store):
    with pytest.raises(QdrantStoreError, match="dimensions"):
        store.upsert("1", [1, 0], (0, 0, 0, 0))
    with pytest.raises(QdrantStoreError, match="NaN"):
        store.upsert("1", [np.nan, 0, 0, 0], (0, 0, 0, 0))
    assert point_id("1") == point_id("1") != point_id("2")


def test_local_path_mode_persists(tmp_path):
    s = QdrantItemStore(dim=3, path=str(tmp_path / "q"))
    s.upsert("a", [1, 2, 3], (0, 0, 0, 0))
    s.close()
    s2 = QdrantItemStore(dim=3, path=str(tmp_path / "q"))
    assert s2.count() == 1
    with pytest.raises(QdrantStoreError, match="holds 3-d"):
        QdrantItemStore(dim=5, client=s2.client)
    s2.close()


def test_index_catalogue_puts_sids_in_payload():
    from catalogue.catalogue import ItemCatalogue
    from catalogue.qdrant_store import index_catalogue

    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 4)).astype(np.float32)
    ids = [str(i) for i in range(40)]
    cat = ItemCatalogue.fit(ids, x, levels=2, codes_per_level=4, suffix_size=8, iterations=3, progress=None)
    s = QdrantItemStore(dim=4, collection="cat")
    assert index_catalogue(s, cat, ids + ["unknown"], np.vstack([x, x[:1]]), {"3": {"title": "t"}}) == 40
    assert s.get("3")["sid"] == list(cat.codes_of("3")) and s.get("3")["title"] == "t"
    prefix = cat.codes_of("3")[:1]
    assert set(s.items_with_prefix(prefix)) == set(cat.trie.items_with_prefix(prefix))
    s.close()

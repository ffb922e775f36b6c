import numpy as np
import pytest

from catalogue.encoder import (collaborative_embeddings, cooccurrence, embed_catalogue, hashed_vector, item_text,
                               neighbour_average, price_bucket)


def test_item_text_fields_unescape_and_price_bucket():
    item = {"item_id": "1", "title": "Salt &amp; Pepper  Scrub", "brand": "Acme",
            "categories": ["Beauty", "Skin Care"], "price": 12.5}
    assert item_text(item) == "Salt & Pepper Scrub. Brand: Acme. Category: Beauty > Skin Care. Price: $10 to $25"
    assert price_bucket(None) is None and price_bucket(float("nan")) is None and price_bucket(3) == "under $5"
    assert price_bucket(250) == "over $100"


@pytest.mark.parametrize("item", [{"item_id": "1"}, {"item_id": "1", "title": "   "},
                                  {"item_id": "1", "title": None, "brand": "Acme", "categories": ["Beauty"]}])
def test_no_title_means_no_usable_text(item):
    assert item_text(item) == ""


def test_metadata_text_without_title():
    assert item_text({"item_id": "1", "brand": "Acme", "categories": ["Beauty"]}, require_title=False) == \
        "Brand: Acme. Category: Beauty"
    assert item_text({"item_id": "1", "title": " "}, require_title=False) == ""


def two_communities(n=20, users=200, seed=0):
    rng = np.random.default_rng(seed)
    a = [str(i) for i in range(n)]
    b = [str(i) for i in range(n, 2 * n)]
    seqs = {f"u{u}": list(rng.choice(a if u % 2 else b, size=6, replace=False)) for u in range(users)}
    return seqs, a + b


def test_cooccurrence_window_and_weights():
    rows, cols, w = cooccurrence({"u": ["a", "b", "c"]}, {"a": 0, "b": 1, "c": 2}, window=1)
    pairs = sorted(zip(rows.tolist(), cols.tolist()))
    assert pairs == [(0, 1), (1, 0), (1, 2), (2, 1)] and (w == 1.0).all()


def test_collaborative_embeddings_separate_communities():
    seqs, ids = two_communities()
    emb, has = collaborative_embeddings(seqs, ids, dim=8)
    assert has.all() and emb.shape == (40, 8)
    sim = emb @ emb.T
    within = (sim[:20, :20].mean() + sim[20:, 20:].mean()) / 2
    across = sim[:20, 20:].mean()
    assert within > across + 0.3


def test_neighbour_average_fills_only_missing_items():
    seqs = {"u1": ["a", "x"], "u2": ["b", "x"], "u3": ["c", "d"]}
    ids = ["a", "b", "c", "d", "x", "lonely"]
    known = np.array([True, True, True, True, False, False])
    vec = np.zeros((6, 2), dtype=np.float32)
    vec[0], vec[1], vec[2], vec[3] = [1, 0], [1, 0], [0, 1], [0, 1]
    out, got = neighbour_average(seqs, ids, known, vec)
    assert got.tolist() == [True, True, True, True, True, False]
    np.testing.assert_allclose(out[4], [1, 0], atol=1e-6)
    np.testing.assert_array_equal(out[:4], vec[:4])


class StubTextEncoder:
    dim = 16

    def encode(self, texts, batch_size=128, progress=True):
        assert all(t.strip() for t in texts)  # empty texts must never reach the text encoder
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for r, t in enumerate(texts):
            out[r, len(t) % self.dim] = 1.0
        return out


def test_embed_catalogue_routes_items_by_text_availability():
    items = [{"item_id": str(i), "title": f"title {i}"} for i in range(8)]
    items += [{"item_id": "8", "title": ""}, {"item_id": "9", "title": ""},
              {"item_id": "10", "title": "", "categories": ["Beauty", "Nails"]}]
    seqs = {"u": ["0", "8", "1"]}
    res = embed_catalogue(items, seqs, text_encoder_factory=StubTextEncoder, progress=False, log=lambda m: None)
    src = dict(zip(res.item_ids, res.sources))
    assert src["0"] == "text" and src["8"] == "cooccurrence" and src["9"] == "hash" and src["10"] == "metadata"
    assert np.isfinite(res.vectors).all()
    assert res.counts == {"text": 8, "cooccurrence": 1, "metadata": 1, "svd": 0, "hash": 1}
    np.testing.assert_allclose(res.vectors[9], hashed_vector("9", 16))


def test_embed_catalogue_without_text_uses_svd_and_without_anything_fails():
    seqs, ids = two_communities()
    res = embed_catalogue([], seqs, text_encoder_factory=None, collab_dim=8, progress=False, log=lambda m: None)
    assert res.counts["svd"] == 40 and res.model.startswith("ppmi-svd")
    with pytest.raises(ValueError, match="cannot embed"):
        embed_catalogue([{"item_id": "1"}], None, log=lambda m: None)


class ForbiddenTextEncoder:
    def __init__(self):
        raise AssertionError("the text encoder must not be loaded for collaborative embeddings")


def test_embedding_source_forces_collaborative_or_text():
    seqs, ids = two_communities()
    titled = [{"item_id": i, "title": f"title {i}"} for i in ids] + [{"item_id": "lonely", "title": "never bought"}]
    logs = []
    collab = embed_catalogue(titled, seqs, text_encoder_factory=ForbiddenTextEncoder, collab_dim=8, progress=False,
                             log=logs.append, source="collaborative")
    assert collab.counts["svd"] == 40 and collab.counts["text"] == 0 and collab.model.startswith("ppmi-svd")
    assert collab.counts["hash"] == 1 and "1 item(s) had no interactions; they got hashed" in logs[-1]
    # auto on the same items would have used text; "text" forces it even when most items have none
    mostly_untitled = titled[:5] + [{"item_id": i} for i in ids[5:]]
    text = embed_catalogue(mostly_untitled, seqs, text_encoder_factory=StubTextEncoder, progress=False,
                           log=lambda m: None, source="text")
    assert text.counts["text"] == 5 and text.counts["svd"] == 0
    auto = embed_catalogue(mostly_untitled, seqs, text_encoder_factory=StubTextEncoder, collab_dim=8, progress=False,
                           log=lambda m: None)
    assert auto.counts["svd"] == 40


def test_embedding_source_errors():
    seqs, ids = two_communities()
    with pytest.raises(ValueError, match="no item has a title"):
        embed_catalogue([{"item_id": i} for i in ids], seqs, text_encoder_factory=StubTextEncoder,
                        log=lambda m: None, source="text")
    with pytest.raises(ValueError, match="collaborative embeddings were asked for and no interaction sequences"):
        embed_catalogue([{"item_id": "1", "title": "a"}], None, log=lambda m: None, source="collaborative")
    with pytest.raises(ValueError, match="unknown embedding source 'clip'"):
        embed_catalogue([{"item_id": "1", "title": "a"}], None, log=lambda m: None, source="clip")


def test_embedding_fingerprint_depends_on_the_source_and_auto_keeps_its_old_value():
    import hashlib

    from catalogue.catalogue import embedding_fingerprint
    from catalogue.encoder import TEXT_MODEL

    items = [{"item_id": "1", "title": "a"}]
    prints = {s: embedding_fingerprint(items, None, 64, s) for s in ("auto", "text", "collaborative")}
    assert len(set(prints.values())) == 3
    legacy = hashlib.sha256(f"{TEXT_MODEL}|64|v1".encode())
    legacy.update(b"1" + b"\x01" + item_text(items[0]).encode() + b"\x00")
    assert prints["auto"] == legacy.hexdigest()  # caches written before sources existed stay valid


@pytest.mark.slow
def test_real_text_encoder_similar_titles_are_close():
    from catalogue.encoder import TextEncoder

    enc = TextEncoder()
    v = enc.encode(["red nail polish", "crimson nail lacquer", "anti-dandruff shampoo"], progress=False)
    assert v.shape == (3, 384)
    assert v[0] @ v[1] > v[0] @ v[2]
    with pytest.raises(ValueError, match="empty"):
        enc.encode(["ok", ""])

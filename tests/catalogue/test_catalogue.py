import time

import numpy as np
import pytest

from catalogue.catalogue import (CatalogueError, ItemCatalogue, SuffixSpaceExhausted, assign_suffixes,
                                 build_catalogue)
from catalogue.tokenizer import ResidualKMeans, TokenizerError
from catalogue.vocab import Vocabulary, VocabularyError


def toy_catalogue(n=300, dim=8, k=8, levels=2, suffix=16, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, dim)).astype(np.float32)
    ids = [str(i + 1) for i in range(n)]
    cat = ItemCatalogue.fit(ids, x, levels=levels, codes_per_level=k, suffix_size=suffix, iterations=8,
                            progress=None)
    return cat, ids, x


def test_fit_gives_every_item_a_unique_sid():
    cat, ids, _ = toy_catalogue()
    sids = {cat.codes_of(i) for i in ids}
    assert len(sids) == len(ids) == len(cat)
    for i in ids[:20]:
        assert cat.item_of_tokens(cat.tokens_of(i)) == i
        assert len(cat.tokens_of(i)) == cat.vocab.sid_length
    assert cat.report()["unique_sids"] is True


def test_assign_suffixes_counts_up_within_a_prefix():
    sem = np.array([[1, 2], [0, 0], [1, 2], [1, 2], [0, 1]])
    assert assign_suffixes(sem, 4).tolist() == [0, 0, 1, 2, 0]


def test_suffix_space_exhaustion_is_an_error_not_a_merge():
    sem = np.zeros((5, 2), dtype=np.int64)
    with pytest.raises(SuffixSpaceExhausted, match="5 items share"):
        assign_suffixes(sem, 4, ["a", "b", "c", "d", "e"])
    # 16 items on 2 codes, at most 4 per code: the whole fit fails rather than merging items
    x = np.random.default_rng(0).standard_normal((16, 4)).astype(np.float32)
    with pytest.raises(SuffixSpaceExhausted):
        ItemCatalogue.fit([str(i) for i in range(16)], x, levels=1, codes_per_level=2, suffix_size=4, progress=None)


def test_add_item_new_update_and_full_prefix():
    cat, ids, x = toy_catalogue(suffix=64)
    new = x[0] * 1.0001
    codes = cat.add_item("new", new)
    assert codes[:-1] == cat.semantic_codes(x[0]) and cat.item_at(codes) == "new"
    assert cat.add_item("new", new) == codes  # repeated id, same content: unchanged, not a second item
    n = len(cat)
    far = -x[0]
    moved = cat.add_item("new", far)
    assert len(cat) == n and cat.codes_of("new") == moved and cat.item_at(codes) is None
    # fill one prefix's suffix space, then one more is a clear error
    small, _, xs = toy_catalogue(n=40, k=4, suffix=8, seed=1)
    with pytest.raises(SuffixSpaceExhausted, match="suffix space"):
        for j in range(9):
            small.add_item(f"dup{j}", xs[0])
    assert len(small) < 40 + 9


def test_bad_input_item_and_sid():
    cat, ids, x = toy_catalogue()
    with pytest.raises(TokenizerError, match="NaN"):
        cat.add_item("bad", np.full(x.shape[1], np.nan))
    assert "bad" not in cat
    with pytest.raises(CatalogueError):
        cat.add_item("", x[0])
    with pytest.raises(CatalogueError):
        cat.remove_item("missing")
    # a well-formed SID no item holds -> None; a malformed one -> ValueError
    v = cat.vocab
    free = next(c for c in range(v.suffix_size) if cat.item_at(cat.codes_of("1")[:-1] + (c,)) is None)
    assert cat.item_of_tokens(v.sid_to_tokens(cat.codes_of("1")[:-1] + (free,))) is None
    with pytest.raises(VocabularyError):
        cat.item_of_tokens([0, 1, 2])
    with pytest.raises(CatalogueError, match="repeated"):
        ItemCatalogue.fit(["a", "a"], x[:2], levels=1, codes_per_level=2, progress=None)


def test_save_load_round_trip_and_checksum(tmp_path):
    cat, ids, x = toy_catalogue()
    cat.add_item("late", x[5] + 0.01)
    cat.save(tmp_path / "cat")
    back = ItemCatalogue.load(tmp_path / "cat")
    assert back.vocab == cat.vocab and back.version == cat.version
    assert sorted(back.item_ids) == sorted(cat.item_ids)
    assert all(back.codes_of(i) == cat.codes_of(i) for i in cat.item_ids)
    assert back.semantic_codes(x[3]) == cat.semantic_codes(x[3])
    sids = tmp_path / "cat" / "sids.tsv"
    sids.write_text(sids.read_text().replace("\t", "\t1", 1))
    with pytest.raises(CatalogueError, match="sha256"):
        ItemCatalogue.load(tmp_path / "cat")
    with pytest.raises(CatalogueError, match="manifest"):
        ItemCatalogue.load(tmp_path)


def test_titles_are_saved_checked_and_follow_additions_and_removals(tmp_path):
    cat, ids, x = toy_catalogue()
    cat.save(tmp_path / "plain")
    assert not (tmp_path / "plain" / "titles.json").exists() and ItemCatalogue.load(tmp_path / "plain").titles == {}
    cat.titles = {"1": "Rose soap", "2": "Mint gel"}
    cat.add_item("late", x[5] + 0.01, title="Late lotion")
    cat.remove_item("2")
    cat.save(tmp_path / "cat")
    back = ItemCatalogue.load(tmp_path / "cat")
    assert back.titles == {"1": "Rose soap", "late": "Late lotion"}
    (tmp_path / "cat" / "titles.json").write_text('{"1": "edited"}\n')
    with pytest.raises(CatalogueError, match="sha256"):
        ItemCatalogue.load(tmp_path / "cat")


def test_load_of_12k_items_is_fast(tmp_path):
    rng = np.random.default_rng(0)
    vocab_books = [rng.standard_normal((256, 384)).astype(np.float32) for _ in range(3)]
    tok = ResidualKMeans(vocab_books)
    vocab = Vocabulary(version=tok.content_hash()[:16])
    n = 12_101
    sem = rng.integers(0, 256, (n, 3))
    codes = np.column_stack([sem, assign_suffixes(sem, 32)])
    ItemCatalogue(vocab, tok, [str(i) for i in range(1, n + 1)], codes).save(tmp_path / "big")
    t0 = time.perf_counter()
    cat = ItemCatalogue.load(tmp_path / "big")
    assert time.perf_counter() - t0 < 1.0
    assert len(cat) == n


class StubTextEncoder:
    """Deterministic stand-in for MiniLM in pipeline tests: a bag of hashed words."""

    dim = 32

    def encode(self, texts, batch_size=128, progress=True):
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for r, text in enumerate(texts):
            for word in text.lower().split():
                out[r, sum(map(ord, word)) % self.dim] += 1.0
        return out / np.linalg.norm(out, axis=1, keepdims=True)


def test_build_pipeline_with_cache_and_update_semantics(tmp_path):
    words = ["lipstick red", "shampoo hair", "nail polish", "face cream", "eye liner", "hair spray",
             "body lotion", "perfume rose"]
    items = [{"item_id": str(i), "title": f"{words[i % 8]} {i}", "categories": ["Beauty", words[i % 8]]}
             for i in range(120)]
    items.append({"item_id": "5", "title": "updated shampoo hair", "categories": ["Beauty", "shampoo hair"]})
    items.append({"item_id": "notext", "title": ""})
    sequences = {"u1": ["notext", "1", "9"], "u2": ["2", "notext"]}
    logs = []
    cat, report = build_catalogue(items, sequences, tmp_path / "c", levels=2, codes_per_level=8, suffix_size=16,
                                  iterations=5, progress=False, log=logs.append,
                                  text_encoder_factory=StubTextEncoder)
    assert len(cat) == 121 and report["unique_sids"]  # item 5 is updated in place, not added twice
    assert report["embedding_sources"] == {"cooccurrence": 1, "text": 120}
    assert (tmp_path / "c" / "embeddings.safetensors").is_file()
    again, report2 = build_catalogue(items, sequences, tmp_path / "c", levels=2, codes_per_level=8,
                                     suffix_size=16, iterations=5, progress=False, log=logs.append,
                                     text_encoder_factory=None)
    assert report2["embeddings_cached"] is True
    assert {i: again.codes_of(i) for i in again.item_ids} == {i: cat.codes_of(i) for i in cat.item_ids}


def test_cached_embeddings_are_not_reused_for_another_source(tmp_path):
    rng = np.random.default_rng(0)
    items = [{"item_id": str(i), "title": f"product {i}"} for i in range(40)]
    sequences = {f"u{u}": [str(i) for i in rng.choice(40, size=5, replace=False)] for u in range(60)}
    kw = dict(levels=2, codes_per_level=4, suffix_size=16, iterations=5, progress=False, log=lambda m: None,
              text_encoder_factory=StubTextEncoder)
    _, text = build_catalogue(items, sequences, tmp_path / "c", embedding_source="text", **kw)
    cat, collab = build_catalogue(items, sequences, tmp_path / "c", embedding_source="collaborative", **kw)
    assert text["embedding_sources"] == {"text": 40} and collab["embedding_sources"] == {"svd": 40}
    assert collab["embeddings_cached"] is False and cat.info["embedding_source"] == "collaborative"
    _, again = build_catalogue(items, sequences, tmp_path / "c", embedding_source="collaborative", **kw)
    assert again["embeddings_cached"] is True

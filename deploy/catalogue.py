"""Handlers of `sidstream catalogue build|report|assign` and `sidstream bench catalogue` (parsers:
deploy/cli/catalogue.py)."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from catalogue import bench as catalogue_bench
from catalogue.catalogue import CatalogueError, ItemCatalogue, build_catalogue, load_embeddings
from catalogue.datasets import (DatasetError, catalogue_actions, is_movielens, load_item_meta, load_items_jsonl,
                                load_sequences)
from catalogue.vocab import ACTIONS
from catalogue.encoder import TextEncoder, item_text
from catalogue.qdrant_store import QdrantItemStore, index_catalogue
from catalogue.quality import format_report
from catalogue.settings import CatalogueSettings
from catalogue.tokenizer import TokenizerError
from deploy.cli import CommandError


def build(args) -> int:
    if args.items is None and args.dataset is None:
        raise CommandError("give --items <jsonl> and/or --dataset <dir>")
    try:
        items = load_items_jsonl(args.items) if args.items else []
        sequences, actions = None, ACTIONS
        if args.dataset:
            if not items:
                items = load_item_meta(args.dataset)
            if (args.dataset / "sequences.txt").is_file() or is_movielens(args.dataset):
                sequences = load_sequences(args.dataset)
            actions = catalogue_actions(args.dataset)
        if not items and not sequences:
            raise CommandError("no items: the items file is empty and the dataset has no sequences.txt or u.data")
        _, report = build_catalogue(items, sequences, args.out, levels=args.levels, codes_per_level=args.codes,
                                    suffix_size=args.suffix_size, iterations=args.iterations, seed=args.seed,
                                    batch_size=args.batch_size, capacity_factor=args.capacity_factor,
                                    spread_last_level=not args.no_spread, collab_dim=args.collab_dim,
                                    embedding_source=args.embeddings, actions=actions)
    except (DatasetError, CatalogueError, TokenizerError, ValueError) as exc:
        raise CommandError(str(exc)) from None
    print(format_report(report))
    if args.index:
        _index(args.out, items)
    print(f"build took {report['build_seconds']:.1f}s (embedding {report['embed_seconds']:.1f}s, "
          f"fit {report['fit_seconds']:.1f}s); wrote {args.out}")
    return 0


def _index(folder: Path, items: list[dict]) -> None:
    cat = ItemCatalogue.load(folder)
    cached = load_embeddings(folder / "embeddings.safetensors")
    if cached is None:
        raise CommandError(f"{folder} has no embeddings.safetensors to index")
    ids, vectors, sources, _ = cached
    store = QdrantItemStore.from_settings(vectors.shape[1])
    meta = {str(i["item_id"]): {k: i.get(k) for k in ("title", "brand", "categories", "price") if i.get(k) is not None}
            for i in items}
    t0 = time.perf_counter()
    n = index_catalogue(store, cat, ids, vectors, meta)
    print(f"indexed {n} items into Qdrant collection {store.collection!r} in {time.perf_counter() - t0:.1f}s")
    store.close()


def report(args) -> int:
    folder = args.catalogue or CatalogueSettings().catalogue_dir
    try:
        cat = ItemCatalogue.load(folder)
    except CatalogueError as exc:
        raise CommandError(str(exc)) from None
    report = cat.report()
    saved = folder / "quality.json"
    if saved.is_file():  # keep build-time extras (category sharing, embedding sources)
        for key, value in json.loads(saved.read_text()).items():
            report.setdefault(key, value)
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0


def assign(args) -> int:
    try:
        cat = ItemCatalogue.load(args.catalogue)
        items = load_items_jsonl(args.items)
    except (CatalogueError, DatasetError) as exc:
        raise CommandError(str(exc)) from None
    texts = [item_text(item) for item in items]
    empty = [item["item_id"] for item, text in zip(items, texts) if not text]
    if empty:
        raise CommandError(f"{len(empty)} new item(s) have no usable text (no title), e.g. {empty[:5]}; new items are "
                     "tokenized from text, collaborative embeddings need interaction history")
    if cat.tokenizer.dim != TextEncoder.dim:
        raise CommandError(f"this catalogue's codebooks are {cat.tokenizer.dim}-d (not text embeddings); it cannot "
                     "tokenize new items from text")
    vectors = TextEncoder().encode(texts, progress=False)
    for item, vector in zip(items, vectors):
        was = cat.codes_of(item["item_id"]) if item["item_id"] in cat else None
        try:
            codes = cat.add_item(item["item_id"], np.asarray(vector))
        except CatalogueError as exc:
            raise CommandError(str(exc)) from None
        change = "new" if was is None else ("unchanged" if was == codes else f"moved from {list(was)}")
        print(f"{item['item_id']}\t{' '.join(map(str, codes))}\ttokens {cat.vocab.sid_to_tokens(codes)}\t{change}")
    if args.save:
        cat.save(args.catalogue)
        print(f"saved {len(cat)} items to {args.catalogue}", file=sys.stderr)
    return 0


def bench(args) -> int:
    if not args.dataset.is_dir():
        raise CommandError(f"dataset folder not found: {args.dataset}")
    catalogue_bench.run(args.dataset, args.out, quick=args.quick, workdir=args.workdir)
    return 0

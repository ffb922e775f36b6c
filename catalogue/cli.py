"""`sidstream catalogue build|report|assign` and `sidstream bench catalogue`."""
from __future__ import annotations

import json
import sys
from pathlib import Path


def register(commands, bench) -> None:
    from catalogue.encoder import EMBEDDING_SOURCES  # numpy only, already loaded by the CLI

    cat = commands.add_parser("catalogue", help="item language: build SIDs, report their quality, assign new items")
    sub = cat.add_subparsers(dest="catalogue_command", metavar="ACTION")
    cat.set_defaults(func=lambda args: (cat.print_help(), 2)[1])

    b = sub.add_parser("build", help="embed items, fit residual k-means codebooks, give every item a unique SID")
    b.add_argument("--items", type=Path, help="items JSONL (item_id, title, brand, categories, price)")
    b.add_argument("--dataset", type=Path,
                   help="dataset folder (item_meta.jsonl and/or sequences.txt); sequences give items without text "
                        "a collaborative embedding")
    b.add_argument("--out", type=Path, required=True, help="catalogue folder to write")
    b.add_argument("--embeddings", choices=EMBEDDING_SOURCES, default="auto",
                   help="item vectors the SIDs are fitted on: text (MiniLM over titles), collaborative (PPMI/SVD "
                        "over --dataset's sequences; better retrieval, but an item without interactions gets a "
                        "hashed vector), or auto (text when at least half the items have a title)")
    b.add_argument("--collab-dim", type=_positive_int, default=64, help="dimensions of the collaborative vectors")
    b.add_argument("--levels", type=int, default=3)
    b.add_argument("--codes", type=int, default=256, help="codes per level (K)")
    b.add_argument("--suffix-size", type=int, default=32)
    b.add_argument("--iterations", type=int, default=25)
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--batch-size", type=int, default=128, help="text encoder batch size")
    b.add_argument("--capacity-factor", type=float, default=1.0,
                   help="balanced k-means: at most ceil(factor * N / K) items per code")
    b.add_argument("--no-spread", action="store_true",
                   help="plain nearest codes at the last level (more collisions resolved by the suffix)")
    b.add_argument("--index", action="store_true",
                   help="also upsert item vectors + SIDs into Qdrant (SIDSTREAM_QDRANT_URL / _PATH, else in-memory)")
    b.set_defaults(func=_build)

    r = sub.add_parser("report", help="SID quality report of a catalogue folder")
    r.add_argument("catalogue", type=Path, nargs="?", help="catalogue folder (default: settings catalogue_dir)")
    r.add_argument("--json", action="store_true", help="print JSON instead of text")
    r.set_defaults(func=_report)

    a = sub.add_parser("assign", help="give new (or changed) items SIDs with the frozen codebooks")
    a.add_argument("--catalogue", type=Path, required=True, help="catalogue folder")
    a.add_argument("--items", type=Path, required=True, help="items JSONL with titles")
    a.add_argument("--save", action="store_true", help="write the new SIDs back into the catalogue folder")
    a.set_defaults(func=_assign)

    bc = bench.add_parser("catalogue", help="SID quality, assignment, trie insert and mask speed (12k and 1M items)")
    bc.add_argument("--dataset", type=Path, required=True)
    bc.add_argument("--quick", action="store_true", help="fewer k-means iterations and repetitions (< 1 min)")
    bc.add_argument("--out", type=Path, required=True, help="JSON file to write")
    bc.add_argument("--workdir", type=Path, default=None,
                    help="where the built catalogue and embedding cache go (default var/bench/catalogue/<dataset>)")
    bc.set_defaults(func=_bench)


def _positive_int(text: str) -> int:
    import argparse

    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _error(message: str):
    from deploy.cli import CommandError

    return CommandError(message)


def _build(args) -> int:
    from catalogue.catalogue import CatalogueError, build_catalogue
    from catalogue.datasets import DatasetError, load_item_meta, load_items_jsonl, load_sequences
    from catalogue.quality import format_report
    from catalogue.tokenizer import TokenizerError

    if args.items is None and args.dataset is None:
        raise _error("give --items <jsonl> and/or --dataset <dir>")
    try:
        items = load_items_jsonl(args.items) if args.items else []
        sequences = None
        if args.dataset:
            if not items:
                items = load_item_meta(args.dataset)
            if (args.dataset / "sequences.txt").is_file():
                sequences = load_sequences(args.dataset)
        if not items and not sequences:
            raise _error("no items: the items file is empty and the dataset has no sequences.txt")
        _, report = build_catalogue(items, sequences, args.out, levels=args.levels, codes_per_level=args.codes,
                                    suffix_size=args.suffix_size, iterations=args.iterations, seed=args.seed,
                                    batch_size=args.batch_size, capacity_factor=args.capacity_factor,
                                    spread_last_level=not args.no_spread, collab_dim=args.collab_dim,
                                    embedding_source=args.embeddings)
    except (DatasetError, CatalogueError, TokenizerError, ValueError) as exc:
        if exc.__class__.__name__ == "CommandError":
            raise
        raise _error(str(exc)) from None
    print(format_report(report))
    if args.index:
        _index(args.out, items)
    print(f"build took {report['build_seconds']:.1f}s (embedding {report['embed_seconds']:.1f}s, "
          f"fit {report['fit_seconds']:.1f}s); wrote {args.out}")
    return 0


def _index(folder: Path, items: list[dict]) -> None:
    import time

    from catalogue.catalogue import ItemCatalogue, load_embeddings
    from catalogue.qdrant_store import QdrantItemStore, index_catalogue

    cat = ItemCatalogue.load(folder)
    cached = load_embeddings(folder / "embeddings.safetensors")
    if cached is None:
        raise _error(f"{folder} has no embeddings.safetensors to index")
    ids, vectors, sources, _ = cached
    store = QdrantItemStore.from_settings(vectors.shape[1])
    meta = {str(i["item_id"]): {k: i.get(k) for k in ("title", "brand", "categories", "price") if i.get(k) is not None}
            for i in items}
    t0 = time.perf_counter()
    n = index_catalogue(store, cat, ids, vectors, meta)
    print(f"indexed {n} items into Qdrant collection {store.collection!r} in {time.perf_counter() - t0:.1f}s")
    store.close()


def _report(args) -> int:
    from catalogue.catalogue import CatalogueError, ItemCatalogue
    from catalogue.quality import format_report
    from catalogue.settings import CatalogueSettings

    folder = args.catalogue or CatalogueSettings().catalogue_dir
    try:
        cat = ItemCatalogue.load(folder)
    except CatalogueError as exc:
        raise _error(str(exc)) from None
    report = cat.report()
    saved = folder / "quality.json"
    if saved.is_file():  # keep build-time extras (category sharing, embedding sources)
        for key, value in json.loads(saved.read_text()).items():
            report.setdefault(key, value)
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0


def _assign(args) -> int:
    import numpy as np

    from catalogue.catalogue import CatalogueError, ItemCatalogue
    from catalogue.datasets import DatasetError, load_items_jsonl
    from catalogue.encoder import TextEncoder, item_text

    try:
        cat = ItemCatalogue.load(args.catalogue)
        items = load_items_jsonl(args.items)
    except (CatalogueError, DatasetError) as exc:
        raise _error(str(exc)) from None
    texts = [item_text(item) for item in items]
    empty = [item["item_id"] for item, text in zip(items, texts) if not text]
    if empty:
        raise _error(f"{len(empty)} new item(s) have no usable text (no title), e.g. {empty[:5]}; new items are "
                     "tokenized from text, collaborative embeddings need interaction history")
    if cat.tokenizer.dim != TextEncoder.dim:
        raise _error(f"this catalogue's codebooks are {cat.tokenizer.dim}-d (not text embeddings); it cannot "
                     "tokenize new items from text")
    vectors = TextEncoder().encode(texts, progress=False)
    for item, vector in zip(items, vectors):
        was = cat.codes_of(item["item_id"]) if item["item_id"] in cat else None
        try:
            codes = cat.add_item(item["item_id"], np.asarray(vector))
        except CatalogueError as exc:
            raise _error(str(exc)) from None
        change = "new" if was is None else ("unchanged" if was == codes else f"moved from {list(was)}")
        print(f"{item['item_id']}\t{' '.join(map(str, codes))}\ttokens {cat.vocab.sid_to_tokens(codes)}\t{change}")
    if args.save:
        cat.save(args.catalogue)
        print(f"saved {len(cat)} items to {args.catalogue}", file=sys.stderr)
    return 0


def _bench(args) -> int:
    from catalogue import bench

    if not args.dataset.is_dir():
        raise _error(f"dataset folder not found: {args.dataset}")
    bench.run(args.dataset, args.out, quick=args.quick, workdir=args.workdir)
    return 0

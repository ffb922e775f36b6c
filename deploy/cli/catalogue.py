"""`sidstream catalogue build|report|assign` and `sidstream bench catalogue` (handlers: deploy/catalogue.py)."""
from __future__ import annotations

import argparse
from pathlib import Path

from catalogue.settings import EMBEDDING_SOURCES

HANDLERS = "deploy.catalogue"


def register(commands, bench) -> None:
    cat = commands.add_parser("catalogue", help="item language: build SIDs, report their quality, assign new items")
    sub = cat.add_subparsers(dest="catalogue_command", metavar="ACTION")
    cat.set_defaults(handler=None, usage_of=cat)

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
    b.set_defaults(handler=f"{HANDLERS}:build")

    r = sub.add_parser("report", help="SID quality report of a catalogue folder")
    r.add_argument("catalogue", type=Path, nargs="?", help="catalogue folder (default: settings catalogue_dir)")
    r.add_argument("--json", action="store_true", help="print JSON instead of text")
    r.set_defaults(handler=f"{HANDLERS}:report")

    a = sub.add_parser("assign", help="give new (or changed) items SIDs with the frozen codebooks")
    a.add_argument("--catalogue", type=Path, required=True, help="catalogue folder")
    a.add_argument("--items", type=Path, required=True, help="items JSONL with titles")
    a.add_argument("--save", action="store_true", help="write the new SIDs back into the catalogue folder")
    a.set_defaults(handler=f"{HANDLERS}:assign")

    bc = bench.add_parser("catalogue", help="SID quality, assignment, trie insert and mask speed (12k and 1M items)")
    bc.add_argument("--dataset", type=Path, required=True)
    bc.add_argument("--quick", action="store_true", help="fewer k-means iterations and repetitions (< 1 min)")
    bc.add_argument("--out", type=Path, required=True, help="JSON file to write")
    bc.add_argument("--workdir", type=Path, default=None,
                    help="where the built catalogue and embedding cache go (default var/bench/catalogue/<dataset>)")
    bc.set_defaults(handler=f"{HANDLERS}:bench")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value

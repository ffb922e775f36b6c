"""`sidstream produce`: events into the topics (handler: deploy/streams.py)."""
from __future__ import annotations

from pathlib import Path


def register(commands, bench) -> None:
    produce = commands.add_parser("produce", help="send events to the topics: a JSONL file or a dataset replay")
    src = produce.add_mutually_exclusive_group(required=True)
    src.add_argument("--file", type=Path, help="JSONL events (interactions or items, see --topic)")
    src.add_argument("--dataset", type=Path, help="replay a dataset folder's sequences.txt as interactions")
    src.add_argument("--items", type=Path, help="item metadata JSONL (item_meta.jsonl format) as item events")
    produce.add_argument("--topic", choices=["interactions", "items"], default=None,
                         help="target topic (default: interactions, or items with --items)")
    produce.add_argument("--rate", type=float, default=0, help="events per second (0: as fast as possible)")
    produce.add_argument("--limit", type=int, default=None, help="stop after this many events")
    produce.set_defaults(handler="deploy.streams:cmd_produce")

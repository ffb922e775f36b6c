"""`sidstream produce` (events into the topics) and `sidstream backfill` (logged pasts into Feast); handlers in
deploy/streams.py."""
from __future__ import annotations

from pathlib import Path


def register(commands, bench) -> None:
    produce = commands.add_parser("produce", help="send events to the topics: a JSONL file or a dataset replay")
    src = produce.add_mutually_exclusive_group(required=True)
    src.add_argument("--file", type=Path, help="JSONL events (interactions or items, see --topic)")
    src.add_argument("--dataset", type=Path, help="replay a dataset folder as interactions: Amazon sequences.txt "
                                                  "(purchases), or MovieLens u.data in timestamp order with each "
                                                  "rating's action")
    src.add_argument("--items", type=Path, help="item metadata JSONL (item_meta.jsonl format) as item events")
    produce.add_argument("--topic", choices=["interactions", "items"], default=None,
                         help="target topic (default: interactions, or items with --items)")
    produce.add_argument("--rate", type=float, default=0, help="events per second (0: as fast as possible)")
    produce.add_argument("--limit", type=int, default=None, help="stop after this many events")
    produce.add_argument("--speedup", type=float, default=None,
                         help="MovieLens replay: keep the real gaps between ratings divided by this (e.g. 100000 "
                              "replays the 7 months in about 3 minutes); default: paced by --rate")
    produce.add_argument("--ratings", default=None, metavar="MAP",
                         help="MovieLens rating -> action mapping (default 1=dislike,2=dislike,3=neutral,4=like,"
                              "5=love)")
    produce.add_argument("--until", type=float, default=None, metavar="TS",
                         help="MovieLens: send only the ratings after this Unix time (the rest of a backfill "
                              "--until TS)")
    produce.add_argument("--share", type=float, default=None, metavar="F",
                         help="Amazon: send only each user's events after the first share F (the rest of a "
                              "backfill --share F)")
    produce.set_defaults(handler="deploy.streams:cmd_produce")

    backfill = commands.add_parser(
        "backfill", help="load users' logged pasts into the Feast store (offline parquet + materialisation)")
    backfill.add_argument("--dataset", type=Path, required=True,
                          help="dataset folder: Amazon sequences.txt or MovieLens u.data")
    backfill.add_argument("--until", type=float, default=None, metavar="TS",
                          help="MovieLens: the past is every rating at or before this Unix time (default: all)")
    backfill.add_argument("--share", type=float, default=None, metavar="F",
                          help="Amazon (no times): the past is each user's first share F of events (default: all)")
    backfill.add_argument("--catalogue", type=Path, default=None, help="catalogue folder (default: settings)")
    backfill.add_argument("--ratings", default=None, metavar="MAP", help="MovieLens rating -> action mapping")
    backfill.set_defaults(handler="deploy.streams:cmd_backfill")

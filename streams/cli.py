"""`sidstream produce`: events into the topics."""
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
    produce.set_defaults(func=cmd_produce)



def cmd_produce(args) -> int:
    from itertools import islice

    from deploy.cli import CommandError
    from streams.producer import EventProducer
    from streams.replay import amazon_events, item_events, jsonl_records
    from streams.schemas import InteractionEvent, ItemEvent, parse
    from streams.settings import StreamSettings
    from streams.topics import ensure_topics

    settings = StreamSettings()
    topic_kind = args.topic or ("items" if args.items else "interactions")
    topic = getattr(settings.topics, topic_kind)
    if args.dataset:
        from catalogue.datasets import load_sequences

        if not (args.dataset / "sequences.txt").is_file():
            raise CommandError(f"{args.dataset} has no sequences.txt")
        events = amazon_events(load_sequences(args.dataset), limit=args.limit)
    elif args.items:
        if not args.items.is_file():
            raise CommandError(f"no such file: {args.items}")
        events = islice(item_events(jsonl_records(args.items)), args.limit)
    else:
        if not args.file.is_file():
            raise CommandError(f"no such file: {args.file}")
        model = ItemEvent if topic_kind == "items" else InteractionEvent
        try:
            events = [parse(model, rec) for rec in islice(jsonl_records(args.file), args.limit)]
        except ValueError as exc:
            raise CommandError(f"{args.file}: {exc}") from None
    ensure_topics(settings)
    producer = EventProducer(settings.kafka_bootstrap_servers)
    try:
        producer.send_all(topic, events, rate=args.rate)
    finally:
        producer.close()
    return 0


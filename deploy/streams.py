"""Handler of `sidstream produce` (parser: deploy/cli/streams.py)."""
from __future__ import annotations

from itertools import islice

from catalogue.datasets import load_sequences
from deploy.cli import CommandError
from streams.producer import EventProducer
from streams.replay import amazon_events, item_events, jsonl_records
from streams.schemas import InteractionEvent, ItemEvent, parse
from streams.settings import StreamSettings
from streams.topics import ensure_topics


def cmd_produce(args) -> int:
    settings = StreamSettings()
    topic_kind = args.topic or ("items" if args.items else "interactions")
    topic = getattr(settings.topics, topic_kind)
    if args.dataset:
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

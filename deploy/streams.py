"""Handler of `sidstream produce` (parser: deploy/cli/streams.py)."""
from __future__ import annotations

import sys
from itertools import islice

from catalogue.datasets import is_movielens, load_movielens, load_sequences
from deploy.cli import CommandError
from streams.producer import EventProducer
from streams.replay import amazon_events, at_event_time, item_events, jsonl_records, rated_events
from streams.schemas import DeadLetter, InteractionEvent, ItemEvent, parse
from streams.settings import StreamSettings
from streams.topics import ensure_topics


def cmd_produce(args) -> int:
    settings = StreamSettings()
    topic_kind = args.topic or ("items" if args.items else "interactions")
    topic = getattr(settings.topics, topic_kind)
    rejected = []
    if args.speedup is not None and not (args.dataset and is_movielens(args.dataset)):
        raise CommandError("--speedup paces a replay by its timestamps: it needs --dataset with a MovieLens folder")
    if args.dataset and is_movielens(args.dataset):
        try:
            ratings = load_movielens(args.dataset, args.ratings)
            events = rated_events([r for rs in ratings.ratings.values() for r in rs], speedup=args.speedup or 1.0,
                                  limit=args.limit)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        if args.speedup is not None:
            events = at_event_time(events)
        # lines the adapter could not read go to the dead-letter topic with their reason, never dropped
        rejected = [DeadLetter.of(str(p), p.text, f"replay:{args.dataset.name}/{p.file}") for p in ratings.problems]
    elif args.dataset:
        if not (args.dataset / "sequences.txt").is_file():
            raise CommandError(f"{args.dataset} has neither sequences.txt (Amazon) nor u.data (MovieLens)")
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
        if rejected:
            producer.send_all(settings.topics.dead_letters, rejected, progress_every_s=0)
            print(f"produce: {len(rejected)} unreadable dataset lines dead-lettered to "
                  f"{settings.topics.dead_letters}, e.g. {rejected[0].reason}", file=sys.stderr)
        producer.send_all(topic, events, rate=0 if args.speedup is not None else args.rate)
    finally:
        producer.close()
    return 0

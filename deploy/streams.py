"""Handlers of `sidstream produce` and `sidstream backfill` (parsers: deploy/cli/streams.py)."""
from __future__ import annotations

import json
import sys
from itertools import islice
from pathlib import Path

from catalogue.catalogue import ItemCatalogue
from catalogue.datasets import is_movielens, load_movielens, load_sequences
from catalogue.settings import CatalogueSettings
from deploy.cli import CommandError
from features.settings import FeatureSettings
from features.store import BackfillRefused, UserSequenceStore
from streams.producer import EventProducer
from streams.replay import PastEvent, amazon_events, at_event_time, item_events, jsonl_records, logged_past, rated_events
from streams.sequencer import backfill_rows
from streams.settings import WorkerSettings
from streams.schemas import DeadLetter, InteractionEvent, ItemEvent, parse
from streams.settings import StreamSettings
from streams.topics import ensure_topics


def check_cut(dataset: Path, until: float | None, share: float | None) -> None:
    """The cut between a backfilled past and the stream: by time for MovieLens, by position for Amazon."""
    movielens = is_movielens(dataset)
    if until is not None and not movielens:
        raise CommandError("--until cuts by event time: only MovieLens has times (Amazon: use --share)")
    if share is not None and movielens:
        raise CommandError("--share cuts by position: MovieLens has times (use --until)")
    if share is not None and not 0.0 <= share <= 1.0:
        raise CommandError(f"--share must be within [0, 1], got {share}")


def dataset_past(dataset: Path, until: float | None = None, share: float | None = None,
                 ratings_map: str | None = None) -> list[PastEvent]:
    """A dataset's logged past as backfill events (streams.replay.logged_past)."""
    check_cut(dataset, until, share)
    try:
        if is_movielens(dataset):
            ml = load_movielens(dataset, ratings_map)
            return logged_past(ratings=[r for rs in ml.ratings.values() for r in rs], until=until)
        return logged_past(sequences=load_sequences(dataset), share=share)
    except ValueError as exc:
        raise CommandError(str(exc)) from None


def backfill(catalogue: ItemCatalogue, events: list[PastEvent], store: UserSequenceStore,
             window_events: int | None = None) -> dict:
    """Fold the past into rows, write them through Feast (offline + materialise), and read every one back.
    Returns UserSequenceStore.backfill's figures plus `left_out_events` (items not in the catalogue) and
    `mismatches` (rows read back different from those written, the users whose newer rows were kept aside)."""
    rows, left_out = backfill_rows(catalogue.vocab, catalogue.sid_map(), events,
                                   window_events or WorkerSettings().window_events)
    result = store.backfill(rows)
    got = store.read([r.user_id for r in rows]) if rows else {}
    differ = [r.user_id for r in rows if got[r.user_id] is None or got[r.user_id].tokens != r.tokens
              or got[r.user_id].event_count != r.event_count]
    return {**result, "left_out_events": left_out, "mismatches": len(differ) - result["newer_rows_kept"]}


def cmd_backfill(args) -> int:
    catalogue_dir = args.catalogue or CatalogueSettings().catalogue_dir
    if not (Path(catalogue_dir) / "manifest.json").is_file():
        raise CommandError(f"no catalogue at {catalogue_dir}: build one with `sidstream catalogue build`")
    if not args.dataset.is_dir():
        raise CommandError(f"no such dataset folder: {args.dataset}")
    events = dataset_past(args.dataset, args.until, args.share, args.ratings)
    catalogue = ItemCatalogue.load(catalogue_dir)
    print(f"backfill: {len(events):,} past events of {len({e[1] for e in events}):,} users from {args.dataset}",
          file=sys.stderr)
    store = UserSequenceStore(FeatureSettings())
    store.apply()
    try:
        result = backfill(catalogue, events, store)
    except BackfillRefused as exc:
        raise CommandError(str(exc)) from None
    print(json.dumps(result))
    return 0 if result["mismatches"] == 0 else 1


def cmd_produce(args) -> int:
    settings = StreamSettings()
    topic_kind = args.topic or ("items" if args.items else "interactions")
    topic = getattr(settings.topics, topic_kind)
    rejected = []
    if args.speedup is not None and not (args.dataset and is_movielens(args.dataset)):
        raise CommandError("--speedup paces a replay by its timestamps: it needs --dataset with a MovieLens folder")
    if (args.until is not None or args.share is not None) and not args.dataset:
        raise CommandError("--until and --share send the rest of a backfilled dataset: they need --dataset")
    if args.dataset:
        check_cut(args.dataset, args.until, args.share)
    if args.dataset and is_movielens(args.dataset):
        try:
            ratings = load_movielens(args.dataset, args.ratings)
            events = rated_events([r for rs in ratings.ratings.values() for r in rs], speedup=args.speedup or 1.0,
                                  limit=args.limit, after=args.until)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        if args.speedup is not None:
            events = at_event_time(events)
        # lines the adapter could not read go to the dead-letter topic with their reason, never dropped
        rejected = [DeadLetter.of(str(p), p.text, f"replay:{args.dataset.name}/{p.file}") for p in ratings.problems]
    elif args.dataset:
        if not (args.dataset / "sequences.txt").is_file():
            raise CommandError(f"{args.dataset} has neither sequences.txt (Amazon) nor u.data (MovieLens)")
        events = amazon_events(load_sequences(args.dataset), limit=args.limit, after_share=args.share)
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

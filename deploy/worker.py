"""Wiring of the stream worker: the Faust app from `streams/` with the Feast facade from `features/` and the
Qdrant store and content encoder from `catalogue/` plugged in."""
from __future__ import annotations

import gc
import logging
from pathlib import Path

import numpy as np


def make_item_encoder(catalogue):
    """New items are embedded the way the catalogue was built: MiniLM text when it was a text catalogue,
    otherwise (collaborative catalogues: no interactions exist yet for a new item) a deterministic hashed
    vector, which still lands in real, shared codes of the frozen codebooks."""
    from catalogue.encoder import TEXT_MODEL, hashed_vector, item_text

    dim = catalogue.tokenizer.dim
    if catalogue.info.get("embedding_model") == TEXT_MODEL:
        from catalogue.encoder import TextEncoder

        encoder = {}

        def encode(item: dict):
            text = item_text(item)
            if not text:
                return hashed_vector(item["item_id"], dim)
            if "model" not in encoder:
                encoder["model"] = TextEncoder()
            return encoder["model"].encode([text], progress=False)[0]
        return encode
    return lambda item: hashed_vector(item["item_id"], dim)


def build_worker_app(catalogue_dir: Path, index_items: bool = True):
    from streams.metrics import StreamMetrics  # prometheus-client before feast (see streams/metrics.py)

    metrics = StreamMetrics()
    from catalogue.catalogue import ItemCatalogue
    from catalogue.settings import CatalogueSettings
    from features.settings import FeatureSettings
    from features.store import UserSequenceStore
    from streams.settings import WorkerSettings
    from streams.topics import ensure_topics
    from streams.worker import build_app

    settings = WorkerSettings()
    if settings.worker_metrics_port:
        from prometheus_client import start_http_server

        start_http_server(settings.worker_metrics_port, registry=metrics.registry)
        print(f"worker metrics on http://0.0.0.0:{settings.worker_metrics_port}/metrics", flush=True)
    ensure_topics(settings)
    catalogue = ItemCatalogue.load(catalogue_dir)
    store = UserSequenceStore(FeatureSettings())
    store.apply()
    index = None
    if index_items:
        from catalogue.qdrant_store import QdrantItemStore

        qdrant = QdrantItemStore.from_settings(catalogue.tokenizer.dim, CatalogueSettings())

        def index(item_id, vector, codes, meta):
            qdrant.upsert(item_id, np.asarray(vector, dtype=np.float32), codes, meta)
    return build_app(settings, catalogue, store, encode_item=make_item_encoder(catalogue), index_item=index,
                     metrics=metrics)


def run_worker(catalogue_dir: Path, loglevel: str = "warning", index_items: bool = True) -> int:
    # faust first: importing it applies FAUST_LOOP / -L, which would silently replace our choice; it creates no loop
    import faust

    from deploy.errors import CommandError
    from streams.settings import WorkerSettings
    from streams.worker import use_event_loop

    try:
        use_event_loop(WorkerSettings().event_loop)  # before anything creates a loop
    except ValueError as exc:
        raise CommandError(str(exc)) from None

    app = build_worker_app(catalogue_dir, index_items=index_items)
    logging.getLogger("sidstream").setLevel(logging.INFO)
    worker = faust.Worker(app, loglevel=loglevel)
    # Faust's terminal spinner lowers the root logger to DEBUG so it can spin on every record: faust and aiokafka
    # then build a debug record for every message sent (about 7% of the worker's CPU, measured with py-spy).
    # Without it the root logger keeps `loglevel`.
    worker.spinner = None
    # Everything loaded so far (catalogue, Feast, Faust, torch) lives as long as the process: keep it out of
    # the collector's full passes: one paused the event loop for 0.2 s in a 12 s run at 600 events/s.
    gc.freeze()
    worker.execute_from_commandline()
    return 0


def register(commands, bench) -> None:
    worker = commands.add_parser("worker", help="run the faust-streaming worker (interactions and items agents)")
    worker.add_argument("--catalogue", type=Path, default=None,
                        help="catalogue folder from `sidstream catalogue build` (default: SIDSTREAM_CATALOGUE_DIR)")
    worker.add_argument("--loglevel", default="warning")
    worker.add_argument("--no-qdrant", action="store_true", help="do not index new items in Qdrant")
    worker.set_defaults(func=cmd_worker)

    from catalogue.settings import CatalogueSettings

    stream = bench.add_parser("stream", help="stream worker throughput and freshness (Kafka -> Faust -> Feast)")
    stream.add_argument("--dataset", type=Path, default=CatalogueSettings().data_dir / "amazon_beauty_2014",
                        help="dataset whose catalogue the events use (default: Beauty in SIDSTREAM_DATA_DIR)")
    stream.add_argument("--catalogue", type=Path, default=None, help="use this catalogue folder instead")
    stream.add_argument("--quick", action="store_true", help="smaller runs (under 2 minutes)")
    stream.add_argument("--events", type=int, default=None, help="events for the throughput runs")
    stream.add_argument("--workers", type=int, default=1, help="worker processes sharing the partitions")
    stream.add_argument("--rate", type=float, default=1000.0, help="events/s for the freshness run")
    stream.add_argument("--seconds", type=float, default=None, help="length of the freshness run")
    stream.add_argument("--items", type=int, default=None, help="new items for the item -> catalogue timing")
    stream.add_argument("--freshness-store", choices=("sqlite", "redis"), default="sqlite",
                        help="online store of the freshness run (default: sqlite, the default store)")
    stream.add_argument("--out", type=Path, required=True)
    stream.set_defaults(func=cmd_bench_stream)


def cmd_worker(args) -> int:
    from catalogue.settings import CatalogueSettings
    from deploy.errors import CommandError

    catalogue_dir = args.catalogue or CatalogueSettings().catalogue_dir
    if not (Path(catalogue_dir) / "manifest.json").is_file():
        raise CommandError(f"no catalogue at {catalogue_dir}: build one with `sidstream catalogue build`")
    return run_worker(Path(catalogue_dir), loglevel=args.loglevel, index_items=not args.no_qdrant)


def cmd_bench_stream(args) -> int:
    from deploy.bench_stream import run

    return run(args)

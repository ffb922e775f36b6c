"""Wiring of the stream worker: the Faust app from `streams/` with the Feast facade from `features/` and the
Qdrant store and content encoder from `catalogue/` plugged in."""
from __future__ import annotations

import gc
import logging
from pathlib import Path

# faust first: importing it applies FAUST_LOOP / -L, which would silently replace our choice; it creates no loop
import faust
import numpy as np

from catalogue.catalogue import ItemCatalogue
from catalogue.encoder import TEXT_MODEL, TextEncoder, hashed_vector, item_text
from catalogue.qdrant_store import QdrantItemStore
from catalogue.settings import CatalogueSettings
from deploy.cli import CommandError
from features.settings import FeatureSettings
from features.store import UserSequenceStore  # feast itself is imported when the store is first used
from prometheus_client import start_http_server
from streams.metrics import StreamMetrics
from streams.settings import WorkerSettings
from streams.topics import ensure_topics
from streams.worker import build_app, use_event_loop


def make_item_encoder(catalogue):
    """New items are embedded the way the catalogue was built: MiniLM text when it was a text catalogue,
    otherwise (collaborative catalogues: no interactions exist yet for a new item) a deterministic hashed
    vector, which still lands in real, shared codes of the frozen codebooks."""
    dim = catalogue.tokenizer.dim
    if catalogue.info.get("embedding_model") == TEXT_MODEL:
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
    metrics = StreamMetrics()  # prometheus-client registry before feast loads (see streams/metrics.py)
    settings = WorkerSettings()
    if settings.worker_metrics_port:
        start_http_server(settings.worker_metrics_port, registry=metrics.registry)
        print(f"worker metrics on http://0.0.0.0:{settings.worker_metrics_port}/metrics", flush=True)
    ensure_topics(settings)
    catalogue = ItemCatalogue.load(catalogue_dir)
    store = UserSequenceStore(FeatureSettings())
    store.apply()
    index = None
    if index_items:
        qdrant = QdrantItemStore.from_settings(catalogue.tokenizer.dim, CatalogueSettings())

        def index(item_id, vector, codes, meta):
            qdrant.upsert(item_id, np.asarray(vector, dtype=np.float32), codes, meta)
    return build_app(settings, catalogue, store, encode_item=make_item_encoder(catalogue), index_item=index,
                     metrics=metrics, stored_rows=store.read)


def run_worker(catalogue_dir: Path, loglevel: str = "warning", index_items: bool = True) -> int:
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


def cmd_worker(args) -> int:
    catalogue_dir = args.catalogue or CatalogueSettings().catalogue_dir
    if not (Path(catalogue_dir) / "manifest.json").is_file():
        raise CommandError(f"no catalogue at {catalogue_dir}: build one with `sidstream catalogue build`")
    return run_worker(Path(catalogue_dir), loglevel=args.loglevel, index_items=not args.no_qdrant)

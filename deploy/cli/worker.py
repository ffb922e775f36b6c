"""`sidstream worker` and `sidstream bench stream` (handlers: deploy/worker.py, deploy/bench/stream.py)."""
from __future__ import annotations

from pathlib import Path

from catalogue.settings import CatalogueSettings


def register(commands, bench) -> None:
    worker = commands.add_parser("worker", help="run the faust-streaming worker (interactions and items agents)")
    worker.add_argument("--catalogue", type=Path, default=None,
                        help="catalogue folder from `sidstream catalogue build` (default: SIDSTREAM_CATALOGUE_DIR)")
    worker.add_argument("--loglevel", default="warning")
    worker.add_argument("--no-qdrant", action="store_true", help="do not index new items in Qdrant")
    worker.set_defaults(handler="deploy.worker:cmd_worker")

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
    stream.set_defaults(handler="deploy.bench.stream:run")

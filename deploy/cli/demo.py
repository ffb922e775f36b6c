"""`sidstream demo`: the whole system live on one machine (handler: deploy/demo/command.py)."""
from __future__ import annotations

from pathlib import Path

from catalogue.settings import CatalogueSettings


def register(commands, bench) -> None:
    p = commands.add_parser("demo", help="the whole system live: stack, catalogue, model, worker, trainer, serving, "
                                         "a dataset replayed as a stream, and the monitor's view")
    p.add_argument("--dataset", type=Path, default=CatalogueSettings().data_dir / "amazon_beauty_2014",
                   help="dataset folder (default: Beauty in SIDSTREAM_DATA_DIR; the synthetic world when absent)")
    p.add_argument("--synthetic", action="store_true", help="use the synthetic world even when the dataset exists")
    p.add_argument("--duration", type=float, default=None, help="stop after this many seconds (default: Ctrl-C)")
    p.add_argument("--rate", type=float, default=100.0, help="interactions per second replayed (default 100)")
    p.add_argument("--pretrain-seconds", type=float, default=60.0, help="pretraining budget when no cached model")
    p.add_argument("--port", type=int, default=8000, help="HTTP port of the serving endpoint")
    p.add_argument("--refresh", type=float, default=5.0, help="seconds between live-view updates")
    p.add_argument("--queries", type=float, default=2.0, help="recommendation requests per second sent to the "
                                                               "endpoint for just-streamed users (0: none)")
    p.add_argument("--shift-at", type=float, default=None, metavar="S",
                   help="shift the users' tastes S seconds into the replay: every later event names an item of two "
                        "level-1 codes (to watch the drift alerts fire)")
    p.add_argument("--work-dir", type=Path, default=Path("var/demo"), help="caches, logs and the monitor history")
    p.set_defaults(handler="deploy.demo.command:cmd_demo")

"""`sidstream monitor`: freshness and drift, terminal view, --json, --plot, Prometheus (handler:
deploy/monitor/cli.py)."""
from __future__ import annotations

from pathlib import Path


def register(commands, bench) -> None:
    p = commands.add_parser("monitor", help="freshness and drift: terminal view, --json, --plot, Prometheus")
    p.add_argument("--catalogue", type=Path, default=None,
                   help="catalogue folder the system started from (default: SIDSTREAM_CATALOGUE_DIR)")
    p.add_argument("--scrape", default=None,
                   help="metrics endpoints name=url,... (names worker*, trainer*, serving*; default "
                        "SIDSTREAM_MONITOR_SCRAPE)")
    p.add_argument("--interval", type=float, default=None, help="seconds between snapshots (default 5)")
    p.add_argument("--count", type=int, default=None, help="stop after this many snapshots")
    p.add_argument("--once", action="store_true", help="one snapshot (after a first interval, so rates exist)")
    p.add_argument("--json", action="store_true", help="print each snapshot as one JSON line")
    p.add_argument("--history", type=Path, default=None,
                   help="append snapshots to this JSONL file (default SIDSTREAM_MONITOR_HISTORY_FILE)")
    p.add_argument("--no-history", action="store_true", help="do not write the history file")
    p.add_argument("--serve-metrics", action="store_true",
                   help="export the monitor's gauges on SIDSTREAM_MONITOR_METRICS_PORT (default 9103)")
    p.add_argument("--plot", type=Path, default=None, metavar="FILE.png",
                   help="draw freshness and drift over time from the history file into a PNG, then exit")
    p.set_defaults(handler="deploy.monitor.cli:cmd_monitor")

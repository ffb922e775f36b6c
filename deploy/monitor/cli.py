"""`sidstream monitor`: the operator's view of freshness and drift (terminal, `--json`, `--plot`, Prometheus).
`Monitor` is the loop's state (also driven by `sidstream demo`); `cmd_monitor` the command (parser:
deploy/cli/monitor.py)."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from prometheus_client import start_http_server

from catalogue.catalogue import ItemCatalogue
from catalogue.settings import CatalogueSettings
from deploy.cli import CommandError
from deploy.monitor.core import MonitorCore
from deploy.monitor.kafka import KafkaReadings
from deploy.monitor.plot import plot_history
from deploy.monitor.prometheus import MonitorMetrics, parse_targets, scrape
from deploy.monitor.view import render
from deploy.settings import MonitorSettings
from streams.settings import StreamSettings


class Monitor:
    """The monitor loop's state: Kafka readings, scrape targets, the core, the history file, exported gauges."""

    def __init__(self, catalogue_dir: Path, targets: dict[str, str], monitor_settings=None, stream_settings=None,
                 history_file: Path | None = None, export_port: int | None = None, scrape_headers: dict | None = None):
        self.settings = monitor_settings or MonitorSettings()
        self.stream_settings = stream_settings or StreamSettings()
        catalogue = ItemCatalogue.load(catalogue_dir)
        ids, codes = catalogue.codes_matrix()
        self.core = MonitorCore(self.settings, catalogue.vocab, codes[:, : catalogue.vocab.levels], list(ids),
                                topics=self.stream_settings.topics)
        self.readings = KafkaReadings(self.stream_settings.kafka_bootstrap_servers, self.stream_settings.topics,
                                      self.settings.reference_events + self.settings.recent_events)
        self.targets = targets
        self.scrape_headers = scrape_headers or {}
        self.history_file = history_file
        if history_file is not None:
            Path(history_file).parent.mkdir(parents=True, exist_ok=True)
        self.metrics = None
        if export_port:
            self.metrics = MonitorMetrics()
            start_http_server(export_port, registry=self.metrics.registry)

    def tick(self, now: float | None = None, extra: dict | None = None) -> dict:
        """One snapshot: read Kafka and the scrape targets, judge the alerts, append to the history. `extra`
        (for example the demo's process restarts) rides along in the snapshot."""
        scrapes, errors, ends = {}, {}, {}
        try:  # a Kafka blip is a reading of this tick, not the end of the monitor
            self.readings.poll(self.core)
            ends = self.readings.end_offsets()
        except Exception as exc:
            errors["kafka"] = f"{type(exc).__name__}: {exc}"[:200]
        for topic in self.readings.missing:
            errors[f"topic {topic}"] = "does not exist yet"
        for name, url in self.targets.items():
            try:
                scrapes[name] = scrape(url, headers=self.scrape_headers)
            except Exception as exc:  # an unreachable component is a reading, not a crash of the monitor
                errors[name] = f"{type(exc).__name__}: {exc}"[:200]
        try:
            lags = self.readings.lags()
        except Exception as exc:
            lags, errors["kafka_groups"] = {}, f"{type(exc).__name__}: {exc}"[:200]
        snap = self.core.snapshot(time.time() if now is None else now, lags=lags,
                                  end_offsets=ends, scrapes=scrapes, scrape_errors=errors)
        snap.update(extra or {})
        if self.history_file is not None:
            with open(self.history_file, "a") as f:
                f.write(json.dumps(snap, default=_jsonable) + "\n")
        if self.metrics is not None:
            self.metrics.update(snap)
        return snap

    def close(self) -> None:
        self.readings.close()


def _jsonable(value):
    try:
        if isinstance(value, np.generic):
            return value.item()
    except ImportError:
        pass
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def cmd_monitor(args: argparse.Namespace) -> int:
    settings = MonitorSettings()
    history = None if args.no_history else (args.history or settings.history_file)
    if args.plot is not None:
        source = args.history or settings.history_file
        if not Path(source).is_file():
            raise CommandError(f"no monitor history at {source}: run `sidstream monitor` or `sidstream demo` first")
        try:
            info = plot_history(source, args.plot, settings.psi_alert, settings.psi_warn)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        print(f"wrote {info['out']}: {info['snapshots']} snapshots over {info['minutes']:.1f} min, "
              f"{info['alert_snapshots']} in alert")
        return 0
    catalogue_dir = args.catalogue or CatalogueSettings().catalogue_dir
    if not (Path(catalogue_dir) / "manifest.json").is_file():
        raise CommandError(f"no catalogue at {catalogue_dir}: give --catalogue (the folder the worker uses)")
    try:
        targets = parse_targets(args.scrape if args.scrape is not None else settings.scrape)
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    interval = args.interval if args.interval is not None else settings.interval_s
    if interval <= 0:
        raise CommandError("--interval must be > 0")
    port = (settings.metrics_port or 9103) if args.serve_metrics else None
    api_key = os.environ.get("SIDSTREAM_API_KEY")
    try:
        monitor = Monitor(Path(catalogue_dir), targets, settings, history_file=history, export_port=port,
                          scrape_headers={"Authorization": f"Bearer {api_key}"} if api_key else None)
    except Exception as exc:
        if type(exc).__name__ in ("NoBrokersAvailable", "KafkaTimeoutError", "KafkaConnectionError"):
            raise CommandError(f"Kafka is not reachable ({exc}); start it with `sidstream up`") from None
        raise
    count = 2 if args.once else args.count
    taken = 0
    try:
        while count is None or taken < count:
            started = time.monotonic()
            snap = monitor.tick()
            taken += 1
            if args.json:
                if not args.once or taken == count:
                    print(json.dumps(snap, default=_jsonable), flush=True)
            elif not args.once or taken == count:
                if sys.stdout.isatty() and not args.once:
                    print("\033[2J\033[H", end="")
                print(render(snap, [f"sidstream monitor: {len(targets)} scrape targets, every {interval:g}s "
                                    f"(Ctrl-C to stop)"]), flush=True)
                print(flush=True)
            if count is not None and taken >= count:
                break
            time.sleep(max(0.0, interval - (time.monotonic() - started)))
    except KeyboardInterrupt:
        pass
    finally:
        monitor.close()
    return 0

"""The bare agent of `sidstream bench stream`: a Faust agent with the worker's app settings and event loop that
reads and decodes each interaction and does nothing else. The worker's rate against this one's, on the same
backlog, is the share of the time that goes to the worker's own per-event work.

Run as `python -m deploy.bench.bare_agent EVENTS RESULT_JSON` with the worker's SIDSTREAM_* environment; it
writes {"events", "seconds", "events_per_s"} (first decoded event to the EVENTS-th) and keeps running until killed.
"""
from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

import faust

from streams.schemas import InteractionEvent, parse
from streams.settings import WorkerSettings
from streams.worker import faust_app, use_event_loop


def build(target: int, result_path: Path) -> faust.App:
    settings = WorkerSettings()
    app = faust_app(settings, f"{settings.app_id}-bare-agent")
    topic = app.topic(settings.topics.interactions, key_serializer="raw", value_serializer="raw")
    seen = {"count": 0, "first": 0.0}

    @app.agent(topic)
    async def bare(stream):
        async for event in stream.events():
            parse(InteractionEvent, event.message.value or b"")
            seen["count"] += 1
            if seen["count"] == 1:
                seen["first"] = time.perf_counter()
            if seen["count"] == target:
                seconds = time.perf_counter() - seen["first"]
                result_path.write_text(json.dumps({"events": target, "seconds": seconds,
                                                   "events_per_s": (target - 1) / seconds if seconds > 0 else None}))

    return app


def main() -> int:
    target, result_path = int(sys.argv[1]), Path(sys.argv[2])
    use_event_loop(WorkerSettings().event_loop)  # before anything creates a loop, as the worker does
    worker = faust.Worker(build(target, result_path), loglevel="warning")
    worker.spinner = None  # as the worker: the spinner turns on debug records for every message
    logging.getLogger("sidstream").setLevel(logging.INFO)
    worker.execute_from_commandline()
    return 0


if __name__ == "__main__":
    sys.exit(main())

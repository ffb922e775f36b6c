"""`sidstream demo`: the whole system on one machine, fed by a real dataset replayed as a live stream.

Steps: local stack (unless SIDSTREAM_KAFKA_BOOTSTRAP_SERVERS points at a cluster) -> world (Beauty from the data
folder when present: each user's first 70% of events are the logged past, the rest the stream, and 3% of the
items are held back so they arrive mid-stream as new items; else the synthetic world, whose late-born items are
the new ones) -> catalogue without the held-back items (cached) -> a quick pretrain on the past (cached per
catalogue) -> the past backfilled into Feast -> worker, online trainer and Ray Serve as child processes (the worker
continues each user's backfilled row, so the demo's users are served from past + stream) -> the stream replayed into Kafka at
`--rate`, each new item announced on `items` shortly before its first interaction (with `--shift-at S`, every
event from second S on names an item of two level-1 codes: a taste shift the drift alerts should catch) -> a live
view of the monitor every few seconds. A child that dies is restarted by the supervisor (deploy/demo/processes.py: back-off,
limit). Ctrl-C (or `--duration`) stops everything it started, in reverse order.

Each run uses its own topic names and consumer groups (suffix printed at start), so a rerun starts clean.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import time
import uuid
from pathlib import Path

from catalogue.catalogue import ItemCatalogue
from catalogue.datasets import is_movielens
from deploy.cli import CommandError
from deploy.demo.load import QueryLoad, Replayer, taste_shift
from deploy.demo.processes import Child, RestartPolicy, Supervisor, wait_http
from deploy.demo.worlds import World, dataset_world, prepare_catalogue, prepare_model, synthetic_world
from deploy.localstack import LocalStack, StackError, free_port, port_in_use
from deploy.monitor.cli import Monitor
from deploy.monitor.view import render
from deploy.settings import MonitorSettings, StackSettings
from deploy.streams import backfill
from features.settings import FeatureSettings
from features.store import UserSequenceStore
from streams.settings import StreamSettings, Topics
from streams.topics import ensure_topics


def backfill_past(world: World, catalogue_dir: Path, feast_repo: Path, log) -> dict:
    """The world's logged past into the run's Feast store before the worker starts (sidstream backfill's path).
    The past has no times and its own event ids (`demo-past:<user>:<k>`), apart from the stream's."""
    multiproc = "PROMETHEUS_MULTIPROC_DIR" in os.environ
    store = UserSequenceStore(FeatureSettings(feast_repo_path=feast_repo))
    store.apply()
    events = [(f"demo-past:{user}:{k}", user, item, action, 0)
              for user, past in world.past.items() for k, (item, action) in enumerate(past)]
    result = backfill(ItemCatalogue.load(catalogue_dir), events, store)
    if not multiproc:  # Feast's import switched prometheus-client to multiprocess mode; the children must not be
        os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
    log(f"backfill: {result['users']:,} users' pasts ({result['events']:,} events) in Feast in "
        f"{result['seconds']:.1f} s ({result['left_out_events']:,} events of held-back items left out, "
        f"{result['mismatches']} mismatches)")
    return result


def cmd_demo(args: argparse.Namespace) -> int:
    if args.rate <= 0:
        raise CommandError("--rate must be > 0")
    if args.shift_at is not None and args.shift_at < 0:
        raise CommandError("--shift-at must be >= 0 (seconds into the replay)")
    if port_in_use(args.port):
        raise CommandError(f"port {args.port} is taken: give --port")
    work = args.work_dir.resolve()
    run = time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:4]
    logs = work / "runs" / run
    logs.mkdir(parents=True, exist_ok=True)

    def log(line: str) -> None:
        print(f"[demo] {line}", flush=True)

    started_stack, children = None, []
    monitor = replayer = queries = None
    failed = False

    def _terminate(*_):
        raise KeyboardInterrupt

    previous_term = signal.signal(signal.SIGTERM, _terminate)  # `kill` stops the demo as cleanly as Ctrl-C
    try:
        stack_settings = StackSettings()
        if stack_settings.kafka_bootstrap_servers:
            bootstrap = stack_settings.kafka_bootstrap_servers
            log(f"stack: using the cluster at {bootstrap}")
        else:
            stack = LocalStack(stack_settings, log=lambda line: log(f"stack: {line}"))
            running = stack.status()
            if running.get("kafka", {}).get("running"):
                bootstrap = stack.kafka_bootstrap
                log(f"stack: reusing the running local broker at {bootstrap}")
            else:
                try:
                    stack.up(redis=False)
                except StackError as exc:
                    raise CommandError(f"could not start the local stack: {exc}") from None
                started_stack, bootstrap = stack, stack.kafka_bootstrap

        use_dataset = not args.synthetic and ((args.dataset / "sequences.txt").is_file() or is_movielens(args.dataset))
        if not use_dataset and not args.synthetic:
            log(f"no dataset at {args.dataset}: using the synthetic world")
        world = dataset_world(args.dataset) if use_dataset else synthetic_world()
        world_dir = work / world.name
        world_dir.mkdir(parents=True, exist_ok=True)
        log(f"world {world.name}: {len(world.past):,} users with a past, {len(world.stream):,} stream events, "
            f"{len(world.held):,} new items arriving mid-stream")
        catalogue_dir = prepare_catalogue(world, world_dir, log)
        model_dir = prepare_model(world, catalogue_dir, world_dir, args.pretrain_seconds, log)

        topics = Topics(**{k: f"{v}-{run}" for k, v in Topics().model_dump().items()})
        stream_settings = StreamSettings(kafka_bootstrap_servers=bootstrap, topics=topics)
        ensure_topics(stream_settings)
        worker_port, trainer_port = free_port(), free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("SIDSTREAM_")}
        env.update({"SIDSTREAM_KAFKA_BOOTSTRAP_SERVERS": bootstrap, "SIDSTREAM_APP_ID": f"sidstream-demo-{run}",
                    "SIDSTREAM_ONLINE_GROUP_ID": f"sidstream-demo-trainer-{run}",
                    "SIDSTREAM_FEAST_REPO_PATH": str(logs / "feast"), "SIDSTREAM_FAUST_DATADIR": str(logs / "faust"),
                    "SIDSTREAM_WORKER_METRICS_PORT": str(worker_port),
                    "SIDSTREAM_ONLINE_METRICS_PORT": str(trainer_port), "SIDSTREAM_TORCH_THREADS": "1",
                    "PYTHONUNBUFFERED": "1"})
        for kind, name in topics.model_dump().items():
            env[f"SIDSTREAM_TOPICS__{kind.upper()}"] = name
        history = work / "monitor" / f"history-{run}.jsonl"
        env["SIDSTREAM_MONITOR_FILE"] = str(history)  # the live page's freshness strip reads the monitor's snapshots
        backfill_past(world, catalogue_dir, logs / "feast", log)
        registry = logs / "registry"
        cli = [sys.executable, "-m", "deploy.cli"]
        cwd = Path.cwd()
        children.append(Child("worker", cli + ["worker", "--catalogue", str(catalogue_dir)], env, logs, cwd))
        children.append(Child("trainer", cli + ["train", "online", "--registry", str(registry), "--catalogue",
                                                str(catalogue_dir), "--init", str(model_dir), "--set",
                                                "publish_every_s=20", "--set", "micro_batch=32"], env, logs, cwd))
        # the trainer publishes the pretrained model as the first version; serving starts from the registry
        deadline = time.monotonic() + 120
        while not (registry / "LATEST").is_file() and time.monotonic() < deadline and children[1].alive():
            time.sleep(0.5)
        if not (registry / "LATEST").is_file():
            raise CommandError(f"the online trainer did not publish its first version:\n{children[1].tail()}")
        children.append(Child("serving", cli + ["serve", "--model", str(registry), "--catalogue", str(catalogue_dir),
                                                "--port", str(args.port), "--replicas", "1"], env, logs, cwd))
        log(f"run {run}: topics *-{run}; logs in {logs}; waiting for serving on :{args.port}")
        if not wait_http(f"http://127.0.0.1:{args.port}/readyz", 240, children[2]):
            raise CommandError(f"serving did not become ready:\n{children[2].tail()}")

        monitor_settings = MonitorSettings(reference_events=3000, recent_events=1000)
        monitor = Monitor(catalogue_dir, {"worker": f"http://127.0.0.1:{worker_port}/metrics",
                                          "trainer": f"http://127.0.0.1:{trainer_port}/metrics",
                                          "serving": f"http://127.0.0.1:{args.port}/metrics"},
                          monitor_settings, stream_settings=stream_settings, history_file=history)
        shift = None
        if args.shift_at is not None:
            catalogue = ItemCatalogue.load(catalogue_dir)
            ids, codes = catalogue.codes_matrix()
            shift = taste_shift(args.shift_at, dict(zip(ids, codes[:, 0].tolist())))
            log(f"taste shift at {args.shift_at:g} s: from then on every event names one of the {len(shift.items):,} "
                f"items of level-1 codes {list(shift.codes)}")
        replayer = Replayer(world, bootstrap, topics, args.rate, shift)
        replayer.start()
        if args.queries > 0:
            queries = QueryLoad(f"http://127.0.0.1:{args.port}/recommend", replayer, args.queries)
            queries.start()
        some_user = world.stream[0][0]
        query = (f"curl -s -X POST http://127.0.0.1:{args.port}/recommend -H 'content-type: application/json' "
                 f"-d '{{\"user_id\": \"{some_user}\", \"k\": 10}}'")
        supervisor = Supervisor(children, RestartPolicy(), log)
        log(f"live page: http://127.0.0.1:{args.port}/?user={some_user} (history, recommendations, a button per "
            f"action; a click goes through Kafka and the worker like any event)")
        began = time.monotonic()
        while True:
            if args.duration is not None and time.monotonic() - began >= args.duration:
                break
            given_up = supervisor.check()  # a dead child is restarted (back-off, limit), as a deployment would
            snap = monitor.tick(extra={"processes": supervisor.report(), "shifted_at": replayer.shifted_at})
            elapsed = time.monotonic() - began
            down = [c.name for c in children if not c.alive()]
            restarts = supervisor.summary()
            header = [f"sidstream demo ({world.name}) - {elapsed:.0f}s - replayed {replayer.sent:,}/"
                      f"{len(world.stream):,} events at {args.rate:g}/s, {replayer.items_sent}/{len(world.held)} new "
                      f"items announced" + (f" - DOWN: {', '.join(down)}" if down else "")
                      + (f" - {restarts}" if restarts else "")
                      + (f" - tastes shifted {time.time() - replayer.shifted_at:.0f}s ago" if replayer.shifted_at
                         else "")
                      + (f" - replay error: {replayer.error}" if replayer.error else ""),
                      f"query:        {query}"] + ([queries.summary()] if queries else [])
            print(render(snap, header), flush=True)
            print(flush=True)
            if given_up:
                failed = True
                for c in given_up:
                    print(f"--- {c.name} log tail ---\n{c.tail()}", flush=True)
                break
            time.sleep(max(0.0, args.refresh - (time.monotonic() - began - elapsed)))
        log(f"stopping; monitor history in {history} (draw it: sidstream monitor --plot {work / 'monitor.png'} "
            f"--history {history})")
    except KeyboardInterrupt:
        log("interrupted: stopping")
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the cleanup short
        steps = []
        if queries is not None:
            steps.append(("queries", lambda: (queries.stop_event.set(), queries.join(timeout=15))))
        if replayer is not None:
            steps.append(("replayer", lambda: (replayer.stop_event.set(), replayer.join(timeout=10))))
        if monitor is not None:
            steps.append(("monitor", monitor.close))
        steps += [(child.name, child.stop) for child in reversed(children)]
        if started_stack is not None:
            steps.append(("local stack", started_stack.down))
        for name, step in steps:
            try:
                step()
                log(f"stopped {name}")
            except Exception as exc:
                failed = True
                log(f"stopping {name} failed: {exc!r}")
        signal.signal(signal.SIGTERM, previous_term)
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if replayer is not None and replayer.error:
        log(f"the replay failed: {replayer.error}")
        failed = True
    return 1 if failed else 0

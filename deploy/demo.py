"""`sidstream demo`: the whole system on one machine, fed by a real dataset replayed as a live stream.

Steps: local stack (unless SIDSTREAM_KAFKA_BOOTSTRAP_SERVERS points at a cluster) -> world (Beauty from the data
folder when present: each user's first 70% of events are the logged past, the rest the stream, and 3% of the
items are held back so they arrive mid-stream as new items; else the synthetic world, whose late-born items are
the new ones) -> catalogue without the held-back items (cached) -> a quick pretrain on the past (cached per
catalogue) -> worker, online trainer and Ray Serve as child processes -> the stream replayed into Kafka at
`--rate`, each new item announced on `items` shortly before its first interaction -> a live view of the
monitor every few seconds. Ctrl-C (or `--duration`) stops everything it started, in reverse order.

Each run uses its own topic names and consumer groups (suffix printed at start), so a rerun starts clean.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

PAST_FRACTION = 0.7
HELD_FRACTION = 0.03
ITEM_LEAD_S = 8.0  # a new item is announced this long before its first interaction (MiniLM + trie + replicas)


@dataclass
class World:
    name: str
    past: dict[str, list[tuple[str, str]]]  # user -> [(item, action)] before the stream starts
    stream: list[tuple[str, str, str]]  # (user, item, action) in stream order
    held: dict[str, dict]  # item id -> item record (title, ...) for the items that arrive mid-stream
    items: list[dict]  # records of every item the catalogue is built from (held ones excluded later)
    sequences: dict[str, list[str]] = field(default_factory=dict)  # for collaborative embeddings


def beauty_world(dataset: Path, seed: int = 0) -> World:
    from catalogue.datasets import load_item_meta, load_sequences
    from deploy.online import replay_world
    from trainer.data import AMAZON_ACTION

    raw = load_sequences(dataset)
    users = sorted(raw, key=int)
    past, stream, held = replay_world(raw, users, cut_fraction=PAST_FRACTION, held_fraction=HELD_FRACTION, seed=seed)
    meta = {str(i["item_id"]): i for i in load_item_meta(dataset)}
    items = list(meta.values()) + [{"item_id": i} for i in sorted({i for s in raw.values() for i in s} - set(meta))]
    return World(dataset.name, {u: [(i, AMAZON_ACTION) for i in seq] for u, seq in past.items()},
                 [(u, i, AMAZON_ACTION) for u, i in stream], {i: meta.get(i, {"item_id": i}) for i in held}, items,
                 sequences={u: s for u, s in past.items()})


def synthetic_world(seed: int = 0) -> World:
    from trainer.synthetic import SyntheticWorld, WorldConfig, by_user

    world = SyntheticWorld(WorldConfig(seed=seed, users=1500))
    records = {r["item_id"]: r for r in world.item_records()}
    born = {it.item_id: it.born for it in world.items}
    cut = int(world.horizon * PAST_FRACTION)
    past, stream = {}, []
    for user, events in by_user(world.simulate()).items():
        past[user] = [(e.item_id, e.action) for e in events if e.ts < cut]
        stream.extend((e.ts, int(user), user, e.item_id, e.action) for e in events if e.ts >= cut)
    stream.sort()
    held = {i: records[i] for i, b in born.items() if b >= cut}
    return World("synthetic", past, [(u, i, a) for _, _, u, i, a in stream], held, list(records.values()))


def prepare_catalogue(world: World, work: Path, log) -> Path:
    """The catalogue of every item but the held-back ones (those get SIDs from the worker when they arrive)."""
    from catalogue.catalogue import ItemCatalogue, build_catalogue

    target = work / "catalogue"
    if (target / "manifest.json").is_file():
        log(f"catalogue: reusing {target}")
        return target
    if world.name == "synthetic":
        from trainer.synthetic import SyntheticWorld, WorldConfig, world_catalogue

        catalogue = world_catalogue(SyntheticWorld(WorldConfig(seed=0, users=1500)))
    else:
        log(f"catalogue: embedding {len(world.items):,} items (MiniLM text; collaborative for items without text)")
        catalogue, _ = build_catalogue(world.items, world.sequences, work / "catalogue-full", progress=True, log=log)
    for item in world.held:
        if item in catalogue:
            catalogue.remove_item(item)
    catalogue.save(target, extra_manifest={"demo": {"held_back_items": len(world.held), "world": world.name}})
    log(f"catalogue: {len(catalogue):,} items in {target} ({len(world.held):,} held back as new items)")
    return target


def prepare_model(world: World, catalogue_dir: Path, work: Path, seconds: float, log) -> Path:
    """A quick pretrain on the logged past, cached per catalogue version."""
    import numpy as np

    from catalogue.catalogue import ItemCatalogue
    from trainer.data import EvalCase, LeaveOneOut, Tokenizer
    from trainer.pretrain import TrainConfig, pretrain

    catalogue = ItemCatalogue.load(catalogue_dir)
    run_dir = work / f"pretrain-{catalogue.version[:12]}"
    if (run_dir / "model" / "manifest.json").is_file():
        log(f"model: reusing {run_dir / 'model'}")
        return run_dir / "model"
    events = {u: [(i, a) for i, a in ev if i in catalogue] for u, ev in world.past.items()}
    events = {u: ev for u, ev in events.items() if len(ev) >= 2}
    rng = np.random.default_rng(0)
    val_users = set(rng.choice(sorted(events), size=min(500, len(events)), replace=False).tolist())
    split = LeaveOneOut(train={u: ev[:-1] if u in val_users else ev for u, ev in events.items()},
                        validation=[EvalCase(u, tuple(events[u][:-1]), events[u][-1][0]) for u in sorted(val_users)],
                        test=[])
    config = TrainConfig.from_overrides(d_model=64, n_layers=2, n_heads=2, window_events=20, batch_size=128,
                                        time_budget_s=seconds, max_epochs=50, warmup_steps=50, val_users=500,
                                        patience=3, threads=max(1, min(2, os.cpu_count() or 1)))
    log(f"model: pretraining on {sum(map(len, events.values())):,} past events for up to {seconds:.0f}s")
    result = pretrain(split, Tokenizer(catalogue.vocab, catalogue.tokens_of), catalogue.trie, config,
                      out_dir=run_dir, progress=False, log=lambda line: log(f"  pretrain: {line}"))
    log(f"model: {result.epochs} epochs in {result.train_seconds:.0f}s, validation {json.dumps(result.best_metrics)}")
    return run_dir / "model"


class Child:
    """A child process with its own log file and process group (so its own children stop with it)."""

    def __init__(self, name: str, argv: list[str], env: dict, log_dir: Path, cwd: Path):
        self.name, self.log_path = name, log_dir / f"{name}.log"
        self.log = open(self.log_path, "a")
        self.proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM to the whole group, SIGKILL after `timeout_s`; the group is signalled even when its leader
        already exited (Ray's and Faust's own children may still run)."""
        for sig, wait in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
        self.log.close()

    def tail(self, lines: int = 15) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


class Replayer(threading.Thread):
    """Sends the world's stream to Kafka at a fixed rate; each held-back item goes to `items` ITEM_LEAD_S
    before its first interaction."""

    def __init__(self, world: World, bootstrap: str, topics, rate: float):
        super().__init__(name="demo-replayer", daemon=True)
        self.world, self.bootstrap, self.topics, self.rate = world, bootstrap, topics, rate
        self.stop_event = threading.Event()
        self.sent = 0
        self.items_sent = 0
        self.error: str | None = None

    def run(self) -> None:
        from streams.producer import EventProducer
        from streams.schemas import InteractionEvent, ItemEvent

        lead = int(ITEM_LEAD_S * self.rate)
        announce_at: dict[int, list[str]] = {}
        seen = set()
        for n, (_, item, _) in enumerate(self.world.stream):
            if item in self.world.held and item not in seen:
                seen.add(item)
                announce_at.setdefault(max(0, n - lead), []).append(item)
        producer = None
        start, t0 = time.monotonic(), time.time()
        try:
            producer = EventProducer(self.bootstrap)
            for n, (user, item, action) in enumerate(self.world.stream):
                if self.stop_event.is_set():
                    break
                for new_item in announce_at.get(n, ()):
                    record = self.world.held[new_item]
                    producer.send(self.topics.items, ItemEvent(
                        item_id=new_item, title=str(record.get("title") or ""), brand=str(record.get("brand") or ""),
                        categories=[str(c) for c in record.get("categories") or []],
                        price=record.get("price") if isinstance(record.get("price"), (int, float)) else None,
                        ts=time.time()))
                    self.items_sent += 1
                producer.send(self.topics.interactions, InteractionEvent(
                    event_id=f"demo:{user}:{n}", user_id=user, item_id=item, action=action, ts=t0 + n / self.rate))
                self.sent += 1
                delay = start + (n + 1) / self.rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
        except Exception as exc:  # shown in the live view; the rest of the demo keeps running
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            if producer is not None:
                producer.close()


class QueryLoad(threading.Thread):
    """A trickle of real users asking for recommendations: users the replay just streamed, so every answer reads a
    sequence the worker wrote seconds ago. Records latency, the model version served and the sequence's age."""

    def __init__(self, url: str, replayer: Replayer, rate: float = 2.0):
        super().__init__(name="demo-queries", daemon=True)
        self.url, self.replayer, self.rate = url, replayer, rate
        self.stop_event = threading.Event()
        self.latencies_ms: list[float] = []
        self.sequence_age_ms: list[float] = []
        self.statuses: dict[str, int] = {}
        self.version: str | None = None

    def run(self) -> None:
        import urllib.error
        import urllib.request

        stream = self.replayer.world.stream
        while not self.stop_event.wait(1.0 / self.rate):
            sent = self.replayer.sent
            if not sent:
                continue
            user = stream[sent - 1][0]
            body = json.dumps({"user_id": user, "k": 10}).encode()
            request = urllib.request.Request(self.url, data=body, headers={"content-type": "application/json"})
            started = time.perf_counter()
            try:
                with urllib.request.urlopen(request, timeout=10) as response:
                    answer = json.loads(response.read())
                    status = str(response.status)
                self.version = answer.get("model_version")
                if answer.get("sequence_age_ms") is not None:
                    self.sequence_age_ms.append(float(answer["sequence_age_ms"]))
            except urllib.error.HTTPError as exc:
                status = str(exc.code)
            except Exception as exc:  # timeouts, refused connections: counted, shown
                status = type(exc).__name__
            self.latencies_ms.append((time.perf_counter() - started) * 1000)
            self.statuses[status] = self.statuses.get(status, 0) + 1

    def summary(self) -> str:
        import numpy as np

        if not self.latencies_ms:
            return "queries: none yet"
        lat, age = np.asarray(self.latencies_ms[-200:]), np.asarray(self.sequence_age_ms[-200:] or [np.nan])
        return (f"queries: {dict(sorted(self.statuses.items()))}; latency p50 {np.median(lat):.0f} ms p99 "
                f"{np.percentile(lat, 99):.0f} ms; sequence age p50 {np.nanmedian(age) / 1000:.1f} s; "
                f"answered by {self.version or '-'}")


def _wait_http(url: str, timeout_s: float, child: Child) -> bool:
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not child.alive():
            return False
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return True
        except Exception:
            pass
        time.sleep(1.0)
    return False


def register(commands, bench) -> None:
    from catalogue.settings import CatalogueSettings

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
    p.add_argument("--work-dir", type=Path, default=Path("var/demo"), help="caches, logs and the monitor history")
    p.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    from deploy.errors import CommandError
    from deploy.localstack import LocalStack, StackError, free_port, port_in_use
    from deploy.monitor import render
    from deploy.monitor_cli import Monitor
    from deploy.settings import MonitorSettings, StackSettings
    from streams.settings import StreamSettings, Topics
    from streams.topics import ensure_topics

    if args.rate <= 0:
        raise CommandError("--rate must be > 0")
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

        use_dataset = not args.synthetic and (args.dataset / "sequences.txt").is_file()
        if not use_dataset and not args.synthetic:
            log(f"no dataset at {args.dataset}: using the synthetic world")
        world = beauty_world(args.dataset) if use_dataset else synthetic_world()
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
        if not _wait_http(f"http://127.0.0.1:{args.port}/readyz", 240, children[2]):
            raise CommandError(f"serving did not become ready:\n{children[2].tail()}")

        history = work / "monitor" / f"history-{run}.jsonl"
        monitor_settings = MonitorSettings(reference_events=3000, recent_events=1000)
        monitor = Monitor(catalogue_dir, {"worker": f"http://127.0.0.1:{worker_port}/metrics",
                                          "trainer": f"http://127.0.0.1:{trainer_port}/metrics",
                                          "serving": f"http://127.0.0.1:{args.port}/metrics"},
                          monitor_settings, stream_settings=stream_settings, history_file=history)
        replayer = Replayer(world, bootstrap, topics, args.rate)
        replayer.start()
        if args.queries > 0:
            queries = QueryLoad(f"http://127.0.0.1:{args.port}/recommend", replayer, args.queries)
            queries.start()
        some_user = world.stream[0][0]
        query = (f"curl -s -X POST http://127.0.0.1:{args.port}/recommend -H 'content-type: application/json' "
                 f"-d '{{\"user_id\": \"{some_user}\", \"k\": 10}}'")
        began = time.monotonic()
        while True:
            if args.duration is not None and time.monotonic() - began >= args.duration:
                break
            snap = monitor.tick()
            elapsed = time.monotonic() - began
            dead = [c.name for c in children if not c.alive()]
            header = [f"sidstream demo ({world.name}) - {elapsed:.0f}s - replayed {replayer.sent:,}/"
                      f"{len(world.stream):,} events at {args.rate:g}/s, {replayer.items_sent}/{len(world.held)} new "
                      f"items announced" + (f" - STOPPED: {', '.join(dead)}" if dead else "")
                      + (f" - replay error: {replayer.error}" if replayer.error else ""),
                      f"query:        {query}"] + ([queries.summary()] if queries else [])
            print(render(snap, header), flush=True)
            print(flush=True)
            if dead:
                failed = True
                for c in children:
                    if c.name in dead:
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

"""`sidstream bench stream`: throughput and freshness of the stream workers, end to end through a real Kafka
broker, real Faust worker processes and the Feast online store (SQLite and Redis).

- events_per_s_<store>: N pre-produced interactions; from the first appended event to the moment every user's
  final row is visible in Feast.
- event_to_feast_ms: interactions produced at `rate_ev_s`; a poller reads Feast and times when each sampled event
  is visible (produced -> visible), so the figure covers Kafka, Faust, the micro-batched push and the store.
- item_to_catalogue_ms: items produced to `items`; timed until their SID is readable on the `catalogue` topic.
- bare_agent_events_per_s: a Faust agent with the worker's settings that only decodes each event
  (deploy/bench/bare_agent.py), draining the same backlog right before the full worker; `worker_share_of_bare_<store>`
  is the worker's rate over it.
- backfill: the dataset's logged past (each user's first 70% of events) through `sidstream backfill`'s path
  into Feast (offline parquet + materialisation), every row read back: users, events, seconds, mismatches.
"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from kafka import KafkaConsumer, TopicPartition

from catalogue.bench import machine_info, percentile
from catalogue.catalogue import ItemCatalogue, build_catalogue
from catalogue.datasets import load_sequences
from deploy.streams import backfill
from deploy.cli import CommandError
from deploy.localstack import LocalStack, free_port
from deploy.settings import StackSettings
from deploy.streamproc import StreamEnv, WorkerProcess
from features.store import UserSequenceStore  # feast itself is imported when the store is first used
from streams.producer import EventProducer
from streams.replay import RateLimiter, logged_past
from streams.schemas import InteractionEvent, ItemEvent
from streams.topics import ensure_topics


# The freshness probe reads Feast for a sample of the events. On 2 cores it competes with what it measures (the
# broker, the worker, the producer): sampling every 5th event and reading every 5 ms took about a quarter of a
# core. One event in 10, read every 20 ms, keeps hundreds of samples a run; a sample's figure can be late by up
# to one read interval plus one read (about 30 ms), never early.
PROBE_EVERY = 10
PROBE_INTERVAL_S = 0.02


def per_second_p99(produced_at: list[float], latencies: list[float]) -> list[float]:
    """p99 of the events produced in each second of the run: a slow start and a steady state look alike in one
    overall p99, not here."""
    if not produced_at:
        return []
    start = min(produced_at)
    buckets: dict[int, list[float]] = {}
    for t, ms in zip(produced_at, latencies):
        buckets.setdefault(int(t - start), []).append(ms)
    return [round(percentile(buckets[second], 99), 1) if second in buckets else None
            for second in range(max(buckets) + 1)]


def log(message: str) -> None:
    print(f"bench stream: {message}", file=sys.stderr, flush=True)


class StreamBench:
    def __init__(self, bootstrap: str, redis_url: str | None, catalogue_dir: Path, root: Path, workers: int):
        self.bootstrap, self.redis_url = bootstrap, redis_url
        self.catalogue_dir, self.root, self.workers = catalogue_dir, root, workers
        self.catalogue = ItemCatalogue.load(catalogue_dir)
        self.items = self.catalogue.item_ids

    def _env(self, name: str, online_store: str):
        root = self.root / name
        root.mkdir(parents=True, exist_ok=True)
        return StreamEnv(self.bootstrap, root, redis_url=self.redis_url, online_store=online_store)

    def _start_workers(self, env):
        return [WorkerProcess(env, self.catalogue_dir, name=f"w{i}").start() for i in range(self.workers)]

    def _events(self, prefix: str, users: int, per_user: int):
        rng = random.Random(7)
        now = time.time()
        for position in range(per_user):
            for u in range(users):
                yield InteractionEvent(event_id=f"{prefix}{u}:{position}", user_id=f"{prefix}{u}",
                                       item_id=rng.choice(self.items), action="purchase", ts=now)

    def bare_agent(self, env, events: int, timeout_s: float = 600) -> dict:
        """Drain the backlog of `env`'s interactions topic with the bare agent (its own consumer group)."""
        result_path = env.root / "bare-agent.json"
        agent_env = dict(env.env, SIDSTREAM_FAUST_DATADIR=str(env.root / "faust-bare"))
        with open(env.root / "bare-agent.log", "a") as log_file:
            proc = subprocess.Popen([sys.executable, "-m", "deploy.bench.bare_agent", str(events), str(result_path)],
                                    env=agent_env, cwd=env.root, stdout=log_file, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        try:
            deadline = time.monotonic() + timeout_s
            while not result_path.is_file():
                if proc.poll() is not None or time.monotonic() > deadline:
                    tail = (env.root / "bare-agent.log").read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"the bare agent did not drain {events} events:\n{tail}")
                time.sleep(0.2)
            result = json.loads(result_path.read_text())
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        log(f"bare agent (decode only): {result['events']} events in {result['seconds']:.2f} s: "
            f"{result['events_per_s']:.0f} events/s")
        return result

    def backfill(self, dataset: Path, online_store: str, share: float = 0.7) -> dict:
        env = self._env(f"backfill-{online_store}", online_store)
        store = UserSequenceStore(env.feature_settings(), repo_dir=env.root / "feast")
        store.apply()
        past = logged_past(sequences=load_sequences(dataset), share=share)
        log(f"[{online_store}] backfilling {len(past):,} past events of {dataset.name} (first {share:.0%} per user)")
        result = backfill(self.catalogue, past, store)
        log(f"[{online_store}] backfill: {result['users']:,} users, {result['events']:,} events in "
            f"{result['seconds']:.1f} s, {result['mismatches']} mismatches")
        return {"users": result["users"], "events": result["events"], "seconds": result["seconds"],
                "mismatches": result["mismatches"], "store": online_store, "share": share,
                "left_out_events": result["left_out_events"]}

    def throughput(self, online_store: str, events: int, timeout_s: float = 600, bare: bool = False) -> dict:
        env = self._env(f"throughput-{online_store}", online_store)
        settings = env.settings()
        ensure_topics(settings)
        users, per_user = max(1, events // 10), 10
        producer = EventProducer(self.bootstrap)
        log(f"[{online_store}] producing {users * per_user} interactions ({users} users x {per_user}) ...")
        for event in self._events("t", users, per_user):
            producer.send(settings.topics.interactions, event)
        producer.close()
        bare_result = self.bare_agent(env, users * per_user) if bare else None
        store = UserSequenceStore(env.feature_settings(), repo_dir=env.root / "feast")
        workers = self._start_workers(env)
        try:
            log(f"[{online_store}] {self.workers} worker(s) started; waiting until Feast holds every final row")
            probe = [f"t{u}" for u in range(0, users, max(1, users // 500))]
            deadline = time.monotonic() + timeout_s
            done_at = None
            while time.monotonic() < deadline:
                try:
                    rows = store.read(probe)
                except Exception:  # the worker has not registered the repository yet
                    rows = {}
                if rows and all(r is not None and r.event_count == per_user for r in rows.values()):
                    full = store.read([f"t{u}" for u in range(users)])
                    if all(r is not None and r.event_count == per_user for r in full.values()):
                        done_at = time.time()
                        break
                if not any(w.alive() for w in workers):
                    raise RuntimeError(f"workers died: {workers[0].tail()}")
                time.sleep(0.25)
            if done_at is None:
                raise RuntimeError(f"[{online_store}] not all rows visible after {timeout_s:.0f} s")
            first_appended = self._first_appended_ms(settings.topics.training) / 1000
            handled = self._per_worker_events(workers, users * per_user)
        finally:
            for w in workers:
                w.stop()
        seconds = done_at - first_appended
        rate = users * per_user / seconds
        log(f"[{online_store}] {users * per_user} events through Kafka, Faust and Feast in {seconds:.2f} s: "
            f"{rate:.0f} events/s")
        per_worker = [round(n / seconds, 1) for n in handled]
        if len(workers) > 1:
            log(f"[{online_store}] per worker: {', '.join(f'{r:.0f}' for r in per_worker)} events/s")
        out = {"events": users * per_user, "seconds": seconds, "events_per_s": rate,
               "per_worker_events": handled, "per_worker_events_per_s": per_worker}
        if bare_result is not None:
            out["bare_agent"] = bare_result
        return out

    @staticmethod
    def _per_worker_events(workers, events: int, timeout_s: float = 12.0) -> list[int]:
        """Events each worker handled, from their stats lines (one every 10 s: waits for lines covering all)."""
        deadline = time.monotonic() + timeout_s
        while True:
            handled = [w.last_stats().get("interactions", 0) for w in workers]
            if sum(handled) >= events or time.monotonic() > deadline:
                return handled
            time.sleep(0.5)

    def _first_appended_ms(self, topic: str) -> float:
        consumer = KafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False, group_id=None)
        try:
            tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
            consumer.assign(tps)
            consumer.seek_to_beginning(*tps)
            firsts = []
            pending = set(tps)
            deadline = time.monotonic() + 20
            while pending and time.monotonic() < deadline:
                for tp, records in consumer.poll(timeout_ms=300, max_records=50).items():
                    if tp in pending and records:
                        firsts.append(json.loads(records[0].value)["appended_ms"])
                        pending.discard(tp)
                        consumer.pause(tp)
            return min(firsts)
        finally:
            consumer.close()

    def freshness(self, rate: float, seconds: float, items: int, store: str = "sqlite") -> dict:
        env = self._env("freshness", store)
        settings = env.settings()
        ensure_topics(settings)
        feast = UserSequenceStore(env.feature_settings(), repo_dir=env.root / "feast")
        workers = self._start_workers(env)
        producer = EventProducer(self.bootstrap)
        try:
            self._warm_up(producer, settings, feast, workers)
            samples: dict[str, tuple[int, float]] = {}  # user -> (expected event_count, produced time)
            latencies: list[float] = []
            produced_at: list[float] = []  # when each timed event was produced, for the per-second view
            lock, stop = threading.Lock(), threading.Event()

            def poll():
                while not stop.is_set() or samples:
                    with lock:
                        pending = dict(list(samples.items())[:300])
                    if not pending:
                        time.sleep(0.005)
                        continue
                    rows = feast.read(list(pending))
                    seen_at = time.time()
                    with lock:
                        for user, (count, produced) in pending.items():
                            row = rows.get(user)
                            if row is not None and row.event_count >= count and samples.get(user) == (count, produced):
                                latencies.append((seen_at - produced) * 1000)
                                produced_at.append(produced)
                                del samples[user]
                    if stop.is_set() and time.monotonic() > stop_deadline[0]:
                        return
                    time.sleep(PROBE_INTERVAL_S)

            stop_deadline = [float("inf")]
            poller = threading.Thread(target=poll, daemon=True)
            poller.start()
            users = 2000
            counts = [0] * users
            limiter = RateLimiter(rate)
            total = int(rate * seconds)
            log(f"producing {total} interactions at {rate:.0f} events/s and timing each sampled one until Feast shows it")
            for i in range(total):
                limiter.wait()
                u = i % users
                counts[u] += 1
                user = f"f{u}"
                event = InteractionEvent(event_id=f"f{i}", user_id=user, item_id=self.items[i % len(self.items)],
                                         action="purchase", ts=time.time())
                producer.send(settings.topics.interactions, event)
                if i % PROBE_EVERY == 0:
                    with lock:
                        if user not in samples:
                            samples[user] = (counts[u], time.time())
            producer.producer.flush()
            stop_deadline[0] = time.monotonic() + 30
            stop.set()
            poller.join(timeout=40)
            event_ms = {"p50": percentile(latencies, 50), "p99": percentile(latencies, 99),
                        "mean": statistics.fmean(latencies) if latencies else float("nan"),
                        "samples": len(latencies), "rate_ev_s": rate, "seconds": seconds, "store": store,
                        "p99_by_second": per_second_p99(produced_at, latencies)}
            log(f"event -> Feast at {rate:.0f} ev/s: p50 {event_ms['p50']:.0f} ms, p99 {event_ms['p99']:.0f} ms "
                f"({len(latencies)} samples)")

            item_ms = self._item_latency(producer, settings, items)
        finally:
            producer.close()
            for w in workers:
                w.stop()
        return {"event_to_feast_ms": event_ms, "item_to_catalogue_ms": item_ms}

    def _warm_up(self, producer, settings, store, workers) -> None:
        producer.send(settings.topics.interactions, InteractionEvent(
            event_id="warm", user_id="warm-user", item_id=self.items[0], action="purchase", ts=time.time()))
        producer.producer.flush()
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                if store.read(["warm-user"])["warm-user"] is not None:
                    return
            except Exception:
                pass
            if not any(w.alive() for w in workers):
                raise RuntimeError(f"workers died: {workers[0].tail()}")
            time.sleep(0.2)
        raise RuntimeError("the worker did not come up within 180 s")

    def _item_latency(self, producer, settings, items: int) -> dict:
        consumer = KafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False, group_id=None)
        tp = TopicPartition(settings.topics.catalogue, 0)
        consumer.assign([tp])
        consumer.seek_to_end(tp)
        consumer.position(tp)
        produced: dict[str, float] = {}
        latencies: list[float] = []

        def collect(timeout_ms: int) -> None:
            """Time every produced item whose SID entry is now readable on the catalogue topic."""
            for records in consumer.poll(timeout_ms=timeout_ms).values():
                now = time.time()
                for record in records:
                    item_id = json.loads(record.value)["item_id"]
                    if item_id in produced:
                        latencies.append((now - produced.pop(item_id)) * 1000)

        log(f"producing {items} new items, 5 per second, timing each until its SID is on the catalogue topic")
        for i in range(items):
            item_id = f"bench-item-{i}-{time.time_ns()}"
            producer.send(settings.topics.items, ItemEvent(item_id=item_id, title=f"Bench item {i} shimmer gloss",
                                                           categories=["Beauty", "Makeup"], price=9.5, ts=time.time()))
            producer.producer.flush()
            produced[item_id] = time.time()
            end = time.monotonic() + 0.2
            while time.monotonic() < end:
                collect(20)
        deadline = time.monotonic() + 30
        while produced and time.monotonic() < deadline:
            collect(100)
        consumer.close()
        result = {"p50": percentile(latencies, 50), "p99": percentile(latencies, 99), "samples": len(latencies),
                  "missing": len(produced)}
        log(f"item -> catalogue topic: p50 {result['p50']:.0f} ms, p99 {result['p99']:.0f} ms "
            f"({len(latencies)} items, {len(produced)} missing)")
        return result


def bench_catalogue_dir(dataset: Path, cache_dir: Path) -> Path:
    """A catalogue of the dataset built from collaborative embeddings (no text model, so it builds in seconds),
    cached between runs."""
    out = cache_dir / "bench" / f"catalogue-collab-{dataset.name}"
    if (out / "manifest.json").exists():
        return out
    log(f"building a collaborative catalogue of {dataset} into {out} (once)")
    build_catalogue([], load_sequences(dataset), out, progress=False, log=lambda *_: None, text_encoder_factory=None)
    return out


def run(args) -> int:
    stack_settings = StackSettings()
    quick = args.quick
    events = args.events or (10_000 if quick else 100_000)
    rate, seconds, items = args.rate, args.seconds or (8 if quick else 30), args.items or (10 if quick else 50)
    catalogue_dir = args.catalogue or bench_catalogue_dir(args.dataset, Path(stack_settings.cache_dir))
    started = time.time()
    stack = None
    with tempfile.TemporaryDirectory(prefix="sidstream-bench-stream-") as tmp:
        root = Path(tmp)
        if stack_settings.kafka_bootstrap_servers:
            bootstrap, redis_url = stack_settings.kafka_bootstrap_servers, stack_settings.redis_url
        else:
            stack = LocalStack(StackSettings(kafka_bootstrap_servers=None, state_dir=root / "stack",
                                             kafka_port=free_port(), kafka_controller_port=free_port(),
                                             redis_port=free_port()), log=log)
            stack.up(redis=True)
            bootstrap, redis_url = stack.kafka_bootstrap, stack.redis_url
        try:
            if args.freshness_store == "redis" and not redis_url:  # before minutes of throughput runs, not after
                raise CommandError("--freshness-store redis needs Redis: set SIDSTREAM_REDIS_URL")
            bench = StreamBench(bootstrap, redis_url, catalogue_dir, root, args.workers)
            result = {"benchmark": "stream", "quick": quick, "workers": args.workers,
                      "catalogue": str(catalogue_dir), "catalogue_items": len(bench.items),
                      "embedding_model": bench.catalogue.info.get("embedding_model"), "machine": machine_info()}
            for store in ("sqlite", "redis"):
                if store == "redis" and not redis_url:
                    log("no Redis: skipping the Redis throughput run")
                    continue
                t = bench.throughput(store, events, bare=True)
                result[f"events_per_s_{store}"] = t["events_per_s"]
                result[f"throughput_{store}"] = t
                bare_rate = t["bare_agent"]["events_per_s"]
                result.setdefault("bare_agent_events_per_s", bare_rate)
                result[f"worker_share_of_bare_{store}"] = t["events_per_s"] / bare_rate
                log(f"[{store}] the full worker(s) ran at {t['events_per_s'] / bare_rate:.0%} of the bare agent's "
                    "rate")
            result["backfill"] = bench.backfill(args.dataset, "redis" if redis_url else "sqlite")
            result.update(bench.freshness(rate, seconds, items, store=args.freshness_store))
        finally:
            if stack is not None:
                stack.down(purge=True)
    result["load_average_at_end"] = os.getloadavg()
    result["wall_seconds"] = time.time() - started
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in result
                      if k.startswith(("events_per_s", "event_to", "item_to", "bare_agent", "worker_share", "backfill"))},
                     indent=2))
    log(f"wrote {args.out} in {result['wall_seconds']:.0f} s")
    return 0

"""Wiring of the serving room: the Ray Serve app from `serving/` with the Feast facade from `features/`, the
catalogue from `catalogue/` and the registry of `trainer/`; Kafka followers for model-updates and catalogue.

`sidstream serve` starts it on a local Ray; `sidstream bench serving` measures it end to end over HTTP.
"""
from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

log = logging.getLogger("sidstream.serve")


def build_replica_service(settings):
    """Runs inside each replica: catalogue + Feast reader + registry model -> RecommenderService, plus followers."""
    import serving.metrics  # noqa: F401  (prometheus-client before feast: it must stay in single-process mode)
    from catalogue.catalogue import ItemCatalogue
    from features.settings import FeatureSettings
    from features.store import UserSequenceStore
    from serving.service import RecommenderService
    from streams.follow import TopicFollower, WholeTopicReader
    from streams.settings import StreamSettings
    from trainer.registry import UpdateRefused

    logging.basicConfig(level=logging.INFO)
    logging.getLogger("kafka").setLevel(logging.WARNING)
    catalogue = ItemCatalogue.load(settings.catalogue_dir)
    store = UserSequenceStore(FeatureSettings())
    store.apply()  # idempotent: a replica in its own container has no Feast registry until it applies one
    service = RecommenderService(catalogue.vocab, catalogue.trie, store, settings)
    model_dir = resolve_model_dir(Path(settings.model_dir))
    if (model_dir / "manifest.json").is_file():
        try:
            service.load_model(model_dir)
        except UpdateRefused:
            pass  # logged; the replica waits for an acceptable model on model-updates
    followers = []
    if settings.follow_updates:
        streams = StreamSettings()
        bootstrap, topics = streams.kafka_bootstrap_servers, streams.topics
        followers.append(TopicFollower(
            "model-updates", lambda: WholeTopicReader(bootstrap, topics.model_updates, start="last",
                                                      client_id=f"sidstream-serving-{topics.model_updates}"),
            service.handle_model_records, settings.update_poll_s).start())
        followers.append(TopicFollower(
            "catalogue", lambda: WholeTopicReader(bootstrap, topics.catalogue, start="beginning",
                                                  client_id=f"sidstream-serving-{topics.catalogue}"),
            service.handle_catalogue_records, settings.update_poll_s).start())
    return service, followers


def resolve_model_dir(path: Path) -> Path:
    """A model directory as given, or - for a registry root (versions/, LATEST, PINNED) - the version serving
    should start from: the pinned one, else the latest."""
    if (path / "manifest.json").is_file() or not (path / "versions").is_dir():
        return path
    from trainer.model_registry import ModelRegistry

    registry = ModelRegistry(path)
    version = registry.serving()
    return registry.path(version) if version else path


def app_builder(args: dict):
    """Ray Serve application builder for `serve run` / a KubeRay RayService (`import_path:
    deploy.serve:app_builder`); `args` are ServingSettings fields, the rest comes from SIDSTREAM_* env."""
    from serving.app import build_deployment
    from serving.settings import ServingSettings

    return build_deployment(ServingSettings(**(args or {})), build_replica_service)


def start_serving(settings, num_cpus: int | None = None, blocking: bool = False) -> dict:
    """Local Ray + Serve with the replicas wired by `build_replica_service` (SIDSTREAM_* env travels along);
    returns the ingress variables Ray was started with (serving.app.run_local_ray)."""
    from serving.app import run_local_ray

    env = {k: v for k, v in os.environ.items() if k.startswith("SIDSTREAM_")}
    return run_local_ray(settings, build_replica_service, num_cpus=num_cpus, blocking=blocking, env_vars=env)


# ----- command line
def register(commands, bench) -> None:
    serve = commands.add_parser("serve", help="serve recommendations over HTTP (Ray Serve on a local Ray)")
    serve.add_argument("--model", type=Path, help="a model directory, or a registry folder (serves its pinned, else "
                                                  "latest version) (default: SIDSTREAM_MODEL_DIR)")
    serve.add_argument("--catalogue", type=Path, help="catalogue folder (default: SIDSTREAM_CATALOGUE_DIR)")
    serve.add_argument("--replicas", type=int, help="replicas (default: SIDSTREAM_REPLICAS or 1)")
    serve.add_argument("--cpus-per-replica", type=float, help="Ray CPUs per replica (default 1)")
    serve.add_argument("--torch-threads", type=int, help="torch threads per replica (default 1)")
    serve.add_argument("--host", help="HTTP bind address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="HTTP port (default 8000)")
    serve.add_argument("--no-follow", action="store_true", help="do not follow model-updates / catalogue topics")
    serve.add_argument("--ingress", choices=("haproxy", "proxy"),
                       help="HAProxy straight to the replicas, or Ray's Python proxy (default: SIDSTREAM_INGRESS "
                            "or haproxy)")
    serve.set_defaults(func=cmd_serve)

    b = bench.add_parser("serving", help="HTTP latency/throughput of the Ray Serve app at concurrency 1, 8, 32")
    b.add_argument("--out", required=True, type=Path, help="JSON report")
    b.add_argument("--quick", action="store_true", help="short runs (under 2 minutes in all)")
    b.add_argument("--model", type=Path, help="registry model (default: untrained d=64, 2 layers, 50-event window; "
                                              "weights do not change the cost)")
    b.add_argument("--catalogue", type=Path, help="catalogue folder (default: the Beauty catalogue, built if needed)")
    b.add_argument("--dataset", type=Path, help="dataset folder (default: <data_dir>/amazon_beauty_2014)")
    b.add_argument("--users", type=int, default=2000, help="users with 50-event histories in the online store")
    b.add_argument("--seconds", type=float, help="measured seconds per concurrency (default 20, quick 6)")
    b.add_argument("--replicas", type=int, default=2, help="replicas (each: 1 Ray CPU, its own batch queue)")
    b.add_argument("--torch-threads", type=int, default=1)
    b.add_argument("--batch-wait-ms", type=float, default=5.0, help="@serve.batch wait for more requests")
    b.add_argument("--batch-size", type=int, default=32, help="@serve.batch max batch size")
    b.add_argument("--generation-thread", action="store_true",
                   help="run batches on a generation thread instead of the replica's event loop")
    b.add_argument("--ingress", choices=("haproxy", "proxy"),
                   help="HAProxy straight to the replicas, or Ray's Python proxy (default: SIDSTREAM_INGRESS or "
                        "haproxy)")
    b.add_argument("--work-dir", type=Path, default=Path("var/bench/serving"))
    b.set_defaults(func=cmd_bench_serving)


def _settings_from_args(args, **extra):
    from serving.settings import ServingSettings

    overrides = {"model_dir": args.model and args.model.resolve(),
                 "catalogue_dir": args.catalogue and args.catalogue.resolve(), "replicas": args.replicas,
                 "cpus_per_replica": getattr(args, "cpus_per_replica", None), "torch_threads": args.torch_threads,
                 "http_host": getattr(args, "host", None), "http_port": getattr(args, "port", None),
                 "ingress": getattr(args, "ingress", None), **extra}
    return ServingSettings(**{k: v for k, v in overrides.items() if v is not None})


def _refuse_unavailable_ingress(settings) -> None:
    """A CLI error, before anything starts, when the chosen ingress cannot run here (no HAProxy binary)."""
    from deploy.cli import CommandError
    from serving.app import ingress_problem

    problem = ingress_problem(settings)
    if problem:
        raise CommandError(problem)


def cmd_serve(args) -> int:
    from deploy.cli import CommandError

    settings = _settings_from_args(args, follow_updates=False if args.no_follow else None)
    # replicas run in other processes: relative paths from the environment are made absolute here
    settings = settings.model_copy(update={"model_dir": Path(settings.model_dir).resolve(),
                                           "catalogue_dir": Path(settings.catalogue_dir).resolve()})
    if not (Path(settings.catalogue_dir) / "manifest.json").is_file():
        raise CommandError(f"no catalogue at {settings.catalogue_dir}: build one with `sidstream catalogue build`")
    if not (resolve_model_dir(Path(settings.model_dir)) / "manifest.json").is_file() and not settings.follow_updates:
        raise CommandError(f"no model at {settings.model_dir} and --no-follow: nothing to serve")
    _refuse_unavailable_ingress(settings)
    cpus = max(2, int(settings.replicas * settings.cpus_per_replica + 0.999))
    print(f"serve: {settings.replicas} replica(s) x {settings.cpus_per_replica} CPU, {settings.ingress} ingress, "
          f"model {settings.model_dir}, "
          f"catalogue {settings.catalogue_dir}; http://{settings.http_host}:{settings.http_port} "
          f"(OpenAPI at /docs, /openapi.json)", flush=True)
    import signal

    def stop(signum, frame):
        raise KeyboardInterrupt

    try:
        start_serving(settings, num_cpus=cpus)
        signal.signal(signal.SIGTERM, stop)  # after ray.init, which installs its own handler
        print("serve: ready; Ctrl-C or SIGTERM stops it", flush=True)
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        print("serve: stopping", flush=True)
    finally:
        from serving.app import shutdown_ray

        shutdown_ray()
    return 0


def _bench_catalogue(args):
    from catalogue.catalogue import ItemCatalogue
    from catalogue.settings import CatalogueSettings

    if args.catalogue:
        return args.catalogue, ItemCatalogue.load(args.catalogue)
    out = args.work_dir / "catalogue"
    if (out / "manifest.json").is_file():
        return out, ItemCatalogue.load(out)
    from catalogue.catalogue import build_catalogue
    from catalogue.datasets import load_sequences

    dataset = args.dataset or CatalogueSettings().data_dir / "amazon_beauty_2014"
    print(f"bench: building the Beauty catalogue (collaborative embeddings) into {out}", flush=True)
    catalogue, _ = build_catalogue([], load_sequences(dataset), out, iterations=10, progress=False,
                                   log=lambda *_: None)
    return out, catalogue


def _bench_model(args, catalogue, window: int = 50) -> Path:
    from trainer.model import Transformer
    from trainer.pretrain import TrainConfig, model_config_for
    from trainer.registry import save_model

    if args.model:
        return args.model
    out = args.work_dir / f"model-untrained-{catalogue.vocab.version}-w{window}-ec"  # ec: with the event context
    if not (out / "manifest.json").is_file():
        import torch

        torch.manual_seed(0)
        # the architecture pretraining builds (event context included), at the small size serving is timed with
        config = model_config_for(TrainConfig(d_model=64, n_layers=2, n_heads=2, dropout=0.0, window_events=window),
                                  catalogue.vocab)
        save_model(out, Transformer(config), catalogue.vocab,
                   extra={"train_config": {"window_events": window}, "note": "untrained: cost benchmark only"})
    return out


def cmd_bench_serving(args) -> int:
    import asyncio

    import numpy as np

    from deploy.cli import CommandError
    from serving.bench import batch_counters, breakdown, closed_loop, machine_info
    from serving.settings import ServingSettings

    started = time.monotonic()
    machine = machine_info()
    print(f"bench serving on {machine['cpu']} ({machine['cores']} cores), load average {machine['load_average']}, "
          f"torch {machine['torch']}", flush=True)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    catalogue_dir, catalogue = _bench_catalogue(args)
    model_dir = _bench_model(args, catalogue)
    from trainer.registry import read_manifest

    manifest = read_manifest(model_dir)
    if (manifest.get("vocab") or {}).get("version") != catalogue.vocab.version:
        raise CommandError(f"model {model_dir} was trained on another codebook version than {catalogue_dir}")

    # the online store: one 50-event history per user
    feast_dir = args.work_dir / "feast"
    os.environ.update({"SIDSTREAM_FEAST_REPO_PATH": str(feast_dir.resolve()), "SIDSTREAM_FEAST_PROJECT": "benchserving",
                       "SIDSTREAM_ONLINE_STORE": "sqlite"})
    from features.sequences import UserSequence
    from features.settings import FeatureSettings
    from features.store import UserSequenceStore

    store = UserSequenceStore(FeatureSettings())
    store.apply()
    rng = np.random.default_rng(0)
    items = catalogue.item_ids
    vocab = catalogue.vocab
    purchase = vocab.action_token("purchase")
    users = [f"bench-{i}" for i in range(args.users)]
    now_ms = int(time.time() * 1000)
    rows = []
    for user in users:
        tokens = []
        for j in rng.choice(len(items), 50, replace=False):
            tokens += catalogue.tokens_of(items[j]) + [purchase]
        rows.append(UserSequence(user, tokens, 50, now_ms, now_ms))
    for i in range(0, len(rows), 500):
        store.push(rows[i:i + 500])
    print(f"bench: {len(rows)} users with 50-event histories in the online store ({time.monotonic() - started:.0f} s)",
          flush=True)

    from catalogue.settings import CatalogueSettings  # noqa: F401
    from serving.app import shutdown_ray
    from deploy.localstack import free_port

    settings = ServingSettings(model_dir=model_dir.resolve(), catalogue_dir=Path(catalogue_dir).resolve(),
                               replicas=args.replicas, cpus_per_replica=1, torch_threads=args.torch_threads,
                               http_port=free_port(), follow_updates=False, beam_size=20,
                               batch_max_size=args.batch_size, batch_wait_s=args.batch_wait_ms / 1000, api_key=None,
                               generation_thread=args.generation_thread,
                               **({"ingress": args.ingress} if args.ingress else {}))
    _refuse_unavailable_ingress(settings)
    seconds = args.seconds or (6.0 if args.quick else 20.0)
    url = f"http://{settings.http_host}:{settings.http_port}/recommend"
    report = {"concurrency": {}, "breakdown_ms": {}}
    try:
        start_serving(settings, num_cpus=max(2, args.replicas))
        print(f"bench: Ray Serve up ({time.monotonic() - started:.0f} s); {seconds:.0f} s per concurrency", flush=True)
        body = lambda n: {"user_id": users[n % len(users)], "k": 10, "exclude_seen": True}  # noqa: E731
        import httpx

        metrics_url = url.rsplit("/", 1)[0] + "/metrics"
        for concurrency in (1, 8, 32):
            before = batch_counters(httpx.get(metrics_url, timeout=10).text)
            result = asyncio.run(closed_loop(url, body, concurrency, seconds, warmup_s=2.0 if args.quick else 5.0))
            after = batch_counters(httpx.get(metrics_url, timeout=10).text)
            batches = after[1] - before[1]
            result["mean_batch_size"] = round((after[0] - before[0]) / batches, 2) if batches else None
            report["concurrency"][str(concurrency)] = result
            report["breakdown_ms"][str(concurrency)] = breakdown(result)
            print(f"concurrency {concurrency:2d}: p50 {result['p50_ms']:.1f} ms, p95 {result['p95_ms']:.1f} ms, "
                  f"p99 {result['p99_ms']:.1f} ms, {result['rps']:.0f} req/s, failed {result['failed']}, "
                  f"mean batch {result['mean_batch_size']}; "
                  f"server medians {result['server_median_ms']}", flush=True)
    finally:
        shutdown_ray()
    one = report["breakdown_ms"].pop("1")
    report["breakdown_ms"] = {**one, "by_concurrency": report["breakdown_ms"]}
    report.update({
        "machine": {**machine, "load_average_after": [round(x, 2) for x in os.getloadavg()],
                    "note": "2-core machine shared with other agents; the load generator runs on the same cores"},
        "setup": {"catalogue": str(catalogue_dir), "items": len(items), "catalogue_version": vocab.version,
                  "model": str(model_dir), "model_config": manifest["model_config"],
                  "model_window_events": (manifest.get("train_config") or {}).get("window_events"),
                  "beam": 20, "top_k": 10, "history_events": 50, "exclude_seen": True, "users": len(users),
                  "replicas": args.replicas, "torch_threads_per_replica": args.torch_threads,
                  "batch_max_size": settings.batch_max_size, "batch_wait_s": settings.batch_wait_s,
                  "generation_thread": settings.generation_thread, "ingress": settings.ingress,
                  "online_store": "feast sqlite", "seconds_per_level": seconds, "quick": args.quick},
        "goals": {"p99_ms_at_1_max": 50, "rps_at_32_min": 200,
                  "p99_at_1_met": report["concurrency"]["1"]["p99_ms"] <= 50,
                  "rps_at_32_met": report["concurrency"]["32"]["rps"] >= 200},
        "wall_seconds": round(time.monotonic() - started, 1),
    })
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"bench: breakdown at concurrency 1 (median ms): {one}; wrote {args.out} in {report['wall_seconds']} s")
    return 0

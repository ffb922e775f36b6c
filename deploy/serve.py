"""Wiring of the serving room: the Ray Serve app from `serving/` with the Feast facade from `features/`, the
catalogue from `catalogue/` and the registry of `trainer/`; Kafka followers for model-updates and catalogue.

`sidstream serve` starts it on a local Ray (parser: deploy/cli/serve.py); `sidstream bench serving`
(deploy/bench/serving.py) measures it end to end over HTTP.
"""
from __future__ import annotations

import logging
import os
import signal
import threading
import time
from pathlib import Path

from catalogue.catalogue import ItemCatalogue
from deploy.cli import CommandError
from deploy.localstack import free_port
from features.settings import FeatureSettings
from features.store import UserSequenceStore  # feast itself is imported when the store is first used
from serving.app import build_deployment, ingress_problem, run_local_ray, shutdown_ray
from serving.service import RecommenderService  # with serving.metrics: prometheus-client before feast
from serving.settings import ServingSettings
from streams.follow import TopicFollower, WholeTopicReader
from streams.producer import EventProducer
from streams.settings import StreamSettings
from trainer.model_registry import ModelRegistry
from trainer.registry import UpdateRefused

log = logging.getLogger("sidstream.serve")


def build_replica_service(settings):
    """Runs inside each replica: catalogue + Feast reader + registry model -> RecommenderService, plus followers."""
    logging.basicConfig(level=logging.INFO)
    logging.getLogger("kafka").setLevel(logging.WARNING)
    catalogue = ItemCatalogue.load(settings.catalogue_dir)
    store = UserSequenceStore(FeatureSettings())
    store.apply()  # idempotent: a replica in its own container has no Feast registry until it applies one
    service = RecommenderService(catalogue.vocab, catalogue.trie, store, settings, titles=catalogue.titles)
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
        service.event_sink = kafka_event_sink(bootstrap, topics.interactions)
        followers.append(TopicFollower(
            "model-updates", lambda: WholeTopicReader(bootstrap, topics.model_updates, start="last",
                                                      client_id=f"sidstream-serving-{topics.model_updates}"),
            service.handle_model_records, settings.update_poll_s).start())
        followers.append(TopicFollower(
            "catalogue", lambda: WholeTopicReader(bootstrap, topics.catalogue, start="beginning",
                                                  client_id=f"sidstream-serving-{topics.catalogue}"),
            service.handle_catalogue_records, settings.update_poll_s).start())
    return service, followers


def kafka_event_sink(bootstrap: str, topic: str):
    """POST /events' sink: each event to `topic`, acknowledged before the request answers (so a click the broker
    did not take is reported, not lost). The producer starts with the first event."""
    producer: list[EventProducer] = []
    lock = threading.Lock()

    def send(event) -> None:
        with lock:
            if not producer:
                producer.append(EventProducer(bootstrap))
        producer[0].send(topic, event).get(timeout=10)

    return send


def resolve_model_dir(path: Path) -> Path:
    """A model directory as given, or - for a registry root (versions/, LATEST, PINNED) - the version serving
    should start from: the pinned one, else the latest."""
    if (path / "manifest.json").is_file() or not (path / "versions").is_dir():
        return path
    registry = ModelRegistry(path)
    version = registry.serving()
    return registry.path(version) if version else path


def app_builder(args: dict):
    """Ray Serve application builder for `serve run` / a KubeRay RayService (`import_path:
    deploy.serve:app_builder`); `args` are ServingSettings fields, the rest comes from SIDSTREAM_* env."""
    return build_deployment(ServingSettings(**(args or {})), build_replica_service)


def start_serving(settings, num_cpus: int | None = None, blocking: bool = False) -> dict:
    """Local Ray + Serve with the replicas wired by `build_replica_service` (SIDSTREAM_* env travels along);
    returns the ingress variables Ray was started with (serving.app.run_local_ray)."""
    env = {k: v for k, v in os.environ.items() if k.startswith("SIDSTREAM_")}
    return run_local_ray(settings, build_replica_service, free_port, num_cpus=num_cpus, blocking=blocking,
                         env_vars=env)


# ----- sidstream serve
def _settings_from_args(args, **extra):
    overrides = {"model_dir": args.model and args.model.resolve(),
                 "catalogue_dir": args.catalogue and args.catalogue.resolve(), "replicas": args.replicas,
                 "cpus_per_replica": getattr(args, "cpus_per_replica", None), "torch_threads": args.torch_threads,
                 "http_host": getattr(args, "host", None), "http_port": getattr(args, "port", None),
                 "ingress": getattr(args, "ingress", None), **extra}
    return ServingSettings(**{k: v for k, v in overrides.items() if v is not None})


def refuse_unavailable_ingress(settings) -> None:
    """A CLI error, before anything starts, when the chosen ingress cannot run here (no HAProxy binary)."""
    problem = ingress_problem(settings)
    if problem:
        raise CommandError(problem)


def cmd_serve(args) -> int:
    settings = _settings_from_args(args, follow_updates=False if args.no_follow else None)
    # replicas run in other processes: relative paths from the environment are made absolute here
    settings = settings.model_copy(update={"model_dir": Path(settings.model_dir).resolve(),
                                           "catalogue_dir": Path(settings.catalogue_dir).resolve()})
    if not (Path(settings.catalogue_dir) / "manifest.json").is_file():
        raise CommandError(f"no catalogue at {settings.catalogue_dir}: build one with `sidstream catalogue build`")
    if not (resolve_model_dir(Path(settings.model_dir)) / "manifest.json").is_file() and not settings.follow_updates:
        raise CommandError(f"no model at {settings.model_dir} and --no-follow: nothing to serve")
    refuse_unavailable_ingress(settings)
    cpus = max(2, int(settings.replicas * settings.cpus_per_replica + 0.999))
    print(f"serve: {settings.replicas} replica(s) x {settings.cpus_per_replica} CPU, {settings.ingress} ingress, "
          f"model {settings.model_dir}, "
          f"catalogue {settings.catalogue_dir}; http://{settings.http_host}:{settings.http_port} "
          f"(OpenAPI at /docs, /openapi.json)", flush=True)
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
        shutdown_ray()
    return 0

"""Wiring of the online post-trainer: `sidstream train online` (also `sidstream train-online`) and
`sidstream model list|pin|unpin|rollback` (parsers: deploy/cli/online.py; `bench online` is deploy/bench/online.py).

The trainer's core is trainer/online.py (pure), its Kafka adapter trainer/online_kafka.py, the registry
trainer/model_registry.py; this module only plugs them together.
"""
from __future__ import annotations

import argparse
import json
import signal
import time

import torch
from prometheus_client import start_http_server

from catalogue.catalogue import ItemCatalogue
from catalogue.settings import CatalogueSettings
from deploy.cli import CommandError, parse_overrides
from streams.topics import ensure_topics
from serving.settings import ServingSettings
from trainer import registry as model_files
from trainer.item_index import prune_vector_collections, publish_item_vectors
from trainer.model_registry import ModelRegistry
from trainer.online import OnlineConfig, OnlineLoop, OnlineTrainer
from trainer.online_kafka import CatalogueFollower, KafkaTrainingSource, ModelUpdatePublisher
from trainer.online_metrics import TrainerMetrics
from trainer.online_settings import OnlineSettings
from trainer.registry import RegistryError


# ----- sidstream train online
def _settings(args):
    settings = OnlineSettings()
    updates = {}
    if getattr(args, "registry", None):
        updates["registry_dir"] = args.registry
    if getattr(args, "catalogue", None):
        updates["catalogue_dir"] = args.catalogue
    if getattr(args, "group_id", None):
        updates["online_group_id"] = args.group_id
    return settings.model_copy(update=updates)


def _vector_writer(settings: OnlineSettings, catalogue: ItemCatalogue, reg: ModelRegistry):
    """With the dense index in a Qdrant server (SIDSTREAM_DENSE_INDEX=qdrant, SIDSTREAM_QDRANT_URL), a hook that
    writes each published version's item vectors to its collection before the version is announced, then drops
    the collections of older versions; None otherwise (a local-mode folder is one process's: each replica then
    writes its own)."""
    qdrant = CatalogueSettings()
    if ServingSettings().dense_index != "qdrant" or not qdrant.qdrant_url:
        return None

    def write(model, version: str) -> None:
        if not model.has_dense_head:
            return
        index = publish_item_vectors(model, catalogue.vocab, catalogue.trie, version, url=qdrant.qdrant_url)
        keep = set(reg.versions()[-settings.vector_versions_kept :]) | {v for v in (reg.pinned(), reg.serving()) if v}
        dropped = prune_vector_collections(index.store.client, keep)
        print(f"item vectors of {version} in Qdrant ({len(index)} items)"
              + (f"; dropped {len(dropped)} older collections" if dropped else ""), flush=True)

    return write


def cmd_train_online(args: argparse.Namespace) -> int:
    settings = _settings(args)
    torch.set_num_threads(settings.torch_threads)
    try:
        catalogue = ItemCatalogue.load(settings.catalogue_dir)
    except (OSError, ValueError) as exc:
        raise CommandError(f"catalogue {settings.catalogue_dir}: {exc}") from None
    reg = ModelRegistry(settings.registry_dir)
    publisher = None if args.no_announce else ModelUpdatePublisher(settings.kafka_bootstrap_servers,
                                                                   settings.topics.model_updates, settings.model_name)
    try:
        checkpoint = reg.checkpoint()
        if checkpoint is not None:
            model, manifest = model_files.load_model(checkpoint)
            start = f"checkpoint {checkpoint.name}"
        elif reg.serving() is not None:
            model, manifest = reg.load()
            start = f"version {manifest['version']}"
        elif args.init is not None:
            model, manifest = model_files.load_model(args.init)
            manifest = reg.publish(model, model_files.load_vocab(manifest), step=0, catalogue_version=catalogue.version,
                                   extra={"train_config": manifest.get("train_config", {}), "source": str(args.init),
                                          **({"generation": manifest["generation"]} if "generation" in manifest
                                             else {})})
            start = f"{args.init}, published as {manifest['version']}"
            if publisher is not None:
                publisher(reg.path(manifest["version"]))
        else:
            raise CommandError(f"registry {settings.registry_dir} is empty: give --init MODEL_DIR")
        if model_files.load_vocab(manifest).to_json() != catalogue.vocab.to_json():
            raise CommandError(f"the model speaks vocabulary {manifest['vocab'].get('version')}, the catalogue "
                               f"{catalogue.vocab.version}")
    except model_files.RegistryError as exc:
        raise CommandError(str(exc)) from None
    overrides = parse_overrides(args.set)
    window = (manifest.get("train_config") or {}).get("window_events")
    if window and "window_events" not in overrides:
        overrides["window_events"] = window
    resumed_config = (manifest.get("checkpoint_state") or {}).get("online_config")
    try:  # a restart keeps the settings it checkpointed with, unless --set changes them
        base = OnlineConfig(**resumed_config) if resumed_config else None
        config = OnlineConfig.from_overrides(base, **overrides)
    except (TypeError, ValueError) as exc:
        raise CommandError(str(exc)) from None
    model.train()
    try:
        trainer = OnlineTrainer(model, catalogue.vocab, catalogue.trie, config)
    except ValueError as exc:  # GenerationError included: e.g. --set beam=4 below the top-10 it must score
        raise CommandError(f"online settings: {exc}") from None
    ensure_topics(settings, [settings.topics.training, settings.topics.model_updates])
    source = KafkaTrainingSource(settings.kafka_bootstrap_servers, settings.topics.training, settings.online_group_id)
    follower = None
    if not args.no_catalogue_follow:
        ensure_topics(settings, [settings.topics.catalogue])
        follower = CatalogueFollower.from_kafka(catalogue.trie, catalogue.vocab, settings.kafka_bootstrap_servers,
                                                settings.topics.catalogue)
    metrics = None
    if settings.online_metrics_port:
        metrics = TrainerMetrics()
        start_http_server(settings.online_metrics_port, registry=metrics.registry)
        print(f"trainer metrics on http://0.0.0.0:{settings.online_metrics_port}/metrics", flush=True)
    loop = OnlineLoop(trainer, reg, source, announce=publisher, catalogue_version=catalogue.version, metrics=metrics,
                      checkpoint_every_steps=settings.checkpoint_every_steps, record_event_ids=args.record_event_ids,
                      log=lambda line: print(line, flush=True), before_batch=follower.drain if follower else None,
                      generation=manifest.get("generation") or (manifest.get("checkpoint_state") or {}).get("generation"),
                      before_announce=_vector_writer(settings, catalogue, reg))
    if not loop.resume():
        loop.parent = reg.latest()
    print(f"online trainer: from {start}; {model.num_parameters():,} parameters; consuming "
          f"{settings.topics.training} as {settings.online_group_id} on {settings.kafka_bootstrap_servers}; "
          f"registry {settings.registry_dir}", flush=True)
    stopping = {"flag": False}

    def _stop(signum, frame):
        stopping["flag"] = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        loop.run(stop=lambda: stopping["flag"], idle_exit_s=args.idle_exit, poll_s=settings.poll_s)
    finally:
        source.close()
        if follower is not None:
            follower.close()
        if publisher is not None:
            publisher.close()
    print(f"stopped: step {trainer.step}, {trainer.events} events, published {len(loop.published)} versions, "
          f"gate refused {len(loop.refused)}, invalid {loop.invalid}", flush=True)
    return 0


# ----- sidstream model ...
def cmd_model_list(args: argparse.Namespace) -> int:
    reg = ModelRegistry(_settings(args).registry_dir)
    rows = reg.list()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print(f"no versions in {reg.root}")
        return 0
    for r in rows:
        if "error" in r:
            print(f"  {r['version']}  UNREADABLE: {r['error']}")
            continue
        flags = ",".join(f for f in ("serving", "latest", "pinned") if r[f])
        pre = (r.get("metrics") or {}).get("prequential") or {}
        quality = (f"recall@10 {pre['recall@10']:.4f} ndcg@10 {pre['ndcg@10']:.4f} over {pre['events']} events"
                   if "recall@10" in pre else "no prequential metrics")
        created = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(r["created"])) if r.get("created") else "?"
        print(f"{'*' if r['serving'] else ' '} {r['version']}  step {r['step']}  parent {r['parent'] or '-'}  "
              f"{created}Z  {quality}  {flags}")
    return 0


def cmd_model_pin(args: argparse.Namespace) -> int:
    settings = _settings(args)
    reg = ModelRegistry(settings.registry_dir)
    try:
        if args.model_command == "pin":
            reg.pin(args.version)
            target = args.version
        elif args.model_command == "rollback":
            target = reg.rollback(args.version)
        else:
            reg.unpin()
            target = reg.latest()
        if target is not None:
            reg.verify(target)
    except RegistryError as exc:
        raise CommandError(str(exc)) from None
    print(f"serving {target} ({'pinned' if reg.pinned() else 'latest'})")
    if target is not None and not args.no_announce:
        try:
            publisher = ModelUpdatePublisher(settings.kafka_bootstrap_servers, settings.topics.model_updates,
                                             settings.model_name)
            publisher(reg.path(target))
            publisher.close()
        except Exception as exc:
            raise CommandError(f"the registry now serves {target}, but announcing it on "
                               f"{settings.topics.model_updates} failed: {exc!r} "
                               f"(retry, or use --no-announce)") from None
        print(f"announced {target} on {settings.topics.model_updates}")
    return 0

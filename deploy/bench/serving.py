"""`sidstream bench serving`: HTTP latency and throughput of the Ray Serve app at concurrency 1, 8 and 32, over
users whose 50-event histories sit in a Feast online store (parser: deploy/cli/serve.py)."""
from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

import httpx
import numpy as np
import torch

from catalogue.bench import machine_info
from catalogue.catalogue import ItemCatalogue, build_catalogue
from catalogue.datasets import load_sequences
from catalogue.settings import CatalogueSettings
from deploy.cli import CommandError
from deploy.localstack import free_port
from deploy.serve import refuse_unavailable_ingress, start_serving
from features.sequences import UserSequence
from features.settings import FeatureSettings
from features.store import UserSequenceStore  # feast itself is imported when the store is first used
from serving.app import shutdown_ray
from serving.bench import batch_counters, breakdown, closed_loop
from serving.settings import ServingSettings
from trainer.model import Transformer
from trainer.pretrain import TrainConfig, model_config_for
from trainer.registry import read_manifest, save_model


def _bench_catalogue(args):
    if args.catalogue:
        return args.catalogue, ItemCatalogue.load(args.catalogue)
    out = args.work_dir / "catalogue"
    if (out / "manifest.json").is_file():
        return out, ItemCatalogue.load(out)
    dataset = args.dataset or CatalogueSettings().data_dir / "amazon_beauty_2014"
    print(f"bench: building the Beauty catalogue (collaborative embeddings) into {out}", flush=True)
    catalogue, _ = build_catalogue([], load_sequences(dataset), out, iterations=10, progress=False,
                                   log=lambda *_: None)
    return out, catalogue


def _bench_model(args, catalogue, window: int = 50) -> Path:
    if args.model:
        return args.model
    out = args.work_dir / f"model-untrained-{catalogue.vocab.version}-w{window}-ec"  # ec: with the event context
    if not (out / "manifest.json").is_file():
        torch.manual_seed(0)
        # the architecture pretraining builds (event context included), at the small size serving is timed with
        config = model_config_for(TrainConfig(d_model=64, n_layers=2, n_heads=2, dropout=0.0, window_events=window),
                                  catalogue.vocab)
        save_model(out, Transformer(config), catalogue.vocab,
                   extra={"train_config": {"window_events": window}, "note": "untrained: cost benchmark only"})
    return out


def cmd_bench_serving(args) -> int:
    started = time.monotonic()
    machine = machine_info()
    print(f"bench serving on {machine['cpu']} ({machine['cores']} cores), load average {machine['load_average']}, "
          f"torch {machine['torch']}", flush=True)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    catalogue_dir, catalogue = _bench_catalogue(args)
    model_dir = _bench_model(args, catalogue)
    manifest = read_manifest(model_dir)
    if (manifest.get("vocab") or {}).get("version") != catalogue.vocab.version:
        raise CommandError(f"model {model_dir} was trained on another codebook version than {catalogue_dir}")

    # the online store: one 50-event history per user
    feast_dir = args.work_dir / "feast"
    os.environ.update({"SIDSTREAM_FEAST_REPO_PATH": str(feast_dir.resolve()), "SIDSTREAM_FEAST_PROJECT": "benchserving",
                       "SIDSTREAM_ONLINE_STORE": "sqlite"})
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

    settings = ServingSettings(model_dir=model_dir.resolve(), catalogue_dir=Path(catalogue_dir).resolve(),
                               replicas=args.replicas, cpus_per_replica=1, torch_threads=args.torch_threads,
                               http_port=free_port(), follow_updates=False, beam_size=20,
                               batch_max_size=args.batch_size, batch_wait_s=args.batch_wait_ms / 1000, api_key=None,
                               generation_thread=args.generation_thread,
                               **({"ingress": args.ingress} if args.ingress else {}))
    refuse_unavailable_ingress(settings)
    seconds = args.seconds or (6.0 if args.quick else 20.0)
    url = f"http://{settings.http_host}:{settings.http_port}/recommend"
    report = {"concurrency": {}, "breakdown_ms": {}}
    try:
        start_serving(settings, num_cpus=max(2, args.replicas))
        print(f"bench: Ray Serve up ({time.monotonic() - started:.0f} s); {seconds:.0f} s per concurrency", flush=True)
        body = lambda n: {"user_id": users[n % len(users)], "k": 10, "exclude_seen": True}  # noqa: E731
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

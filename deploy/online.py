"""Wiring of the online post-trainer: `sidstream train online` (also `sidstream train-online`),
`sidstream model list|pin|unpin|rollback` and `sidstream bench online`.

The trainer's core is trainer/online.py (pure), its Kafka adapter trainer/online_kafka.py, the registry
trainer/model_registry.py; this module only plugs them together and parses arguments.
"""
from __future__ import annotations

import argparse
import json
import signal
import time
from pathlib import Path


def _online_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--registry", type=Path, help="model registry folder (default: SIDSTREAM_REGISTRY_DIR)")
    p.add_argument("--catalogue", type=Path, help="catalogue folder (default: SIDSTREAM_CATALOGUE_DIR)")
    p.add_argument("--init", type=Path, help="model directory (e.g. a pretrain run's model/) published as the first "
                                             "version when the registry is empty")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="online setting, e.g. --set micro_batch=16 --set replay_ratio=1 --set publish_every_s=10")
    p.add_argument("--group-id", help="consumer group (default: SIDSTREAM_ONLINE_GROUP_ID)")
    p.add_argument("--idle-exit", type=float, help="stop (with a final checkpoint) after this many idle seconds")
    p.add_argument("--record-event-ids", action="store_true",
                   help="keep the (partition, offset, event id) of every trained example in the checkpoint (tests)")
    p.add_argument("--no-announce", action="store_true", help="publish versions without a model-updates message")
    p.add_argument("--no-catalogue-follow", action="store_true",
                   help="do not follow the catalogue topic (new items then stay unknown to prequential scoring)")
    p.set_defaults(func=cmd_train_online)


def register(commands, bench) -> None:
    train = commands.choices.get("train")
    if train is not None:  # attach under `sidstream train` when the trainer room registered first
        for action in train._actions:
            if isinstance(action, argparse._SubParsersAction):
                _online_arguments(action.add_parser("online", help="online post-trainer on the training topic"))
    _online_arguments(commands.add_parser("train-online", help="online post-trainer on the training topic"))

    model = commands.add_parser("model", help="the model registry: list, pin, unpin, rollback")
    model.add_argument("--registry", type=Path, help="registry folder (default: SIDSTREAM_REGISTRY_DIR)")
    sub = model.add_subparsers(dest="model_command", metavar="ACTION")
    model.set_defaults(func=lambda args: (model.print_help(), 2)[1])
    ls = sub.add_parser("list", help="versions, oldest first, with lineage, metrics and pointers")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=cmd_model_list)
    for name, text in (("pin", "serve VERSION until unpinned"), ("rollback", "pin --to VERSION, or the parent "
                                                                             "of the version served now")):
        p = sub.add_parser(name, help=text)
        if name == "pin":
            p.add_argument("version")
        else:
            p.add_argument("--to", dest="version")
        p.add_argument("--no-announce", action="store_true", help="change the pointer only (no model-updates message)")
        p.set_defaults(func=cmd_model_pin)
    unpin = sub.add_parser("unpin", help="follow LATEST again")
    unpin.add_argument("--no-announce", action="store_true")
    unpin.set_defaults(func=cmd_model_pin)

    b = bench.add_parser("online", help="prequential continual vs frozen on a chronological Beauty replay")
    b.add_argument("--out", required=True, type=Path)
    b.add_argument("--dataset", type=Path, help="dataset folder (default: <data_dir>/amazon_beauty_2014)")
    b.add_argument("--quick", action="store_true", help="a few thousand events, tiny model: minutes")
    b.add_argument("--users", type=int, default=None,
                   help="replay a random sample of this many users (default: 1,500 with --quick, else all)")
    b.add_argument("--work-dir", type=Path, default=Path("var/bench/online"))
    b.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="online setting")
    b.add_argument("--threads", type=int, default=2)
    b.add_argument("--scenario", choices=("beauty", "shift"), default="beauty",
                   help="beauty: chronological Beauty replay; shift: synthetic world with a taste shift at a known "
                        "event, recovery curves of continual vs frozen")
    b.set_defaults(func=cmd_bench_online)


# ----- sidstream train online
def _settings(args):
    from trainer.online_settings import OnlineSettings

    settings = OnlineSettings()
    updates = {}
    if getattr(args, "registry", None):
        updates["registry_dir"] = args.registry
    if getattr(args, "catalogue", None):
        updates["catalogue_dir"] = args.catalogue
    if getattr(args, "group_id", None):
        updates["online_group_id"] = args.group_id
    return settings.model_copy(update=updates)


def cmd_train_online(args: argparse.Namespace) -> int:
    import torch

    from catalogue.catalogue import ItemCatalogue
    from deploy.cli import CommandError
    from streams.topics import ensure_topics
    from trainer import registry as model_files
    from trainer.cli import parse_overrides
    from trainer.model_registry import ModelRegistry
    from trainer.online import OnlineConfig, OnlineLoop, OnlineTrainer
    from trainer.online_kafka import KafkaTrainingSource, ModelUpdatePublisher

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
                                   extra={"train_config": manifest.get("train_config", {}), "source": str(args.init)})
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
        from trainer.online_kafka import CatalogueFollower

        follower = CatalogueFollower.from_kafka(catalogue.trie, catalogue.vocab, settings.kafka_bootstrap_servers,
                                                settings.topics.catalogue)
    metrics = None
    if settings.online_metrics_port:
        from prometheus_client import start_http_server

        from trainer.online_metrics import TrainerMetrics

        metrics = TrainerMetrics()
        start_http_server(settings.online_metrics_port, registry=metrics.registry)
        print(f"trainer metrics on http://0.0.0.0:{settings.online_metrics_port}/metrics", flush=True)
    loop = OnlineLoop(trainer, reg, source, announce=publisher, catalogue_version=catalogue.version, metrics=metrics,
                      checkpoint_every_steps=settings.checkpoint_every_steps, record_event_ids=args.record_event_ids,
                      log=lambda line: print(line, flush=True), before_batch=follower.drain if follower else None)
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
    from trainer.model_registry import ModelRegistry

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
    from deploy.cli import CommandError
    from trainer.model_registry import ModelRegistry
    from trainer.registry import RegistryError

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
        from trainer.online_kafka import ModelUpdatePublisher

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


# ----- sidstream bench online
def cmd_bench_online(args: argparse.Namespace) -> int:
    from trainer.cli import parse_overrides

    if args.scenario == "shift":
        run_shift_bench(args, parse_overrides(args.set))
    else:
        run_online_bench(args, parse_overrides(args.set))
    return 0


def replay_world(raw: dict, users, cut_fraction: float, held_fraction: float, seed: int = 0):
    """Split each user's history at `cut_fraction` of its events: the prefix is the logged past, the rest the
    stream, ordered by relative position (sequences.txt keeps order, not timestamps). A random share of items is
    held back: dropped from the past, so they first appear mid-stream as new items."""
    import numpy as np

    rng = np.random.default_rng(seed)
    items = sorted({i for u in users for i in raw[u]}, key=lambda s: (len(s), s))
    held = set(rng.choice(items, size=max(1, int(held_fraction * len(items))), replace=False).tolist())
    past, stream = {}, []
    for u in users:
        seq = raw[u]
        cut = max(2, int(round(cut_fraction * len(seq))))
        past[u] = [i for i in seq[:cut] if i not in held]
        stream.extend((k / len(seq), int(u), u, seq[k]) for k in range(cut, len(seq)))
    stream.sort()
    return past, [(u, item) for _, _, u, item in stream], held


def run_online_bench(args, overrides: dict) -> dict:
    import copy
    import tempfile

    import numpy as np
    import torch

    from catalogue.settings import CatalogueSettings
    from trainer.bench_quality import environment, prepare_catalogue
    from trainer.data import AMAZON_ACTION, EvalCase, LeaveOneOut, Tokenizer, load_amazon_split
    from trainer.model_registry import ModelRegistry
    from trainer.online import OnlineConfig, OnlineTrainer, StreamExample
    from trainer.pretrain import TrainConfig, pretrain
    from trainer.settings import TrainerSettings

    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    dataset = args.dataset or CatalogueSettings().data_dir / "amazon_beauty_2014"
    raw, split = load_amazon_split(dataset)
    catalogue = prepare_catalogue(dataset, raw, split, None, TrainerSettings().bench_dir / "catalogues")
    vocab = catalogue.vocab
    rng = np.random.default_rng(0)
    users = sorted(raw, key=int)
    sample = getattr(args, "users", None)
    sample = sample if sample is not None else 1500 if args.quick else None
    if sample is not None:
        if sample < 1:
            from deploy.errors import CommandError

            raise CommandError("--users must be >= 1")
        users = sorted(rng.choice(users, size=min(sample, len(users)), replace=False).tolist(), key=int)
    past, stream, held = replay_world(raw, users, cut_fraction=0.7, held_fraction=0.03)
    tokens_of = {i: catalogue.tokens_of(i) for i in {i for u in users for i in raw[u]}}
    for item in held:
        if item in catalogue.trie:
            catalogue.trie.remove(item)
    tokenizer = Tokenizer(vocab, tokens_of)
    print(f"bench online: {len(users):,} users, {sum(map(len, past.values())):,} past events, {len(stream):,} stream "
          f"events, {len(held):,} held-back items ({sum(1 for _, i in stream if i in held):,} of their events)",
          flush=True)

    # pretrain on the past (validation: each user's last past event, on a sample)
    events = {u: [(i, AMAZON_ACTION) for i in seq] for u, seq in past.items() if len(seq) >= 2}
    val_users = sorted(rng.choice(sorted(events), size=min(500, len(events)), replace=False).tolist())
    split_past = LeaveOneOut(train={u: ev[:-1] if u in set(val_users) else ev for u, ev in events.items()},
                             validation=[EvalCase(u, tuple(events[u][:-1]), events[u][-1][0]) for u in val_users],
                             test=[])
    train_config = TrainConfig.from_overrides(d_model=64, n_layers=2, n_heads=2, window_events=20, batch_size=128,
                                              time_budget_s=90.0 if args.quick else 600.0, max_epochs=50,
                                              warmup_steps=50, val_users=500, patience=3, threads=args.threads)
    result = pretrain(split_past, tokenizer, catalogue.trie, train_config, out_dir=None, progress=False,
                      log=lambda line: print(f"  pretrain: {line}", flush=True))
    base = result.model

    config = OnlineConfig.from_overrides(**{"micro_batch": 32, "replay_ratio": 1.0, "lr": 5e-4, "beam": 10,
                                            "window_events": train_config.window_events, "publish_every_s": 10.0,
                                            "publish_every_steps": 10**9, "gate_min_events": 1, **overrides})
    continual = OnlineTrainer(copy.deepcopy(base), vocab, catalogue.trie, config)
    frozen = OnlineTrainer(copy.deepcopy(base), vocab, catalogue.trie, config, learn=False)
    continual.seed_replay([tokenizer.encode(ev, train_config.window_events, bos=False) for ev in events.values()])
    history = {u: list(seq) for u, seq in past.items()}
    arrived: set[str] = set()
    counts = {name: {"slots": 0, "new_slots": 0} for name in ("continual", "frozen")}
    hits = {"continual": [], "frozen": []}
    ndcgs = {"continual": [], "frozen": []}
    losses = {"continual": [], "frozen": []}
    new_interactions = 0
    waiting: list[float] = []  # arrival times of events trained on but not yet in a published version
    latencies: list[float] = []
    args.work_dir.mkdir(parents=True, exist_ok=True)
    registry_dir = Path(tempfile.mkdtemp(prefix="online-bench-registry-", dir=args.work_dir))
    reg = ModelRegistry(registry_dir)
    parent = None
    t_stream = time.perf_counter()
    last_report = t_stream
    for start in range(0, len(stream), config.micro_batch):
        chunk = stream[start : start + config.micro_batch]
        arrival = time.perf_counter()
        examples = []
        for user, item in chunk:
            if item in held and item not in arrived:  # a new item enters the catalogue when it first shows up
                catalogue.trie.insert(item, tuple(vocab.tokens_to_sid(tokens_of[item])))
                arrived.add(item)
            new_interactions += item in held
            history[user].append(item)
            window = [(i, AMAZON_ACTION) for i in history[user][-config.window_events:]]
            examples.append(StreamExample(tokenizer.encode(window, bos=False), user_id=user))
        for name, trainer in (("continual", continual), ("frozen", frozen)):
            predictions = trainer.process(examples).predictions
            hits[name].extend(p.hit for p in predictions)
            ndcgs[name].extend(p.ndcg for p in predictions)
            losses[name].extend(p.action_logloss for p in predictions)
            for p in predictions:
                counts[name]["slots"] += len(p.ranked)
                counts[name]["new_slots"] += sum(1 for i in p.ranked if i in held)
        waiting.extend([arrival] * len(examples))
        if continual.publish_due():
            manifest = reg.publish(continual.model, vocab, step=continual.step, parent=parent,
                                   metrics={"prequential": continual.candidate_metrics()},
                                   catalogue_version=catalogue.version)
            parent = manifest["version"]
            done = time.perf_counter()
            latencies.extend(done - t for t in waiting)
            waiting = []
            continual.mark_published()
        now = time.perf_counter()
        if now - last_report >= 15:
            last_report = now
            print(f"  stream {start + len(chunk):,}/{len(stream):,} events, {now - t_stream:.0f}s: recall@10 "
                  f"continual {np.mean(hits['continual']):.4f} frozen {np.mean(hits['frozen']):.4f}", flush=True)

    out = {name: {"recall@10": float(np.mean(hits[name])), "ndcg@10": float(np.mean(ndcgs[name])),
                  "action_logloss": float(np.mean(losses[name])), "events": len(hits[name])}
           for name in ("continual", "frozen")}
    out["relative_gain"] = (out["continual"]["recall@10"] / out["frozen"]["recall@10"] - 1.0
                            if out["frozen"]["recall@10"] > 0 else None)
    out["new_items"] = {name: {"top10_share": c["new_slots"] / max(c["slots"], 1),
                               "interaction_share": new_interactions / max(len(stream), 1)}
                        for name, c in counts.items()}
    out["event_to_served_s"] = {
        "p50": float(np.median(latencies)) if latencies else None,
        "max": float(np.max(latencies)) if latencies else None,
        "scope": "in-process: event read by the trainer -> trained -> a registry version holding it written "
                 f"(publish every {config.publish_every_s:.0f}s); Kafka transport and the replica's swap are not "
                 "included",
        "versions_published": len(reg.versions())}
    chunks = 10
    out["curves"] = {name: [float(np.mean(part)) for part in np.array_split(np.asarray(hits[name]), chunks)]
                     for name in hits}
    out["configuration"] = {
        "dataset": str(dataset), "users": len(users), "quick": bool(args.quick), "past_events":
        sum(map(len, past.values())), "stream_events": len(stream), "held_items": len(held), "cut_fraction": 0.7,
        "order": "per-user order from sequences.txt (no timestamps): the stream is sorted by each event's relative "
                 "position in its user's history",
        "pretrain": {"seconds": result.train_seconds, "epochs": result.epochs, "val": result.best_metrics,
                     "d_model": train_config.d_model, "n_layers": train_config.n_layers},
        "online": {k: v for k, v in vars(config).items()}, "stream_seconds": time.perf_counter() - t_stream,
        "total_seconds": time.perf_counter() - t_start, "catalogue_version": catalogue.version}
    out["environment"] = environment()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"measured on {out['environment']['cpu']}, {out['environment']['threads']} threads, torch "
          f"{out['environment']['torch']}")
    print(f"prequential on {len(stream):,} stream events: continual recall@10 {out['continual']['recall@10']:.4f} "
          f"ndcg@10 {out['continual']['ndcg@10']:.4f} | frozen recall@10 {out['frozen']['recall@10']:.4f} "
          f"ndcg@10 {out['frozen']['ndcg@10']:.4f} | relative gain "
          f"{out['relative_gain'] if out['relative_gain'] is None else round(out['relative_gain'], 4)}")
    print(f"new items: {json.dumps(out['new_items'])}; event to published version: p50 "
          f"{out['event_to_served_s']['p50']} s, max {out['event_to_served_s']['max']} s; wrote {args.out}")
    return out


def shift_world(chains: int = 6, chain_length: int = 48, users: int = 600, past_events: int = 12,
                stream_events: int = 6000, shift_at: int = 2000, follow: float = 0.85, seed: int = 0):
    """Items on chains; a user walks a chain (the successor with probability `follow`, else a random item of the
    chain). At stream event `shift_at` every chain's successor map is replaced by a random permutation: the
    taste shift. Returns (item embeddings, past sequences, stream [(user, item)], shift_at)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    n = chains * chain_length
    centres = rng.standard_normal((chains, 8))
    embeddings = np.repeat(centres, chain_length, 0) + 0.3 * rng.standard_normal((n, 8))
    before = {i: (i // chain_length) * chain_length + (i % chain_length + 1) % chain_length for i in range(n)}
    after = {}
    for c in range(chains):
        members = np.arange(c * chain_length, (c + 1) * chain_length)
        order = rng.permutation(members)
        after.update({int(order[k]): int(order[(k + 1) % chain_length]) for k in range(chain_length)})

    def step(item, successor):
        if rng.random() < follow:
            return successor[item]
        return int((item // chain_length) * chain_length + rng.integers(chain_length))

    position, past = {}, {}
    for u in range(users):
        item = int(rng.integers(n))
        seq = [item]
        for _ in range(past_events - 1):
            item = step(item, before)
            seq.append(item)
        past[str(u)], position[str(u)] = [str(i) for i in seq], item
    stream = []
    for t in range(stream_events):
        u = str(int(rng.integers(users)))
        position[u] = step(position[u], before if t < shift_at else after)
        stream.append((u, str(position[u])))
    return embeddings.astype("float32"), past, stream, shift_at


def recovery_events(curve: list[float], bucket: int, shift_at: int, target: float) -> int | None:
    """Events after the shift until a bucket's Recall@10 is back at `target` (None: never)."""
    first = shift_at // bucket
    for k in range(first, len(curve)):
        if curve[k] >= target:
            return (k + 1) * bucket - shift_at
    return None


def run_shift_bench(args, overrides: dict) -> dict:
    import copy

    import numpy as np
    import torch

    from catalogue.catalogue import ItemCatalogue
    from trainer.bench_quality import environment
    from trainer.data import EvalCase, LeaveOneOut, Tokenizer
    from trainer.online import OnlineConfig, OnlineTrainer, StreamExample
    from trainer.pretrain import TrainConfig, pretrain

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    quick = bool(args.quick)
    embeddings, past, stream, shift_at = shift_world(users=400 if quick else 600,
                                                     stream_events=5000 if quick else 8000,
                                                     shift_at=2000 if quick else 3000)
    ids = [str(i) for i in range(len(embeddings))]
    catalogue = ItemCatalogue.fit(ids, embeddings, levels=2, codes_per_level=16, suffix_size=32, iterations=10,
                                  actions=("purchase",), progress=None)
    vocab = catalogue.vocab
    tokenizer = Tokenizer(vocab, catalogue.tokens_of)
    action = "purchase"
    events = {u: [(i, action) for i in seq] for u, seq in past.items()}
    val = sorted(events)[:200]
    split = LeaveOneOut(train={u: ev[:-1] if u in set(val) else ev for u, ev in events.items()},
                        validation=[EvalCase(u, tuple(events[u][:-1]), events[u][-1][0]) for u in val], test=[])
    train_config = TrainConfig.from_overrides(d_model=32, n_layers=2, n_heads=2, window_events=8, batch_size=64,
                                              dropout=0.0, time_budget_s=120.0 if quick else 300.0, max_epochs=80,
                                              warmup_steps=20, val_users=200, patience=100, eval_every=5,
                                              eval_beam=10, threads=args.threads, lr=3e-3)
    result = pretrain(split, tokenizer, catalogue.trie, train_config, out_dir=None, progress=False,
                      log=lambda line: print(f"  pretrain: {line}", flush=True))
    config = OnlineConfig.from_overrides(**{"micro_batch": 16, "replay_ratio": 0.5, "lr": 1e-3, "beam": 10,
                                            "window_events": train_config.window_events, "exclude_seen": False,
                                            **overrides})
    continual = OnlineTrainer(copy.deepcopy(result.model), vocab, catalogue.trie, config)
    frozen = OnlineTrainer(copy.deepcopy(result.model), vocab, catalogue.trie, config, learn=False)
    continual.seed_replay([tokenizer.encode(ev, train_config.window_events, bos=False) for ev in events.values()])
    history = {u: list(seq) for u, seq in past.items()}
    hits = {"continual": [], "frozen": []}
    last = time.perf_counter()
    for start in range(0, len(stream), config.micro_batch):
        examples = []
        for user, item in stream[start : start + config.micro_batch]:
            history[user].append(item)
            window = [(i, action) for i in history[user][-config.window_events:]]
            examples.append(StreamExample(tokenizer.encode(window, bos=False), user_id=user))
        for name, trainer in (("continual", continual), ("frozen", frozen)):
            hits[name].extend(p.hit for p in trainer.process(examples).predictions)
        if time.perf_counter() - last > 15:
            last = time.perf_counter()
            print(f"  stream {start:,}/{len(stream):,}: recall@10 last 500 continual "
                  f"{np.mean(hits['continual'][-500:]):.3f} frozen {np.mean(hits['frozen'][-500:]):.3f}", flush=True)
    bucket = 500
    curves = {name: [float(np.mean(h[k : k + bucket])) for k in range(0, len(h), bucket)] for name, h in hits.items()}
    pre = {name: float(np.mean(h[max(0, shift_at - 1000) : shift_at])) for name, h in hits.items()}
    out = {"shift_at_event": shift_at, "bucket_events": bucket, "curves": curves, "pre_shift_recall@10": pre,
           "recovery_target": "a 500-event bucket's Recall@10 >= 0.9 x that model's own pre-shift Recall@10 "
                              "(mean over the 1000 events before the shift)",
           "events_to_recover": {name: recovery_events(curves[name], bucket, shift_at, 0.9 * pre[name])
                                 for name in curves},
           "post_shift_recall@10_last_1000": {name: float(np.mean(h[-1000:])) for name, h in hits.items()},
           "configuration": {"quick": quick, "items": len(ids), "users": len(past), "stream_events": len(stream),
                             "pretrain_seconds": result.train_seconds, "pretrain_val": result.best_metrics,
                             "online": vars(config), "seconds": time.perf_counter() - t0,
                             "world": "6 chains x 48 items; successor followed with p=0.85; at the shift every "
                                      "chain's successor map is replaced by a random permutation"},
           "environment": environment()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"measured on {out['environment']['cpu']}, {out['environment']['threads']} threads, "
          f"torch {out['environment']['torch']}")
    for name in curves:
        print(f"{name:9s} pre-shift recall@10 {pre[name]:.3f}; events to recover {out['events_to_recover'][name]}; "
              f"curve ({bucket}-event buckets, shift after bucket {shift_at // bucket}): "
              + " ".join(f"{v:.2f}" for v in curves[name]))
    print(f"wrote {args.out}")
    return out

"""`sidstream bench online`: prequential Recall@10 of a continually trained model against a frozen copy, on a
chronological Beauty replay with held-back items arriving mid-stream (`--scenario shift`: deploy/bench/shift.py).
Parser: deploy/cli/online.py."""
from __future__ import annotations

import argparse
import copy
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from catalogue.settings import CatalogueSettings
from deploy.bench.shift import run_shift_bench
from deploy.cli import CommandError, parse_overrides
from trainer.bench_quality import environment, prepare_catalogue
from trainer.data import AMAZON_ACTION, EvalCase, LeaveOneOut, Tokenizer, load_split
from trainer.model_registry import ModelRegistry
from trainer.online import OnlineConfig, OnlineTrainer, StreamExample
from trainer.pretrain import TrainConfig, pretrain
from trainer.settings import TrainerSettings


def cmd_bench_online(args: argparse.Namespace) -> int:
    if args.scenario == "shift":
        run_shift_bench(args, parse_overrides(args.set))
    else:
        run_online_bench(args, parse_overrides(args.set))
    return 0


def replay_world(raw: dict, users, cut_fraction: float, held_fraction: float, seed: int = 0):
    """Split each user's history at `cut_fraction` of its events: the prefix is the logged past, the rest the
    stream, ordered by relative position (sequences.txt keeps order, not timestamps). A random share of items is
    held back: dropped from the past, so they first appear mid-stream as new items."""
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
    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    dataset = args.dataset or CatalogueSettings().data_dir / "amazon_beauty_2014"
    raw, split = load_split(dataset)
    catalogue = prepare_catalogue(dataset, raw, split, None, TrainerSettings().bench_dir / "catalogues")
    vocab = catalogue.vocab
    rng = np.random.default_rng(0)
    users = sorted(raw, key=int)
    sample = getattr(args, "users", None)
    sample = sample if sample is not None else 1500 if args.quick else None
    if sample is not None:
        if sample < 1:
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



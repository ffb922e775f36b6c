"""The demo's worlds: a logged past and a stream to replay, with the items that arrive mid-stream held back, and
the catalogue and the quickly pretrained model the demo starts from (both cached)."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from catalogue.catalogue import ItemCatalogue, build_catalogue
from catalogue.datasets import is_movielens, load_item_meta, load_movielens, load_sequences
from catalogue.vocab import ACTIONS
from deploy.bench.online import replay_world
from trainer.data import AMAZON_ACTION, EvalCase, LeaveOneOut, Tokenizer
from trainer.pretrain import TrainConfig, pretrain
from trainer.synthetic import SyntheticWorld, WorldConfig, by_user, world_catalogue

PAST_FRACTION = 0.7
HELD_FRACTION = 0.03


@dataclass
class World:
    name: str
    past: dict[str, list[tuple[str, str]]]  # user -> [(item, action)] before the stream starts
    stream: list[tuple[str, str, str]]  # (user, item, action) in stream order
    held: dict[str, dict]  # item id -> item record (title, ...) for the items that arrive mid-stream
    items: list[dict]  # records of every item the catalogue is built from (held ones excluded later)
    sequences: dict[str, list[str]] = field(default_factory=dict)  # for collaborative embeddings
    actions: tuple[str, ...] = ACTIONS  # the action tokens the catalogue declares


def dataset_world(dataset: Path) -> World:
    """The world of a dataset folder: MovieLens (real actions) or Amazon (purchases)."""
    return movielens_world(dataset) if is_movielens(dataset) else beauty_world(dataset)


def beauty_world(dataset: Path, seed: int = 0) -> World:
    raw = load_sequences(dataset)
    users = sorted(raw, key=int)
    past, stream, held = replay_world(raw, users, cut_fraction=PAST_FRACTION, held_fraction=HELD_FRACTION, seed=seed)
    meta = {str(i["item_id"]): i for i in load_item_meta(dataset)}
    items = list(meta.values()) + [{"item_id": i} for i in sorted({i for s in raw.values() for i in s} - set(meta))]
    return World(dataset.name, {u: [(i, AMAZON_ACTION) for i in seq] for u, seq in past.items()},
                 [(u, i, AMAZON_ACTION) for u, i in stream], {i: meta.get(i, {"item_id": i}) for i in held}, items,
                 sequences={u: s for u, s in past.items()})


def movielens_world(dataset: Path) -> World:
    """MovieLens in real time order: the first 70% of all ratings (by timestamp) are the logged past, the rest the
    stream, with each rating's action; films first rated after the cut arrive mid-stream as new items."""
    ml = load_movielens(dataset)
    ratings = sorted((r for rs in ml.ratings.values() for r in rs), key=lambda r: (r.timestamp, int(r.user), r.item))
    cut = int(len(ratings) * PAST_FRACTION)
    known = {r.item for r in ratings[:cut]}
    past: dict[str, list[tuple[str, str]]] = {}
    for r in ratings[:cut]:
        past.setdefault(r.user, []).append((r.item, r.action))
    meta = {i["item_id"]: i for i in ml.items}
    rated = {r.item for r in ratings}
    held = {i: meta[i] for i in sorted(rated - known, key=int)}
    return World(dataset.name, past, [(r.user, r.item, r.action) for r in ratings[cut:]], held,
                 [meta[i] for i in sorted(rated, key=int)],
                 sequences={u: [i for i, _ in ev] for u, ev in past.items()}, actions=ml.actions)


def synthetic_world(seed: int = 0) -> World:
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
    target = work / "catalogue"
    if (target / "manifest.json").is_file():
        log(f"catalogue: reusing {target}")
        return target
    if world.name == "synthetic":
        catalogue = world_catalogue(SyntheticWorld(WorldConfig(seed=0, users=1500)))
    else:
        log(f"catalogue: embedding {len(world.items):,} items (MiniLM text; collaborative for items without text)")
        catalogue, _ = build_catalogue(world.items, world.sequences, work / "catalogue-full", progress=True, log=log,
                                       actions=world.actions)
    for item in world.held:
        if item in catalogue:
            catalogue.remove_item(item)
    catalogue.save(target, extra_manifest={"demo": {"held_back_items": len(world.held), "world": world.name}})
    log(f"catalogue: {len(catalogue):,} items in {target} ({len(world.held):,} held back as new items)")
    return target


def prepare_model(world: World, catalogue_dir: Path, work: Path, seconds: float, log) -> Path:
    """A quick pretrain on the logged past, cached per catalogue version."""
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
    graded = len({a for ev in events.values() for _, a in ev}) > 1  # real actions to learn (MovieLens)
    config = TrainConfig.from_overrides(d_model=64, n_layers=2, n_heads=2, window_events=20, batch_size=128,
                                        action_weight=1.0 if graded else 0.1,
                                        time_budget_s=seconds, max_epochs=50, warmup_steps=50, val_users=500,
                                        patience=3, threads=max(1, min(2, os.cpu_count() or 1)))
    log(f"model: pretraining on {sum(map(len, events.values())):,} past events for up to {seconds:.0f}s")
    result = pretrain(split, Tokenizer(catalogue.vocab, catalogue.tokens_of), catalogue.trie, config,
                      out_dir=run_dir, progress=False, log=lambda line: log(f"  pretrain: {line}"))
    log(f"model: {result.epochs} epochs in {result.train_seconds:.0f}s, validation {json.dumps(result.best_metrics)}")
    return run_dir / "model"

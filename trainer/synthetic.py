"""A synthetic world for what the Amazon logs lack: explicit actions, drifting tastes, new items.

Everything is drawn from one seed, so the world is reproducible:
- items live in latent clusters (topic -> subtopic -> item vector) and carry text made from their
  topic's and subtopic's words, so a text encoder (and the catalogue's codebooks) can recover the clusters;
  some items are born later than step 0 (new items appearing over time);
- users start with a taste near one or two topics and drift (a small random walk per event, with an
  occasional jump to another topic);
- at each event the user is shown one item (half the time close to their taste, half the time at random
  among the items already born) and answers with click, skip, like or downvote drawn from a known model:
      affinity = cos(taste, item) * sharpness + quality(item)
      logits   = {click: a, skip: 0, like: 1.6 a - 1.5, downvote: -1.8 a - 1.5}
  `Interaction.probs` keeps those ground-truth probabilities, the ceiling any learned model is held to.
`run_action_bench` trains the transformer on 80% of the users and compares, on every event of the other
20%, the AUC of its predicted P(click), P(downvote) and P(like) with the AUC of the ground-truth
probabilities, next to two references (the item prior and a history reference).
"""
from __future__ import annotations

import json
import math
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from trainer.overrides import refuse_unknown
from catalogue.catalogue import ItemCatalogue
from catalogue.vocab import ACTIONS
import torch
from trainer.pretrain import TrainConfig
from trainer.data import Tokenizer, leave_one_out
from trainer.actions import predicted_action_probs
from trainer.metrics import auc
from trainer.pretrain import pretrain

WORLD_ACTIONS = ("click", "skip", "like", "downvote")
_TOPIC_WORDS = [
    "hiking trail boots tent", "lipstick matte gloss shade", "espresso grinder roast bean",
    "guitar string amp pedal", "yoga mat stretch block", "puzzle board dice strategy",
    "garden seed soil pot", "laptop stand keyboard usb", "novel mystery thriller paperback",
    "swim goggles cap pool", "dog leash chew collar", "bike helmet chain pedal",
    "skincare serum retinol cream", "camera lens tripod filter", "tea matcha kettle leaf",
    "running shoe sock pace",
]
_SUB_WORDS = ["classic", "pro", "mini", "eco", "deluxe", "travel", "kids", "vintage", "sport", "smart",
              "organic", "ultra", "compact", "premium", "basic", "limited"]


@dataclass
class WorldConfig:
    seed: int = 0
    topics: int = 8
    subtopics: int = 4
    items: int = 2000
    new_item_share: float = 0.2  # share of items born after step 0, spread over the timeline
    users: int = 2000
    events_per_user: tuple[int, int] = (20, 40)
    dim: int = 16
    topic_spread: float = 0.35  # subtopic offset scale relative to the topic centre
    item_spread: float = 0.25
    drift: float = 0.08  # taste random walk per event (norm of the step on the unit sphere)
    jump_prob: float = 0.02  # chance per event that a taste jumps to another topic
    sharpness: float = 3.0
    shown_near_taste: float = 0.5


@dataclass(frozen=True)
class SyntheticItem:
    item_id: str
    title: str
    topic: int
    subtopic: int
    born: int  # first step the item can be shown
    quality: float
    vector: tuple[float, ...] = field(repr=False)

    def record(self) -> dict:
        return {"item_id": self.item_id, "title": self.title, "categories": [f"topic{self.topic}",
                f"topic{self.topic}/sub{self.subtopic}"], "ts": self.born}


@dataclass(frozen=True)
class PlantedTrigger:
    """A known cause to find: a user who likes `item_id` goes on to like the items of `topic` (their affinity for
    that topic's items rises by `boost`, in affinity units, from the next event on). Until a user has been shown
    the item, it is shown with probability `show` at each event, so enough users meet it."""
    item_id: str
    topic: int
    boost: float = 2.5
    show: float = 0.1


def choose_trigger(world: "SyntheticWorld", topic: int = 0) -> PlantedTrigger:
    """The trigger of the analysis bench: the best-quality item of another topic that exists from the start
    (often liked even by users far from its topic, so many users are triggered)."""
    rows = [r for r, it in enumerate(world.items) if it.topic != topic and it.born == 0]
    if not rows:
        raise ValueError("no item outside the trigger topic exists from the start")
    best = max(rows, key=lambda r: world.quality[r])
    return PlantedTrigger(world.items[best].item_id, topic)


@dataclass(frozen=True)
class Interaction:
    user_id: str
    item_id: str
    action: str
    ts: int
    probs: tuple[float, ...]  # ground-truth P(action) in WORLD_ACTIONS order


def action_probabilities(affinity: np.ndarray) -> np.ndarray:
    """The ground-truth action model: [..., ] affinity -> [..., 4] probabilities (WORLD_ACTIONS order)."""
    a = np.asarray(affinity, dtype=np.float64)
    logits = np.stack([a, np.zeros_like(a), 1.6 * a - 1.5, -1.8 * a - 1.5], axis=-1)
    logits -= logits.max(-1, keepdims=True)
    p = np.exp(logits)
    return p / p.sum(-1, keepdims=True)


class SyntheticWorld:
    def __init__(self, config: WorldConfig | None = None):
        self.config = config = config or WorldConfig()
        if config.topics > len(_TOPIC_WORDS) or config.subtopics > len(_SUB_WORDS):
            raise ValueError(f"at most {len(_TOPIC_WORDS)} topics and {len(_SUB_WORDS)} subtopics")
        rng = np.random.default_rng(config.seed)
        self.topic_centres = _unit(rng.standard_normal((config.topics, config.dim)))
        offsets = rng.standard_normal((config.topics, config.subtopics, config.dim)) * config.topic_spread / math.sqrt(config.dim)
        self.sub_centres = _unit(self.topic_centres[:, None, :] + offsets * math.sqrt(config.dim) / 2)
        self.horizon = config.events_per_user[1]
        self.items: list[SyntheticItem] = []
        for i in range(config.items):
            topic, sub = int(rng.integers(config.topics)), int(rng.integers(config.subtopics))
            vec = _unit(self.sub_centres[topic, sub] + rng.standard_normal(config.dim) * config.item_spread / math.sqrt(config.dim) * 2)
            born = 0 if rng.random() >= config.new_item_share else int(rng.integers(1, self.horizon))
            words = _TOPIC_WORDS[topic].split()
            picked = rng.choice(words, size=2, replace=False)
            title = f"{_SUB_WORDS[sub]} {picked[0]} {picked[1]} no. {i}"
            self.items.append(SyntheticItem(str(i + 1), title, topic, sub, born, float(rng.normal(0, 0.3)),
                                            tuple(float(v) for v in vec)))
        self.item_matrix = np.array([it.vector for it in self.items])
        self.row_of = {it.item_id: row for row, it in enumerate(self.items)}  # item id -> row of item_matrix
        self.born = np.array([it.born for it in self.items])
        self.quality = np.array([it.quality for it in self.items])
        self._rng = rng

    def item_records(self) -> list[dict]:
        return [it.record() for it in self.items]

    def simulate(self, trigger: PlantedTrigger | None = None) -> list[Interaction]:
        """Every user's events in time order (ts = step); deterministic given the config's seed. With a
        `trigger`, its rule is planted (the world without one is drawn exactly as before)."""
        cfg = self.config
        rng = np.random.default_rng(cfg.seed + 1)
        out: list[Interaction] = []
        if trigger is not None:
            trigger_row = self.row_of[trigger.item_id]
            boost = np.array([trigger.boost if it.topic == trigger.topic else 0.0 for it in self.items])
        for u in range(cfg.users):
            topics = rng.choice(cfg.topics, size=int(rng.integers(1, 3)), replace=False)
            taste = _unit(self.topic_centres[topics].sum(0) + rng.standard_normal(cfg.dim) * 0.3)
            n_events = int(rng.integers(cfg.events_per_user[0], cfg.events_per_user[1] + 1))
            shown = np.zeros(len(self.items), dtype=bool)
            triggered = False
            for t in range(n_events):
                available = np.flatnonzero(self.born <= t)
                affinity = self.item_matrix[available] @ taste * cfg.sharpness + self.quality[available]
                if triggered:
                    affinity = affinity + boost[available]
                if trigger is not None and not shown[trigger_row] and rng.random() < trigger.show:
                    j = trigger_row
                elif rng.random() < cfg.shown_near_taste:
                    weights = np.exp(affinity - affinity.max())
                    weights[shown[available]] = 0.0
                    if weights.sum() <= 0:  # a tiny world where the user has seen every item: show one again
                        weights = np.ones(len(available))
                    j = available[rng.choice(len(available), p=weights / weights.sum())]
                else:
                    j = int(rng.choice(available))
                shown[j] = True
                a = float(self.item_matrix[j] @ taste * cfg.sharpness + self.quality[j])
                if triggered:
                    a += float(boost[j])
                probs = action_probabilities(a)
                action = WORLD_ACTIONS[int(rng.choice(4, p=probs))]
                if trigger is not None and j == trigger_row and action == "like":
                    triggered = True
                out.append(Interaction(str(u + 1), self.items[j].item_id, action, t, tuple(float(p) for p in probs)))
                taste = _unit(taste + rng.standard_normal(cfg.dim) * cfg.drift / math.sqrt(cfg.dim))
                if rng.random() < cfg.jump_prob:
                    taste = _unit(0.5 * taste + self.topic_centres[int(rng.integers(cfg.topics))])
        return out


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def by_user(interactions: list[Interaction]) -> dict[str, list[Interaction]]:
    out: dict[str, list[Interaction]] = {}
    for event in interactions:
        out.setdefault(event.user_id, []).append(event)
    return out


def world_catalogue(world: SyntheticWorld, codes_per_level: int = 16, seed: int = 0):
    """An ItemCatalogue whose SIDs come from the items' latent vectors (the text path is the catalogue's job)."""
    ids = [it.item_id for it in world.items]
    catalogue = ItemCatalogue.fit(ids, world.item_matrix.astype(np.float32), levels=3,
                                  codes_per_level=codes_per_level, suffix_size=32, actions=ACTIONS, seed=seed,
                                  progress=None)
    catalogue.titles = {it.item_id: it.title for it in world.items}
    return catalogue


# How much each past action says about the taste, for the history reference below (like: close, downvote: far)
REFERENCE_ACTION_WEIGHTS = {"like": 1.0, "click": 0.5, "skip": -0.3, "downvote": -1.0}


def history_reference_probs(world: SyntheticWorld, events: list[Interaction]) -> np.ndarray:
    """A plug-in reference for what a user's past reveals: the ground-truth action model with the (unknown)
    current taste replaced by the action-weighted mean of the exact latent vectors of the past items.

    It reads the latent vectors, which no model sees (models see SIDs), and it is a heuristic, not a bound;
    it shows how much of the gap to the ceiling comes from the taste being hidden in a short, noisy history.
    Returns [n_events, 4] probabilities in WORLD_ACTIONS order, event t scored from events before t.
    """
    rows = [world.row_of[e.item_id] for e in events]
    vectors = world.item_matrix[rows]
    weights = np.array([REFERENCE_ACTION_WEIGHTS[e.action] for e in events])
    out = []
    taste = np.zeros(world.config.dim)
    for t, row in enumerate(rows):
        norm = np.linalg.norm(taste)
        cos = float(vectors[t] @ taste / norm) if norm > 0 else 0.0
        out.append(action_probabilities(cos * world.config.sharpness + world.quality[row]))
        taste = taste + weights[t] * vectors[t]
    return np.array(out)


def bench_world_config(seed: int = 0, quick: bool = False, overrides: dict | None = None) -> WorldConfig:
    """The action bench's world: the defaults below, then `overrides` (unknown keys and bad values refused)."""
    # 20,000 users: the model is data-bound here (at 3,000 users it barely read the history; see the README)
    data = asdict(WorldConfig(seed=seed, users=800 if quick else 20000, items=1000 if quick else 3000,
                              events_per_user=(15, 30) if quick else (20, 40)))
    overrides = dict(overrides or {})
    refuse_unknown(data, overrides, "world")  # value checks below, with the ranges each setting allows
    if "seed" in overrides:
        raise ValueError("the world's seed is the bench's --seed (it also seeds the codebooks and training)")
    if "events_per_user" in overrides:  # a range: LO-HI from the command line, or a pair
        span = overrides["events_per_user"]
        if isinstance(span, str):
            match = re.fullmatch(r"(\d+)-(\d+)", span, re.ASCII)
            pair = (int(match[1]), int(match[2])) if match else ()
        else:
            pair = tuple(span) if isinstance(span, (tuple, list)) else ()
        if not (len(pair) == 2 and all(_is_int(v) for v in pair) and 3 <= pair[0] <= pair[1]):
            raise ValueError(f"events_per_user must be LO-HI with 3 <= LO <= HI, got {span!r}")
        overrides["events_per_user"] = pair
    data.update(overrides)
    for key, default in asdict(WorldConfig()).items():  # each setting checked by the type of its default
        value = data[key]
        if _is_int(default) and key != "seed" and (not _is_int(value) or value < 1):
            raise ValueError(f"world setting {key} must be a positive integer, got {value!r}")
        if isinstance(default, float) and (isinstance(value, bool) or not isinstance(value, (int, float))
                                           or not 0 <= value < math.inf):
            raise ValueError(f"world setting {key} must be a number >= 0, got {value!r}")
    for key in ("jump_prob", "shown_near_taste"):
        if data[key] > 1:
            raise ValueError(f"world setting {key} is a probability, got {data[key]!r}")
    if data["new_item_share"] >= 1:
        raise ValueError("new_item_share must be below 1: some items must exist at the first step")
    if data["users"] < 5:
        raise ValueError("the action bench needs at least 5 users (80/20 split)")
    if data["topics"] < 2:
        raise ValueError("the world needs at least 2 topics (a user's taste starts near one or two)")
    return WorldConfig(**data)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def item_prior_probs(train_logs: list[list[Interaction]], events: list[Interaction], smoothing: float = 5.0,
                     ) -> np.ndarray:
    """What the item alone says: each item's smoothed action frequencies in the training logs, no history.

    A model that reads no history can reach this; the gap up to the history reference (which reads exact
    latent vectors no model sees) roughly bounds what the user's past adds. Returns [n_events, 4] in
    WORLD_ACTIONS order.
    """
    counts: dict[str, np.ndarray] = {}
    for log in train_logs:
        for e in log:
            counts.setdefault(e.item_id, np.zeros(len(WORLD_ACTIONS)))[WORLD_ACTIONS.index(e.action)] += 1
    total = sum(counts.values(), np.zeros(len(WORLD_ACTIONS)))
    prior = total / max(total.sum(), 1.0)
    empty = np.zeros(len(WORLD_ACTIONS))
    rows = [counts.get(e.item_id, empty) for e in events]
    return np.array([(row + smoothing * prior) / (row.sum() + smoothing) for row in rows])


def check_action_bench_settings(seed: int = 0, quick: bool = False, overrides: dict | None = None,
                                world_overrides: dict | None = None):
    """(TrainConfig, WorldConfig) of an action bench run; a bad setting raises ValueError before any work."""
    settings = dict(seed=seed, d_model=64, n_layers=2, n_heads=2, dropout=0.1, window_events=30, batch_size=32,
                    lr=3e-3, action_weight=1.0, sid_weight=0.1, warmup_steps=50, max_epochs=30 if quick else 60,
                    time_budget_s=150 if quick else 900, val_users=300, eval_beam=10,
                    eval_every=1000, patience=1000)  # the objective here is actions: keep the last model
    settings.update(overrides or {})
    return TrainConfig.from_overrides(**settings), bench_world_config(seed, quick, world_overrides)


def run_action_bench(out_file, seed: int = 0, quick: bool = False, overrides: dict | None = None,
                     log: Callable[[str], None] = print, world_overrides: dict | None = None) -> dict:


    t_start = time.perf_counter()
    config, world_cfg = check_action_bench_settings(seed, quick, overrides, world_overrides)
    world = SyntheticWorld(world_cfg)
    log(f"simulating {world_cfg.users:,} users over {world_cfg.items:,} items (seed {world_cfg.seed})")
    logs = by_user(world.simulate())
    counts = {a: 0 for a in WORLD_ACTIONS}
    for events in logs.values():
        for e in events:
            counts[e.action] += 1
    log(f"synthetic world: {len(world.items)} items, {len(logs)} users, {sum(counts.values())} events, {counts}")
    catalogue = world_catalogue(world, seed=seed)
    tokenizer = Tokenizer(catalogue.vocab, catalogue.tokens_of)
    # users split 80/20: train on the first users' logs (less each one's last two events, the validation and
    # test targets of leave-one-out), score every event of the held-out users
    users = sorted(logs, key=int)
    cut = int(len(users) * 0.8)
    train_seq = {u: [(e.item_id, e.action) for e in logs[u]] for u in users[:cut]}
    split = leave_one_out(train_seq)
    result = pretrain(split, tokenizer, catalogue.trie, config, None, log=log)
    model = result.model
    torch.set_num_threads(config.threads)
    predicted, truth, reference, labels = [], [], [], []
    for u in users[cut:]:
        events = logs[u]
        predicted.append(predicted_action_probs(model, tokenizer, [(e.item_id, e.action) for e in events],
                                                config.window_events))
        truth.append(np.array([e.probs for e in events]))
        reference.append(history_reference_probs(world, events))
        labels.extend(e.action for e in events)
    predicted_all, truth_all = np.concatenate(predicted), np.concatenate(truth)
    reference_all = np.concatenate(reference)
    # the same training events the model saw (leave-one-out keeps each training user's last two out)
    prior_all = item_prior_probs([logs[u][:-2] for u in users[:cut]], [e for u in users[cut:] for e in logs[u]])
    labels_arr = np.array(labels)
    report = {"events_scored": len(labels), "actions": counts}
    for action in ("click", "downvote", "like"):
        model_index = catalogue.vocab.actions.index(action)
        y = labels_arr == action
        model_auc = auc(predicted_all[:, model_index], y)
        ceiling = auc(truth_all[:, WORLD_ACTIONS.index(action)], y)
        reference_auc = auc(reference_all[:, WORLD_ACTIONS.index(action)], y)
        prior_auc = auc(prior_all[:, WORLD_ACTIONS.index(action)], y)
        report[action] = {"auc": round(model_auc, 4), "ceiling_auc": round(ceiling, 4),
                          "ratio_to_ceiling": round(model_auc / ceiling, 4),
                          "history_reference_auc": round(reference_auc, 4), "item_prior_auc": round(prior_auc, 4)}
        log(f"P({action}): AUC {model_auc:.4f} vs ground-truth ceiling {ceiling:.4f} ({model_auc / ceiling:.1%}); "
            f"history reference (exact latent vectors of the past) {reference_auc:.4f}; "
            f"item prior (no history) {prior_auc:.4f}")
    report["configuration"] = {"world": asdict(world_cfg), "train": asdict(config), "quick": quick,
                               "train_seconds": round(result.train_seconds, 1), "epochs": result.epochs,
                               "split": "users 80/20; held-out users' every event scored with its true past",
                               "wall_seconds": round(time.perf_counter() - t_start, 1)}
    out = Path(out_file)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    log(f"wrote {out}")
    return report

"""The online post-trainer's core: prequential evaluation, replay, micro-batch steps and the publish gate.

Pure torch + the catalogue's trie; no Kafka here (trainer/online_kafka.py is the adapter). One call to
`OnlineTrainer.process(examples)`:
1. predicts every example's newest event from the history before it, with the same trie-constrained beam
   search serving runs (Recall@10, NDCG@10) and the model's P(actual action | history, item) (log-loss),
   *before* any of them is trained on: prequential ("test, then train") evaluation;
2. takes a gradient step on the examples' windows mixed with a sample of older windows from a reservoir
   replay buffer (`replay_ratio` replayed windows per fresh one), which holds the model to what it knew
   while it follows the stream;
3. adds the fresh windows to the buffer.
`publish_due` and `gate` decide when a new version goes out and whether its prequential quality is good
enough compared with the version now served.
"""
from __future__ import annotations

import json
import math
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch

from catalogue.vocab import VocabularyError
from streams.schemas import TrainingExample, parse
from trainer import registry as model_files
from trainer.data import Batch, dense_cross_entropy, level_cross_entropy, token_spans
from trainer.generation import GenerationConfig, GenerationEngine
from trainer.item_index import build_item_index
from trainer.loop import adamw, grow_state, optimizer_step, set_lr
from trainer.model_registry import write_pointer
from trainer.overrides import apply_overrides


class OnlineDataError(ValueError):
    """A training example the post-trainer cannot use (malformed token window)."""


@dataclass
class OnlineConfig:
    micro_batch: int = 16  # fresh examples per gradient step
    replay_ratio: float = 1.0  # replayed windows per fresh window in a step (0 = no replay)
    replay_capacity: int = 5000
    lr: float = 5e-4
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    sid_weight: float = 1.0
    action_weight: float = 0.1
    dense_weight: float = 1.0  # the dense channel's loss weight (models with a dense head)
    window_events: int = 20  # events of a window trained on and fed to prediction
    beam: int = 20
    top_k: int = 10
    exclude_seen: bool = True
    publish_every_steps: int = 50
    publish_every_s: float = 30.0
    gate_tolerance: float = 0.1  # refuse when recall@10 < (1 - tolerance) * the serving version's
    gate_min_events: int = 20  # prequential events a candidate needs before it can be judged and published
    # ... and only when the drop is also beyond this many standard errors of the two recall estimates: with
    # ~1,000 events and recall ~0.02 each estimate is +-0.004, so a plain 10% tolerance refuses on noise alone
    gate_z: float = 2.0
    metrics_window: int = 1000  # events in the rolling metrics
    seed: int = 0

    def __post_init__(self) -> None:
        if self.micro_batch < 1 or self.window_events < 1 or self.replay_capacity < 0:
            raise ValueError("micro_batch and window_events must be >= 1, replay_capacity >= 0")
        if self.replay_ratio < 0 or not 0 <= self.gate_tolerance <= 1:
            raise ValueError("replay_ratio must be >= 0 and gate_tolerance within [0, 1]")

    @classmethod
    def from_overrides(cls, base: "OnlineConfig | None" = None, **overrides) -> "OnlineConfig":
        return cls(**apply_overrides(asdict(base or cls()), overrides, "online"))


@dataclass
class StreamExample:
    """A training example as the core sees it: the user's window after the event (no BOS), oldest first."""
    tokens: list[int]
    event_id: str = ""
    user_id: str = ""
    event_ms: int | None = None
    appended_ms: int | None = None
    source: tuple[str, int, int] | None = None  # (topic, partition, offset) where it came from


def split_window(tokens: Sequence[int], vocab) -> tuple[list[int], list[int], int]:
    """(history tokens before the newest event, its SID tokens, its action token)."""
    group = vocab.sid_length + 1
    tokens = list(tokens)
    if len(tokens) < group or len(tokens) % group:
        raise OnlineDataError(f"token window of {len(tokens)} tokens is not whole events of {group} tokens")
    sid, action = tokens[-group:-1], tokens[-1]
    if action not in vocab.action_range:
        raise OnlineDataError(f"token window does not end with an action token (got {action})")
    for level, token in enumerate(sid):
        if token not in vocab.level_range(level):
            raise OnlineDataError(f"token {token} at SID level {level} is out of that level's range")
    return tokens[:-group], sid, action


class ReplayBuffer:
    """Reservoir sample of past windows: every window seen so far is equally likely to be held."""

    def __init__(self, capacity: int, seed: int = 0):
        self.capacity = capacity
        self.items: list[list[int]] = []
        self.seen = 0
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.items)

    def add(self, window: Sequence[int]) -> None:
        self.seen += 1
        if self.capacity <= 0:
            return
        if len(self.items) < self.capacity:
            self.items.append(list(window))
            return
        slot = int(self.rng.integers(0, self.seen))
        if slot < self.capacity:
            self.items[slot] = list(window)

    def sample(self, n: int) -> list[list[int]]:
        if n <= 0 or not self.items:
            return []
        picks = self.rng.choice(len(self.items), size=min(n, len(self.items)), replace=False)
        return [self.items[i] for i in picks]

    def state(self) -> dict:
        return {"capacity": self.capacity, "seen": self.seen, "items": self.items,
                "rng": self.rng.bit_generator.state}

    def load_state(self, state: dict) -> None:
        self.capacity, self.seen, self.items = int(state["capacity"]), int(state["seen"]), list(state["items"])
        self.rng.bit_generator.state = state["rng"]


@dataclass
class Prediction:
    target: str | None  # the item the event named (None: not in the trie)
    ranked: list[str]
    rank: int | None  # 0-based position of the target in `ranked`
    action_logloss: float

    @property
    def hit(self) -> float:
        return 1.0 if self.rank is not None else 0.0

    @property
    def ndcg(self) -> float:
        return 0.0 if self.rank is None else 1.0 / math.log2(self.rank + 2)


class RollingMetrics:
    """Prequential metrics over the last `window` events, plus running totals since a reset point."""

    def __init__(self, window: int = 1000):
        self.recent: deque[tuple[float, float, float]] = deque(maxlen=window)
        self.total_events = 0
        self.since = [0, 0.0, 0.0, 0.0]  # events, hits, ndcg, logloss since the last `reset_since`

    def add(self, p: Prediction) -> None:
        self.recent.append((p.hit, p.ndcg, p.action_logloss))
        self.total_events += 1
        self.since[0] += 1
        self.since[1] += p.hit
        self.since[2] += p.ndcg
        self.since[3] += p.action_logloss

    def rolling(self) -> dict:
        n = len(self.recent)
        if not n:
            return {"events": 0}
        arr = np.asarray(self.recent)
        return {"events": n, "recall@10": float(arr[:, 0].mean()), "ndcg@10": float(arr[:, 1].mean()),
                "action_logloss": float(arr[:, 2].mean())}

    def since_reset(self) -> dict:
        n, hits, ndcg, loss = self.since
        if not n:
            return {"events": 0}
        return {"events": n, "recall@10": hits / n, "ndcg@10": ndcg / n, "action_logloss": loss / n}

    def reset_since(self) -> None:
        self.since = [0, 0.0, 0.0, 0.0]

    def state(self) -> dict:
        return {"recent": list(self.recent), "total_events": self.total_events, "since": self.since}

    def load_state(self, state: dict) -> None:
        self.recent = deque((tuple(r) for r in state["recent"]), maxlen=self.recent.maxlen)
        self.total_events, self.since = int(state["total_events"]), list(state["since"])


@dataclass(frozen=True)
class GateDecision:
    accepted: bool
    reason: str


def gate(candidate: dict, serving: dict | None, tolerance: float, min_events: int = 1,
         z: float = 0.0) -> GateDecision:
    """Refuse a candidate whose prequential Recall@10 is more than `tolerance` (relative) below the serving
    version's, and (z > 0) by more than `z` binomial standard errors of the difference of the two estimates.
    `candidate` and `serving` are metric dicts (`recall@10`, `events`)."""
    events = int(candidate.get("events", 0))
    if events < min_events:
        return GateDecision(False, f"only {events} prequential events since the last version (< {min_events})")
    cand = candidate.get("recall@10")
    base = (serving or {}).get("recall@10")
    if cand is None:
        return GateDecision(False, "candidate has no prequential recall@10")
    if base is None:
        return GateDecision(True, f"recall@10 {cand:.4f}; no serving version metrics to compare with")
    floor = (1.0 - tolerance) * base
    base_events = int((serving or {}).get("events") or events)
    pc, pb = min(max(cand, 0.0), 1.0), min(max(base, 0.0), 1.0)
    se = math.sqrt(pc * (1 - pc) / max(events, 1) + pb * (1 - pb) / max(base_events, 1))
    if cand < floor - z * se:
        noise = f" - {z:g} x se {se:.4f}" if z else ""
        return GateDecision(False, f"recall@10 {cand:.4f} is below {floor - z * se:.4f} = (1 - {tolerance}) x serving "
                                   f"{base:.4f}{noise} over {events} events")
    return GateDecision(True, f"recall@10 {cand:.4f} >= {floor:.4f} = (1 - {tolerance}) x serving {base:.4f}")


@dataclass
class StepResult:
    predictions: list[Prediction]
    loss: float | None
    replayed: int
    skipped: list[tuple[StreamExample, str]] = field(default_factory=list)


class OnlineTrainer:
    """Predict, then train, one micro-batch at a time. `learn=False` gives the frozen baseline."""

    def __init__(self, model, vocab, trie, config: OnlineConfig | None = None, optimizer=None,
                 learn: bool = True, clock: Callable[[], float] = time.monotonic):
        self.model, self.vocab, self.trie = model, vocab, trie
        self.config = config or OnlineConfig()
        self.learn = learn
        self.clock = clock
        self.group = vocab.sid_length + 1
        fit = (model.config.max_len - 1) // self.group - 1  # BOS + history + the predicted event
        self.window_events = max(1, min(self.config.window_events, fit))
        self.engine = GenerationEngine(model, vocab, trie, GenerationConfig(
            beam_size=self.config.beam, top_k=self.config.top_k, exclude_seen=self.config.exclude_seen,
            window_events=self.window_events, with_actions=False))
        if optimizer is None and learn:
            optimizer = adamw(model, self.config.lr, self.config.weight_decay, one_group=True)
        self.optimizer = optimizer
        if optimizer is not None:
            set_lr(optimizer, self.config.lr)
        self.replay = ReplayBuffer(self.config.replay_capacity, self.config.seed)
        self.metrics = RollingMetrics(self.config.metrics_window)
        self.spans = token_spans(vocab)
        self.token_weight = torch.zeros(vocab.size)
        self.token_weight[vocab.sid_range.start : vocab.sid_range.stop] = self.config.sid_weight
        self.token_weight[vocab.action_range.start : vocab.action_range.stop] = self.config.action_weight
        self.step = 0
        self.events = 0
        self.steps_since_publish = 0
        self.new_item_rows = 0  # residual rows given to items that arrived after the model's training
        self.last_publish = clock()
        torch.manual_seed(self.config.seed)

    # ----- windows
    def train_window(self, tokens: Sequence[int]) -> list[int]:
        """BOS + the last `window_events` events: what a step trains on."""
        keep = self.window_events * self.group
        tokens = list(tokens)
        return [self.vocab.BOS] + tokens[-keep:]

    def seed_replay(self, windows: Sequence[Sequence[int]]) -> None:
        """Fill the buffer with logged history (e.g. the pretraining sequences) before the stream starts."""
        for w in windows:
            self.replay.add(self.train_window(w))

    # ----- prequential prediction
    @torch.no_grad()
    def predict(self, examples: Sequence[StreamExample]) -> tuple[list[Prediction], list[tuple[StreamExample, str]]]:
        was_training = self.model.training
        self.model.eval()
        parts, usable, skipped = [], [], []
        for ex in examples:
            try:
                parts.append(split_window(ex.tokens, self.vocab))
                usable.append(ex)
            except OnlineDataError as exc:
                skipped.append((ex, str(exc)))
        if not usable:
            return [], skipped
        histories = [[self.vocab.BOS] + h for h, _, _ in parts]
        if self.model.has_dense_head:  # item vectors follow the weights and the trie: compose them afresh
            self.engine.index = build_item_index(self.model, self.vocab, self.trie, kind="exact")
        recs = self.engine.recommend_tokens(histories)
        logloss = self._action_logloss([self.train_window(h + sid + [a]) for h, sid, a in parts],
                                       [a for _, _, a in parts])
        out = []
        for (h, sid, a), rec, loss in zip(parts, recs, logloss):
            target = self._trie_item(sid)
            ranked = [r.item_id for r in rec]
            rank = ranked.index(target) if target is not None and target in ranked else None
            out.append(Prediction(target, ranked, rank, loss))
        self.model.train(was_training)
        return out, skipped

    def _action_logloss(self, windows: list[list[int]], actions: list[int]) -> list[float]:
        """-log P(actual action | history, item): read at the event's last SID token, over the action tokens."""
        T = max(len(w) for w in windows) - 1
        tokens = torch.full((len(windows), T), self.vocab.PAD, dtype=torch.long)
        valid = torch.zeros((len(windows), T), dtype=torch.bool)
        for row, w in enumerate(windows):
            inputs = w[:-1]
            tokens[row, T - len(inputs):] = torch.as_tensor(inputs)
            valid[row, T - len(inputs):] = True
        hidden, _ = self.model.prefill(tokens, valid)
        logp = torch.log_softmax(self.model.logits(hidden, self.vocab.action_range).float(), dim=-1)
        target = torch.as_tensor(actions) - self.vocab.action_range.start
        return (-logp.gather(1, target[:, None])[:, 0]).tolist()

    # ----- training
    def collate(self, windows: Sequence[Sequence[int]]) -> Batch:
        T = max(len(w) for w in windows) - 1
        inputs = torch.full((len(windows), T), self.vocab.PAD, dtype=torch.long)
        targets = torch.full((len(windows), T), self.vocab.PAD, dtype=torch.long)
        for row, w in enumerate(windows):
            w = torch.as_tensor(list(w), dtype=torch.long)
            inputs[row, : len(w) - 1] = w[:-1]
            targets[row, : len(w) - 1] = w[1:]
        return Batch(inputs, targets, self.token_weight[targets])

    def give_new_items_rows(self, windows: Sequence[Sequence[int]]) -> int:
        """Residual rows for the trie's items these windows name that the model has none for (they arrived
        after its training): from now on each learns its own, as a trained item has. Returns how many."""
        L, group = self.vocab.sid_length, self.group
        sids = {tuple(w[start : start + L]) for w in windows for start in range(1, len(w) - L + 1, group)}
        known = [sid for sid in sids if self._trie_item(sid) is not None]
        if not known:
            return 0
        added = self.model.add_item_rows(torch.tensor(sorted(known), dtype=torch.long))
        if added and self.optimizer is not None:
            grow_state(self.optimizer, self.model.item_residual.weight)
        self.new_item_rows += added
        return added

    def _trie_item(self, sid_tokens: Sequence[int]) -> str | None:
        """The trie's item these SID tokens name; None when they name none (or are no SID)."""
        try:
            return self.trie.item_at(self.vocab.tokens_to_sid(sid_tokens))
        except VocabularyError:
            return None

    def train_step(self, windows: Sequence[Sequence[int]]) -> float:
        self.model.train()
        if self.model.has_dense_head:
            self.give_new_items_rows(windows)
        batch = self.collate(windows)
        hidden = self.model.hidden(batch.inputs)
        loss = level_cross_entropy(self.model, hidden, batch, self.spans)
        if self.model.has_dense_head and self.config.dense_weight:  # both heads keep learning
            loss = loss + self.config.dense_weight * dense_cross_entropy(self.model, hidden, batch,
                                                                         self.vocab.level_range(0))
        optimizer_step(self.model, self.optimizer, loss, self.config.grad_clip)
        self.model.eval()
        return float(loss.detach())

    def process(self, examples: Sequence[StreamExample]) -> StepResult:
        """Predict every example, then (when learning) one gradient step on them plus a replay sample."""
        predictions, skipped = self.predict(examples)
        for p in predictions:
            self.metrics.add(p)
        self.events += len(predictions)
        skipped_ids = {id(ex) for ex, _ in skipped}
        fresh = [self.train_window(ex.tokens) for ex in examples if id(ex) not in skipped_ids]
        loss, replayed = None, 0
        if fresh and self.learn:
            replay = self.replay.sample(int(round(self.config.replay_ratio * len(fresh))))
            replayed = len(replay)
            loss = self.train_step(fresh + replay)
            self.step += 1
            self.steps_since_publish += 1
        for w in fresh:
            self.replay.add(w)
        return StepResult(predictions, loss, replayed, skipped)

    # ----- publishing
    def publish_due(self, now: float | None = None) -> bool:
        now = self.clock() if now is None else now
        if self.steps_since_publish == 0:
            return False
        if self.metrics.since_reset().get("events", 0) < self.config.gate_min_events:
            return False
        return (self.steps_since_publish >= self.config.publish_every_steps
                or now - self.last_publish >= self.config.publish_every_s)

    def candidate_metrics(self) -> dict:
        return self.metrics.since_reset()

    def judge(self, serving_metrics: dict | None) -> GateDecision:
        return gate(self.candidate_metrics(), serving_metrics, self.config.gate_tolerance,
                    self.config.gate_min_events, self.config.gate_z)

    def mark_published(self, now: float | None = None) -> None:
        """Start a new candidate window (after a publish, or after the gate refused one)."""
        self.last_publish = self.clock() if now is None else now
        self.steps_since_publish = 0
        self.metrics.reset_since()

    # ----- resume state (besides weights and optimizer)
    def state(self) -> dict:
        return {"step": self.step, "events": self.events, "steps_since_publish": self.steps_since_publish,
                "metrics": self.metrics.state(), "torch_rng": torch.get_rng_state().tolist()}

    def load_state(self, state: dict) -> None:
        self.step, self.events = int(state["step"]), int(state["events"])
        self.steps_since_publish = int(state.get("steps_since_publish", 0))
        self.metrics.load_state(state["metrics"])
        torch.set_rng_state(torch.tensor(state["torch_rng"], dtype=torch.uint8))


# ----- the long-running loop: a source of records in, checkpoints, versions and announcements out
@dataclass(frozen=True)
class Record:
    topic: str
    partition: int
    offset: int
    value: bytes
    key: bytes | None = None


def offset_key(topic: str, partition: int) -> str:
    return f"{topic}:{partition}"


def parse_example(record: Record) -> StreamExample:
    """A `training` topic record -> StreamExample; ValueError with the reason when it is not a TrainingExample."""
    ex = parse(TrainingExample, record.value)
    return StreamExample(list(ex.tokens), ex.event_id, ex.user_id, ex.event_ms, ex.appended_ms,
                         (record.topic, record.partition, record.offset))


class OnlineLoop:
    """Consume, predict-then-train, checkpoint with offsets, publish through the gate, announce.

    `source` has `poll(max_records, timeout_s) -> [Record]` (in offset order per partition), `seek(offsets)` and
    `commit(offsets)`; offsets are `{"topic:partition": next offset}`. Offsets go to the source only after the
    checkpoint that holds their effect is on disk, and a restart seeks to the checkpoint's offsets, so every
    record is trained into the surviving weights exactly once. `announce(message)` sends a model update.
    """

    def __init__(self, trainer: OnlineTrainer, model_registry, source, announce: Callable[[dict], None] | None = None,
                 catalogue_version: str | None = None, checkpoint_every_steps: int = 20,
                 record_event_ids: bool = False, log: Callable[[str], None] = print,
                 before_batch: Callable[[], object] | None = None, metrics=None, generation: dict | None = None,
                 before_announce: Callable[[object, str], object] | None = None):
        self.trainer, self.registry, self.source = trainer, model_registry, source
        # the generation settings the weights were validated with (the channel weight): every version keeps them
        self.generation = dict(generation or {})
        self.metrics = metrics  # a TrainerMetrics (trainer/online_metrics.py), or None
        self.before_batch = before_batch  # e.g. apply catalogue changes to the trie between micro-batches
        # e.g. write the version's item vectors to its Qdrant collection, so replicas find them ready
        self.before_announce = before_announce
        self.announce = announce
        self.catalogue_version = catalogue_version
        self.checkpoint_every_steps = checkpoint_every_steps
        self.record_event_ids = record_event_ids
        self.log = log
        self.offsets: dict[str, int] = {}
        self.ledger: list[list] = []  # [topic, partition, offset, event_id] trained into the current weights
        self.parent: str | None = None  # the version these weights descend from
        self.newest_event_ms: int | None = None
        self.newest_appended_ms: int | None = None
        self.invalid = 0
        self.published: list[str] = []
        self.refused: list[str] = []
        self._steps_at_checkpoint = trainer.step

    # ----- start: resume from the checkpoint, else from the served version
    def resume(self) -> bool:
        """Load the latest checkpoint (weights, AdamW state, counters, replay, offsets) and seek the source to
        its offsets. Returns False when there is no checkpoint (the caller started from published weights)."""
        path = self.registry.checkpoint()
        if path is None:
            return False
        model, manifest = model_files.load_model(path)
        self.trainer.model.load_state_dict(model.state_dict())
        model_files.load_optimizer(path, self.trainer.optimizer, manifest)
        set_lr(self.trainer.optimizer, self.trainer.config.lr)
        state = manifest["checkpoint_state"]
        self.trainer.load_state(state["trainer"])
        replay = path / "replay.json"
        if replay.exists():
            self.trainer.replay.load_state(json.loads(replay.read_text()))
        ledger = path / "ledger.json"
        if ledger.exists():
            self.ledger = json.loads(ledger.read_text())
        self.offsets = dict(state["offsets"])
        self.parent = state.get("parent")
        self._steps_at_checkpoint = self.trainer.step
        self.source.seek(self.offsets)
        self.log(f"resumed from checkpoint {path.name}: step {self.trainer.step}, {self.trainer.events} events, "
                 f"offsets {self.offsets}")
        return True

    def checkpoint(self) -> None:
        state = {"trainer": self.trainer.state(), "offsets": self.offsets, "parent": self.parent,
                 "online_config": asdict(self.trainer.config), "generation": self.generation}
        files = {"replay.json": json.dumps(self.trainer.replay.state()).encode()}
        if self.record_event_ids:
            files["ledger.json"] = json.dumps(self.ledger).encode()
        self.registry.save_checkpoint(self.trainer.model, self.trainer.vocab, self.trainer.optimizer,
                                      step=self.trainer.step, state=state, files=files)
        self._steps_at_checkpoint = self.trainer.step
        self.source.commit(dict(self.offsets))  # only now: the checkpoint holds these records' effect
        self.export_metrics()

    def export_metrics(self) -> dict:
        """The rolling prequential metrics, written atomically to <registry>/online_metrics.json for scrapers."""
        data = {"step": self.trainer.step, "events": self.trainer.events, "rolling": self.trainer.metrics.rolling(),
                "candidate": self.trainer.candidate_metrics(), "invalid": self.invalid,
                "published": len(self.published), "refused": len(self.refused), "latest": self.parent,
                "updated": time.time()}
        write_pointer(self.registry.root / "online_metrics.json", json.dumps(data, sort_keys=True))
        return data

    def serving_metrics(self) -> dict | None:
        serving = self.registry.serving()
        if serving is None:
            return None
        try:
            return self.registry.manifest(serving).get("metrics", {}).get("prequential")
        except ValueError as exc:
            self.log(f"gate: serving version {serving} is unreadable ({exc}); judging without it")
            return None

    def publish(self) -> str | None:
        """Gate, then publish a version and announce it; returns its name, or None when the gate refused."""
        decision = self.trainer.judge(self.serving_metrics())
        candidate = self.trainer.candidate_metrics()
        version = None
        if not decision.accepted:
            self.refused.append(decision.reason)
            self.log(f"gate refused a version at step {self.trainer.step}: {decision.reason}")
            if self.metrics is not None:
                self.metrics.versions.labels("refused").inc()
        else:
            manifest = self.registry.publish(
                self.trainer.model, self.trainer.vocab, step=self.trainer.step, parent=self.parent,
                offsets=self.offsets, catalogue_version=self.catalogue_version,
                metrics={"prequential": candidate, "rolling": self.trainer.metrics.rolling()},
                extra={"stream": {"events": self.trainer.events, "newest_event_ms": self.newest_event_ms,
                                  "newest_appended_ms": self.newest_appended_ms},
                       "train_config": {"window_events": self.trainer.window_events},
                       "online_config": asdict(self.trainer.config),
                       **({"generation": self.generation} if self.generation else {})})
            version = self.parent = manifest["version"]
            self.published.append(version)
            if self.metrics is not None:
                self.metrics.versions.labels("published").inc()
                self.metrics.last_publish.set(time.time())
            self.log(f"published {version} at step {self.trainer.step} ({self.trainer.events} events): "
                     f"{decision.reason}")
            if self.before_announce is not None:
                try:
                    self.before_announce(self.trainer.model, version)
                except Exception as exc:  # replicas write a missing collection themselves when they load
                    self.log(f"before announcing {version}: {exc!r}")
            pinned = self.registry.pinned()
            if pinned:
                self.log(f"serving is pinned to {pinned}: {version} is not announced")
            elif self.announce is not None:
                try:
                    self.announce(self.registry.path(version))
                except Exception as exc:  # the version is on disk; a replica can still be pointed at it
                    self.log(f"announcing {version} failed: {exc!r}")
        self.trainer.mark_published()
        self.checkpoint()
        return version

    def handle(self, records: Sequence[Record]) -> StepResult | None:
        """One micro-batch: parse, predict-then-train, advance the offsets."""
        if self.before_batch is not None:
            self.before_batch()
        examples = []
        for r in records:
            try:
                examples.append(parse_example(r))
            except ValueError as exc:
                self.invalid += 1
                self.log(f"skipping {r.topic}:{r.partition}@{r.offset}: {exc}")
        result = self.trainer.process(examples) if examples else None
        skipped = {id(ex) for ex, _ in (result.skipped if result else [])}
        for ex in examples:
            if id(ex) in skipped:
                self.invalid += 1
                continue
            if ex.event_ms is not None:
                self.newest_event_ms = max(self.newest_event_ms or 0, ex.event_ms)
            if ex.appended_ms is not None:
                self.newest_appended_ms = max(self.newest_appended_ms or 0, ex.appended_ms)
            if self.record_event_ids:
                self.ledger.append([*ex.source, ex.event_id])
        for r in records:
            self.offsets[offset_key(r.topic, r.partition)] = r.offset + 1
        if self.metrics is not None:
            self._observe(examples, skipped, result)
        return result

    def _observe(self, examples, skipped: set, result: StepResult | None) -> None:
        m, now_ms = self.metrics, time.time() * 1000
        trained = [ex for ex in examples if id(ex) not in skipped]
        m.examples.labels("trained").inc(len(trained))
        m.examples.labels("invalid").inc(len(examples) - len(trained))
        for ex in trained:
            if ex.appended_ms is not None:
                m.event_to_trained.observe(max(0.0, (now_ms - ex.appended_ms) / 1000))
        if result is not None and result.loss is not None:
            m.steps.inc()
            m.loss.set(result.loss)
        m.observe_rolling(self.trainer.metrics.rolling())

    def run(self, stop: Callable[[], bool] = lambda: False, idle_exit_s: float | None = None,
            poll_s: float = 0.2, report_every_s: float = 10.0) -> None:
        pending: list[Record] = []
        idle_since = time.monotonic()
        last_report = time.monotonic()
        micro_batch = self.trainer.config.micro_batch
        while not stop():
            records = self.source.poll(micro_batch - len(pending), poll_s)
            pending.extend(records)
            if pending and (len(pending) >= micro_batch or not records):
                self.handle(pending)
                pending = []
                idle_since = time.monotonic()
            if self.trainer.publish_due():
                self.publish()
            elif self.trainer.step - self._steps_at_checkpoint >= self.checkpoint_every_steps:
                self.checkpoint()
            now = time.monotonic()
            if now - last_report >= report_every_s:
                last_report = now
                r = self.trainer.metrics.rolling()
                self.log(f"step {self.trainer.step} events {self.trainer.events} rolling "
                         + " ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in r.items()))
            if not records and idle_exit_s is not None and now - idle_since >= idle_exit_s:
                self.log(f"idle for {idle_exit_s:.0f}s: stopping")
                break
        if pending:
            self.handle(pending)
        # a clean stop checkpoints; a crash does not (the last checkpoint and its offsets stay authoritative)
        self.checkpoint()

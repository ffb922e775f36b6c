"""SASRec baseline: a self-attentive sequential recommender over item ids, full softmax over the catalogue.

Same transformer as sidstream (trainer.model), but its tokens are items (one embedding per item, id 0 is
padding) and it scores every item at once with the tied output head. Trained with next-item
cross-entropy over the full catalogue on every position (the SASRec variant that is strongest on the
Amazon sets) by the same loop (trainer/loop.py: AdamW, warm-up + cosine, early stopping on validation
Recall@10), under the same time budget and on the same leave-one-out split as sidstream.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from trainer.data import EvalCase
from trainer.loop import EarlyStopping, TimeBudget, WarmupCosine, adamw, train as train_loop
from trainer.metrics import ranking_report
from trainer.model import ModelConfig, Transformer

PAD = 0


@dataclass
class SasrecConfig:
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 2
    dropout: float = 0.3
    max_len: int = 50
    batch_size: int = 128
    lr: float = 1e-3
    min_lr_ratio: float = 0.05
    weight_decay: float = 0.0
    warmup_steps: int = 100
    max_epochs: int = 200
    time_budget_s: float = 3600.0
    grad_clip: float = 1.0
    seed: int = 0
    eval_every: int = 1
    val_users: int = 0  # 0: all validation users (full ranking is cheap)
    patience: int = 5
    threads: int = 2


class Sasrec:
    """Item index, model and scoring; `rank(histories)` returns top-k item ids per history."""

    def __init__(self, item_ids: Sequence[str], config: SasrecConfig):
        self.config = config
        self.item_ids = list(item_ids)
        self.index = {item: i + 1 for i, item in enumerate(self.item_ids)}
        self.model = Transformer(ModelConfig(vocab_size=len(self.item_ids) + 1, max_len=config.max_len,
                                             d_model=config.d_model, n_layers=config.n_layers,
                                             n_heads=config.n_heads, dropout=config.dropout))

    def encode(self, items: Sequence[str]) -> list[int]:
        return [self.index[i] for i in items[-self.config.max_len :]]

    @torch.no_grad()
    def scores(self, histories: Sequence[Sequence[str]]) -> torch.Tensor:
        """[B, n_items + 1] scores of every item after each history (column 0 is padding)."""
        self.model.eval()
        encoded = [self.encode(h) for h in histories]
        T = max(1, max(len(e) for e in encoded))
        tokens = torch.zeros(len(encoded), T, dtype=torch.long)
        valid = torch.zeros(len(encoded), T, dtype=torch.bool)
        for b, e in enumerate(encoded):
            if e:
                tokens[b, T - len(e) :] = torch.tensor(e)
                valid[b, T - len(e) :] = True
        valid[:, -1] = True  # an empty history reads padding; its scores are then popularity-free noise
        hidden, _ = self.model.prefill(tokens, valid)
        return self.model.logits(hidden)

    @torch.no_grad()
    def rank(self, histories: Sequence[Sequence[str]], k: int = 10, exclude_seen: bool = True) -> list[list[str]]:
        scores = self.scores(histories)
        scores[:, PAD] = float("-inf")
        if exclude_seen:
            for b, h in enumerate(histories):
                seen = [self.index[i] for i in h]
                if seen:
                    scores[b, seen] = float("-inf")
        top = scores.topk(k, dim=1).indices.tolist()
        return [[self.item_ids[j - 1] for j in row] for row in top]


def evaluate(model: Sasrec, cases: Sequence[EvalCase], k: int = 10, batch_size: int = 256):
    ranked = []
    for start in range(0, len(cases), batch_size):
        chunk = cases[start : start + batch_size]
        ranked.extend(model.rank([[i for i, _ in c.history] for c in chunk], k))
    return ranking_report(ranked, [c.target for c in cases]), ranked


def epoch_windows(streams: Sequence[np.ndarray], rng: np.random.Generator, config: SasrecConfig):
    """One epoch's batches (inputs, targets) [b, T]: a random window of max_len + 1 items per user (inputs are
    its first max_len, targets its last max_len), batched among windows of similar length, in random order."""
    L = config.max_len
    windows = []
    for s in streams:
        end = len(s) if len(s) <= L + 1 else int(rng.integers(L + 1, len(s) + 1))
        windows.append(s[max(0, end - L - 1) : end])
    order = rng.permutation(len(windows))
    chunk = config.batch_size * 50
    batches = []
    for i in range(0, len(order), chunk):
        part = sorted(order[i : i + chunk], key=lambda j: len(windows[j]))
        batches.extend(part[j : j + config.batch_size] for j in range(0, len(part), config.batch_size))
    for bi in rng.permutation(len(batches)):
        group = [windows[j] for j in batches[bi]]
        T = max(len(w) for w in group) - 1
        inputs = torch.zeros(len(group), T, dtype=torch.long)
        targets = torch.zeros(len(group), T, dtype=torch.long)
        for r, w in enumerate(group):
            inputs[r, : len(w) - 1] = torch.from_numpy(w[:-1])
            targets[r, : len(w) - 1] = torch.from_numpy(w[1:])
        yield inputs, targets


def train_sasrec(
    train: Mapping[str, Sequence[tuple[str, str]]],
    validation: Sequence[EvalCase],
    item_ids: Sequence[str],
    config: SasrecConfig,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> tuple[Sasrec, dict, float]:
    """(best model, best validation metrics, training seconds) under config.time_budget_s."""
    torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    rec = Sasrec(item_ids, config)
    model = rec.model
    streams = [np.array([rec.index[i] for i, _ in events], dtype=np.int64) for events in train.values()
               if len(events) >= 2]
    optimizer = adamw(model, config.lr, config.weight_decay)
    val = list(validation)
    if config.val_users and len(val) > config.val_users:
        pick = np.random.default_rng(config.seed + 1).choice(len(val), config.val_users, replace=False)
        val = [val[i] for i in sorted(pick)]
    steps_per_epoch = math.ceil(len(streams) / config.batch_size)
    log(f"sasrec: {model.num_parameters():,} parameters, {len(item_ids):,} items, {len(streams):,} users, "
        f"{steps_per_epoch} steps/epoch")
    stopping = EarlyStopping(config.patience)
    best_state, best_metrics = None, {}

    def loss_of(batch) -> torch.Tensor:
        inputs, targets = batch
        logits = model(inputs)
        logits[..., PAD] = float("-inf")
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=PAD)

    def after_epoch(record: dict, improved: bool) -> None:
        nonlocal best_state, best_metrics
        if "val" not in record:
            return
        if improved:
            best_metrics = record["val"]
            best_state = {k: v.clone() for k, v in model.state_dict().items()}
        log(f"sasrec epoch {record['epoch']} step {record['step']} loss {record['loss']:.4f} "
            f"train {record['train_seconds']:.0f}s | val R@10 {record['val']['recall@10']:.4f} "
            f"N@10 {record['val']['ndcg@10']:.4f} (best {stopping.best:.4f})")

    budget = TimeBudget(config.time_budget_s)
    train_loop(model, optimizer, lambda: epoch_windows(streams, rng, config), loss_of,
               schedule=WarmupCosine(config.lr, config.warmup_steps, config.min_lr_ratio), budget=budget,
               stopping=stopping, evaluate=lambda: evaluate(rec, val)[0], after_epoch=after_epoch,
               max_epochs=config.max_epochs, steps_per_epoch=steps_per_epoch, grad_clip=config.grad_clip,
               eval_every=config.eval_every, tokens_of=lambda batch: int((batch[1] != PAD).sum()),
               progress=progress, desc="sasrec epoch")
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return rec, best_metrics, budget.spent


def config_dict(config) -> dict:
    return asdict(config)

"""The one training loop: AdamW parameter groups, warm-up + cosine schedule, time budget, early stopping.

Pretraining (trainer/pretrain.py) and the SASRec baseline (trainer/sasrec.py) run `train`; the online
trainer (trainer/online.py) builds its optimiser with `adamw` and takes its steps with `optimizer_step`.
`train` runs epochs of gradient steps until `max_epochs`, the time budget or early stopping ends it;
after each epoch it evaluates when due (every `eval_every` epochs, the last epoch, and when the budget is
spent) and hands the epoch's record to the caller, which logs, keeps the best weights and checkpoints.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, TypeVar

import torch
from tqdm import tqdm

Batch = TypeVar("Batch")


def adamw(model: torch.nn.Module, lr: float, weight_decay: float, *, one_group: bool = False,
          betas: tuple[float, float] = (0.9, 0.98)) -> torch.optim.AdamW:
    """AdamW with weight decay on the matrices (embeddings, linear weights) and none on the norm gains.

    `one_group`: every parameter in one group, decayed alike (the online trainer's layout, which the
    optimiser state in its checkpoints holds).
    """
    if one_group:
        return torch.optim.AdamW(model.parameters(), lr=lr, betas=betas, weight_decay=weight_decay)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=betas)


def grow_state(optimizer: torch.optim.Optimizer, param: torch.nn.Parameter) -> None:
    """Zero-pad the optimiser's per-element state (Adam's moments) of a parameter whose rows grew in place."""
    state = optimizer.state.get(param, {})
    for key, value in state.items():
        if torch.is_tensor(value) and value.dim() and value.shape[1:] == param.shape[1:] \
                and value.shape[0] < param.shape[0]:
            state[key] = torch.cat([value, value.new_zeros(param.shape[0] - value.shape[0], *value.shape[1:])])


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def optimizer_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, loss: torch.Tensor,
                   grad_clip: float) -> None:
    """One gradient step on `loss`, gradients clipped to norm `grad_clip`."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()


@dataclass(frozen=True)
class WarmupCosine:
    """Linear warm-up over `warmup_steps`, then cosine from `lr` down to `min_lr_ratio * lr` as progress goes
    0 -> 1 (progress: the larger of the step and the time-budget fraction, so the schedule ends at
    whichever comes first)."""
    lr: float
    warmup_steps: int
    min_lr_ratio: float

    def __call__(self, step: int, progress: float) -> float:
        if step < self.warmup_steps:
            return self.lr * (step + 1) / self.warmup_steps
        progress = min(max(progress, 0.0), 1.0)
        floor = self.lr * self.min_lr_ratio
        return floor + 0.5 * (self.lr - floor) * (1 + math.cos(math.pi * progress))


class TimeBudget:
    """Training wall-clock against a budget: seconds of finished epochs (`spent`, carried over a resume)
    plus the running epoch's. Evaluation time does not count."""

    def __init__(self, seconds: float, spent: float = 0.0, clock: Callable[[], float] = time.perf_counter):
        self.seconds, self.spent, self.clock = seconds, spent, clock
        self._started: float | None = None

    def start(self) -> None:
        self._started = self.clock()

    def stop(self) -> float:
        """End the running epoch; returns its seconds."""
        took = self.clock() - self._started
        self.spent += took
        self._started = None
        return took

    def elapsed(self) -> float:
        return self.spent + (self.clock() - self._started if self._started is not None else 0.0)

    def exhausted(self) -> bool:
        return self.elapsed() >= self.seconds


@dataclass
class EarlyStopping:
    """Stop after `patience` evaluations in a row without a real improvement: a score above the best by more
    than `min_delta` (relative) resets the count; any higher score is still a new best (its weights are kept),
    so noise-sized gains neither stop nor prolong training."""
    patience: int
    best: float = -1.0
    bad: int = 0  # evaluations since the last real improvement
    min_delta: float = 0.0
    bar: float = -1.0  # the score the next real improvement must beat

    def update(self, score: float) -> bool:
        """Record an evaluation; True when it is a new best."""
        improved = score > self.best
        if improved:
            self.best = score
        if score > self.bar:
            self.bar, self.bad = score * (1 + self.min_delta), 0
        else:
            self.bad += 1
        return improved

    @property
    def should_stop(self) -> bool:
        return self.bad >= self.patience


@dataclass
class TrainOutcome:
    epoch: int
    step: int
    stop_reason: str  # max_epochs | time_budget | early_stopping | stop_after_epoch=N
    records: list[dict] = field(default_factory=list)  # this invocation's epoch records


def train(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    epoch_batches: Callable[[], Iterable[Batch]],
    loss_of: Callable[[Batch], torch.Tensor],
    *,
    schedule: WarmupCosine,
    budget: TimeBudget,
    stopping: EarlyStopping,
    evaluate: Callable[[], dict],
    after_epoch: Callable[[dict, bool], None] = lambda record, improved: None,
    max_epochs: int,
    steps_per_epoch: int,
    grad_clip: float,
    eval_every: int = 1,
    monitor: str = "recall@10",
    epoch: int = 0,
    step: int = 0,
    stop_after_epoch: int | None = None,
    tokens_of: Callable[[Batch], int] = lambda batch: int(batch.inputs.numel()),
    progress: bool = False,
    desc: str = "epoch",
) -> TrainOutcome:
    """Train from (`epoch`, `step`) (0, 0 or a resumed run's counters) and return where it stopped.

    Each epoch: `epoch_batches()` yields the batches, `loss_of(batch)` gives each step's loss; the learning
    rate follows `schedule` over `max_epochs * steps_per_epoch` steps or the budget. When due, the model is
    evaluated in eval mode and `evaluate()`'s `monitor` metric feeds `stopping`. Then
    `after_epoch(record, improved)` sees the record {epoch, step, loss, tokens_per_s, train_seconds[, val,
    eval_seconds]}; `improved` says the evaluation was a new best. `stop_after_epoch` ends this call early
    without changing the schedule (as if killed after that epoch's `after_epoch`).
    """
    total_steps = steps_per_epoch * max_epochs
    records: list[dict] = []
    stop_reason = "max_epochs"
    while epoch < max_epochs:
        if budget.exhausted():
            stop_reason = "time_budget"
            break
        model.train()
        budget.start()
        tokens_seen, loss_sum, batches = 0, 0.0, 0
        bar = tqdm(total=steps_per_epoch, desc=f"{desc} {epoch + 1}", unit="step", leave=False) if progress else None
        started = time.perf_counter()
        for batch in epoch_batches():
            elapsed = budget.elapsed()
            lr = schedule(step, max(step / total_steps, elapsed / budget.seconds))
            set_lr(optimizer, lr)
            loss = loss_of(batch)
            optimizer_step(model, optimizer, loss, grad_clip)
            step += 1
            batches += 1
            loss_sum += float(loss.detach())
            tokens_seen += tokens_of(batch)
            if bar is not None:
                rate = tokens_seen / max(time.perf_counter() - started, 1e-9)
                bar.set_postfix(loss=f"{loss_sum / batches:.3f}", tok_s=f"{rate:,.0f}", lr=f"{lr:.2e}")
                bar.update(1)
            if elapsed >= budget.seconds:
                break
        if bar is not None:
            bar.close()
        train_time = budget.stop()
        epoch += 1
        record = {"epoch": epoch, "step": step, "loss": loss_sum / max(batches, 1),
                  "tokens_per_s": tokens_seen / max(train_time, 1e-9), "train_seconds": budget.spent}
        improved = False
        if epoch % eval_every == 0 or epoch == max_epochs or budget.exhausted():
            model.eval()
            t0 = time.perf_counter()
            record["val"] = evaluate()
            record["eval_seconds"] = time.perf_counter() - t0
            improved = stopping.update(record["val"][monitor])
        records.append(record)
        after_epoch(record, improved)
        if stopping.should_stop:
            stop_reason = "early_stopping"
            break
        if stop_after_epoch is not None and epoch >= stop_after_epoch:
            stop_reason = f"stop_after_epoch={stop_after_epoch}"
            break
    return TrainOutcome(epoch, step, stop_reason, records)

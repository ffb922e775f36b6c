"""Pretraining on logged sequences: AdamW, warm-up + cosine decay, clipping, early stopping, resume.

The loop is a plain function over plain objects (split, tokenizer, trie), so the CLI, the quality
benchmark and tests all drive the same code. Every `eval_every` epochs it measures Recall@10 of
trie-constrained generation on a fixed sample of validation users, keeps the best weights in
`<out>/model` (registry format) and the full training state in `<out>/checkpoint` (weights, AdamW
moments, counters, RNG states), so a killed run resumes where its last checkpoint left it.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from trainer.data import (EvalCase, LeaveOneOut, TokenWindows, Tokenizer, level_cross_entropy, token_spans,
                          weighted_cross_entropy)
from trainer.metrics import ranking_report
from trainer.overrides import apply_overrides
from trainer.model import ModelConfig, Transformer
from trainer import registry


@dataclass
class TrainConfig:
    d_model: int = 128
    n_layers: int = 4
    n_heads: int = 4
    dropout: float = 0.2
    window_events: int = 20
    batch_size: int = 128
    lr: float = 2e-3
    min_lr_ratio: float = 0.05
    weight_decay: float = 0.05
    warmup_steps: int = 200
    max_epochs: int = 100
    time_budget_s: float = 3600.0  # training wall-clock budget; the cosine schedule ends at whichever comes first
    grad_clip: float = 1.0
    sid_weight: float = 1.0
    action_weight: float = 0.1  # Amazon's action is always "purchase": little to learn there
    seed: int = 0
    eval_every: int = 1  # epochs
    val_users: int = 2000
    eval_beam: int = 20
    eval_batch: int = 64
    patience: int = 4  # evaluations without a better validation Recall@10
    threads: int = 2
    event_context: bool = True  # the model's event-context embedding (see trainer/model.py)
    softmax: str = "level"  # "level": over the target's token type (see data.level_cross_entropy); "full": vocabulary

    @classmethod
    def from_overrides(cls, base: "TrainConfig | None" = None, **overrides) -> "TrainConfig":
        return cls(**apply_overrides(asdict(base or cls()), overrides, "training"))


@dataclass
class TrainResult:
    model: Transformer
    best_metrics: dict
    epochs: int
    steps: int
    train_seconds: float
    history: list[dict] = field(default_factory=list)


def model_config_for(config: TrainConfig, vocab) -> ModelConfig:
    group = vocab.sid_length + 1
    # BOS + window of events + one generated item and its action
    return ModelConfig(vocab_size=vocab.size, max_len=1 + (config.window_events + 1) * group,
                       d_model=config.d_model, n_layers=config.n_layers, n_heads=config.n_heads,
                       dropout=config.dropout,
                       event_ends=(*vocab.action_range, vocab.BOS) if config.event_context else ())


def learning_rate(config: TrainConfig, step: int, progress: float) -> float:
    """Linear warm-up, then cosine from lr down to min_lr_ratio*lr as progress goes 0 -> 1."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    progress = min(max(progress, 0.0), 1.0)
    floor = config.lr * config.min_lr_ratio
    return floor + 0.5 * (config.lr - floor) * (1 + math.cos(math.pi * progress))


def make_optimizer(model: Transformer, config: TrainConfig) -> torch.optim.AdamW:
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.lr, betas=(0.9, 0.98),
    )


def evaluate_generation(model, vocab, trie, tokenizer: Tokenizer, cases: Sequence[EvalCase], window_events: int,
                        beam: int = 20, top_k: int = 10, batch_size: int = 64, exclude_seen: bool = True,
                        progress: bool = False) -> tuple[dict, list[list[str]], dict]:
    """Ranking metrics of trie-constrained generation on leave-one-out cases.

    Returns (metrics, top-k item lists, validity counts). Every returned item is checked against the trie.
    """
    from serving.generation import GenerationConfig, GenerationEngine

    engine = GenerationEngine(model, vocab, trie, GenerationConfig(
        beam_size=beam, top_k=top_k, exclude_seen=exclude_seen, window_events=window_events,
        with_actions=False))
    tokens = [tokenizer.encode(c.history, window_events) for c in cases]
    order = sorted(range(len(cases)), key=lambda i: len(tokens[i]))  # similar lengths batch with little padding
    ranked: list[list[str]] = [[] for _ in cases]
    invalid = short = 0
    iterator = range(0, len(cases), batch_size)
    if progress:
        from tqdm import tqdm

        iterator = tqdm(iterator, desc="generate", unit="batch", leave=False)
    for start in iterator:
        chunk = order[start : start + batch_size]
        seen = [{item for item, _ in cases[i].history} for i in chunk]
        for i, recs in zip(chunk, engine.recommend_tokens([tokens[i] for i in chunk], seen)):
            items = [r.item_id for r in recs]
            invalid += sum(1 for item in items if item is None or item not in trie)
            short += len(items) < top_k
            ranked[i] = items
    metrics = ranking_report(ranked, [c.target for c in cases])
    return metrics, ranked, {"invalid_items": invalid, "users_with_fewer_than_k": short, "users": len(cases)}


def _train_state(epoch, step, best, bad_evals, seconds, rng, history, config) -> dict:
    return {"train_state": {
        "epoch": epoch, "step": step, "best_recall@10": best, "bad_evals": bad_evals, "train_seconds": seconds,
        "numpy_rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state().tolist(),
        "history": history, "train_config": asdict(config)}}


def pretrain(
    split: LeaveOneOut,
    tokenizer: Tokenizer,
    trie,
    config: TrainConfig,
    out_dir: str | Path | None = None,
    resume: bool = True,
    progress: bool = True,
    log: Callable[[str], None] = print,
    stop_after_epoch: int | None = None,
) -> TrainResult:
    """Train (or resume) and return the best model by validation Recall@10.

    `stop_after_epoch` ends this invocation early without changing the schedule (as if killed after
    that epoch's checkpoint); a later call with the same config resumes.
    """
    torch.set_num_threads(config.threads)
    vocab = tokenizer.vocab
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    data = TokenWindows(split.train, tokenizer, config.window_events, config.sid_weight, config.action_weight)
    model = Transformer(model_config_for(config, vocab))
    optimizer = make_optimizer(model, config)
    val_rng = np.random.default_rng(config.seed + 1)
    val_cases = split.validation
    if config.val_users and len(val_cases) > config.val_users:
        val_cases = [val_cases[i] for i in sorted(val_rng.choice(len(val_cases), config.val_users, replace=False))]
    steps_per_epoch = math.ceil(len(data.streams) / config.batch_size)
    total_steps = steps_per_epoch * config.max_epochs
    spans = token_spans(vocab)
    if config.softmax not in ("level", "full"):
        raise ValueError(f"softmax must be 'level' or 'full', got {config.softmax!r}")

    epoch = step = bad_evals = 0
    best = -1.0
    seconds = 0.0
    history: list[dict] = []
    out = Path(out_dir) if out_dir else None
    if out and resume and (out / "checkpoint" / registry.MANIFEST).exists():
        ckpt = out / "checkpoint"
        loaded, manifest = registry.load_model(ckpt)
        if loaded.config != model.config:
            raise ValueError(f"{ckpt} holds a model of another shape ({loaded.config}); "
                             f"use a new --out or --no-resume")
        model.load_state_dict(loaded.state_dict())
        registry.load_optimizer(ckpt, optimizer, manifest)
        state = manifest["train_state"]
        epoch, step, best, bad_evals = state["epoch"], state["step"], state["best_recall@10"], state["bad_evals"]
        seconds, history = state["train_seconds"], state["history"]
        rng.bit_generator.state = state["numpy_rng"]
        torch.set_rng_state(torch.tensor(state["torch_rng"], dtype=torch.uint8))
        log(f"resumed from {ckpt} at epoch {epoch}, step {step}, best val recall@10 {best:.4f}")
    log(f"model: {model.num_parameters():,} parameters, d={config.d_model} layers={config.n_layers} "
        f"heads={config.n_heads}, max_len={model.config.max_len}; {len(data.streams):,} training users, "
        f"{data.num_target_tokens():,} target tokens per epoch, {steps_per_epoch} steps/epoch")

    best_state = {k: v.clone() for k, v in model.state_dict().items()}
    best_metrics: dict = {}
    if out and epoch and (out / "model" / registry.MANIFEST).exists():  # resumed: the best so far is on disk
        best_model, best_manifest = registry.load_model(out / "model")
        best_state = best_model.state_dict()
        best_metrics = best_manifest["metrics"].get("val", {})
    stop_reason = "max_epochs"
    while epoch < config.max_epochs:
        if seconds >= config.time_budget_s:
            stop_reason = "time_budget"
            break
        model.train()
        t0 = time.perf_counter()
        tokens_seen, loss_sum, batches = 0, 0.0, 0
        iterator = data.batches(config.batch_size, rng)
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=steps_per_epoch, desc=f"epoch {epoch + 1}", unit="step", leave=False)
        for batch in iterator:
            elapsed = seconds + time.perf_counter() - t0
            lr = learning_rate(config, step, max(step / total_steps, elapsed / config.time_budget_s))
            for group in optimizer.param_groups:
                group["lr"] = lr
            if config.softmax == "level":
                loss = level_cross_entropy(model, model.hidden(batch.inputs), batch, spans)
            else:
                loss = weighted_cross_entropy(model(batch.inputs), batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            step += 1
            batches += 1
            loss_sum += float(loss.detach())
            tokens_seen += int(batch.inputs.numel())
            if bar is not None:
                rate = tokens_seen / max(time.perf_counter() - t0, 1e-9)
                bar.set_postfix(loss=f"{loss_sum / batches:.3f}", tok_s=f"{rate:,.0f}", lr=f"{lr:.2e}")
                bar.update(1)
            if elapsed >= config.time_budget_s:
                break
        if bar is not None:
            bar.close()
        train_time = time.perf_counter() - t0
        seconds += train_time
        epoch += 1
        record = {"epoch": epoch, "step": step, "loss": loss_sum / max(batches, 1),
                  "tokens_per_s": tokens_seen / max(train_time, 1e-9), "train_seconds": seconds}
        if epoch % config.eval_every == 0 or epoch == config.max_epochs or seconds >= config.time_budget_s:
            model.eval()
            t1 = time.perf_counter()
            metrics, _, _ = evaluate_generation(model, vocab, trie, tokenizer, val_cases, config.window_events,
                                                beam=config.eval_beam, batch_size=config.eval_batch)
            record["val"] = metrics
            record["eval_seconds"] = time.perf_counter() - t1
            if metrics["recall@10"] > best:
                best, bad_evals, best_metrics = metrics["recall@10"], 0, metrics
                best_state = {k: v.clone() for k, v in model.state_dict().items()}
                if out:
                    registry.save_model(out / "model", model, vocab, step, {"val": metrics},
                                        {"train_config": asdict(config), "epoch": epoch, "train_seconds": seconds})
            else:
                bad_evals += 1
        history.append(record)
        val = record.get("val", {})
        log(f"epoch {epoch} step {step} loss {record['loss']:.4f} {record['tokens_per_s']:,.0f} tok/s "
            f"train {seconds:.0f}s" + (f" | val R@10 {val['recall@10']:.4f} N@10 {val['ndcg@10']:.4f} "
                                       f"(best {best:.4f}, {record['eval_seconds']:.1f}s)" if val else ""))
        if out:
            registry.save_model(out / "checkpoint", model, vocab, step, {}, _train_state(
                epoch, step, best, bad_evals, seconds, rng, history, config), optimizer=optimizer)
            with (out / "train_log.jsonl").open("a") as fh:
                fh.write(json.dumps(record) + "\n")
        if bad_evals >= config.patience:
            stop_reason = "early_stopping"
            break
        if stop_after_epoch is not None and epoch >= stop_after_epoch:
            stop_reason = f"stop_after_epoch={stop_after_epoch}"
            break
    log(f"stopped: {stop_reason} after {epoch} epochs, {seconds:.0f}s; best val recall@10 {best:.4f}")
    model.load_state_dict(best_state)
    model.eval()
    return TrainResult(model, best_metrics, epoch, step, seconds, history)

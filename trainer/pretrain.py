"""Pretraining on logged sequences: the training loop of trainer/loop.py, with resume.

`pretrain` is a plain function over plain objects (split, tokenizer, trie), so the CLI, the quality
benchmark and tests all drive the same code. Every `eval_every` epochs it measures Recall@10 of
trie-constrained generation on a fixed sample of validation users, keeps the best weights in
`<out>/model` (registry format) and the full training state in `<out>/checkpoint` (weights, AdamW
moments, counters, RNG states), so a killed run resumes where its last checkpoint left it.
"""
from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from tqdm import tqdm

from trainer import registry
from trainer.data import (EvalCase, LeaveOneOut, TokenWindows, Tokenizer, dense_cross_entropy, level_cross_entropy,
                          token_spans, weighted_cross_entropy)
from trainer.generation import GenerationConfig, GenerationEngine
from trainer.item_index import sid_tokens_of
from trainer.loop import EarlyStopping, TimeBudget, WarmupCosine, adamw, train
from trainer.metrics import ranking_report
from trainer.model import ModelConfig, Transformer
from trainer.overrides import apply_overrides


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
    val_users: int = 5000  # validation users sampled (0: all); recall@10 ~0.07 then has a standard error ~0.0036
    eval_beam: int = 20
    eval_batch: int = 64
    patience: int = 5  # evaluations without a real improvement of validation Recall@10
    min_delta: float = 0.01  # a real improvement: above the last one by this share (noise-sized gains are not)
    threads: int = 2
    event_context: bool = True  # the model's event-context embedding (see trainer/model.py)
    softmax: str = "level"  # "level": over the target's token type (see data.level_cross_entropy); "full": vocabulary
    dense_weight: float = 1.0  # the dense channel's loss weight; 0 = a model without the dense head
    dense_negatives: int = 0  # 0: softmax over all items; N: sampled softmax over N items with log-Q correction
    item_input: bool = True  # history items also read by their residual row (model.py); needs the dense head

    @classmethod
    def from_overrides(cls, base: "TrainConfig | None" = None, **overrides) -> "TrainConfig":
        return cls(**apply_overrides(asdict(base or cls()), overrides, "training"))


# channel weights tried on validation after training: the dense log-probability's weight in the retrieval score
DENSE_WEIGHT_GRID = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)


@dataclass
class TrainResult:
    model: Transformer
    best_metrics: dict
    epochs: int
    steps: int
    train_seconds: float
    history: list[dict] = field(default_factory=list)
    dense_weight: float | None = None  # the channel weight chosen on validation (None: no dense head)


def model_config_for(config: TrainConfig, vocab, dense_items: int = 0) -> ModelConfig:
    group = vocab.sid_length + 1
    # BOS + window of events + one generated item and its action
    return ModelConfig(vocab_size=vocab.size, max_len=1 + (config.window_events + 1) * group,
                       d_model=config.d_model, n_layers=config.n_layers, n_heads=config.n_heads,
                       dropout=config.dropout,
                       event_ends=(*vocab.action_range, vocab.BOS) if config.event_context else (),
                       dense_items=dense_items if config.dense_weight > 0 else 0,
                       sid_length=vocab.sid_length if config.dense_weight > 0 else 0,
                       item_input=config.item_input and config.dense_weight > 0 and config.event_context)


def new_model(config: TrainConfig, vocab, trie) -> Transformer:
    """A fresh model; with the dense head, one residual row per catalogue item (named by its SID)."""
    items = trie.item_ids()
    model = Transformer(model_config_for(config, vocab, len(items)))
    if model.has_dense_head:
        model.item_sid_tokens.copy_(sid_tokens_of(vocab, trie, items))
    return model


def item_log_q(model: Transformer, sequences, tokenizer: Tokenizer) -> torch.Tensor:
    """log P(item) by training frequency (+1 smoothing), in the model's residual-row order: the sampled
    softmax's proposal."""
    counts = Counter(tokenizer.item_tokens(item) for events in sequences.values() for item, _ in events)
    rows = [counts.get(tuple(t), 0) + 1 for t in model.item_sid_tokens.tolist()]
    freq = torch.tensor(rows, dtype=torch.float)
    return (freq / freq.sum()).log()


def make_optimizer(model: Transformer, config: TrainConfig) -> torch.optim.AdamW:
    return adamw(model, config.lr, config.weight_decay)


def evaluate_generation(model, vocab, trie, tokenizer: Tokenizer, cases: Sequence[EvalCase], window_events: int,
                        beam: int = 20, top_k: int = 10, batch_size: int = 64, exclude_seen: bool = True,
                        progress: bool = False, channels: str | None = None, index=None,
                        dense_weight: float = 1.0) -> tuple[dict, list[list[str]], dict]:
    """Ranking metrics of the generation engine on leave-one-out cases (`channels`: see GenerationConfig;
    `index`: the dense channel's item index, built from the trie when None).

    Returns (metrics, top-k item lists, validity counts). Every returned item is checked against the trie.
    """
    engine = GenerationEngine(model, vocab, trie, GenerationConfig(
        beam_size=beam, top_k=top_k, exclude_seen=exclude_seen, window_events=window_events,
        with_actions=False, channels=channels, dense_weight=dense_weight), index=index)
    tokens = [tokenizer.encode(c.history, window_events) for c in cases]
    order = sorted(range(len(cases)), key=lambda i: len(tokens[i]))  # similar lengths batch with little padding
    ranked: list[list[str]] = [[] for _ in cases]
    invalid = short = 0
    iterator = range(0, len(cases), batch_size)
    if progress:
        iterator = tqdm(iterator, desc=f"generate ({engine.channels})", unit="batch", leave=False)
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


def choose_dense_weight(model, vocab, trie, tokenizer: Tokenizer, cases: Sequence[EvalCase], window_events: int,
                        grid: Sequence[float], beam: int = 20, batch_size: int = 64) -> tuple[float, dict]:
    """The channel weight of the retrieval score with the best Recall@10 on validation cases (ties: NDCG@10,
    then the smaller weight). One search per batch; every weight re-ranks the same merged candidates.
    Returns (weight, {weight: metrics})."""
    engine = GenerationEngine(model, vocab, trie, GenerationConfig(
        beam_size=beam, top_k=10, window_events=window_events, with_actions=False, channels="both"))
    tokens = [tokenizer.encode(c.history, window_events) for c in cases]
    ranked = {w: [] for w in grid}
    for start in range(0, len(cases), batch_size):
        chunk = cases[start : start + batch_size]
        seen = [{item for item, _ in c.history} for c in chunk]
        candidates = engine.search([engine._truncate(t) for t in tokens[start : start + batch_size]], seen)
        for w in grid:
            ranked[w].extend([r.item_id for r in recs] for recs in engine.rank(candidates, dense_weight=w))
    targets = [c.target for c in cases]
    report = {w: ranking_report(ranked[w], targets) for w in grid}
    best = max(grid, key=lambda w: (report[w]["recall@10"], report[w]["ndcg@10"], -w))
    return best, report


def _shown(metrics: dict, monitor: str) -> str:
    """The epoch line's validation figures: R@10 and N@10 for retrieval, else the monitored metric and the rest."""
    if "recall@10" in metrics and "ndcg@10" in metrics:
        return f"R@10 {metrics['recall@10']:.4f} N@10 {metrics['ndcg@10']:.4f}"
    return " ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float))


def _train_state(epoch, step, stopping: EarlyStopping, seconds, rng, history, config) -> dict:
    return {"train_state": {
        "epoch": epoch, "step": step, "best_recall@10": stopping.best, "bad_evals": stopping.bad,
        "stop_bar": stopping.bar,
        "train_seconds": seconds, "numpy_rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state().tolist(),
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
    validate: Callable[[Transformer], dict] | None = None,
    monitor: str = "recall@10",
) -> TrainResult:
    """Train (or resume) and return the best model by validation Recall@10 (or by `validate(model)`'s
    `monitor` metric, higher is better, when a caller measures something else, e.g. action AUC).

    `stop_after_epoch` ends this invocation early without changing the schedule (as if killed after
    that epoch's checkpoint); a later call with the same config resumes.
    """
    torch.set_num_threads(config.threads)
    vocab = tokenizer.vocab
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    data = TokenWindows(split.train, tokenizer, config.window_events, config.sid_weight, config.action_weight)
    model = new_model(config, vocab, trie)
    optimizer = make_optimizer(model, config)
    val_rng = np.random.default_rng(config.seed + 1)
    val_cases = split.validation
    if config.val_users and len(val_cases) > config.val_users:
        val_cases = [val_cases[i] for i in sorted(val_rng.choice(len(val_cases), config.val_users, replace=False))]
    steps_per_epoch = math.ceil(len(data.streams) / config.batch_size)
    spans = token_spans(vocab)
    if config.softmax not in ("level", "full"):
        raise ValueError(f"softmax must be 'level' or 'full', got {config.softmax!r}")

    epoch = step = 0
    stopping = EarlyStopping(config.patience, min_delta=config.min_delta)
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
        epoch, step = state["epoch"], state["step"]
        stopping = EarlyStopping(config.patience, state["best_recall@10"], state["bad_evals"], config.min_delta,
                                 state.get("stop_bar", state["best_recall@10"]))
        seconds, history = state["train_seconds"], state["history"]
        rng.bit_generator.state = state["numpy_rng"]
        torch.set_rng_state(torch.tensor(state["torch_rng"], dtype=torch.uint8))
        log(f"resumed from {ckpt} at epoch {epoch}, step {step}, best val recall@10 {stopping.best:.4f}")
    log(f"model: {model.num_parameters():,} parameters, d={config.d_model} layers={config.n_layers} "
        f"heads={config.n_heads}, max_len={model.config.max_len}; {len(data.streams):,} training users, "
        f"{data.num_target_tokens():,} target tokens per epoch, {steps_per_epoch} steps/epoch")

    best_state = {k: v.clone() for k, v in model.state_dict().items()}
    best_metrics: dict = {}
    if out and epoch and (out / "model" / registry.MANIFEST).exists():  # resumed: the best so far is on disk
        best_model, best_manifest = registry.load_model(out / "model")
        best_state = best_model.state_dict()
        best_metrics = best_manifest["metrics"].get("val", {})

    log_q = item_log_q(model, split.train, tokenizer) if model.has_dense_head and config.dense_negatives else None

    def loss_of(batch) -> torch.Tensor:
        hidden = model.hidden(batch.inputs)
        if config.softmax == "level":
            loss = level_cross_entropy(model, hidden, batch, spans)
        else:
            loss = weighted_cross_entropy(model.logits(hidden), batch)
        if model.has_dense_head:
            loss = loss + config.dense_weight * dense_cross_entropy(model, hidden, batch, vocab.level_range(0),
                                                                    log_q, config.dense_negatives)
        return loss

    def evaluate() -> dict:
        if validate is not None:
            return validate(model)
        metrics, _, _ = evaluate_generation(model, vocab, trie, tokenizer, val_cases, config.window_events,
                                            beam=config.eval_beam, batch_size=config.eval_batch)
        return metrics

    def after_epoch(record: dict, improved: bool) -> None:
        nonlocal best_state, best_metrics
        if improved:
            best_metrics = record["val"]
            best_state = {k: v.clone() for k, v in model.state_dict().items()}
            if out:
                registry.save_model(out / "model", model, vocab, record["step"], {"val": record["val"]},
                                    {"train_config": asdict(config), "epoch": record["epoch"],
                                     "train_seconds": record["train_seconds"]})
        history.append(record)
        val = record.get("val", {})
        log(f"epoch {record['epoch']} step {record['step']} loss {record['loss']:.4f} "
            f"{record['tokens_per_s']:,.0f} tok/s train {record['train_seconds']:.0f}s"
            + (f" | val {_shown(val, monitor)} (best {monitor} {stopping.best:.4f}, {record['eval_seconds']:.1f}s)"
               if val else ""))
        if out:
            registry.save_model(out / "checkpoint", model, vocab, record["step"], {}, _train_state(
                record["epoch"], record["step"], stopping, record["train_seconds"], rng, history, config),
                optimizer=optimizer)
            with (out / "train_log.jsonl").open("a") as fh:
                fh.write(json.dumps(record) + "\n")

    budget = TimeBudget(config.time_budget_s, spent=seconds)
    outcome = train(model, optimizer, lambda: data.batches(config.batch_size, rng), loss_of,
                    schedule=WarmupCosine(config.lr, config.warmup_steps, config.min_lr_ratio), budget=budget,
                    stopping=stopping, evaluate=evaluate, after_epoch=after_epoch, max_epochs=config.max_epochs,
                    steps_per_epoch=steps_per_epoch, grad_clip=config.grad_clip, eval_every=config.eval_every,
                    epoch=epoch, step=step, stop_after_epoch=stop_after_epoch, progress=progress,
                    monitor=monitor)
    log(f"stopped: {outcome.stop_reason} after {outcome.epoch} epochs, {budget.spent:.0f}s; "
        f"best val {monitor} {stopping.best:.4f}")
    model.load_state_dict(best_state)
    model.eval()
    dense_weight = None
    if model.has_dense_head:
        dense_weight, by_weight = choose_dense_weight(model, vocab, trie, tokenizer, val_cases, config.window_events,
                                                      DENSE_WEIGHT_GRID, config.eval_beam, config.eval_batch)
        log("channel weight on validation: " + ", ".join(
            f"{w:g}: R@10 {m['recall@10']:.4f}" for w, m in by_weight.items()) + f" -> dense_weight {dense_weight:g}")
        if out and (out / "model" / registry.MANIFEST).exists():
            manifest = registry.read_manifest(out / "model")
            registry.save_model(out / "model", model, vocab, manifest["step"], manifest["metrics"], {
                **{k: manifest[k] for k in ("train_config", "epoch", "train_seconds") if k in manifest},
                "generation": {"dense_weight": dense_weight,
                               "validation_recall@10": {str(w): m["recall@10"] for w, m in by_weight.items()}}})
    return TrainResult(model, best_metrics, outcome.epoch, outcome.step, budget.spent, history, dense_weight)

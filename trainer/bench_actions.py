"""`sidstream bench actions --dataset DIR`: action prediction on real graded feedback (MovieLens-100K).

Split (trainer.actions.chronological_split): per user, the last 20% of the rated events (by timestamp, then
item id) are test; of the earlier ones the last 10% are validation (early stopping of both models) and the rest
train them. Each test event is scored from the user's whole true past, earlier test events included.
Models: sidstream (P(action) of the generative model, read after the item's SID tokens), pointwise (LightGBM
on hand-built features, trainer.pointwise) and item_prior (the item's smoothed training rate), with the same
time budget for sidstream and the pointwise ranker.
Then, per test user, the user's test items ordered by the value function (from the history before the test
events) against the ratings given: NDCG with gain 2^rating - 1, next to ordering by retrieval likelihood alone
and at random.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from catalogue.catalogue import ItemCatalogue, build_catalogue
from catalogue.datasets import load_movielens
from catalogue.settings import EMBEDDING_SOURCES
from trainer.actions import (TARGETS, chronological_split, item_prior, labels, ndcg, predicted_action_probs,
                             random_ndcg, target_given_action, target_probs)
from trainer.bench_quality import environment
from trainer.data import EvalCase, LeaveOneOut, Tokenizer
from trainer.generation import GenerationConfig, GenerationEngine
from trainer.metrics import auc
from trainer.pointwise import FeatureBuilder, PointwiseConfig, predict_pointwise, train_pointwise
from trainer.pretrain import TrainConfig, pretrain
from trainer.value import ValueFunction

# sidstream's settings for graded feedback: a small model (72k training events), long windows (a user's mean
# rating needs many past ratings; users rate dozens of films per session), the SID loss at a tenth of the action
# loss (the objective here is the action). Chosen on validation AUC: window 100 and sid_weight 0.1 reached 0.772
# where window 50 and sid_weight 0.5 plateaued at 0.762, both in 900 s.
GRADED_TRAIN = dict(d_model=64, n_layers=2, n_heads=2, dropout=0.2, window_events=100, batch_size=32, lr=2e-3,
                    warmup_steps=100, action_weight=1.0, sid_weight=0.1, max_epochs=2000, eval_every=10,
                    patience=5, min_delta=0.002, val_users=0, time_budget_s=900.0)
QUICK_GRADED = dict(time_budget_s=60.0, eval_every=5, max_epochs=40)
# each scored rating sees at least 3/4 of a window of true past (chunks of a quarter window)
SCORING_CHUNK = 0.25
MONITOR = "mean_auc"  # validation metric sidstream is early-stopped on: the targets' mean AUC


def log_loss(probs: np.ndarray, y: np.ndarray) -> float:
    p = np.clip(np.asarray(probs, dtype=np.float64), 1e-7, 1 - 1e-7)
    return float(-np.mean(np.where(y, np.log(p), np.log1p(-p))))


def score(probs: dict[str, np.ndarray], events) -> dict[str, dict[str, float]]:
    return {t: {"auc": round(auc(probs[t], labels(events, t)), 4),
                "log_loss": round(log_loss(probs[t], labels(events, t)), 4)} for t in TARGETS}


def codes_for(items: int) -> int:
    """Codes per SID level for a catalogue of `items`: about 8 items per first-level code, a power of two in
    2..256 (1,682 films: 128), so that a small catalogue's codes are shared enough to learn from."""
    return int(min(256, max(2, 2 ** math.floor(math.log2(max(items / 8, 2))))))


def graded_catalogue(dataset: Path, ml, split, cache_dir: Path, sid_source: str, log: Callable[[str], None]):
    """The catalogue of the dataset's items, SIDs fitted on the fit events only (cached)."""
    if sid_source not in EMBEDDING_SOURCES:
        raise ValueError(f"unknown SID source {sid_source!r}; choose one of {', '.join(EMBEDDING_SOURCES)}")
    codes = codes_for(len(ml.items))
    target = cache_dir / f"{dataset.name}-graded-fit-only-{sid_source}-{codes}"
    if (target / "manifest.json").exists():
        log(f"reusing catalogue {target}")
        return ItemCatalogue.load(target)
    sequences = {u: [r.item for r in rs] for u, rs in split.fit.items()}
    log(f"building catalogue for {len(ml.items):,} items into {target} ({sid_source} SIDs, fit events only)")
    catalogue, _ = build_catalogue(ml.items, sequences, target, log=log, embedding_source=sid_source,
                                   actions=ml.actions, progress=False, codes_per_level=codes)
    return catalogue


def sidstream_probs(model, tokenizer, split, window_events: int, part: str) -> tuple[np.ndarray, list]:
    """P(action) of every event of `part` (validation or test) from its true past: ([N, A], events)."""
    out, events = [], []
    for user in split.fit:
        past = split.fit[user] + (split.validation[user] if part == "test" else [])
        scored = split.validation[user] if part == "validation" else split.test[user]
        if not scored:
            continue
        seq = [(r.item, r.action) for r in past + scored]
        out.append(predicted_action_probs(model, tokenizer, seq, window_events, first=len(past),
                                          chunk_share=SCORING_CHUNK))
        events.extend(scored)
    return np.concatenate(out), events


def value_ndcg(model, catalogue, tokenizer, split, window_events: int, dense_weight: float | None,
               value_function: ValueFunction, seed: int) -> dict:
    """Each test user's test items ordered from the history before them: by value, by retrieval likelihood,
    at random; mean NDCG (gain 2^rating - 1) over users with at least two distinct ratings among them."""
    engine = GenerationEngine(model, catalogue.vocab, catalogue.trie, GenerationConfig(
        window_events=window_events, with_actions=True, order_by="value", dense_weight=dense_weight or 1.0,
        value_weights=dict(value_function.weights)))
    rng = np.random.default_rng(seed)
    by_value, by_retrieval, by_random = [], [], []
    for user in split.fit:
        test = split.test[user]
        ratings = [r.rating for r in test]
        if len(set(ratings)) < 2:  # every order is ideal: nothing to measure
            continue
        history = tokenizer.encode([(r.item, r.action) for r in split.past(user)], window_events)
        with torch.no_grad():
            recs = engine.score_items([history], [[r.item for r in test]])[0]
        by_value.append(ndcg([r.value for r in recs], ratings))
        by_retrieval.append(ndcg([r.retrieval for r in recs], ratings))
        by_random.append(random_ndcg(ratings, rng))
    return {"value_function": round(float(np.mean(by_value)), 4),
            "retrieval_likelihood": round(float(np.mean(by_retrieval)), 4),
            "random": round(float(np.mean(by_random)), 4), "users": len(by_value),
            "gain": "2^rating - 1, discount 1/log2(rank + 2), over each user's whole test list",
            "value_weights": dict(value_function.weights)}


def run_graded_bench(dataset: str | Path, out_file: str | Path, quick: bool = False,
                     train_overrides: dict | None = None, pointwise_overrides: dict | None = None,
                     time_budget_s: float | None = None, rating_actions: str | None = None,
                     sid_source: str = "collaborative", work_dir: str | Path = "var/bench",
                     log: Callable[[str], None] = print) -> dict:
    t_start = time.perf_counter()
    dataset = Path(dataset)
    ml = load_movielens(dataset, rating_actions)
    for problem in ml.problems[:20]:
        log(f"skipped {problem}")
    log(f"{dataset.name}: {len(ml.ratings):,} users, {len(ml.items):,} items, {ml.num_ratings:,} ratings; "
        f"actions {dict(ml.rating_actions)}; {len(ml.problems)} lines skipped")
    split = chronological_split(ml.ratings)
    sizes = {p: sum(len(v) for v in getattr(split, p).values()) for p in ("fit", "validation", "test")}
    log(f"split per user by time: {sizes}")

    settings = {**GRADED_TRAIN, **(QUICK_GRADED if quick else {}), **(train_overrides or {})}
    if time_budget_s is not None:
        settings["time_budget_s"] = time_budget_s
    config = TrainConfig.from_overrides(**settings)
    pointwise_config = PointwiseConfig(**{**asdict(PointwiseConfig()), "time_budget_s": config.time_budget_s,
                                          **(pointwise_overrides or {})})
    catalogue = graded_catalogue(dataset, ml, split, Path(work_dir) / "catalogues", sid_source, log)
    tokenizer = Tokenizer(catalogue.vocab, catalogue.tokens_of)
    given_action = target_given_action(split.train_ratings(), catalogue.vocab.actions)

    # sidstream: trained on the fit events, early-stopped on the validation events' action AUC
    fit_events = {u: [(r.item, r.action) for r in rs] for u, rs in split.fit.items()}
    loo = LeaveOneOut(fit_events, [EvalCase(u, tuple(fit_events[u]), split.validation[u][0].item)
                                   for u in split.fit if split.validation[u]], [])

    def validate(model) -> dict:
        probs, events = sidstream_probs(model, tokenizer, split, config.window_events, "validation")
        scores = score(target_probs(probs, given_action), events)
        return {MONITOR: float(np.mean([s["auc"] for s in scores.values()])),
                **{f"{t}_auc": s["auc"] for t, s in scores.items()}}

    run_dir = Path(work_dir) / f"{dataset.name}-graded-sidstream{'-quick' if quick else ''}"
    log(f"training sidstream (budget {config.time_budget_s:.0f}s) -> {run_dir}")
    result = pretrain(loo, tokenizer, catalogue.trie, config, run_dir, resume=False, progress=False, log=log,
                      validate=validate, monitor=MONITOR)
    torch.set_num_threads(config.threads)
    model = result.model
    probs, test_events = sidstream_probs(model, tokenizer, split, config.window_events, "test")
    report: dict = {"actions": {t: {} for t in TARGETS}}
    models = {"sidstream": score(target_probs(probs, given_action), test_events)}

    log(f"pointwise ranker: features of {sum(sizes.values()):,} events")
    t0 = time.perf_counter()
    tables = FeatureBuilder(split, ml.items, ml.users, pointwise_config).table()
    feature_seconds = time.perf_counter() - t0
    pointwise = train_pointwise(tables, pointwise_config, log=log)
    x_test, pointwise_events = tables["test"]
    if [(e.user, e.item) for e in pointwise_events] != [(e.user, e.item) for e in test_events]:
        raise AssertionError("the pointwise ranker's test events differ from sidstream's")
    models["pointwise"] = score(predict_pointwise(pointwise, x_test), test_events)
    models["item_prior"] = score(item_prior(split.train_ratings(), test_events), test_events)
    for name, by_target in models.items():
        for target, figures in by_target.items():
            report["actions"][target][name] = figures
    for target in TARGETS:
        log(f"{target}: " + ", ".join(f"{m} AUC {report['actions'][target][m]['auc']:.4f} "
                                      f"log loss {report['actions'][target][m]['log_loss']:.4f}" for m in models))
    report["train_seconds"] = {"sidstream": round(result.train_seconds, 1),
                               "pointwise": round(pointwise.train_seconds + feature_seconds, 1), "item_prior": 0.0}

    value_function = ValueFunction.defaults_for(catalogue.vocab.actions)
    report["value_ndcg"] = value_ndcg(model, catalogue, tokenizer, split, config.window_events, result.dense_weight,
                                      value_function, config.seed)
    log(f"test items ordered per user, NDCG: {report['value_ndcg']}")
    report["configuration"] = {
        "dataset": str(dataset), "users": len(ml.ratings), "items": len(ml.items), "ratings": ml.num_ratings,
        "skipped_lines": len(ml.problems), "rating_actions": {str(k): v for k, v in ml.rating_actions.items()},
        "split": "per user by (timestamp, item): last 20% test; of the rest the last 10% validation (early "
                 "stopping), the others fit the models; each test event scored from the user's whole true past",
        "events": sizes, "quick": quick,
        "targets": {"like_or_better": "rating >= 4", "dislike": "rating <= 2"},
        "sidstream": {**asdict(config), "model": str(run_dir / "model"), "scoring_chunk": SCORING_CHUNK,
                      "epochs": result.epochs, "steps": result.steps,
                      "validation": result.best_metrics, "parameters": model.num_parameters(),
                      "target_given_action": {t: dict(zip(catalogue.vocab.actions, w.round(4).tolist()))
                                              for t, w in given_action.items()}},
        "pointwise": {"model": "LightGBM, one binary model per target", **asdict(pointwise_config),
                      "rounds": pointwise.rounds, "validation_log_loss": pointwise.validation,
                      "feature_seconds": round(feature_seconds, 1)},
        "catalogue": {"version": catalogue.vocab.version, "sids": sid_source, "items": len(catalogue.item_ids),
                      "codes_per_level": catalogue.vocab.codes_per_level},
        "environment": environment(), "wall_seconds": round(time.perf_counter() - t_start, 1),
    }
    out = Path(out_file)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    log(f"wrote {out}")
    return report

"""`sidstream bench quality`: leave-one-out, full catalogue, all users; sidstream next to SASRec.

Protocol (ARCHITECTURE.md): last item test, second-to-last validation, everything before for training;
ranking over the whole catalogue; Recall@5/10 and NDCG@5/10 over all users. Both models get the same
split, the same training time budget and early stopping on validation Recall@10. The catalogue's SIDs are
built from item text and the TRAINING part of the sequences only (no test interaction leaks into the
collaborative fallback embeddings). Every generated item is checked against the trie; the run fails if
any test user gets an invalid item.
"""
from __future__ import annotations

import json
import platform
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from trainer.data import LeaveOneOut, Tokenizer, load_split
from trainer.pretrain import TrainConfig, evaluate_generation, pretrain
from trainer.sasrec import SasrecConfig, evaluate as evaluate_sasrec, train_sasrec
from trainer.settings import DEFAULT_SID_SOURCE
from catalogue.bench import cpu_model
from catalogue.catalogue import ItemCatalogue, build_catalogue
from catalogue.datasets import catalogue_actions, load_item_meta
from catalogue.encoder import EMBEDDING_SOURCES
from trainer import registry
from trainer.item_index import build_item_index
from trainer.metrics import coverage_at_k, popular_items, tail_recall_at_k
from trainer.pretrain import TrainResult

# the rows of one trained model: both channels, then each alone (no extra training)
SIDSTREAM_ROWS = {"sidstream": "both", "sidstream_generative": "generative", "sidstream_dense": "dense"}

# Quick: a smoke run that finishes in under 5 minutes on 2 shared cores (numbers are far from converged).
QUICK_TRAIN = dict(time_budget_s=75.0, max_epochs=100, val_users=500, eval_every=2, patience=3, eval_beam=10,
                   d_model=64, n_layers=2, n_heads=2, lr=3e-3, warmup_steps=50, batch_size=64)
QUICK_SASREC = dict(max_epochs=100, val_users=2000, eval_every=2, patience=3)


def environment() -> dict:

    cpu = cpu_model()
    return {"cpu": cpu, "threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version()}


def prepare_catalogue(dataset_dir: Path, raw: dict[str, list[str]], split: LeaveOneOut, catalogue_dir: Path | None,
                      cache_dir: Path, log: Callable[[str], None] = print, sid_source: str = "auto"):
    """Load `catalogue_dir` when given, else build (once, cached under cache_dir) from the training sequences
    only. `sid_source` (catalogue.encoder.EMBEDDING_SOURCES): "collaborative" fits the SIDs on PPMI/SVD
    co-occurrence vectors of those sequences, "text" on MiniLM vectors of the item titles, "auto" on text when
    at least half the items have a title (Beauty), else collaborative (Sports)."""
    if sid_source not in EMBEDDING_SOURCES:
        raise ValueError(f"unknown SID source {sid_source!r}; choose one of {', '.join(EMBEDDING_SOURCES)}")
    if catalogue_dir is not None:
        log(f"loading catalogue {catalogue_dir}")
        return ItemCatalogue.load(catalogue_dir)
    # "auto" keeps the folder name it had before SID sources could be chosen, so cached builds are reused
    target = cache_dir / f"{dataset_dir.name}-train-only{'' if sid_source == 'auto' else '-' + sid_source}"
    if (target / "manifest.json").exists():
        log(f"reusing catalogue {target}")
        return ItemCatalogue.load(target)
    items = load_item_meta(dataset_dir)
    known = {str(i["item_id"]) for i in items}
    all_items = sorted({i for seq in raw.values() for i in seq}, key=lambda s: (len(s), s))
    items = list(items) + [{"item_id": i} for i in all_items if i not in known]
    train_sequences = {u: [i for i, _ in events] for u, events in split.train.items()}
    log(f"building catalogue for {len(items):,} items into {target} ({sid_source} SIDs, training sequences only)")
    catalogue, report = build_catalogue(items, train_sequences, target, log=log, embedding_source=sid_source,
                                        actions=catalogue_actions(dataset_dir))
    log(f"catalogue: {json.dumps({k: v for k, v in report.items() if not isinstance(v, (dict, list))})}")
    return catalogue


def run_quality(dataset: str | Path, out_file: str | Path, predictions_file: str | Path | None = None,
                quick: bool = False, catalogue_dir: str | Path | None = None, work_dir: str | Path = "var/bench",
                train_overrides: dict | None = None, sasrec_overrides: dict | None = None,
                skip_sasrec: bool = False, test_users: int = 0, model_dir: str | Path | None = None,
                sid_source: str = DEFAULT_SID_SOURCE, log: Callable[[str], None] = print) -> dict:
    """Train both models (or take sidstream from `model_dir`), score every test user, write the report.

    Without `catalogue_dir` the catalogue is built from the training sequences with `sid_source` SIDs."""
    t_start = time.perf_counter()
    dataset = Path(dataset)
    work = Path(work_dir)
    raw, split = load_split(dataset)
    n_items = len({i for s in raw.values() for i in s})
    log(f"{dataset.name}: {len(raw):,} users, {n_items:,} items; leave-one-out")
    catalogue = prepare_catalogue(dataset, raw, split, Path(catalogue_dir) if catalogue_dir else None,
                                  work / "catalogues", log, sid_source=sid_source)
    missing = {i for s in raw.values() for i in s} - set(catalogue.item_ids)
    if missing:
        raise ValueError(f"{len(missing)} dataset items have no SID in the catalogue, e.g. {sorted(missing)[:5]}")
    vocab, trie = catalogue.vocab, catalogue.trie

    train_cfg = TrainConfig.from_overrides(**{**(QUICK_TRAIN if quick else {}), **(train_overrides or {})})
    tokenizer = Tokenizer(vocab, catalogue.tokens_of)
    if model_dir is not None:

        model, manifest = registry.load_model(model_dir)
        check_model_vocab(registry.load_vocab(manifest), vocab, model_dir, catalogue_dir)
        train_cfg = TrainConfig.from_overrides(**manifest.get("train_config", {}))
        result = TrainResult(model, manifest["metrics"].get("val", {}), manifest.get("epoch", 0), manifest["step"],
                             manifest.get("train_seconds"),
                             dense_weight=(manifest.get("generation") or {}).get("dense_weight", 1.0))
        log(f"evaluating sidstream model {model_dir} (step {result.steps}, {result.train_seconds}s training)")
    else:
        run_dir = work / f"{dataset.name}-sidstream{'-quick' if quick else ''}"
        log(f"training sidstream (budget {train_cfg.time_budget_s:.0f}s) -> {run_dir}")
        result = pretrain(split, tokenizer, trie, train_cfg, run_dir, resume=False, log=log)
    test_cases = split.test
    if test_users and len(test_cases) > test_users:  # a seeded sample, not the first users: a file's user
        # order need not be random
        rng = np.random.default_rng(0)
        test_cases = [test_cases[i] for i in sorted(rng.choice(len(test_cases), test_users, replace=False))]
    head = popular_items([[i for i, _ in events] for events in split.train.values()])
    catalogue_size = len(catalogue.item_ids)
    rows = SIDSTREAM_ROWS if result.model.has_dense_head else {"sidstream": "generative"}
    index = build_item_index(result.model, vocab, trie) if result.model.has_dense_head else None
    report = {}
    for row, channels in rows.items():
        t0 = time.perf_counter()
        metrics, ranked, validity = evaluate_generation(result.model, vocab, trie, tokenizer, test_cases,
                                                        train_cfg.window_events, beam=20, top_k=10,
                                                        batch_size=train_cfg.eval_batch, progress=True,
                                                        channels=channels, index=index,
                                                        dense_weight=result.dense_weight or 1.0)
        test_seconds = time.perf_counter() - t0
        log(f"{row} test: {fmt(metrics)}; {validity}; {test_seconds:.0f}s")
        if validity["invalid_items"]:
            raise AssertionError(f"{row}: {validity['invalid_items']} invalid generated items")
        if predictions_file:
            write_predictions(predictions_path(predictions_file, row), test_cases, ranked)
        report[row] = {**metrics, **long_tail(ranked, test_cases, head, catalogue_size), "channels": channels,
                       "invalid_generations": validity["invalid_items"],
                       "users_with_fewer_than_10": validity["users_with_fewer_than_k"],
                       "test_users": validity["users"], "test_seconds": round(test_seconds, 1)}
    report["sidstream"].update({
        "epochs": result.epochs, "steps": result.steps, "validation": result.best_metrics,
        "train_seconds": None if result.train_seconds is None else round(result.train_seconds, 1),
        "parameters": result.model.num_parameters()})
    if not skip_sasrec:
        sas_cfg = SasrecConfig(**{**asdict(SasrecConfig()), "time_budget_s": train_cfg.time_budget_s,
                                  **(QUICK_SASREC if quick else {}), **(sasrec_overrides or {})})
        log(f"training SASRec (budget {sas_cfg.time_budget_s:.0f}s)")
        rec, sas_val, sas_seconds = train_sasrec(split.train, split.validation, catalogue.item_ids, sas_cfg, log=log)
        t0 = time.perf_counter()
        sas_metrics, sas_ranked = evaluate_sasrec(rec, test_cases)
        log(f"sasrec test: {fmt(sas_metrics)}")
        if predictions_file:
            write_predictions(predictions_path(predictions_file, "sasrec"), test_cases, sas_ranked)
        report["sasrec"] = {**sas_metrics, **long_tail(sas_ranked, test_cases, head, catalogue_size),
                            "train_seconds": round(sas_seconds, 1), "validation": sas_val,
                            "test_seconds": round(time.perf_counter() - t0, 1),
                            "parameters": rec.model.num_parameters()}
    report["configuration"] = {
        "dataset": str(dataset), "users": len(raw), "items": n_items, "quick": quick,
        "sidstream_model": str(model_dir) if model_dir else "trained in this run",
        "protocol": "leave-one-out (last item test, second-to-last validation), full catalogue, seen items excluded",
        "sidstream": asdict(train_cfg), "rows": rows,
        "generation": {"beam": 20, "top_k": 10, "exclude_seen": True, "dense_candidates": 20,
                       "dense_weight": result.dense_weight,
                       "dense_index": getattr(index, "kind", None)},
        "long_tail": "coverage@10: share of the catalogue in some top 10; tail_recall@10: recall@10 over test "
                     "targets outside the 20% most frequent training items",
        "sasrec": asdict(sas_cfg) if not skip_sasrec else None,
        "catalogue": {"version": vocab.version, "levels": vocab.levels, "codes_per_level": vocab.codes_per_level,
                      "suffix_size": vocab.suffix_size, "items": len(catalogue.item_ids),
                      "path": str(catalogue_dir) if catalogue_dir else f"built ({sid_source} SIDs)",
                      "embedding_model": catalogue.info.get("embedding_model")},
        "environment": environment(), "wall_seconds": round(time.perf_counter() - t_start, 1),
    }
    out = Path(out_file)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    log(f"wrote {out}" + (f" and predictions {predictions_file} (+ one file per other row)" if predictions_file else ""))
    return report


def long_tail(ranked, cases, head, catalogue_size: int) -> dict:
    tail, tail_users = tail_recall_at_k(ranked, [c.target for c in cases], head, 10)
    return {"coverage@10": coverage_at_k(ranked, catalogue_size, 10), "tail_recall@10": tail,
            "tail_users": tail_users}


def predictions_path(predictions_file, row: str) -> Path:
    """The sidstream row writes FILE itself; every other row FILE with its name before the suffix."""
    path = Path(predictions_file)
    return path if row == "sidstream" else path.with_name(f"{path.stem}.{row}{path.suffix}")


def write_predictions(path: Path, cases, ranked) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as fh:
        for case, items in zip(cases, ranked):
            fh.write(f"{case.user}\t{','.join(items)}\n")


def check_model_vocab(model_vocab, vocab, model_dir, catalogue_dir, can_pass_sids: bool = True) -> None:
    """A model only decodes the catalogue it was trained on; say how to get that one when it is another.

    `can_pass_sids`: the command has a --sids option (bench generate has only --catalogue).
    """
    if model_vocab.to_json() != vocab.to_json():
        flags = "the --catalogue, or the --sids," if can_pass_sids else "the --catalogue"
        hint = "" if catalogue_dir else f" (built here from the dataset; pass {flags} the model was trained with)"
        raise ValueError(f"model {model_dir} was trained on catalogue {model_vocab.version}, not on catalogue "
                         f"{vocab.version}{hint}")


def fmt(metrics: dict) -> str:
    return " ".join(f"{k} {v:.4f}" for k, v in metrics.items())

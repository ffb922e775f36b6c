"""`sidstream bench generate`: milliseconds per user for the generation engine, next to SASRec.

Beam 20, top 10, 20 dense candidates, histories of `history` events, batch 1 and 32: both channels together
(`sidstream_ms_per_user`, the served configuration), each alone, and SASRec scoring the full catalogue for the
same histories. The dense index is the one `trainer.item_index.item_index_for` picks at that size; where it
is the HNSW graph, its search is also timed against the exact scan, with its recall@10 against it. Two catalogues: the real one (Beauty, 12,101 items) and a synthetic
one with random unique SIDs (1,000,000 items by default). Weights do not change the cost, so untrained
models of the default sizes are used unless --model is given. Medians over `repeats` timed runs after a
warm-up run.
"""
from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from catalogue.catalogue import ItemCatalogue
from catalogue.settings import CatalogueSettings
from catalogue.trie import SidTrie
from catalogue.vocab import Vocabulary
from trainer import registry
from trainer.bench_quality import check_model_vocab, environment, prepare_catalogue
from trainer.data import load_split
from trainer.generation import GenerationConfig, GenerationEngine
from trainer.item_index import ExactIndex, compose_item_vectors, item_index_for
from trainer.pretrain import TrainConfig, new_model
from trainer.sasrec import Sasrec, SasrecConfig
from trainer.settings import DEFAULT_SID_SOURCE


def _median_ms_per_user(fn, batch: int, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000.0 / batch


def _case(name, vocab, trie, item_ids, model, window, history, repeats, sasrec_config, rng, log) -> dict:
    t0 = time.perf_counter()
    items, vectors = compose_item_vectors(model, vocab, trie)
    index = item_index_for(items, vectors)
    out = {"items": len(item_ids), "history_events": history,
           "dense_index": {"kind": index.kind, "build_seconds": round(time.perf_counter() - t0, 2)}}
    log(f"{name}: {index.kind} dense index of {len(items):,} items in {out['dense_index']['build_seconds']}s")
    exact = index if index.kind == "exact" else ExactIndex(items, vectors)
    engines = {row: GenerationEngine(model, vocab, trie, GenerationConfig(
        beam_size=20, top_k=10, window_events=window, channels=channels), index=index)
        for row, channels in (("sidstream", "both"), ("generative", "generative"), ("dense", "dense"))}
    sasrec = Sasrec(item_ids, sasrec_config)
    sasrec.model.eval()
    out["model_window_events"] = engines["sidstream"]._window_events()
    for batch in (1, 32):
        histories = [[(item_ids[j], "purchase") for j in rng.choice(len(item_ids), history, replace=False)]
                     for _ in range(batch)]
        tokens = [engines["sidstream"].encode_history(h) for h in histories]
        seen = [{i for i, _ in h} for h in histories]
        plain = [[i for i, _ in h] for h in histories]
        row = {}
        with torch.no_grad():
            for name_, engine in engines.items():
                ms = _median_ms_per_user(lambda: engine.recommend_tokens(tokens, seen), batch, repeats)
                row[f"{name_}_ms_per_user"] = round(ms, 3)
            row["sasrec_ms_per_user"] = round(_median_ms_per_user(lambda: sasrec.rank(plain, 10), batch, repeats), 3)
            queries = model.query_vectors(engines["sidstream"].encode(tokens)[0])
            if exact is not index:  # what the graph saves, and what it loses, against the linear scan
                row["dense_exact_scan_ms_per_user"] = round(
                    _median_ms_per_user(lambda: exact.search(queries, 20, seen), batch, repeats), 3)
                row["dense_index_ms_per_user"] = round(
                    _median_ms_per_user(lambda: index.search(queries, 20, seen), batch, repeats), 3)
                found, truth = index.search(queries, 10, seen)[0], exact.search(queries, 10, seen)[0]
                row["dense_index_recall@10_vs_exact"] = round(
                    float(np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth)])), 3)
        out[f"batch_{batch}"] = row
        log(f"{name}: batch {batch}: " + ", ".join(f"{k} {v}" for k, v in row.items()))
    return out


def run_generate(out_file, model_dir=None, catalogue_dir=None, dataset=None, large_items: int = 1_000_000,
                 history: int = 50, repeats: int = 5, threads: int = 2, work_dir="var/bench",
                 log: Callable[[str], None] = print) -> dict:
    torch.set_num_threads(threads)
    rng = np.random.default_rng(0)
    report: dict = {}
    if model_dir:
        model, manifest = registry.load_model(model_dir)
        window = manifest.get("train_config", {}).get("window_events", 20)
    else:
        model, window = None, TrainConfig().window_events
    dataset = Path(dataset) if dataset else CatalogueSettings().data_dir / "amazon_beauty_2014"
    if catalogue_dir or (dataset / "sequences.txt").exists():
        if catalogue_dir:
            catalogue = ItemCatalogue.load(catalogue_dir)
        else:
            raw, split = load_split(dataset)
            catalogue = prepare_catalogue(dataset, raw, split, None, Path(work_dir) / "catalogues", log,
                                          sid_source=DEFAULT_SID_SOURCE)
        vocab = catalogue.vocab
        if model_dir:
            check_model_vocab(registry.load_vocab(manifest), vocab, model_dir, catalogue_dir, can_pass_sids=False)
        net = model or new_model(TrainConfig(), vocab, catalogue.trie).eval()
        report["catalogue"] = _case("catalogue", vocab, catalogue.trie, catalogue.item_ids, net, window, history,
                                 repeats, SasrecConfig(), rng, log)
        report["catalogue"]["source"] = str(catalogue_dir or dataset)
    if large_items:
        vocab = Vocabulary()
        t0 = time.perf_counter()
        space = vocab.codes_per_level ** vocab.levels
        keys = rng.choice(space, size=large_items, replace=False)
        codes = np.stack([(keys // vocab.codes_per_level ** (vocab.levels - 1 - lv)) % vocab.codes_per_level
                          for lv in range(vocab.levels)] + [np.zeros(large_items, dtype=np.int64)], axis=1)
        ids = [str(i) for i in range(large_items)]
        trie = SidTrie.from_codes(vocab, ids, codes)
        log(f"synthetic catalogue of {large_items:,} items built in {time.perf_counter() - t0:.1f}s")
        net = model if model is not None and model.config.vocab_size == vocab.size else \
            new_model(TrainConfig(), vocab, trie).eval()
        report[f"synthetic_{large_items}"] = _case(f"synthetic {large_items:,}", vocab, trie, ids, net, window,
                                                   history, repeats, SasrecConfig(), rng, log)
    report["configuration"] = {"beam": 20, "top_k": 10, "history_events": history, "repeats": repeats,
                               "statistic": "median ms per user", "model": str(model_dir or "untrained default"),
                               "environment": {**environment(), "threads": threads}}
    out = Path(out_file)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    log(f"wrote {out}")
    return report

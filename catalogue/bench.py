"""`sidstream bench catalogue`: build quality and speed of the item language, on a dataset and at 1M items."""
from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from catalogue.catalogue import assign_suffixes
from catalogue.catalogue import build_catalogue, embedding_fingerprint, load_embeddings
from catalogue.datasets import load_item_meta, load_sequences
from catalogue.trie import SidTrie
from catalogue.vocab import Vocabulary
from catalogue.catalogue import ItemCatalogue


def cpu_model() -> str:
    """The CPU's model name (what every benchmark prints it ran on)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or ""


def machine_info() -> dict:
    """What every benchmark reports it ran on."""
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "load_average": [round(x, 2) for x in os.getloadavg()],
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(), "numpy": np.__version__,
            "python": platform.python_version(), "platform": platform.platform()}


def percentile(values, q: float) -> float:
    """The q-th percentile (q in 0..100) of `values`, linearly interpolated between the two nearest ranks (numpy's
    default method, named); NaN when there are no values. The one definition of p50/p99 in every benchmark."""
    if len(values) == 0:
        return float("nan")
    return float(np.percentile(values, q, method="linear"))


def _median_us(fn: Callable[[], object], reps: int) -> float:
    times = np.empty(reps)
    for i in range(reps):
        t0 = time.perf_counter()
        fn()
        times[i] = time.perf_counter() - t0
    return float(np.median(times) * 1e6)


def synthetic_sids(n: int, vocab, seed: int = 0) -> np.ndarray:
    """n unique full SIDs: uniform semantic codes, suffix = rank among items on the same prefix."""
    rng = np.random.default_rng(seed)
    sem = rng.integers(0, vocab.codes_per_level, size=(n, vocab.levels), dtype=np.int64)
    return np.column_stack([sem, assign_suffixes(sem, vocab.suffix_size)])


def mask_timings(trie, codes: np.ndarray, beams=(1, 20, 64), reps: int = 50, seed: int = 0) -> tuple[dict, dict]:
    """Median ms of next_token_mask for B live prefixes, over every decoding step t = 0..L (pooled),
    plus the per-step medians."""
    rng = np.random.default_rng(seed)
    vocab = trie.vocab
    offsets = np.array(vocab.level_offsets)
    pooled, per_step = {}, {}
    for b in beams:
        all_times, steps = [], {}
        for t in range(vocab.sid_length):
            rows = codes[rng.integers(0, codes.shape[0], size=b), :t]
            prefix = torch.from_numpy(rows + offsets[None, :t])
            trie.next_token_mask(prefix)  # warm
            times = []
            for _ in range(reps):
                t0 = time.perf_counter()
                trie.next_token_mask(prefix)
                times.append(time.perf_counter() - t0)
            steps[str(t)] = float(np.median(times) * 1e3)
            all_times += times
        pooled[str(b)] = float(np.median(all_times) * 1e3)
        per_step[str(b)] = steps
    return pooled, per_step


def insert_timing(trie, reps: int, seed: int = 1) -> float:
    """Median us to insert a new item with a fresh SID (then remove it, untimed, to keep the trie as it was)."""
    rng = np.random.default_rng(seed)
    vocab = trie.vocab
    times = []
    done = 0
    while done < reps:
        sem = tuple(int(c) for c in rng.integers(0, vocab.codes_per_level, vocab.levels))
        suffix = trie.free_suffix(sem)
        if suffix is None:
            continue
        codes = sem + (suffix,)
        item = f"bench-new-{done}"
        t0 = time.perf_counter()
        trie.insert(item, codes)
        times.append(time.perf_counter() - t0)
        trie.remove(item)
        done += 1
    return float(np.median(times) * 1e6)


def run(dataset: Path, out: Path, quick: bool = False, workdir: Path | None = None,
        log: Callable[[str], None] = print, synthetic_items: int = 1_000_000) -> dict:


    torch.set_num_threads(min(2, torch.get_num_threads()))
    t_all = time.perf_counter()
    info = machine_info()
    log(f"bench catalogue on {dataset} ({'quick' if quick else 'full'}); {info['cpu']}, "
        f"{info['torch_threads']} torch threads, torch {info['torch']}")
    workdir = workdir or Path("var/bench/catalogue") / dataset.name
    workdir.mkdir(parents=True, exist_ok=True)
    items = load_item_meta(dataset)
    sequences = load_sequences(dataset)
    cache = workdir / "embeddings.safetensors"
    if quick and items and load_embeddings(cache, embedding_fingerprint(items, sequences, 64)) is None:
        # no cached text embeddings and no time to run the encoder: measure on collaborative embeddings
        log("quick: no cached text embeddings in the work dir; using collaborative embeddings for this run")
        items_for_build = [{"item_id": i["item_id"]} for i in items]
        cache = workdir / "embeddings-collaborative.safetensors"
    else:
        items_for_build = items
    text_factory = None
    cat, report = build_catalogue(items_for_build, sequences, workdir / "catalogue", iterations=10 if quick else 25,
                                  cache=cache, progress=False, log=log, text_encoder_factory=text_factory)
    result = {
        "dataset": str(dataset),
        "mode": "quick" if quick else "full",
        "machine": info,
        "items": report["items"],
        "unique_sids": report["unique_sids"],
        "collision_rate_before_suffix": report["collision_rate_before_suffix"],
        "max_suffix": report["max_suffix"],
        "utilisation_per_level": report["utilisation_per_level"],
        "perplexity_per_level": report["perplexity_per_level"],
        "dead_codes_per_level": report["dead_codes_per_level"],
        "largest_prefix_share": report["largest_prefix_share"],
        "reconstruction_error": report.get("reconstruction_error"),
        "build_seconds": report["build_seconds"],
        "embed_seconds": report["embed_seconds"],
        "embeddings_cached": report["embeddings_cached"],
        "embed_seconds_when_cached": report["embed_seconds_when_cached"],
        "fit_seconds": report["fit_seconds"],
        "embedding_model": report["embedding_model"],
        "embedding_sources": report["embedding_sources"],
    }
    if "category_first_code_sharing" in report:
        result["category_first_code_sharing"] = report["category_first_code_sharing"]
    log(f"built {result['items']} items in {result['build_seconds']:.1f}s (embeddings cached: "
        f"{result['embeddings_cached']}); unique SIDs {result['unique_sids']}, utilisation "
        f"{[round(u, 3) for u in result['utilisation_per_level']]}, largest prefix share "
        f"{result['largest_prefix_share']:.4f}, collisions before suffix {result['collision_rate_before_suffix']:.4f}")

    # assignment of new items with the frozen codebooks: embedding -> L codes -> free suffix
    cached = load_embeddings(cache)
    vectors = cached[1] if cached is not None else None
    reps = 300 if quick else 2000
    rng = np.random.default_rng(0)
    if vectors is not None:
        probes = vectors[rng.integers(0, vectors.shape[0], reps)]
        probes = probes + 0.05 * rng.standard_normal(probes.shape).astype(np.float32)
        it = iter(probes)

        def assign_one():
            sem = cat.semantic_codes(next(it))
            cat.trie.free_suffix(sem)

        result["assign_us_p50"] = _median_us(assign_one, reps)
        log(f"assign (frozen codebooks, embedding -> SID): p50 {result['assign_us_p50']:.1f} us")

    # load time of the saved folder (serving and tests load it often)

    t0 = time.perf_counter()
    ItemCatalogue.load(workdir / "catalogue")
    result["load_seconds"] = time.perf_counter() - t0

    ids, codes = cat.codes_matrix()
    mask_reps = 20 if quick else 100
    mask_12k, steps_12k = mask_timings(cat.trie, codes, reps=mask_reps)
    result["trie_insert_us_p50_12k"] = insert_timing(cat.trie, 300 if quick else 2000)

    vocab = Vocabulary(version="synthetic")
    n = synthetic_items
    log(f"building a trie of {n:,} synthetic SIDs")
    codes_1m = synthetic_sids(n, vocab)
    t0 = time.perf_counter()
    trie_1m = SidTrie.from_codes(vocab, [str(i) for i in range(n)], codes_1m)
    result["trie_bulk_build_seconds_1m"] = time.perf_counter() - t0
    result["synthetic_items"] = n
    memory = trie_1m.memory_bytes()
    result["trie_bytes_per_item_1m"] = memory["total"] / n
    result["trie_bytes_per_item_1m_detail"] = {k: v / n for k, v in memory.items()}
    result["trie_insert_us_p50"] = insert_timing(trie_1m, 300 if quick else 3000)
    mask_1m, steps_1m = mask_timings(trie_1m, codes_1m, reps=mask_reps)
    result["mask_ms_p50"] = {"12k": mask_12k, "1m": mask_1m}
    result["mask_ms_p50_per_step"] = {"12k": steps_12k, "1m": steps_1m}
    result["bench_seconds"] = time.perf_counter() - t_all
    log(f"trie insert p50: {result['trie_insert_us_p50']:.1f} us at 1M items "
        f"({result['trie_insert_us_p50_12k']:.1f} us at {len(ids)}); {result['trie_bytes_per_item_1m']:.0f} bytes/item at 1M")
    log(f"mask p50 ms (pooled over steps t=0..L): 12k {mask_12k}; 1m {mask_1m}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    log(f"wrote {out} ({result['bench_seconds']:.1f}s)")
    return result

"""`sidstream bench online --scenario shift`: a synthetic world whose tastes shift at a known event; recovery
curves of a continually trained model against a frozen copy."""
from __future__ import annotations

import copy
import json
import time

import numpy as np
import torch

from catalogue.catalogue import ItemCatalogue
from trainer.bench_quality import environment
from trainer.data import EvalCase, LeaveOneOut, Tokenizer
from trainer.online import OnlineConfig, OnlineTrainer, StreamExample
from trainer.pretrain import TrainConfig, pretrain


def shift_world(chains: int = 6, chain_length: int = 48, users: int = 600, past_events: int = 12,
                stream_events: int = 6000, shift_at: int = 2000, follow: float = 0.85, seed: int = 0):
    """Items on chains; a user walks a chain (the successor with probability `follow`, else a random item of the
    chain). At stream event `shift_at` every chain's successor map is replaced by a random permutation: the
    taste shift. Returns (item embeddings, past sequences, stream [(user, item)], shift_at)."""
    rng = np.random.default_rng(seed)
    n = chains * chain_length
    centres = rng.standard_normal((chains, 8))
    embeddings = np.repeat(centres, chain_length, 0) + 0.3 * rng.standard_normal((n, 8))
    before = {i: (i // chain_length) * chain_length + (i % chain_length + 1) % chain_length for i in range(n)}
    after = {}
    for c in range(chains):
        members = np.arange(c * chain_length, (c + 1) * chain_length)
        order = rng.permutation(members)
        after.update({int(order[k]): int(order[(k + 1) % chain_length]) for k in range(chain_length)})

    def step(item, successor):
        if rng.random() < follow:
            return successor[item]
        return int((item // chain_length) * chain_length + rng.integers(chain_length))

    position, past = {}, {}
    for u in range(users):
        item = int(rng.integers(n))
        seq = [item]
        for _ in range(past_events - 1):
            item = step(item, before)
            seq.append(item)
        past[str(u)], position[str(u)] = [str(i) for i in seq], item
    stream = []
    for t in range(stream_events):
        u = str(int(rng.integers(users)))
        position[u] = step(position[u], before if t < shift_at else after)
        stream.append((u, str(position[u])))
    return embeddings.astype("float32"), past, stream, shift_at


def recovery_events(curve: list[float], bucket: int, shift_at: int, target: float) -> int | None:
    """Events after the shift until a bucket's Recall@10 is back at `target` (None: never)."""
    first = shift_at // bucket
    for k in range(first, len(curve)):
        if curve[k] >= target:
            return (k + 1) * bucket - shift_at
    return None


def run_shift_bench(args, overrides: dict) -> dict:
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    quick = bool(args.quick)
    embeddings, past, stream, shift_at = shift_world(users=400 if quick else 600,
                                                     stream_events=5000 if quick else 8000,
                                                     shift_at=2000 if quick else 3000)
    ids = [str(i) for i in range(len(embeddings))]
    catalogue = ItemCatalogue.fit(ids, embeddings, levels=2, codes_per_level=16, suffix_size=32, iterations=10,
                                  actions=("purchase",), progress=None)
    vocab = catalogue.vocab
    tokenizer = Tokenizer(vocab, catalogue.tokens_of)
    action = "purchase"
    events = {u: [(i, action) for i in seq] for u, seq in past.items()}
    val = sorted(events)[:200]
    split = LeaveOneOut(train={u: ev[:-1] if u in set(val) else ev for u, ev in events.items()},
                        validation=[EvalCase(u, tuple(events[u][:-1]), events[u][-1][0]) for u in val], test=[])
    train_config = TrainConfig.from_overrides(d_model=32, n_layers=2, n_heads=2, window_events=8, batch_size=64,
                                              dropout=0.0, time_budget_s=120.0 if quick else 300.0, max_epochs=80,
                                              warmup_steps=20, val_users=200, patience=100, eval_every=5,
                                              eval_beam=10, threads=args.threads, lr=3e-3)
    result = pretrain(split, tokenizer, catalogue.trie, train_config, out_dir=None, progress=False,
                      log=lambda line: print(f"  pretrain: {line}", flush=True))
    config = OnlineConfig.from_overrides(**{"micro_batch": 16, "replay_ratio": 0.5, "lr": 1e-3, "beam": 10,
                                            "window_events": train_config.window_events, "exclude_seen": False,
                                            **overrides})
    continual = OnlineTrainer(copy.deepcopy(result.model), vocab, catalogue.trie, config)
    frozen = OnlineTrainer(copy.deepcopy(result.model), vocab, catalogue.trie, config, learn=False)
    continual.seed_replay([tokenizer.encode(ev, train_config.window_events, bos=False) for ev in events.values()])
    history = {u: list(seq) for u, seq in past.items()}
    hits = {"continual": [], "frozen": []}
    last = time.perf_counter()
    for start in range(0, len(stream), config.micro_batch):
        examples = []
        for user, item in stream[start : start + config.micro_batch]:
            history[user].append(item)
            window = [(i, action) for i in history[user][-config.window_events:]]
            examples.append(StreamExample(tokenizer.encode(window, bos=False), user_id=user))
        for name, trainer in (("continual", continual), ("frozen", frozen)):
            hits[name].extend(p.hit for p in trainer.process(examples).predictions)
        if time.perf_counter() - last > 15:
            last = time.perf_counter()
            print(f"  stream {start:,}/{len(stream):,}: recall@10 last 500 continual "
                  f"{np.mean(hits['continual'][-500:]):.3f} frozen {np.mean(hits['frozen'][-500:]):.3f}", flush=True)
    bucket = 500
    curves = {name: [float(np.mean(h[k : k + bucket])) for k in range(0, len(h), bucket)] for name, h in hits.items()}
    pre = {name: float(np.mean(h[max(0, shift_at - 1000) : shift_at])) for name, h in hits.items()}
    out = {"shift_at_event": shift_at, "bucket_events": bucket, "curves": curves, "pre_shift_recall@10": pre,
           "recovery_target": "a 500-event bucket's Recall@10 >= 0.9 x that model's own pre-shift Recall@10 "
                              "(mean over the 1000 events before the shift)",
           "events_to_recover": {name: recovery_events(curves[name], bucket, shift_at, 0.9 * pre[name])
                                 for name in curves},
           "post_shift_recall@10_last_1000": {name: float(np.mean(h[-1000:])) for name, h in hits.items()},
           "configuration": {"quick": quick, "items": len(ids), "users": len(past), "stream_events": len(stream),
                             "pretrain_seconds": result.train_seconds, "pretrain_val": result.best_metrics,
                             "online": vars(config), "seconds": time.perf_counter() - t0,
                             "world": "6 chains x 48 items; successor followed with p=0.85; at the shift every "
                                      "chain's successor map is replaced by a random permutation"},
           "environment": environment()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"measured on {out['environment']['cpu']}, {out['environment']['threads']} threads, "
          f"torch {out['environment']['torch']}")
    for name in curves:
        print(f"{name:9s} pre-shift recall@10 {pre[name]:.3f}; events to recover {out['events_to_recover'][name]}; "
              f"curve ({bucket}-event buckets, shift after bucket {shift_at // bucket}): "
              + " ".join(f"{v:.2f}" for v in curves[name]))
    print(f"wrote {args.out}")
    return out

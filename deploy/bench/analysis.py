"""`sidstream bench analysis`: what-if and attribution on the synthetic world, where the truth is planted.

A trigger is planted (trainer.synthetic.PlantedTrigger: users who like item X go on to like the items of topic
C); the model is trained on 80% of the users, as `bench actions` trains it, and served in process by the
serving core (serving.service.RecommenderService, the code behind POST /whatif and POST /explain). For every
later event of a held-out, triggered user on a topic-C item while X is still in the window, it asks:
- /explain: is X the event whose occlusion lowers P(like | history, item) most? (`planted_trigger_top1_share`,
  against the chance share 1 / history length);
- /whatif: how much does removing X change P(like) of that item? (mean, spread, share of cases lowered).
Then slates against pointwise top-k on the same held-out users (`slate`, `topk`: recall@10 of each user's last
event, distinct first SID codes, mean pairwise cosine distance of the items' latent vectors, mean value), and
the cost of what-if and explain at 50-event histories (`whatif_ms`, `explain_ms`: p50 and p99). A/B arms are
not built, so the report has no `ab` key.
"""
from __future__ import annotations

import json
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from catalogue.bench import machine_info, percentile
from serving.analysis import Edit
from serving.api import Query
from serving.service import RecommenderService
from serving.settings import ServingSettings
from trainer.data import Tokenizer, leave_one_out
from trainer.pretrain import pretrain
from trainer.registry import save_model
from trainer.synthetic import (SyntheticWorld, by_user, check_action_bench_settings, choose_trigger,
                               world_catalogue)

WINDOW = 50  # events the model reads: the timings are at 50-event histories


def run_analysis_bench(out_file, quick: bool = False, seed: int = 0, log=print) -> dict:
    t_start = time.perf_counter()
    config, world_cfg = check_action_bench_settings(seed, quick, {"window_events": WINDOW})
    world = SyntheticWorld(world_cfg)
    trigger = choose_trigger(world)
    logs = by_user(world.simulate(trigger))
    topic = {it.item_id: it.topic for it in world.items}
    log(f"synthetic world: {len(logs):,} users, {len(world.items):,} items; planted: users who like item "
        f"{trigger.item_id} (topic {topic[trigger.item_id]}) go on to like topic {trigger.topic}")
    catalogue = world_catalogue(world, seed=seed)
    users = sorted(logs, key=int)
    cut = int(len(users) * 0.8)
    split = leave_one_out({u: [(e.item_id, e.action) for e in logs[u]] for u in users[:cut]})
    result = pretrain(split, Tokenizer(catalogue.vocab, catalogue.tokens_of), catalogue.trie, config, None, log=log)
    torch.set_num_threads(config.threads)

    with tempfile.TemporaryDirectory() as tmp:
        save_model(tmp, result.model, catalogue.vocab, extra={"train_config": {"window_events": WINDOW}})
        service = RecommenderService(catalogue.vocab, catalogue.trie, None,
                                     ServingSettings(follow_updates=False, max_history_events=WINDOW))
        service.load_model(tmp)
    report = {"planted_trigger": planted_trigger(service, logs, users[cut:], trigger, topic, 150 if quick else 600,
                                                 log)}
    report["planted_trigger_top1_share"] = report["planted_trigger"]["top1_share"]
    report.update(slate_and_topk(service, logs, users[cut:][: 300 if quick else 2000], world, log))
    report.update(timings(service, catalogue.trie.item_ids(), world_cfg.seed, 20 if quick else 100, log))
    report["configuration"] = {"world": asdict(world_cfg), "trigger": asdict(trigger), "train": asdict(config),
                               "train_seconds": round(result.train_seconds, 1), "quick": quick,
                               "wall_seconds": round(time.perf_counter() - t_start, 1), **machine_info()}
    out = Path(out_file)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    log(f"wrote {out}")
    return report


def planted_trigger(service, logs, users, trigger, topic, max_cases: int, log) -> dict:
    """Explain and what-if on every later topic-C event of the held-out users who liked the trigger."""
    top1, top1_retrieval, top1_attention, chance, changes, triggered = [], [], [], [], [], set()
    for user in users:
        events = logs[user]
        liked = next((i for i, e in enumerate(events) if e.item_id == trigger.item_id and e.action == "like"), None)
        if liked is None:
            continue
        for i in range(liked + 1, len(events)):
            if topic[events[i].item_id] != trigger.topic or i - liked > WINDOW or len(top1) >= max_cases:
                continue
            history = [(e.item_id, e.action) for e in events[max(0, i - WINDOW) : i]]
            at = liked - max(0, i - WINDOW)  # the trigger's index among the events the model reads
            item = events[i].item_id
            explained = service.explain(None, history, item, "like")
            top1.append(explained["by_action"][0] == at)
            top1_retrieval.append(explained["by_retrieval"][0] == at)
            top1_attention.append(explained["by_attention"][0] == at)
            chance.append(1.0 / len(history))
            scored = service.whatif(None, history, [Edit("remove", at)], items=[item])["items"][0]
            changes.append(scored["change"]["action_probs"]["like"])
            triggered.add(user)
    if not top1:
        raise ValueError("no held-out user liked the trigger and met its topic later: a larger world is needed")
    changes_arr = np.array(changes)
    out = {"item_id": trigger.item_id, "topic": trigger.topic, "users": len(triggered), "cases": len(top1),
           "top1_share": round(float(np.mean(top1)), 4),
           "top1_share_by_retrieval": round(float(np.mean(top1_retrieval)), 4),
           "top1_share_by_attention": round(float(np.mean(top1_attention)), 4),  # the heuristic, for comparison
           "chance_top1_share": round(float(np.mean(chance)), 4),
           "whatif_remove_trigger_like_change": {"mean": round(float(changes_arr.mean()), 4),
                                                 "std": round(float(changes_arr.std()), 4),
                                                 "share_lowered": round(float((changes_arr < 0).mean()), 4)}}
    log(f"planted trigger: {out['cases']} predictions of {out['users']} held-out users; the trigger ranks first "
        f"by /explain in {out['top1_share']:.1%} (chance {out['chance_top1_share']:.1%}); removing it changes "
        f"P(like) by {out['whatif_remove_trigger_like_change']['mean']:+.3f} on average "
        f"(sd {out['whatif_remove_trigger_like_change']['std']:.3f}, lowered in "
        f"{out['whatif_remove_trigger_like_change']['share_lowered']:.1%})")
    return out


def slate_and_topk(service, logs, users, world, log, k: int = 10, batch: int = 50) -> dict:
    """The same held-out users' lists both ways, each user's last event the target: recall@k, distinct first
    SID codes, mean pairwise cosine distance of the items' latent vectors, mean value of the list."""
    out = {}
    for mode in ("slate", "topk"):
        hits, distinct, distance, value = [], [], [], []
        for start in range(0, len(users), batch):
            chunk = users[start : start + batch]
            queries = [Query(k=k, events=tuple((e.item_id, e.action) for e in logs[u][:-1][-WINDOW:]), mode=mode)
                       for u in chunk]
            for user, result in zip(chunk, service.recommend(queries)):
                items = [i["item_id"] for i in result["items"]]
                hits.append(logs[user][-1].item_id in items)
                distinct.append(len({i["sid"][0] for i in result["items"]}))
                vectors = world.item_matrix[[world.row_of[i] for i in items]]
                cos = vectors @ vectors.T / np.outer(np.linalg.norm(vectors, axis=1), np.linalg.norm(vectors, axis=1))
                distance.append(float((1 - cos)[np.triu_indices(len(items), 1)].mean()))
                value.append(float(np.mean([i["value"] for i in result["items"]])))
        out[mode] = {"recall@10": round(float(np.mean(hits)), 4),
                     "distinct_first_codes": round(float(np.mean(distinct)), 2),
                     "pairwise_distance": round(float(np.mean(distance)), 4), "value": round(float(np.mean(value)), 4),
                     "users": len(hits)}
    log(f"slate vs top-k over {len(users)} held-out users: recall@10 {out['slate']['recall@10']} / "
        f"{out['topk']['recall@10']}, distinct first codes {out['slate']['distinct_first_codes']} / "
        f"{out['topk']['distinct_first_codes']}, pairwise distance {out['slate']['pairwise_distance']} / "
        f"{out['topk']['pairwise_distance']}, value {out['slate']['value']} / {out['topk']['value']}")
    return out


def timings(service, items, seed: int, repeats: int, log) -> dict:
    """ms per /whatif (one edit, the top 10 scored) and per /explain (every event occluded) at 50-event
    histories of random items and actions: the cost of the service calls behind the routes, no HTTP."""
    rng = np.random.default_rng(seed)
    actions = list(service.vocab.actions)
    whatif_ms, explain_ms = [], []
    for _ in range(repeats):
        history = [(items[int(j)], actions[int(rng.integers(len(actions)))])
                   for j in rng.choice(len(items), WINDOW, replace=False)]
        t0 = time.perf_counter()
        body = service.whatif(None, history, [Edit("set_action", WINDOW // 2, action=actions[0])], k=10)
        whatif_ms.append((time.perf_counter() - t0) * 1000)
        t0 = time.perf_counter()
        service.explain(None, history, body["items"][0]["item_id"])
        explain_ms.append((time.perf_counter() - t0) * 1000)
    out = {name: {"p50": round(percentile(values, 50), 2), "p99": round(percentile(values, 99), 2),
                  "histories": len(values), "history_events": WINDOW}
           for name, values in (("whatif_ms", whatif_ms), ("explain_ms", explain_ms))}
    log(f"at {WINDOW}-event histories: /whatif p50 {out['whatif_ms']['p50']} ms (p99 {out['whatif_ms']['p99']}), "
        f"/explain p50 {out['explain_ms']['p50']} ms (p99 {out['explain_ms']['p99']}), {torch.get_num_threads()} "
        f"torch threads")
    return out


def cmd_bench_analysis(args) -> int:
    run_analysis_bench(args.out, quick=args.quick, seed=args.seed)
    return 0

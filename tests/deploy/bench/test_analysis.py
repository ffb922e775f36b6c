"""bench analysis's measurement on a small planted world, with an untrained model served by the real serving core
(the share it reports is only meaningful after training; here the counting and the report are checked)."""
import torch

from deploy.bench.analysis import WINDOW, planted_trigger, slate_and_topk, timings
from serving.service import RecommenderService
from serving.settings import ServingSettings
from trainer.pretrain import TrainConfig, new_model
from trainer.registry import save_model
from trainer.synthetic import SyntheticWorld, WorldConfig, by_user, choose_trigger, world_catalogue


def served(world, tmp_path):
    """The world's catalogue and an untrained model served in process by the serving core."""
    catalogue = world_catalogue(world, codes_per_level=8)
    torch.manual_seed(0)
    model = new_model(TrainConfig(d_model=32, n_layers=1, n_heads=2, window_events=WINDOW), catalogue.vocab,
                      catalogue.trie)
    save_model(tmp_path / "m", model, catalogue.vocab, extra={"train_config": {"window_events": WINDOW}})
    service = RecommenderService(catalogue.vocab, catalogue.trie, None,
                                 ServingSettings(follow_updates=False, max_history_events=WINDOW))
    service.load_model(tmp_path / "m")
    return catalogue, service


def test_planted_trigger_cases_and_timings_are_counted_from_the_served_model(tmp_path):
    world = SyntheticWorld(WorldConfig(users=200, items=300, events_per_user=(10, 20), seed=2))
    trigger = choose_trigger(world)
    logs = by_user(world.simulate(trigger))
    catalogue, service = served(world, tmp_path)
    topic = {it.item_id: it.topic for it in world.items}
    result = planted_trigger(service, logs, sorted(logs, key=int), trigger, topic, 8, lambda line: None)
    assert result["cases"] == 8 and 1 <= result["users"] <= 8
    assert 0.0 <= result["top1_share"] <= 1.0 and 0.0 < result["chance_top1_share"] < 1.0
    assert set(result["whatif_remove_trigger_like_change"]) == {"mean", "std", "share_lowered"}
    cost = timings(service, catalogue.trie.item_ids(), 0, 2, lambda line: None)
    assert set(cost) == {"whatif_ms", "explain_ms"}
    assert cost["explain_ms"]["histories"] == 2 and cost["explain_ms"]["p50"] > 0


def test_slate_and_topk_are_scored_on_the_same_users(tmp_path):
    world = SyntheticWorld(WorldConfig(users=60, items=200, events_per_user=(8, 12), seed=5))
    logs = by_user(world.simulate())
    catalogue, service = served(world, tmp_path)
    result = slate_and_topk(service, logs, sorted(logs, key=int)[:12], world, lambda line: None, batch=5)
    for mode in ("slate", "topk"):
        assert result[mode]["users"] == 12 and 0 <= result[mode]["recall@10"] <= 1
        assert 1 <= result[mode]["distinct_first_codes"] <= 8 and result[mode]["pairwise_distance"] > 0

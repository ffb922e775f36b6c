import numpy as np
import pytest

from trainer.actions import predicted_action_probs
from trainer.synthetic import (WORLD_ACTIONS, Interaction, SyntheticWorld, WorldConfig, action_probabilities,
                               bench_world_config, by_user, choose_trigger, history_reference_probs,
                               item_prior_probs)


def small(seed=0):
    return SyntheticWorld(WorldConfig(seed=seed, items=200, users=60, events_per_user=(10, 20)))


def test_world_is_reproducible_and_seed_dependent():
    a, b, c = small(0).simulate(), small(0).simulate(), small(1).simulate()
    assert a == b
    assert a != c


def test_items_have_cluster_text_and_some_are_born_later():
    world = small()
    records = world.item_records()
    assert len(records) == 200 and all(r["title"] for r in records)
    # items of one topic share topic words in their text; other topics do not share them
    t0 = [it for it in world.items if it.topic == 0]
    words0 = set(" ".join(it.title for it in t0).split()) & {"hiking", "trail", "boots", "tent"}
    assert len(words0) >= 3
    assert not any(w in it.title.split() for it in world.items if it.topic != 0 for w in words0)
    born_late = {it.item_id: it.born for it in world.items if it.born > 0}
    assert born_late
    for event in world.simulate():
        assert born_late.get(event.item_id, 0) <= event.ts  # never shown before it exists


def test_ground_truth_action_model():
    p = action_probabilities(np.array([-3.0, 0.0, 3.0]))
    assert np.allclose(p.sum(-1), 1.0)
    click, downvote = WORLD_ACTIONS.index("click"), WORLD_ACTIONS.index("downvote")
    assert p[0, downvote] > p[1, downvote] > p[2, downvote]
    assert p[0, click] < p[1, click] < p[2, click]
    events = SyntheticWorld(WorldConfig(seed=3, items=200, users=200, events_per_user=(10, 20))).simulate()
    sampled = np.array([[e.action == a for a in WORLD_ACTIONS] for e in events]).mean(0)
    expected = np.array([e.probs for e in events]).mean(0)
    assert np.allclose(sampled, expected, atol=0.03)
    assert set(by_user(events)) == {str(u + 1) for u in range(200)}


def test_teacher_forced_action_probs_shape():
    import torch

    from catalogue.trie import SidTrie
    from catalogue.vocab import Vocabulary
    from trainer.data import Tokenizer
    from trainer.model import ModelConfig, Transformer

    vocab = Vocabulary(levels=1, codes_per_level=4, suffix_size=2)
    trie = SidTrie(vocab)
    for k in range(6):
        trie.insert(str(k), (k % 4, k // 4))
    tok = Tokenizer(vocab, lambda i: vocab.sid_to_tokens(trie.codes_of(i)))
    torch.manual_seed(0)
    model = Transformer(ModelConfig(vocab_size=vocab.size, max_len=40, d_model=16, n_layers=1, n_heads=2,
                                    dropout=0.0)).eval()
    events = [(str(k % 6), "click") for k in range(7)]
    probs = predicted_action_probs(model, tok, events, window_events=3)
    assert probs.shape == (7, len(vocab.actions))
    assert np.allclose(probs.sum(1), 1.0, atol=1e-5)
    # window 4 -> chunks of 2 events after up to 2 events of past: event 5 is scored after events 2..4
    probs = predicted_action_probs(model, tok, events, window_events=4)
    seq = tok.encode(events[2:5] + [events[5]])[:-1]
    with torch.no_grad():
        direct = torch.softmax(model(torch.tensor([seq]))[0, -1, vocab.action_range.start:vocab.action_range.stop], -1)
    assert np.allclose(probs[5], direct.numpy(), atol=1e-5)


@pytest.mark.slow
def test_model_learns_item_dependent_actions():
    """A deterministic item -> action rule must be learned: AUC near 1 on teacher-forced P(action)."""
    import torch

    from catalogue.trie import SidTrie
    from catalogue.vocab import Vocabulary
    from trainer.data import Tokenizer, leave_one_out
    from trainer.metrics import auc
    from trainer.pretrain import TrainConfig, pretrain

    vocab = Vocabulary(levels=2, codes_per_level=8, suffix_size=2, actions=("click", "purchase"))
    rng = np.random.default_rng(0)
    trie = SidTrie(vocab)
    for k in range(40):
        trie.insert(str(k), (k % 5, (k // 5) % 8, 0))
    seqs = {str(u): [(str(k), "purchase" if k % 5 in (0, 2) else "click")
                     for k in rng.choice(40, size=int(rng.integers(5, 9)), replace=False)] for u in range(200)}
    tok = Tokenizer(vocab, lambda i: vocab.sid_to_tokens(trie.codes_of(i)))
    config = TrainConfig(d_model=32, n_layers=1, n_heads=2, dropout=0.0, window_events=6, batch_size=16, lr=5e-3,
                         warmup_steps=5, max_epochs=25, val_users=0, eval_beam=10, eval_every=100, patience=100,
                         threads=1)
    result = pretrain(leave_one_out(seqs), tok, trie, config, None, progress=False, log=lambda s: None)
    scores, labels = [], []
    for events in list(seqs.values())[:50]:
        probs = predicted_action_probs(result.model, tok, events, 6)
        scores += list(probs[:, vocab.actions.index("purchase")])
        labels += [a == "purchase" for _, a in events]
    assert auc(scores, labels) > 0.95


def test_history_reference_uses_only_the_past_and_beats_chance_on_downvotes():
    from trainer.metrics import auc

    world = SyntheticWorld(WorldConfig(seed=2, items=300, users=150, events_per_user=(15, 25)))
    logs = by_user(world.simulate())
    events = next(iter(logs.values()))
    probs = history_reference_probs(world, events)
    assert probs.shape == (len(events), 4) and np.allclose(probs.sum(-1), 1.0)
    # the first event has no past: only the item's quality speaks
    first = world.items[[it.item_id for it in world.items].index(events[0].item_id)]
    assert np.allclose(probs[0], action_probabilities(first.quality))
    # changing a later action never changes an earlier score
    altered = list(events)
    altered[5] = type(events[5])(events[5].user_id, events[5].item_id, "downvote" if events[5].action != "downvote"
                                 else "like", events[5].ts, events[5].probs)
    assert np.allclose(history_reference_probs(world, altered)[:6], probs[:6])
    scores, labels = [], []
    for user_events in logs.values():
        scores.extend(history_reference_probs(world, user_events)[:, WORLD_ACTIONS.index("downvote")])
        labels.extend(e.action == "downvote" for e in user_events)
    assert auc(np.array(scores), np.array(labels)) > 0.6


def test_bench_world_config_applies_overrides_and_refuses_bad_ones():
    assert bench_world_config(3, quick=True).users == 800
    cfg = bench_world_config(0, overrides={"users": 5000, "drift": 0.0, "events_per_user": "30-50"})
    assert (cfg.users, cfg.drift, cfg.events_per_user, cfg.items) == (5000, 0.0, (30, 50), 3000)
    assert bench_world_config(0, overrides={"events_per_user": (5, 9)}).events_per_user == (5, 9)  # a pair too
    for bad, message in [({"userz": 10}, "unknown world settings"), ({"users": 0}, "positive integer"),
                         ({"items": 2.5}, "positive integer"), ({"events_per_user": "40-20"}, "LO-HI"),
                         ({"events_per_user": 30}, "LO-HI"), ({"events_per_user": "\u00b2-\u00b3"}, "LO-HI"),
                         ({"users": 4}, "at least 5 users"), ({"items": True}, "positive integer"),
                         ({"drift": "x"}, "number >= 0"), ({"drift": -0.1}, "number >= 0"),
                         ({"jump_prob": 2}, "probability"), ({"new_item_share": 1.0}, "below 1"),
                         ({"topics": 1}, "at least 2 topics"), ({"seed": 3}, "--seed")]:
        with pytest.raises(ValueError, match=message):
            bench_world_config(0, overrides=bad)


def test_a_tiny_world_whose_users_see_every_item_still_simulates():
    world = SyntheticWorld(WorldConfig(seed=0, items=4, users=5, events_per_user=(8, 8), new_item_share=0.0,
                                       shown_near_taste=1.0))
    events = world.simulate()
    assert len(events) == 40 and all(np.isfinite(e.probs).all() for e in events)


def test_item_prior_counts_training_actions_with_smoothing():
    def event(item, action):
        return Interaction("u", item, action, 0, (0.25,) * 4)

    train = [[event("a", "downvote"), event("a", "downvote"), event("b", "like")], [event("b", "click")]]
    probs = item_prior_probs(train, [event("a", "click"), event("b", "skip"), event("new", "skip")], smoothing=1.0)
    prior = np.array([1, 0, 1, 2]) / 4  # click, skip, like, downvote over all training events
    assert np.allclose(probs[0], (np.array([0, 0, 0, 2]) + prior) / 3)
    assert np.allclose(probs[1], (np.array([1, 0, 1, 0]) + prior) / 3)
    assert np.allclose(probs[2], prior)  # an item never seen in training gets the overall frequencies
    assert np.allclose(probs.sum(-1), 1.0)


def test_a_planted_trigger_makes_its_likers_like_its_topic_and_leaves_the_plain_world_alone():
    world = SyntheticWorld(WorldConfig(users=400, items=300, seed=3))
    plain = world.simulate()
    trigger = choose_trigger(world, topic=1)
    assert world.items[world.row_of[trigger.item_id]].topic != 1
    planted = by_user(world.simulate(trigger))
    assert SyntheticWorld(WorldConfig(users=400, items=300, seed=3)).simulate() == plain  # no trigger: as before
    topic = {it.item_id: it.topic for it in world.items}
    after, before = [], []
    for events in planted.values():
        liked = next((i for i, e in enumerate(events) if e.item_id == trigger.item_id and e.action == "like"), None)
        for i, e in enumerate(events):
            if topic[e.item_id] == 1:
                (after if liked is not None and i > liked else before).append(e.action == "like")
    assert len(after) > 50 and np.mean(after) > np.mean(before) + 0.2

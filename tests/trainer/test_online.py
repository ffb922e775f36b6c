import copy
import math

import numpy as np
import pytest
import torch

from catalogue.trie import SidTrie
from catalogue.vocab import Vocabulary
from trainer import registry
from trainer.generation import GenerationConfig, GenerationEngine
from trainer.model import ModelConfig, Transformer
from trainer.online import (OnlineConfig, OnlineDataError, OnlineTrainer, ReplayBuffer, RollingMetrics,
                            Prediction, StreamExample, gate, split_window)

VOCAB = Vocabulary(levels=2, codes_per_level=8, suffix_size=4, version="tinyvocab0000001")
WINDOW = 6


def make_trie(n_items=30, seed=0):
    rng = np.random.default_rng(seed)
    sids = [(a, b, c) for a in range(8) for b in range(8) for c in range(4)]
    trie = SidTrie(VOCAB)
    for i, j in enumerate(rng.choice(len(sids), size=n_items, replace=False)):
        trie.insert(f"i{i}", sids[j])
    return trie


def make_model(seed=0):
    torch.manual_seed(seed)
    return Transformer(ModelConfig(vocab_size=VOCAB.size, max_len=1 + (WINDOW + 1) * 4, d_model=32, n_layers=2,
                                   n_heads=2, dropout=0.0)).eval()


def tokens(trie, items, action="purchase"):
    out = []
    for item in items:
        out += VOCAB.sid_to_tokens(trie.codes_of(item)) + [VOCAB.action_token(action)]
    return out


def test_split_window_checks_the_grammar():
    trie = make_trie()
    toks = tokens(trie, ["i1", "i2"], "click")
    history, sid, action = split_window(toks, VOCAB)
    assert history == toks[:4] and sid == toks[4:7] and action == VOCAB.action_token("click")
    with pytest.raises(OnlineDataError, match="whole events"):
        split_window(toks[:-1], VOCAB)
    with pytest.raises(OnlineDataError, match="action"):
        split_window(toks[1:] + [toks[0]], VOCAB)
    bad = list(toks)
    bad[-2] = VOCAB.level_range(0).start  # a level-0 token where the suffix belongs
    with pytest.raises(OnlineDataError, match="level 2"):
        split_window(bad, VOCAB)


def test_replay_buffer_is_a_bounded_uniform_reservoir():
    counts = np.zeros(100)
    for seed in range(200):
        buf = ReplayBuffer(10, seed)
        for i in range(100):
            buf.add([i])
        assert len(buf) == 10 and buf.seen == 100
        for (i,) in buf.items:
            counts[i] += 1
    # each window is held with probability 10/100: 20 expected per window over 200 runs
    assert counts[:50].sum() == pytest.approx(counts[50:].sum(), rel=0.25)
    assert counts.min() > 3
    buf = ReplayBuffer(5, 1)
    for i in range(20):
        buf.add([i, i])
    other = ReplayBuffer(5, 99)
    other.load_state(buf.state())
    assert other.sample(3) == buf.sample(3)
    assert ReplayBuffer(0).sample(3) == []


def test_gate_refuses_a_drop_beyond_tolerance_and_says_why():
    assert gate({"events": 100, "recall@10": 0.19}, {"recall@10": 0.2}, 0.1).accepted
    refused = gate({"events": 100, "recall@10": 0.17}, {"recall@10": 0.2}, 0.1)
    assert not refused.accepted and "0.1700" in refused.reason and "0.2000" in refused.reason
    assert gate({"events": 5, "recall@10": 0.17}, None, 0.1).accepted
    assert not gate({"events": 5, "recall@10": 0.5}, None, 0.1, min_events=10).accepted


def test_gate_with_z_tolerates_noise_but_not_a_real_drop():
    # 1,600 events at recall ~0.02: a 40% lower estimate is within sampling noise
    noisy = gate({"events": 1600, "recall@10": 0.0131}, {"recall@10": 0.0219, "events": 1600}, 0.1, z=2.0)
    assert noisy.accepted, noisy.reason
    assert not gate({"events": 1600, "recall@10": 0.0131}, {"recall@10": 0.0219, "events": 1600}, 0.1).accepted
    # 50,000 events: the same drop is real
    real = gate({"events": 50_000, "recall@10": 0.0131}, {"recall@10": 0.0219, "events": 50_000}, 0.1, z=2.0)
    assert not real.accepted and "se" in real.reason


def test_rolling_metrics_window_and_since_reset():
    m = RollingMetrics(window=2)
    m.add(Prediction("a", ["a"], 0, 1.0))
    m.add(Prediction("b", ["x", "b"], 1, 2.0))
    m.add(Prediction("c", [], None, 3.0))
    r = m.rolling()
    assert r["events"] == 2 and r["recall@10"] == 0.5 and r["ndcg@10"] == pytest.approx(1 / math.log2(3) / 2)
    assert m.since_reset()["events"] == 3 and m.since_reset()["action_logloss"] == 2.0
    m.reset_since()
    assert m.since_reset() == {"events": 0} and m.total_events == 3


def test_process_predicts_with_the_weights_before_the_step_then_trains():
    trie = make_trie()
    model = make_model()
    before = copy.deepcopy(model)
    trainer = OnlineTrainer(model, VOCAB, trie, OnlineConfig(window_events=WINDOW, replay_ratio=0.0, lr=1e-2))
    examples = [StreamExample(tokens(trie, [f"i{u}", f"i{u + 1}", f"i{u + 2}"]), f"e{u}") for u in range(4)]
    result = trainer.process(examples)
    engine = GenerationEngine(before, VOCAB, trie, GenerationConfig(beam_size=20, top_k=10,
                                                                    window_events=WINDOW, with_actions=False))
    expected = engine.recommend_tokens([[VOCAB.BOS] + ex.tokens[:-4] for ex in examples])
    assert [p.ranked for p in result.predictions] == [[r.item_id for r in recs] for recs in expected]
    assert [p.target for p in result.predictions] == ["i2", "i3", "i4", "i5"]
    # action log-loss is -log P(purchase | history, item) of the weights before the step
    with torch.no_grad():
        full = before(torch.tensor([[VOCAB.BOS] + examples[0].tokens[:-1]]))[0, -1]
    span = VOCAB.action_range
    want = -torch.log_softmax(full[span.start:span.stop], -1)[VOCAB.action_token("purchase") - span.start]
    assert result.predictions[0].action_logloss == pytest.approx(float(want), rel=1e-4)
    assert result.loss is not None and trainer.step == 1 and trainer.events == 4 and len(trainer.replay) == 4
    assert any(not torch.equal(p, q) for p, q in zip(model.parameters(), before.parameters()))


def test_frozen_trainer_never_changes_weights_and_bad_windows_are_skipped():
    trie = make_trie()
    model = make_model()
    before = copy.deepcopy(model)
    trainer = OnlineTrainer(model, VOCAB, trie, OnlineConfig(window_events=WINDOW), learn=False)
    good = StreamExample(tokens(trie, ["i1", "i2"]), "good")
    bad = StreamExample([1, 2, 3], "bad")
    result = trainer.process([good, bad])
    assert len(result.predictions) == 1 and [ex.event_id for ex, _ in result.skipped] == ["bad"]
    assert result.loss is None and trainer.step == 0
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before.parameters()))


def test_replay_mixes_older_windows_into_each_step():
    trie = make_trie()
    trainer = OnlineTrainer(make_model(), VOCAB, trie, OnlineConfig(window_events=WINDOW, replay_ratio=2.0))
    trainer.seed_replay([tokens(trie, ["i7", "i8"])] * 10)
    result = trainer.process([StreamExample(tokens(trie, ["i1", "i2"]))] * 3)
    assert result.replayed == 6


@pytest.mark.slow
def test_continual_learning_beats_frozen_on_a_repeating_stream():
    """Every user walks the same item chain; only the learning trainer can pick it up."""
    trie = make_trie()
    chain = [f"i{k}" for k in range(12)]
    config = OnlineConfig(window_events=WINDOW, micro_batch=8, lr=3e-3, replay_ratio=0.5, beam=10)
    learning = OnlineTrainer(make_model(1), VOCAB, trie, config)
    frozen = OnlineTrainer(make_model(1), VOCAB, trie, config, learn=False)
    rng = np.random.default_rng(0)
    hits = {"learning": [], "frozen": []}
    for _ in range(30):
        batch = []
        for _ in range(8):
            end = int(rng.integers(2, len(chain)))
            batch.append(StreamExample(tokens(trie, chain[max(0, end - WINDOW):end + 1])))
        for name, t in (("learning", learning), ("frozen", frozen)):
            hits[name] += [p.hit for p in t.process(batch).predictions]
    late = slice(-80, None)
    assert np.mean(hits["learning"][late]) > 0.8
    assert np.mean(hits["frozen"][late]) < 0.6


def test_publish_due_by_steps_or_time_and_only_with_enough_events():
    now = [0.0]
    trie = make_trie()
    config = OnlineConfig(window_events=WINDOW, publish_every_steps=3, publish_every_s=100, gate_min_events=4)
    trainer = OnlineTrainer(make_model(), VOCAB, trie, config, clock=lambda: now[0])
    ex = StreamExample(tokens(trie, ["i1", "i2"]))
    trainer.process([ex])
    trainer.process([ex])
    assert not trainer.publish_due()
    trainer.process([ex])
    assert not trainer.publish_due()  # 3 steps but only 3 events < gate_min_events
    trainer.process([ex])
    assert trainer.publish_due()
    trainer.mark_published()
    assert not trainer.publish_due() and trainer.candidate_metrics() == {"events": 0}
    trainer.process([ex] * 4)
    assert not trainer.publish_due()
    now[0] = 101.0
    assert trainer.publish_due()
    decision = trainer.judge({"recall@10": 2.0})
    assert not decision.accepted and "below" in decision.reason


def test_both_heads_keep_learning_and_predictions_use_both_channels_with_current_vectors():
    trie = make_trie()
    items = trie.item_ids()
    torch.manual_seed(0)
    model = Transformer(ModelConfig(vocab_size=VOCAB.size, max_len=1 + (WINDOW + 1) * 4, d_model=32, n_layers=2,
                                    n_heads=2, dropout=0.0, dense_items=len(items), sid_length=3)).eval()
    with torch.no_grad():
        model.item_sid_tokens.copy_(torch.tensor([VOCAB.sid_to_tokens(trie.codes_of(i)) for i in items]))
    residual, query = model.item_residual.weight.clone(), model.dense_query.weight.clone()
    trainer = OnlineTrainer(model, VOCAB, trie, OnlineConfig(window_events=WINDOW, replay_ratio=0.0, lr=1e-2))
    examples = [StreamExample(tokens(trie, [f"i{u}", f"i{u + 1}", f"i{u + 2}"]), f"e{u}") for u in range(4)]
    trainer.process(examples)
    assert not torch.equal(model.item_residual.weight, residual) and not torch.equal(model.dense_query.weight, query)
    before_second = copy.deepcopy(model)
    result = trainer.process(examples)  # the second prediction reads the vectors the first step changed
    engine = GenerationEngine(before_second, VOCAB, trie, GenerationConfig(beam_size=20, top_k=10,
                                                                          window_events=WINDOW, with_actions=False))
    expected = engine.recommend_tokens([[VOCAB.BOS] + ex.tokens[:-4] for ex in examples])
    assert trainer.engine.channels == engine.channels == "both"
    assert [p.ranked for p in result.predictions] == [[r.item_id for r in recs] for recs in expected]


def test_a_new_item_gets_its_own_residual_row_once_the_online_trainer_sees_it(tmp_path):
    trie = make_trie(n_items=31)
    trained = [i for i in trie.item_ids() if i != "i30"]  # i30 arrived after training
    torch.manual_seed(0)
    model = Transformer(ModelConfig(vocab_size=VOCAB.size, max_len=1 + (WINDOW + 1) * 4, d_model=32, n_layers=2,
                                    n_heads=2, dropout=0.0, event_ends=(*VOCAB.action_range, VOCAB.BOS),
                                    dense_items=len(trained), sid_length=3, item_input=True)).eval()
    with torch.no_grad():
        model.item_sid_tokens.copy_(torch.tensor([VOCAB.sid_to_tokens(trie.codes_of(i)) for i in trained]))
    new_sid = torch.tensor([VOCAB.sid_to_tokens(trie.codes_of("i30"))])
    assert model.residual_rows(new_sid).item() == -1
    trainer = OnlineTrainer(model, VOCAB, trie, OnlineConfig(window_events=WINDOW, replay_ratio=0.0, lr=1e-2))
    examples = [StreamExample(tokens(trie, ["i1", "i30", "i2"]), "e0"), StreamExample(tokens(trie, ["i3", "i30"]), "e1")]
    trainer.process(examples)
    row = model.residual_rows(new_sid).item()
    assert row == len(trained) and model.config.dense_items == len(trained) + 1 and trainer.new_item_rows == 1
    assert model.item_residual.weight[row].abs().sum() > 0  # the step already trained it
    state = trainer.optimizer.state[model.item_residual.weight]
    assert state["exp_avg"].shape == model.item_residual.weight.shape
    trainer.process(examples)  # no second row, and the optimiser keeps stepping
    assert model.config.dense_items == len(trained) + 1 and trainer.new_item_rows == 1
    # the grown model is a model like any other: saved with its rows and loaded back
    registry.save_model(tmp_path / "m", model, VOCAB)
    loaded, _ = registry.load_model(tmp_path / "m")
    assert torch.equal(loaded.item_residual.weight, model.item_residual.weight)
    assert loaded.residual_rows(new_sid).item() == row

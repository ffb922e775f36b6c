import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from catalogue.trie import SidTrie
from catalogue.vocab import Vocabulary
from tests.trainer.generation_oracle import exhaustive_scores
from trainer.generation import GenerationConfig, GenerationEngine, GenerationError, load_engine
from trainer.model import ModelConfig, Transformer
from trainer.registry import save_model
from trainer.value import ValueFunction

VOCAB = Vocabulary(levels=2, codes_per_level=4, suffix_size=2, actions=("click", "skip", "like", "downvote"))


def make_trie(n_items, seed=0):
    rng = np.random.default_rng(seed)
    all_sids = [(a, b, c) for a in range(4) for b in range(4) for c in range(2)]
    chosen = rng.choice(len(all_sids), size=n_items, replace=False)
    trie = SidTrie(VOCAB)
    for i, j in enumerate(chosen):
        trie.insert(f"i{i}", all_sids[j])
    return trie


def make_model(seed=0):
    torch.manual_seed(seed)
    cfg = ModelConfig(vocab_size=VOCAB.size, max_len=64, d_model=32, n_layers=2, n_heads=2, dropout=0.0)
    model = Transformer(cfg).eval()
    with torch.no_grad():  # sharpen the random model so scores differ clearly
        model.tok_emb.weight.mul_(20)
    return model


def history(trie, items, actions=None):
    actions = actions or ["click"] * len(items)
    return list(zip(items, actions))


def test_beam_equals_exhaustive_on_tiny_catalogue():
    trie = make_trie(12)
    model = make_model()
    engine = GenerationEngine(model, VOCAB, trie, GenerationConfig(beam_size=12, top_k=5, exclude_seen=False))
    for seed, events in enumerate([["i0", "i3"], ["i5"], ["i1", "i2", "i7", "i9"]]):
        h = history(trie, events, ["click", "like", "skip", "downvote"][: len(events)])
        tokens = engine.encode_history(h)
        ref = exhaustive_scores(model, VOCAB, trie, tokens, trie.item_ids())
        best = sorted(ref, key=lambda i: -ref[i])[:5]
        (recs,) = engine.recommend([h])
        assert [r.item_id for r in recs] == best
        for r in recs:
            assert r.log_prob == pytest.approx(ref[r.item_id], abs=1e-4)


def test_batched_equals_one_by_one_and_action_probs_match_teacher_forcing():
    trie = make_trie(14, seed=3)
    model = make_model(seed=1)
    engine = GenerationEngine(model, VOCAB, trie, GenerationConfig(beam_size=6, top_k=4, exclude_seen=False))
    hs = [history(trie, ["i1"]), history(trie, ["i2", "i4", "i6", "i8", "i10"]), history(trie, [])]
    batched = engine.recommend(hs)
    for h, recs in zip(hs, batched):
        (alone,) = engine.recommend([h])
        assert [r.item_id for r in alone] == [r.item_id for r in recs]
        for a, r in zip(alone, recs):
            assert a.log_prob == pytest.approx(r.log_prob, abs=1e-4)
        # action distribution right after the item's last SID token, by a plain forward pass
        for r in recs:
            seq = engine.encode_history(h) + VOCAB.sid_to_tokens(trie.codes_of(r.item_id))
            with torch.no_grad():
                logits = model(torch.tensor([seq]))[0, -1, VOCAB.action_range.start : VOCAB.action_range.stop]
            probs = torch.softmax(logits, -1)
            for i, a in enumerate(VOCAB.actions):
                assert r.action_probs[a] == pytest.approx(float(probs[i]), abs=1e-4)
            assert sum(r.action_probs.values()) == pytest.approx(1.0, abs=1e-5)


def test_exclude_seen_and_value_ordering():
    trie = make_trie(10, seed=5)
    model = make_model(seed=2)
    base = GenerationEngine(model, VOCAB, trie, GenerationConfig(beam_size=10, top_k=10, exclude_seen=False))
    h = history(trie, ["i0"])
    top = [r.item_id for r in base.recommend([h])[0]]
    seen_h = history(trie, top[:3])
    excl = GenerationEngine(model, VOCAB, trie, GenerationConfig(beam_size=10, top_k=10, exclude_seen=True))
    got = [r.item_id for r in excl.recommend([seen_h])[0]]
    assert not set(got) & set(top[:3])
    assert len(got) == 7  # every other item is still found
    # token histories infer the seen items themselves
    got_tokens = [r.item_id for r in excl.recommend_tokens([excl.encode_history(seen_h)])[0]]
    assert got_tokens == got
    weights = {"click": 1.0, "like": 10.0, "downvote": -100.0}
    by_value = GenerationEngine(model, VOCAB, trie, GenerationConfig(beam_size=10, top_k=10, order_by="value",
                                                                     value_weights=weights))
    recs = by_value.recommend([h])[0]
    values = [r.value for r in recs]
    assert values == sorted(values, reverse=True)
    for r in recs:
        assert r.value == pytest.approx(sum(w * r.action_probs[a] for a, w in weights.items()), abs=1e-5)


@settings(max_examples=25, deadline=None)
@given(n_items=st.integers(1, 32), beam=st.integers(1, 8), seed=st.integers(0, 1000),
       hist=st.lists(st.integers(0, 31), max_size=6))
def test_every_generated_item_is_real_and_unseen(n_items, beam, seed, hist):
    trie = make_trie(n_items, seed=seed)
    model = make_model(seed=seed % 7)
    engine = GenerationEngine(model, VOCAB, trie, GenerationConfig(beam_size=beam, top_k=beam))
    h = history(trie, sorted({f"i{i % n_items}" for i in hist}))
    (recs,) = engine.recommend([h])
    ids = [r.item_id for r in recs]
    seen = {i for i, _ in h}
    assert len(ids) == len(set(ids))
    assert all(i in trie and i not in seen for i in ids)
    assert all(math.isfinite(r.log_prob) for r in recs)
    if beam >= n_items:  # the beam holds every live prefix: nothing unseen can be missed
        assert len(ids) == n_items - len(seen)


def test_bad_requests():
    trie = make_trie(5)
    engine = GenerationEngine(make_model(), VOCAB, trie)
    with pytest.raises(GenerationError, match="not in the catalogue"):
        engine.recommend([[("nope", "click")]])
    with pytest.raises(GenerationError):
        GenerationConfig(beam_size=2, top_k=3)
    with pytest.raises(ValueError, match="unknown actions"):
        ValueFunction({"dance": 1.0}).vector(VOCAB.actions)
    assert ValueFunction.parse("click=1, like=10,downvote=-100").weights == {"click": 1, "like": 10, "downvote": -100}


def test_retrieval_only_mode_gives_the_same_items():
    trie = make_trie(12, seed=4)
    model = make_model(seed=4)
    h = history(trie, ["i2", "i3"])
    full = GenerationEngine(model, VOCAB, trie, GenerationConfig(beam_size=8, top_k=5)).recommend([h])[0]
    fast = GenerationEngine(model, VOCAB, trie, GenerationConfig(beam_size=8, top_k=5, with_actions=False))
    got = fast.recommend([h])[0]
    assert [r.item_id for r in got] == [r.item_id for r in full]
    assert all(r.action_probs == {} for r in got)
    with pytest.raises(GenerationError):
        GenerationConfig(with_actions=False, order_by="value")


def test_actions_are_read_for_the_beams_that_can_be_returned():
    trie = make_trie(16, seed=6)
    model = make_model(seed=6)
    h = history(trie, ["i1", "i4"])
    tokens, seen = [GenerationEngine(model, VOCAB, trie).encode_history(h)], [set()]
    by_logprob = GenerationEngine(model, VOCAB, trie, GenerationConfig(beam_size=8, top_k=3, exclude_seen=False))
    by_value = GenerationEngine(model, VOCAB, trie, GenerationConfig(beam_size=8, top_k=3, exclude_seen=False,
                                                                     order_by="value"))
    (by_l,), (by_v,) = by_logprob.search(tokens, seen), by_value.search(tokens, seen)
    assert [c.item_id for c in by_l] == [c.item_id for c in by_v] and len(by_v) == 8
    assert [c.log_prob for c in by_l] == pytest.approx([c.log_prob for c in by_v], abs=1e-6)
    assert all(sum(c.action_probs) == pytest.approx(1.0, abs=1e-5) for c in by_v)  # every beam: value order
    for a, b in zip(by_l[:3], by_v[:3]):  # the top 3 by log-probability: the same
        assert a.action_probs == pytest.approx(b.action_probs, abs=1e-5)
    assert all(c.action_probs is None for c in by_l[3:])  # never returned, never computed


def test_load_engine_checks_vocabulary(tmp_path):
    trie = make_trie(6)
    model = make_model()
    save_model(tmp_path / "m", model, VOCAB, extra={"train_config": {"window_events": 7}})
    engine = load_engine(tmp_path / "m", SimpleNamespace(vocab=VOCAB, trie=trie))
    assert engine.config.window_events == 7
    assert len(engine.recommend([history(trie, ["i1"])])[0]) == 5
    other = Vocabulary(levels=2, codes_per_level=4, suffix_size=2, actions=VOCAB.actions, version="other")
    with pytest.raises(GenerationError, match="vocabulary"):
        load_engine(tmp_path / "m", SimpleNamespace(vocab=other, trie=trie))


def test_a_catalogues_own_actions_drive_the_default_value_function():
    vocab = Vocabulary(levels=2, codes_per_level=4, suffix_size=2, actions=("dislike", "neutral", "like", "love"))
    assert ValueFunction.defaults_for(vocab.actions).weights == {"like": 10.0, "love": 20.0, "neutral": 0.0,
                                                                 "dislike": -20.0}
    trie = SidTrie(vocab)
    for i, sid in enumerate([(0, 0, 0), (1, 2, 0), (3, 1, 1), (2, 2, 0)]):
        trie.insert(f"m{i}", sid)
    torch.manual_seed(0)
    model = Transformer(ModelConfig(vocab_size=vocab.size, max_len=64, d_model=16, n_layers=1, n_heads=2,
                                    dropout=0.0)).eval()
    engine = GenerationEngine(model, vocab, trie, GenerationConfig(beam_size=4, top_k=4, order_by="value"))
    (recs,) = engine.recommend([[("m0", "love"), ("m1", "dislike")]])
    for r in recs:
        assert set(r.action_probs) == set(vocab.actions)
        assert r.value == pytest.approx(20 * r.action_probs["love"] + 10 * r.action_probs["like"]
                                        - 20 * r.action_probs["dislike"], rel=1e-5)
    assert [r.value for r in recs] == sorted((r.value for r in recs), reverse=True)


def test_a_slate_places_each_item_after_the_items_before_it():
    trie = make_trie(20, seed=4)
    model = make_model(seed=2)
    engine = GenerationEngine(model, VOCAB, trie, GenerationConfig(beam_size=10, top_k=10))
    h = history(trie, ["i0", "i1"], ["like", "click"])
    tokens = engine.encode_history(h)
    (slate,) = engine.slate([tokens], [{"i0", "i1"}], k=4)
    assert len(slate) == 4 and len({r.item_id for r in slate}) == 4 and not {"i0", "i1"} & {r.item_id for r in slate}
    # step by step: each placed item is the top-1 after the history plus the items placed before it, each
    # followed by its most likely action
    grown, seen = list(tokens), {"i0", "i1"}
    for placed in slate:
        (top,) = engine.recommend_tokens([grown], [seen])
        assert placed.item_id == top[0].item_id and placed.log_prob == pytest.approx(top[0].log_prob, abs=1e-5)
        action = max(top[0].action_probs, key=top[0].action_probs.get)
        grown += VOCAB.sid_to_tokens(trie.codes_of(placed.item_id)) + [VOCAB.action_token(action)]
        seen.add(placed.item_id)
    # a given action follows every placed item instead; a catalogue smaller than k gives what it has
    (liked,) = engine.slate([tokens], [set()], k=3, action="like")
    (first,) = engine.recommend_tokens([tokens], [set()])
    assert liked[0].item_id == first[0].item_id
    (everything,) = engine.slate([tokens], [set()], k=25)
    assert sorted(r.item_id for r in everything) == sorted(trie.item_ids())
    with pytest.raises(GenerationError, match="unknown action"):
        engine.slate([tokens], [set()], k=2, action="teleport")

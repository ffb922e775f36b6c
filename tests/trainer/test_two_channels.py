import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from catalogue.trie import SidTrie
from catalogue.vocab import Vocabulary
from tests.trainer.generation_oracle import exhaustive_scores
from trainer.data import Batch, dense_cross_entropy
from trainer.generation import GenerationConfig, GenerationEngine, GenerationError
from trainer.item_index import ExactIndex, build_item_index, compose_item_vectors
from trainer.model import ModelConfig, Transformer

VOCAB = Vocabulary(levels=2, codes_per_level=4, suffix_size=2, actions=("click", "skip", "like", "downvote"))
ALL_SIDS = [(a, b, c) for a in range(4) for b in range(4) for c in range(2)]


def make_trie(n_items, seed=0):
    rng = np.random.default_rng(seed)
    trie = SidTrie(VOCAB)
    for i, j in enumerate(rng.choice(len(ALL_SIDS), size=n_items, replace=False)):
        trie.insert(f"i{i}", ALL_SIDS[j])
    return trie


def make_model(trie, seed=0):
    torch.manual_seed(seed)
    items = trie.item_ids()
    model = Transformer(ModelConfig(vocab_size=VOCAB.size, max_len=64, d_model=32, n_layers=2, n_heads=2,
                                    dropout=0.0, dense_items=len(items), sid_length=VOCAB.sid_length)).eval()
    with torch.no_grad():
        model.tok_emb.weight.mul_(20)  # sharpen the random model so scores differ clearly
        model.item_sid_tokens.copy_(torch.tensor([VOCAB.sid_to_tokens(trie.codes_of(i)) for i in items]))
        model.item_residual.weight.normal_()
    return model


def engine(model, trie, **config):
    return GenerationEngine(model, VOCAB, trie, GenerationConfig(**{"beam_size": 8, "top_k": 5, **config}))


H = [("i0", "click"), ("i3", "like"), ("i5", "skip")]


def test_dense_channel_returns_the_exact_top_items_by_dense_score():
    trie = make_trie(20)
    model = make_model(trie)
    (recs,) = engine(model, trie, channels="dense").recommend([H])
    e = engine(model, trie, channels="dense")
    hidden, _ = model.prefill(torch.tensor([e.encode_history(H)]))
    query = model.query_vectors(hidden)[0]
    items, vectors = compose_item_vectors(model, VOCAB, trie)
    scores = {i: float(v @ query.detach().numpy()) for i, v in zip(items, vectors) if i not in {"i0", "i3", "i5"}}
    assert [r.item_id for r in recs] == sorted(scores, key=lambda i: -scores[i])[:5]
    for r in recs:
        assert r.channels == ("dense",) and r.dense_score == pytest.approx(scores[r.item_id], rel=1e-4)


def test_merged_candidates_carry_both_scores_and_the_combined_score_is_documented_sum():
    trie = make_trie(20)
    model = make_model(trie)
    e = engine(model, trie, channels="both", dense_weight=0.5)
    (recs,) = e.recommend([H])
    exact = exhaustive_scores(model, VOCAB, trie, e.encode_history(H), trie.item_ids())
    candidates = e.search([e.encode_history(H)], [{"i0", "i3", "i5"}])[0]
    norm = math.log(sum(math.exp(c.dense_score) for c in candidates))
    assert {"generative", "dense"} <= {ch for c in candidates for ch in c.channels}
    for r in recs:
        assert r.log_prob == pytest.approx(exact[r.item_id], abs=1e-4)  # beam or teacher-forced: same value
        assert r.retrieval == pytest.approx(r.log_prob + 0.5 * (r.dense_score - norm), abs=1e-5)
        assert r.score == r.retrieval and sum(r.action_probs.values()) == pytest.approx(1.0, abs=1e-5)
    assert [r.score for r in recs] == sorted((r.score for r in recs), reverse=True)


def test_generative_channel_alone_is_the_beam_search_of_before():
    trie = make_trie(20)
    model = make_model(trie)
    e = engine(model, trie, channels="generative", exclude_seen=False, beam_size=20)
    (recs,) = e.recommend([H])
    exact = exhaustive_scores(model, VOCAB, trie, e.encode_history(H), trie.item_ids())
    assert [r.item_id for r in recs] == sorted(exact, key=lambda i: -exact[i])[:5]
    assert all(r.channels == ("generative",) and r.dense_score is None for r in recs)


def test_channel_choice_needs_a_dense_head_and_defaults_to_both_with_one():
    trie = make_trie(10)
    plain = Transformer(ModelConfig(vocab_size=VOCAB.size, max_len=64, d_model=16, n_layers=1, n_heads=2))
    assert engine(plain, trie).channels == "generative"
    with pytest.raises(GenerationError, match="dense head"):
        engine(plain, trie, channels="both")
    assert engine(make_model(trie), trie).channels == "both"
    with pytest.raises(GenerationError, match="channels must be one of"):
        GenerationConfig(channels="sparse")


def test_a_new_item_is_found_by_both_channels_from_its_sid_alone():
    trie = make_trie(12)
    model = make_model(trie)
    free = next(s for s in ALL_SIDS if trie.item_at(s) is None)
    trie.insert("new", free)  # as the stream inserts it; the model has no residual row for it
    index = build_item_index(model, VOCAB, trie)
    e = GenerationEngine(model, VOCAB, trie, GenerationConfig(beam_size=13, top_k=13, dense_candidates=13,
                                                              channels="both"), index=index)
    (recs,) = e.recommend([[("i0", "click")]])
    new = next(r for r in recs if r.item_id == "new")
    assert new.channels == ("generative", "dense")
    assert "new" in index and model.residual_rows(torch.tensor([VOCAB.sid_to_tokens(free)])).item() == -1


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), n_seen=st.integers(0, 25), beam=st.integers(3, 6))
def test_seen_items_never_take_a_slot(seed, n_seen, beam):
    """Whatever the history covers, every channel returns k unseen items when k are left."""
    trie = make_trie(30, seed=seed % 7)
    model = make_model(trie, seed=seed % 3)
    rng = np.random.default_rng(seed)
    items = trie.item_ids()
    seen = [items[i] for i in rng.choice(len(items), size=n_seen, replace=False)]
    history = [(i, "click") for i in seen] or [("i0", "click")]
    k = 3
    for channels in ("generative", "dense", "both"):
        e = GenerationEngine(model, VOCAB, trie, GenerationConfig(beam_size=beam, top_k=k, channels=channels,
                                                                  window_events=None))
        (recs,) = e.recommend([history])
        names = [r.item_id for r in recs]
        assert not set(names) & {i for i, _ in history}
        assert len(names) == min(k, len(items) - len({i for i, _ in history})), channels


def test_dense_loss_is_softmax_cross_entropy_over_all_items():
    trie = make_trie(10)
    model = make_model(trie).train()
    items = trie.item_ids()
    seq = [VOCAB.BOS] + VOCAB.sid_to_tokens(trie.codes_of(items[2])) + [VOCAB.action_token("click")] \
        + VOCAB.sid_to_tokens(trie.codes_of(items[7])) + [VOCAB.action_token("like")]
    t = torch.tensor([seq])
    batch = Batch(t[:, :-1], t[:, 1:], torch.ones(1, len(seq) - 1))
    hidden = model.hidden(batch.inputs)
    loss = dense_cross_entropy(model, hidden, batch, VOCAB.level_range(0))
    vectors = model.item_vectors(model.item_sid_tokens)
    logits = model.query_vectors(hidden[0, [0, 4]]) @ vectors.T
    expected = torch.nn.functional.cross_entropy(logits, torch.tensor([2, 7]))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    loss.backward()
    assert model.item_residual.weight.grad.abs().sum() > 0 and model.dense_query.weight.grad is not None


def test_sampled_dense_loss_needs_a_proposal_and_trains_the_same_parameters():
    trie = make_trie(10)
    model = make_model(trie).train()
    seq = [VOCAB.BOS] + VOCAB.sid_to_tokens(trie.codes_of("i1")) + [VOCAB.action_token("click")]
    t = torch.tensor([seq])
    batch = Batch(t[:, :-1], t[:, 1:], torch.ones(1, len(seq) - 1))
    with pytest.raises(ValueError, match="item_log_q"):
        dense_cross_entropy(model, model.hidden(batch.inputs), batch, VOCAB.level_range(0), negatives=4)
    log_q = torch.full((10,), math.log(0.1))
    loss = dense_cross_entropy(model, model.hidden(batch.inputs), batch, VOCAB.level_range(0), log_q, negatives=4)
    loss.backward()
    assert torch.isfinite(loss) and model.item_residual.weight.grad.abs().sum() > 0


def test_model_config_saved_before_the_dense_head_still_loads():
    old = ModelConfig(vocab_size=VOCAB.size, max_len=16).to_json()
    del old["dense_items"], old["sid_length"]
    assert ModelConfig.from_json(old).dense_items == 0


def test_score_items_gives_given_items_the_numbers_a_search_gives_them():
    trie = make_trie(20)
    model = make_model(trie)
    e = engine(model, trie, channels="both", top_k=20, beam_size=20, exclude_seen=False)
    tokens = e.encode_history(H)
    exact = exhaustive_scores(model, VOCAB, trie, tokens, trie.item_ids())
    (searched,) = e.recommend([H])
    given = [r.item_id for r in searched][::-1][:6]  # an order of our own
    (scored,) = e.score_items([tokens], [given])
    assert [r.item_id for r in scored] == given
    by_id = {r.item_id: r for r in searched}
    for r in scored:
        assert r.log_prob == pytest.approx(exact[r.item_id], abs=1e-4)
        assert r.dense_score == pytest.approx(by_id[r.item_id].dense_score, rel=1e-4)
        for action, p in r.action_probs.items():
            assert p == pytest.approx(by_id[r.item_id].action_probs[action], abs=1e-4)
        assert r.value == pytest.approx(by_id[r.item_id].value, rel=1e-4, abs=1e-6)
    with pytest.raises(GenerationError, match="not in the catalogue"):
        e.score_items([tokens], [["i0", "nope"]])

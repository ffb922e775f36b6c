import numpy as np
import pytest

from catalogue.datasets import Rating, load_movielens
from trainer.actions import (chronological_split, item_prior, labels, ndcg, random_ndcg, target_given_action,
                             target_probs)
from tests.movielens_fixture import write_movielens


def _ratings(user: str, values) -> list[Rating]:
    actions = {1: "dislike", 2: "dislike", 3: "neutral", 4: "like", 5: "love"}
    return [Rating(user, str(k), v, 100 + k, actions[v]) for k, v in enumerate(values)]


def test_chronological_split_per_user():
    split = chronological_split({"a": _ratings("a", [3] * 20), "b": _ratings("b", [4] * 5)})
    assert [len(split.fit["a"]), len(split.validation["a"]), len(split.test["a"])] == [14, 2, 4]
    assert [len(split.fit["b"]), len(split.validation["b"]), len(split.test["b"])] == [3, 1, 1]
    # time order: everything in fit precedes validation, which precedes test
    assert max(r.timestamp for r in split.fit["a"]) < min(r.timestamp for r in split.validation["a"])
    assert max(r.timestamp for r in split.validation["a"]) < min(r.timestamp for r in split.test["a"])
    assert split.past("a") == split.fit["a"] + split.validation["a"]
    with pytest.raises(ValueError, match="at least 3"):
        chronological_split({"c": _ratings("c", [1, 2])})


def test_targets_are_read_through_the_actions():
    train = _ratings("a", [1, 2, 3, 4, 5, 5])
    given = target_given_action(train, ("dislike", "neutral", "like", "love"))
    assert given["like_or_better"].tolist() == [0, 0, 1, 1] and given["dislike"].tolist() == [1, 0, 0, 0]
    probs = target_probs(np.array([[0.1, 0.2, 0.3, 0.4]]), given)
    assert probs["like_or_better"][0] == pytest.approx(0.7) and probs["dislike"][0] == pytest.approx(0.1)
    # an action that merges ratings on both sides of a target gets the share of its training ratings
    merged = [Rating("a", "1", 3, 1, "ok"), Rating("a", "2", 4, 2, "ok"), Rating("a", "3", 5, 3, "great")]
    assert target_given_action(merged, ("ok", "great"))["like_or_better"].tolist() == [0.5, 1.0]
    assert labels(train, "dislike").tolist() == [True, True, False, False, False, False]


def test_item_prior_is_smoothed_towards_the_global_rate():
    train = [Rating("a", "1", 5, 1, "love"), Rating("b", "1", 5, 2, "love"), Rating("a", "2", 1, 3, "dislike")]
    prior = item_prior(train, [Rating("c", "1", 4, 9, "like"), Rating("c", "3", 4, 9, "like")], smoothing=1.0)
    assert prior["like_or_better"][0] == pytest.approx((2 + 2 / 3) / 3)
    assert prior["like_or_better"][1] == pytest.approx(2 / 3)  # an unseen item: the global rate


def test_ndcg_uses_exponential_gain():
    assert ndcg([3, 2, 1], [5, 3, 1]) == pytest.approx(1.0)
    worst = ndcg([1, 2, 3], [5, 3, 1])
    gains = np.array([1, 7, 31])
    assert worst == pytest.approx(float(gains @ (1 / np.log2([2, 3, 4]))) / float(gains[::-1] @ (1 / np.log2([2, 3, 4]))))
    rng = np.random.default_rng(0)
    assert worst < random_ndcg([5, 3, 1], rng, draws=200) < 1.0


def test_split_of_a_movielens_folder(tmp_path):
    ml = load_movielens(write_movielens(tmp_path / "ml", users=6, items=20, per_user=10))
    split = chronological_split(ml.ratings)
    assert sum(len(v) for part in (split.fit, split.validation, split.test) for v in part.values()) == 60


def test_predicted_action_probs_scores_from_first_with_the_true_past():
    import torch

    from catalogue.trie import SidTrie
    from catalogue.vocab import Vocabulary
    from trainer.actions import predicted_action_probs
    from trainer.data import Tokenizer
    from trainer.model import ModelConfig, Transformer

    vocab = Vocabulary(levels=2, codes_per_level=4, suffix_size=2, actions=("dislike", "like"))
    trie = SidTrie(vocab)
    for i in range(6):
        trie.insert(str(i), (i % 4, i // 4, 0))
    tokenizer = Tokenizer(vocab, lambda item: vocab.sid_to_tokens(trie.codes_of(item)))
    torch.manual_seed(0)
    model = Transformer(ModelConfig(vocab_size=vocab.size, max_len=64, d_model=16, n_layers=1, n_heads=2,
                                    dropout=0.0)).eval()
    events = [(str(k % 6), ("dislike", "like")[k % 2]) for k in range(9)]
    probs = predicted_action_probs(model, tokenizer, events, window_events=4, first=5)
    assert probs.shape == (4, 2) and np.allclose(probs.sum(1), 1.0, atol=1e-5)
    # the event at `first` is scored after the two events before it (half a window of true past)
    tokens = tokenizer.encode(events[3:7])
    with torch.no_grad():
        logits = model(torch.tensor([tokens]))[0]
    position = 1 + 2 * tokenizer.group + tokenizer.group - 2
    expected = torch.softmax(logits[position, vocab.action_range.start:vocab.action_range.stop], -1).numpy()
    np.testing.assert_allclose(probs[0], expected, atol=1e-5)

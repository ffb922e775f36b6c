import pytest

from catalogue.vocab import ACTIONS, Vocabulary, VocabularyError


def test_layout_default():
    v = Vocabulary()
    assert (v.PAD, v.BOS, v.EOS, v.UNK) == (0, 1, 2, 3)
    assert v.sid_length == 4
    assert v.level_range(0) == range(4, 260)
    assert v.level_range(2) == range(516, 772)
    assert v.level_range(3) == range(772, 804)  # suffix
    assert v.action_range == range(804, 809)
    assert v.size == 809
    assert v.action_token("click") == 804 and v.action_name(808) == "purchase"


def test_sid_round_trip_and_describe():
    v = Vocabulary(levels=2, codes_per_level=8, suffix_size=4, contexts=("mobile",))
    tokens = v.sid_to_tokens([7, 0, 3])
    assert tokens == [11, 12, 23]
    assert v.tokens_to_sid(tokens) == (7, 0, 3)
    assert [v.describe(t) for t in (0, 1, 11, 12, 23)] == ["PAD", "BOS", "L0:7", "L1:0", "SUF:3"]
    assert v.describe(v.action_token("like")) == "ACT:like"
    assert v.describe(v.context_token("mobile")) == "CTX:mobile"
    assert v.size == 4 + 8 * 2 + 4 + len(ACTIONS) + 1


@pytest.mark.parametrize("bad", [
    lambda v: v.sid_token(0, 256),
    lambda v: v.sid_token(3, 32),
    lambda v: v.sid_token(4, 0),
    lambda v: v.sid_to_tokens([1, 2, 3]),
    lambda v: v.tokens_to_sid([4, 4, 516, 772]),  # level-1 position holds a level-0 token
    lambda v: v.action_token("share"),
    lambda v: v.action_name(4),
    lambda v: v.describe(10_000),
])
def test_invalid_inputs_raise_value_error(bad):
    with pytest.raises(ValueError):
        bad(Vocabulary())


def test_json_round_trip(tmp_path):
    v = Vocabulary(levels=2, codes_per_level=16, suffix_size=8, actions=("click", "buy"), contexts=("a", "b"),
                   version="abc123")
    v.save(tmp_path / "vocab.json")
    w = Vocabulary.load(tmp_path / "vocab.json")
    assert w == v and w.version == "abc123" and w.size == v.size
    assert w.action_token("buy") == v.action_token("buy")


def test_from_json_rejects_inconsistent_size():
    d = Vocabulary().to_json()
    d["size"] += 1
    with pytest.raises(VocabularyError):
        Vocabulary.from_json(d)

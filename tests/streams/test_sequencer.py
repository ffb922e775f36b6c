import pytest

from catalogue.vocab import Vocabulary
from streams.sequencer import DEDUPE_MEMORY, SequenceState, append_event, build_sequences, event_tokens

VOCAB = Vocabulary(levels=3, codes_per_level=8, suffix_size=4, contexts=("mobile",), version="t")


def test_event_tokens_are_sid_then_action():
    tokens = event_tokens(VOCAB, (1, 2, 3, 0), "like")
    assert [VOCAB.describe(t) for t in tokens] == ["L0:1", "L1:2", "L2:3", "SUF:0", "ACT:like"]
    with_ctx = event_tokens(VOCAB, (1, 2, 3, 0), "like", ("mobile",))
    assert with_ctx[0] == VOCAB.context_token("mobile") and with_ctx[1:] == tokens


def test_unknown_action_is_an_error():
    with pytest.raises(ValueError):
        event_tokens(VOCAB, (1, 2, 3, 0), "teleport")


def test_append_trims_to_window_and_counts_every_event():
    state = SequenceState()
    for i in range(5):
        assert append_event(state, f"e{i}", [10 + i, 20 + i], event_ms=100 * i, window_events=3)
    assert state.tokens == [12, 22, 13, 23, 14, 24]
    assert state.event_count == 5 and state.last_event_ms == 400


def test_redelivered_event_is_skipped():
    state = SequenceState()
    assert append_event(state, "e1", [1, 2], 10, window_events=10)
    assert not append_event(state, "e1", [1, 2], 10, window_events=10)
    assert state.tokens == [1, 2] and state.event_count == 1


def test_dedupe_memory_is_bounded():
    state = SequenceState()
    for i in range(DEDUPE_MEMORY + 10):
        append_event(state, f"e{i}", [1], i, window_events=4)
    assert len(state.recent_event_ids) == DEDUPE_MEMORY and state.recent_event_ids[-1] == f"e{DEDUPE_MEMORY + 9}"


def test_state_json_round_trip():
    state = SequenceState()
    append_event(state, "a", [4, 5, 6], 7, window_events=2)
    assert SequenceState.from_json(state.to_json()) == state
    assert SequenceState.from_json(None) == SequenceState()


def test_build_sequences_matches_one_by_one_appends():
    sid_of = {"i1": (0, 0, 0, 0), "i2": (1, 2, 3, 1)}
    events = [("e1", "u", "i1", "click", 1), ("e2", "u", "i2", "like", 2), ("e3", "v", "i2", "skip", 3)]
    states = build_sequences(VOCAB, sid_of, events, window_events=50)
    assert states["u"].tokens == event_tokens(VOCAB, sid_of["i1"], "click") + event_tokens(VOCAB, sid_of["i2"], "like")
    assert states["v"].event_count == 1


def test_window_must_be_positive():
    with pytest.raises(ValueError):
        append_event(SequenceState(), "e", [1], 0, window_events=0)

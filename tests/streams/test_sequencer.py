import pytest

from catalogue.vocab import Vocabulary
from features.sequences import ROW_EVENT_IDS
from streams.sequencer import (DEDUPE_MEMORY, SequenceState, append_event, backfill_rows, build_sequences,
                               event_tokens, state_from_row)

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


def _events(n_users=4, per_user=12):
    sid_of = {f"i{k}": (k % 8, (k * 3) % 8, (k * 5) % 8, k % 4) for k in range(16)}
    events = [(f"{u}:{p}", str(u), f"i{(u * 7 + p) % 16}", "like" if p % 3 else "skip", 1000 * p)
              for p in range(per_user) for u in range(n_users)]
    return sid_of, events


def test_a_row_continued_by_the_stream_equals_the_whole_built_at_once():
    """Backfill the first half of each user's events, continue the rows with the rest: the same windows and
    counts as folding every event directly (window trimming included: 12 events, window 5)."""
    sid_of, events = _events()
    whole = build_sequences(VOCAB, sid_of, events, window_events=5)
    past, rest = [e for e in events if int(e[0].split(":")[1]) < 6], [e for e in events if int(e[0].split(":")[1]) >= 6]
    rows, left_out = backfill_rows(VOCAB, sid_of, past, window_events=5)
    assert left_out == 0 and len(rows) == 4
    states = {r.user_id: state_from_row(VOCAB, r.tokens, r.event_count, r.last_event_ms, r.recent_event_ids)
              for r in rows}
    for event_id, user, item, action, ms in rest:
        append_event(states[user], event_id, event_tokens(VOCAB, sid_of[item], action), ms, window_events=5)
    for user, state in whole.items():
        assert states[user].tokens == state.tokens
        assert states[user].event_count == state.event_count == 12
        assert states[user].event_lengths == state.event_lengths


def test_the_event_at_the_cut_delivered_again_is_not_appended_twice():
    sid_of, events = _events(n_users=1, per_user=6)
    rows, _ = backfill_rows(VOCAB, sid_of, events[:3], window_events=50)
    assert rows[0].recent_event_ids == ["0:0", "0:1", "0:2"]
    state = state_from_row(VOCAB, rows[0].tokens, rows[0].event_count, rows[0].last_event_ms,
                           rows[0].recent_event_ids)
    event_id, _, item, action, ms = events[2]
    assert not append_event(state, event_id, event_tokens(VOCAB, sid_of[item], action), ms, window_events=50)
    assert state.event_count == 3


def test_backfill_rows_keep_only_the_newest_event_ids_and_leave_out_unknown_items():
    sid_of, events = _events(n_users=1, per_user=40)
    events.append(("0:40", "0", "not-in-catalogue", "like", 40_000))
    rows, left_out = backfill_rows(VOCAB, sid_of, events, window_events=50)
    assert left_out == 1
    assert rows[0].recent_event_ids == [f"0:{p}" for p in range(40 - ROW_EVENT_IDS, 40)]


def test_a_stored_row_that_does_not_end_with_an_action_is_refused():
    tokens = event_tokens(VOCAB, (1, 2, 3, 0), "like")
    with pytest.raises(ValueError, match="action token"):
        state_from_row(VOCAB, tokens + tokens[:2], 2, 0)
    assert state_from_row(VOCAB, [], 0, 0).tokens == []

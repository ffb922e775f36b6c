"""The interactions agent's decisions, without Faust or Kafka."""
import json

from catalogue.vocab import Vocabulary
from streams.decide import Accepted, Refused, Waiting, after_waiting, check_interaction, users_to_read

VOCAB = Vocabulary(levels=3, codes_per_level=8, suffix_size=4, contexts=("mobile",), version="t")
SID_OF = {"i1": (1, 2, 3, 0)}


def message(**overrides) -> bytes:
    event = {"event_id": "e1", "user_id": "u1", "item_id": "i1", "action": "like", "ts": 1.0, **overrides}
    return json.dumps(event).encode()


def test_a_valid_event_is_accepted_with_its_sid_and_action_tokens():
    decision = check_interaction(message(), b"u1", VOCAB, SID_OF)
    assert isinstance(decision, Accepted) and decision.event.event_id == "e1"
    assert [VOCAB.describe(t) for t in decision.tokens] == ["L0:1", "L1:2", "L2:3", "SUF:0", "ACT:like"]
    with_context = check_interaction(message(context={"device": "mobile"}), b"u1", VOCAB, SID_OF)
    assert with_context.tokens[0] == VOCAB.context_token("mobile")


def test_each_kind_of_bad_message_is_refused_with_its_reason():
    cases = {
        b"{not json": "malformed",
        message(ts=-1): "malformed",
        message(action="teleport"): "unknown action",
        message(context={"device": "fridge"}): "unknown context",
    }
    for value, kind in cases.items():
        decision = check_interaction(value, b"u1", VOCAB, SID_OF)
        assert isinstance(decision, Refused) and decision.kind == kind, (value, decision)
    wrong_key = check_interaction(message(), b"u2", VOCAB, SID_OF)
    assert wrong_key.kind == "bad key" and "'u2' is not the user_id 'u1'" in wrong_key.reason
    assert check_interaction(message(), None, VOCAB, SID_OF).kind == "bad key"


def test_an_unknown_item_waits_then_is_accepted_or_refused():
    decision = check_interaction(message(item_id="new"), b"u1", VOCAB, SID_OF)
    assert isinstance(decision, Waiting)
    assert isinstance(after_waiting(VOCAB, decision.event, (4, 4, 4, 1), 2.0), Accepted)
    refused = after_waiting(VOCAB, decision.event, None, 2.0)
    assert refused.kind == "unknown item" and "after 2 s" in refused.reason


def test_only_users_without_state_are_read_once_per_batch():
    keys = [b"u2", b"u1", b"u2", None, b"u3"]
    assert users_to_read(keys, has_state=lambda user: user == "u1") == ["u2", "u3"]
    assert users_to_read([], has_state=lambda user: False) == []

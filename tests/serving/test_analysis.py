"""What-if and attribution: the pure edit core and the routes in-process (FastAPI TestClient over a LocalBackend)."""
import pytest
from fastapi.testclient import TestClient

from features.sequences import UserSequence
from serving.analysis import (Edit, Event, apply_edits, attention_by_event, events_of_tokens, history_tokens,
                              occlusions, ranked_by)
from serving.api import RequestError
from serving.app import LocalBackend, create_app
from serving.service import RecommenderService
from serving.settings import ServingSettings
from tests.serving.serving_world import VOCAB, DictSequences, make_trie, publish, tokens_of

HISTORY = ["i1", "i2", "i3"]


def make_client(tmp_path, dense=False, **overrides):
    settings = ServingSettings(follow_updates=False, beam_size=8, max_k=30, max_history_events=10, **overrides)
    trie = make_trie(40)
    rows = {"alice": UserSequence("alice", tokens_of(trie, HISTORY, "click"), 3, 1000, 1)}
    service = RecommenderService(VOCAB, trie, DictSequences(rows), settings)
    publish(tmp_path / "m0", dense_trie=trie if dense else None)
    service.load_model(tmp_path / "m0")
    return TestClient(create_app(settings, LocalBackend(service))), service


def test_edits_apply_in_order_and_keep_each_events_tokens():
    trie = make_trie(40)
    events = events_of_tokens(tokens_of(trie, HISTORY, "click"), VOCAB, trie)
    assert [(e.item_id, e.action) for e in events] == [("i1", "click"), ("i2", "click"), ("i3", "click")]
    edited = apply_edits(events, [Edit("remove", 0), Edit("set_action", 1, action="like"),
                                  Edit("add", None, "i9", "skip"), Edit("add", 0, "i8", "click")], VOCAB, trie)
    assert [(e.item_id, e.action) for e in edited] == [("i8", "click"), ("i2", "click"), ("i3", "like"),
                                                       ("i9", "skip")]
    assert history_tokens(edited, VOCAB.BOS) == [VOCAB.BOS] + tokens_of(trie, ["i8", "i2"], "click") \
        + tokens_of(trie, ["i3"], "like") + tokens_of(trie, ["i9"], "skip")
    assert [[e.item_id for e in h] for h in occlusions(events)] == [["i2", "i3"], ["i1", "i3"], ["i1", "i2"]]
    assert ranked_by([0.1, 0.5, 0.5, -1.0]) == [2, 1, 0, 3]


@pytest.mark.parametrize("edit, words", [
    (Edit("remove", 3), "there is no event 3; the history has 3 events (0..2)"),
    (Edit("remove"), "needs the index"),
    (Edit("set_action", 0, action="teleport"), "unknown action 'teleport'"),
    (Edit("add", None, "ghost", "click"), "item 'ghost' is not in the catalogue"),
    (Edit("add", 5, "i4", "click"), "index 5 is outside 0..3"),
    (Edit("add", None, "i4"), "needs item_id and action"),
])
def test_a_bad_edit_is_refused_with_what_is_wrong(edit, words):
    trie = make_trie(40)
    events = events_of_tokens(tokens_of(trie, HISTORY), VOCAB, trie)
    with pytest.raises(RequestError, match=words.replace("(", r"\(").replace(")", r"\)")):
        apply_edits(events, [edit], VOCAB, trie)


def test_an_event_whose_item_left_the_catalogue_is_still_read():
    trie = make_trie(40)
    tokens = tokens_of(trie, HISTORY)
    trie.remove("i2")
    events = events_of_tokens(tokens, VOCAB, trie)
    assert [e.item_id for e in events] == ["i1", None, "i3"] and history_tokens(events, VOCAB.BOS)[1:] == tokens


@pytest.mark.parametrize("dense", [False, True])
def test_whatif_scores_the_same_items_before_and_after_and_reports_the_change(tmp_path, dense):
    client, service = make_client(tmp_path, dense)
    r = client.post("/whatif", json={"user_id": "alice", "edits": [{"op": "set_action", "index": 2,
                                                                     "action": "like"}], "k": 4})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["history"] == [{"item_id": i, "action": "click"} for i in HISTORY]
    assert body["edited_history"][2] == {"item_id": "i3", "action": "like"}
    assert len(body["items"]) == 4 and not {i["item_id"] for i in body["items"]} & set(HISTORY)
    first = body["items"][0]
    assert first["change"]["log_prob"] == pytest.approx(first["after"]["log_prob"] - first["before"]["log_prob"])
    for action, p in first["after"]["action_probs"].items():
        assert first["change"]["action_probs"][action] == pytest.approx(p - first["before"]["action_probs"][action])
    assert any(abs(c) > 1e-6 for c in first["change"]["action_probs"].values())  # the edit moved something
    # the same request as an explicit history gives the same numbers (the engine reads the same tokens)
    again = client.post("/whatif", json={"history": [{"item_id": i, "action": "click"} for i in HISTORY],
                                         "edits": [{"op": "set_action", "index": 2, "action": "like"}],
                                         "items": [i["item_id"] for i in body["items"]]}).json()
    assert [i["after"]["log_prob"] for i in again["items"]] == pytest.approx(
        [i["after"]["log_prob"] for i in body["items"]], abs=1e-5)
    # "before" equals what /recommend says of the item
    rec = client.post("/recommend", json={"user_id": "alice", "k": 4}).json()["items"]
    by_id = {i["item_id"]: i for i in rec}
    for item in body["items"]:
        if item["item_id"] in by_id:
            assert item["before"]["log_prob"] == pytest.approx(by_id[item["item_id"]]["log_prob"], abs=1e-4)


def test_explain_occludes_each_event_exactly(tmp_path):
    client, service = make_client(tmp_path)
    r = client.post("/explain", json={"user_id": "alice", "item_id": "i7", "action": "like"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert [e["index"] for e in body["events"]] == [0, 1, 2] and body["action"] == "like"
    for event in body["events"]:  # each influence is the whole history's score minus the score without the event
        rest = [{"item_id": i, "action": "click"} for n, i in enumerate(HISTORY) if n != event["index"]]
        without = client.post("/whatif", json={"history": rest, "items": ["i7"],
                                               "edits": [{"op": "add", "item_id": HISTORY[event["index"]],
                                                          "action": "click", "index": event["index"]}]}).json()
        scored = without["items"][0]
        assert event["log_prob_change"] == pytest.approx(scored["change"]["log_prob"], abs=1e-4)
        assert event["action_prob_change"]["like"] == pytest.approx(scored["change"]["action_probs"]["like"],
                                                                    abs=1e-4)
    changes = [e["log_prob_change"] for e in body["events"]]
    assert body["by_retrieval"][0] == max(range(3), key=lambda i: changes[i])
    shares = [e["attention"] for e in body["events"]]  # the heuristic: shares of the item's attention, labelled
    assert all(0 <= a <= 1 for a in shares) and sum(shares) < 1  # BOS and the item's own tokens take the rest
    assert body["by_attention"][0] == max(range(3), key=lambda i: shares[i]) and "heuristic" in body["attention_method"]


def test_attention_by_event_sums_each_events_span_over_the_query_rows():
    events = [Event("a", "click", (10, 11, 12)), Event("b", "like", (13, 14, 15))]
    T = 1 + 6 + 2  # BOS, two events, the item's 2 SID tokens
    weights = [[0.0] * T for _ in range(T)]
    weights[7][1:4] = [0.1, 0.1, 0.1]  # row 7 gives event a 0.3, event b 0.5
    weights[7][4:7] = [0.2, 0.2, 0.1]
    weights[8][4] = 0.9  # row 8 gives event b 0.9
    assert attention_by_event(weights, events, [7, 8]) == pytest.approx([0.15, 0.7])


@pytest.mark.parametrize("path, body, words", [
    ("/whatif", {"user_id": "alice", "edits": [{"op": "remove", "index": 9}]}, "there is no event 9"),
    ("/whatif", {"user_id": "alice", "history": [], "edits": [{"op": "remove", "index": 0}]}, "exactly one"),
    ("/whatif", {"edits": [{"op": "remove", "index": 0}]}, "exactly one"),
    ("/whatif", {"user_id": "alice", "edits": []}, "at least 1 item"),
    ("/whatif", {"user_id": "alice", "edits": [{"op": "jump"}]}, "'add', 'remove' or 'set_action'"),
    ("/whatif", {"user_id": "alice", "edits": [{"op": "remove", "index": 0}], "items": ["ghost"]},
     "not in the catalogue"),
    ("/explain", {"user_id": "alice", "item_id": "ghost"}, "not in the catalogue"),
    ("/explain", {"user_id": "alice", "item_id": "i7", "action": "teleport"}, "unknown action"),
    ("/explain", {"history": [{"item_id": "ghost"}], "item_id": "i7"}, "not in the catalogue"),
])
def test_bad_analysis_requests_get_422_with_a_message(tmp_path, path, body, words):
    client, _ = make_client(tmp_path)
    r = client.post(path, json=body)
    assert r.status_code == 422, r.text
    assert words in r.text


def test_a_user_without_a_stored_sequence_has_an_empty_history_to_edit(tmp_path):
    client, _ = make_client(tmp_path)
    r = client.post("/whatif", json={"user_id": "nobody", "edits": [{"op": "add", "item_id": "i1",
                                                                      "action": "like"}], "k": 3})
    assert r.status_code == 200 and r.json()["history"] == [] and len(r.json()["items"]) == 3
    r = client.post("/explain", json={"user_id": "nobody", "item_id": "i1"})
    assert r.status_code == 200 and r.json()["events"] == [] and r.json()["by_action"] == []


def test_the_page_reads_history_and_sends_checked_events(tmp_path):
    client, service = make_client(tmp_path)
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"] and "/events" in page.text
    r = client.post("/history", json={"user_id": "alice"})
    assert r.status_code == 200, r.text
    assert r.json()["events"] == [{"item_id": i, "action": "click", "title": None} for i in HISTORY] and r.json()["event_count"] == 3
    assert client.post("/history", json={"user_id": "nobody"}).json()["events"] == []
    r = client.post("/events", json={"user_id": "alice", "item_id": "i5", "action": "like"})
    assert r.status_code == 503 and "no event sink" in r.text  # no Kafka behind this replica
    sent = []
    service.event_sink = sent.append
    r = client.post("/events", json={"user_id": "alice", "item_id": "i5", "action": "like"})
    assert r.status_code == 200, r.text
    (event,) = sent
    assert (event.user_id, event.item_id, event.action) == ("alice", "i5", "like")
    assert event.event_id == r.json()["event_id"] and event.event_id.startswith("ui-")
    for body, words in (({"user_id": "alice", "item_id": "ghost", "action": "like"}, "not in the catalogue"),
                        ({"user_id": "alice", "item_id": "i5", "action": "teleport"}, "unknown action"),
                        ({"user_id": "alice", "item_id": "i5"}, "Field required")):
        r = client.post("/events", json=body)
        assert r.status_code == 422 and words in r.text, r.text
    assert len(sent) == 1  # nothing refused was sent

    def broken(event):
        raise ConnectionError("broker down")

    service.event_sink = broken
    r = client.post("/events", json={"user_id": "alice", "item_id": "i5", "action": "like"})
    assert r.status_code == 503 and "could not send" in r.text


def test_monitor_route_serves_the_newest_complete_snapshot(tmp_path):
    history = tmp_path / "history.jsonl"
    client, _ = make_client(tmp_path, monitor_file=history)
    assert client.get("/monitor").status_code == 404  # no file yet
    history.write_text('{"status": "ok", "n": 1}\n{"status": "alert", "n": 2, "psi": NaN}\n{"status": "o')
    r = client.get("/monitor")
    assert r.status_code == 200 and r.json() == {"status": "alert", "n": 2, "psi": None}

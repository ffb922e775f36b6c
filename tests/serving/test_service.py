import json
import threading

import pytest

from features.sequences import UserSequence
from serving.api import Query, RequestError
from serving.service import NotReady, RecommenderService
from serving.settings import ServingSettings
from streams.schemas import CatalogueChange
from tests.serving.serving_world import OTHER_VOCAB, VOCAB, DictSequences, make_trie, publish, tokens_of
from trainer.registry import UpdateRefused, model_update_message

SETTINGS = ServingSettings(follow_updates=False, beam_size=8, max_k=50, max_history_events=12)


@pytest.fixture
def world(tmp_path):
    trie = make_trie(40)
    history = ["i1", "i2", "i3", "i4", "i5"]
    rows = {"alice": UserSequence("alice", tokens_of(trie, history), event_count=5, last_event_ms=1000,
                                  pushed_ms=1)}
    service = RecommenderService(VOCAB, trie, DictSequences(rows), SETTINGS)
    publish(tmp_path / "m0", seed=0)
    service.load_model(tmp_path / "m0")
    return service, history, tmp_path


def test_not_ready_until_a_model_is_loaded(tmp_path):
    service = RecommenderService(VOCAB, make_trie(10), DictSequences(), SETTINGS)
    assert not service.ready
    with pytest.raises(NotReady):
        service.recommend([Query(k=3, user_id="x")])


def test_user_history_excludes_seen_items_and_returns_real_items(world):
    service, history, _ = world
    (result,) = service.recommend([Query(k=20, user_id="alice", exclude_seen=True)])
    items = [r["item_id"] for r in result["items"]]
    assert len(items) == 20 and len(set(items)) == 20
    assert not set(items) & set(history)
    for r in result["items"]:
        assert tuple(r["sid"]) == service.trie.codes_of(r["item_id"])
        assert sum(r["action_probs"].values()) == pytest.approx(1.0, abs=1e-5)
    scores = [r["score"] for r in result["items"]]
    assert scores == sorted(scores, reverse=True)
    assert result["model_version"] == service.model_version and result["catalogue_version"] == VOCAB.version
    assert result["history_events"] == 5 and not result["cold_start"] and result["sequence_age_ms"] > 0


def test_exclude_seen_off_can_return_seen_items(world):
    service, history, _ = world
    (seen_on,) = service.recommend([Query(k=40, user_id="alice", exclude_seen=True)])
    (seen_off,) = service.recommend([Query(k=40, user_id="alice", exclude_seen=False)])
    assert len(seen_off["items"]) == 40  # the whole catalogue, history included
    assert set(history) <= {r["item_id"] for r in seen_off["items"]}
    assert len(seen_on["items"]) == 35


def test_unknown_user_is_a_cold_start_not_an_error(world):
    service, _, _ = world
    (result,) = service.recommend([Query(k=5, user_id="nobody")])
    assert result["cold_start"] and result["history_events"] == 0 and result["sequence_age_ms"] is None
    assert len(result["items"]) == 5


def test_explicit_history_matches_the_stored_one(world):
    service, history, _ = world
    (by_user,) = service.recommend([Query(k=6, user_id="alice")])
    (by_events,) = service.recommend([Query(k=6, events=tuple((i, "purchase") for i in history))])
    assert [r["item_id"] for r in by_user["items"]] == [r["item_id"] for r in by_events["items"]]


def test_bad_queries_fail_alone_in_their_batch(world):
    service, _, _ = world
    results = service.recommend([
        Query(k=3, user_id="alice"),
        Query(k=3, events=(("no-such-item", "click"),)),
        Query(k=3, events=(("i1", "teleport"),)),
        Query(k=3, user_id="alice", value_weights={"smile": 1.0}),
        Query(k=3, user_id="alice", value_weights={"like": float("nan")}),
        Query(k=51, user_id="alice"),
        Query(k=3, events=tuple(("i1", "click") for _ in range(13))),
    ])
    assert isinstance(results[0], dict)
    for r, words in zip(results[1:], ["not in the catalogue", "unknown action", "unknown actions", "finite",
                                      "exceeds", "limit"]):
        assert isinstance(r, RequestError) and words in str(r) and r.status == 422


def test_value_weights_reorder_by_value(world):
    service, _, _ = world
    (result,) = service.recommend([Query(k=8, user_id="alice", value_weights={"like": 10.0, "downvote": -100.0})])
    assert result["order_by"] == "value"
    values = [r["value"] for r in result["items"]]
    assert values == sorted(values, reverse=True)
    for r in result["items"]:
        expected = 10 * r["action_probs"]["like"] - 100 * r["action_probs"]["downvote"]
        assert r["value"] == pytest.approx(expected, rel=1e-6, abs=1e-9)


def test_logprob_queries_batched_with_value_queries_answer_as_alone(world):
    """Log-probability ordering needs actions for its k best beams only; a batch mixing orderings and k must
    still answer each query as it would be answered alone, every item with its action distribution."""
    service, _, _ = world
    queries = [Query(k=3, user_id="alice"), Query(k=6, user_id="alice"),
               Query(k=5, user_id="alice", value_weights={"like": 10.0, "downvote": -100.0})]
    together = service.recommend(queries)
    for query, result in zip(queries, together):
        (alone,) = service.recommend([query])
        assert [r["item_id"] for r in result["items"]] == [r["item_id"] for r in alone["items"]]
        assert len(result["items"]) == query.k
        for r, a in zip(result["items"], alone["items"]):
            assert sum(r["action_probs"].values()) == pytest.approx(1.0, abs=1e-5)
            for action, p in r["action_probs"].items():
                assert p == pytest.approx(a["action_probs"][action], abs=1e-5)
    short, long_ = together[0]["items"], together[1]["items"]
    assert [r["item_id"] for r in short] == [r["item_id"] for r in long_[:3]]  # both by log-probability


def test_k_above_the_beam_widens_the_beam(world):
    service, _, _ = world
    (result,) = service.recommend([Query(k=15, user_id="nobody")])
    assert len(result["items"]) == 15  # beam_size is 8


def test_model_swap_and_refusals_keep_the_current_model(world):
    service, _, tmp_path = world
    first = service.model_version
    publish(tmp_path / "m1", seed=1)
    assert service.load_model(tmp_path / "m1") != first
    second = service.model_version
    # corrupt weights
    publish(tmp_path / "bad", seed=2)
    message = model_update_message(tmp_path / "bad")
    (tmp_path / "bad" / "model.safetensors").write_bytes(b"\x00" * 100)
    with pytest.raises(UpdateRefused):
        service.load_model(tmp_path / "bad", message)
    # other codebooks
    publish(tmp_path / "other", seed=3, vocab=OTHER_VOCAB)
    with pytest.raises(UpdateRefused, match="codebook"):
        service.load_model(tmp_path / "other")
    assert service.model_version == second
    assert service.metrics.model_refused._value.get() == 2
    (result,) = service.recommend([Query(k=3, user_id="alice")])
    assert result["model_version"] == second


def test_model_records_newest_acceptable_wins(world):
    service, _, tmp_path = world
    publish(tmp_path / "a", seed=5)
    publish(tmp_path / "b", seed=6)
    good_a = model_update_message(tmp_path / "a")
    good_b = model_update_message(tmp_path / "b")
    corrupt = {**good_b, "sha256": "f" * 64}
    records = [(b"sidstream", json.dumps(good_a).encode()), (b"sidstream", json.dumps(good_b).encode()),
               (b"sidstream", json.dumps(corrupt).encode()), (b"other-model", b"{}"), (b"sidstream", b"junk")]
    assert service.handle_model_records(records) == good_b["version"]
    assert service.model_version == good_b["version"]
    assert service.handle_model_records([(b"sidstream", json.dumps(good_b).encode())]) is None  # already serving


def test_catalogue_changes_make_new_items_recommendable_without_touching_the_old_trie(world):
    service, _, _ = world
    before = service.trie
    free = next((a, b, 0) for a in range(8) for b in range(8) if not before.items_with_prefix((a, b)))
    assert service.apply_catalogue_changes([CatalogueChange("fresh", free, 1, 2)]) == 1
    assert "fresh" in service.trie and "fresh" not in before
    assert service.state.catalogue_revision == 1
    # forcing the prefix: a history of the new item's neighbours is irrelevant; ask for every item
    (result,) = service.recommend([Query(k=41, user_id="nobody")])
    assert "fresh" in {r["item_id"] for r in result["items"]}
    # a colliding SID is refused, a removal applies
    taken = service.trie.codes_of("i0")
    assert service.apply_catalogue_changes([CatalogueChange("intruder", taken)]) == 0
    assert service.metrics.catalogue_refused._value.get() == 1
    # a replayed entry (same item, same SID) is unchanged: no new trie, no new revision
    current = service.trie
    assert service.apply_catalogue_changes([CatalogueChange("fresh", free)]) == 0
    assert service.trie is current and service.state.catalogue_revision == 1
    assert service.apply_catalogue_changes([CatalogueChange("fresh", None)]) == 1
    assert "fresh" not in service.trie and service.state.catalogue_revision == 2
    assert service.apply_catalogue_changes([CatalogueChange("fresh", None)]) == 0  # already absent: unchanged
    assert service.metrics.catalogue_refused._value.get() == 1


def test_catalogue_records_refuse_other_versions(world):
    service, _, _ = world
    entry = {"item_id": "x", "sid": [7, 7, 3], "catalogue_version": "other", "assigned_ms": 1}
    assert service.handle_catalogue_records([(b"x", json.dumps(entry).encode())]) == 0
    assert "x" not in service.trie
    entry["catalogue_version"] = VOCAB.version
    if service.trie.item_at((7, 7, 3)) is None:
        assert service.handle_catalogue_records([(b"x", json.dumps(entry).encode())]) == 1


def test_requests_during_swaps_always_see_a_whole_published_model(world):
    service, _, tmp_path = world
    versions = {service.model_version}
    for seed in range(1, 5):
        versions.add(publish(tmp_path / f"v{seed}", seed=seed)["version"])
    errors, served = [], set()
    stop = threading.Event()

    def client():
        while not stop.is_set():
            try:
                (r,) = service.recommend([Query(k=5, user_id="alice")])
                served.add(r["model_version"])
            except Exception as exc:  # any failure fails the test
                errors.append(exc)

    threads = [threading.Thread(target=client) for _ in range(3)]
    for t in threads:
        t.start()
    for seed in range(1, 5):
        service.load_model(tmp_path / f"v{seed}")
    stop.set()
    for t in threads:
        t.join()
    assert not errors
    assert served <= versions


def test_sid_prefix_keeps_the_search_inside_a_region(world):
    service, _, _ = world
    code0 = service.trie.codes_of("i7")[0]
    region = set(service.trie.items_with_prefix((code0,)))
    (result,) = service.recommend([Query(k=50, user_id="nobody", sid_prefix=(code0,))])
    assert {r["item_id"] for r in result["items"]} == region
    empty = next(c for c in range(8) if not service.trie.items_with_prefix((c,)))  if len(
        {service.trie.codes_of(i)[0] for i in service.trie.item_ids()}) < 8 else None
    if empty is not None:
        (none,) = service.recommend([Query(k=5, user_id="nobody", sid_prefix=(empty,))])
        assert none["items"] == []
    (bad,) = service.recommend([Query(k=5, user_id="nobody", sid_prefix=(1, 2, 3))])
    assert isinstance(bad, RequestError) and "at most 2" in str(bad)


def test_vectorised_seen_items_match_the_engine_scan(world):
    from trainer.generation import GenerationConfig, GenerationEngine

    service, history, _ = world
    state = service.state
    engine = GenerationEngine(state.model, VOCAB, state.trie, GenerationConfig(beam_size=8, top_k=8))
    tokens = tokens_of(state.trie, ["i3", "i9", "i12"], action="like")
    assert service.items_in_sequence(state.trie, tokens, engine) == engine.items_in_tokens(tokens) == {"i3", "i9", "i12"}
    odd = tokens[2:]  # not whole groups: falls back to the scan
    assert service.items_in_sequence(state.trie, odd, engine) == engine.items_in_tokens(odd)


def test_titles_come_with_history_and_recommendations_and_follow_the_catalogue_topic(tmp_path):
    trie = make_trie(40)
    rows = {"alice": UserSequence("alice", tokens_of(trie, ["i1", "i2"]), event_count=2, last_event_ms=1000,
                                  pushed_ms=1)}
    service = RecommenderService(VOCAB, trie, DictSequences(rows), SETTINGS, titles={"i1": "Rose soap"})
    publish(tmp_path / "m0", seed=0)
    service.load_model(tmp_path / "m0")
    events = service.history("alice")["events"]
    assert [(e["item_id"], e["title"]) for e in events] == [("i1", "Rose soap"), ("i2", None)]
    free = next((a, b, 0) for a in range(8) for b in range(8) if not trie.items_with_prefix((a, b)))
    assert service.apply_catalogue_changes([CatalogueChange("fresh", free, 1, 2, "Fresh lotion")]) == 1
    (result,) = service.recommend([Query(k=41, user_id="nobody")])
    titles = {r["item_id"]: r["title"] for r in result["items"]}
    assert titles["fresh"] == "Fresh lotion" and titles["i1"] == "Rose soap" and titles["i3"] is None
    service.apply_catalogue_changes([CatalogueChange("fresh", None)])
    assert "fresh" not in service.titles

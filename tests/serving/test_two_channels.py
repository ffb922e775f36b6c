"""Serving the two retrieval channels: the request's channel switch, the index that follows the catalogue and
swaps with the model, and a versioned Qdrant collection per model (local mode is real Qdrant)."""
import pytest

from features.sequences import UserSequence
from serving.api import Query, RequestError
from serving.service import RecommenderService
from serving.settings import ServingSettings
from streams.schemas import CatalogueChange
from tests.serving.serving_world import VOCAB, DictSequences, make_trie, publish, tokens_of
from trainer.item_index import vector_collection

SETTINGS = ServingSettings(follow_updates=False, beam_size=8, max_k=50, max_history_events=12)
HISTORY = ["i1", "i2", "i3", "i4", "i5"]


def service_with(tmp_path, settings=SETTINGS, dense=True, extra=None):
    trie = make_trie(40)
    rows = {"alice": UserSequence("alice", tokens_of(trie, HISTORY), event_count=5, last_event_ms=1000, pushed_ms=1)}
    service = RecommenderService(VOCAB, trie, DictSequences(rows), settings)
    publish(tmp_path / "m0", seed=0, dense_trie=trie if dense else None, extra=extra)
    service.load_model(tmp_path / "m0")
    return service


def test_every_item_says_which_channel_found_it_and_a_request_can_switch_channels(tmp_path):
    service = service_with(tmp_path)
    both, generative, dense = service.recommend([Query(k=10, user_id="alice", channels=c)
                                                for c in (None, "generative", "dense")])
    assert {ch for item in both["items"] for ch in item["channels"]} == {"generative", "dense"}
    assert all(item["channels"] == ["generative"] for item in generative["items"])
    assert all(item["channels"] == ["dense"] for item in dense["items"])
    for result in (both, generative, dense):
        names = [item["item_id"] for item in result["items"]]
        assert len(names) == 10 and not set(names) & set(HISTORY)
    assert all(item["dense_score"] is not None and item["log_prob"] is not None for item in both["items"])
    scores = [item["dense_score"] for item in dense["items"]]
    assert scores == sorted(scores, reverse=True)  # alone, the dense channel orders by its own score


def test_the_channel_weight_chosen_in_pretraining_is_the_one_served(tmp_path):
    light = service_with(tmp_path / "a", extra={"generation": {"dense_weight": 0.01}})
    heavy = service_with(tmp_path / "b", extra={"generation": {"dense_weight": 100.0}})
    (lo,), (hi,) = light.recommend([Query(k=5, user_id="alice")]), heavy.recommend([Query(k=5, user_id="alice")])
    (gen,), (den,) = (light.recommend([Query(k=5, user_id="alice", channels=c)]) for c in ("generative", "dense"))
    assert [i["item_id"] for i in lo["items"]] == [i["item_id"] for i in gen["items"]]
    assert [i["item_id"] for i in hi["items"]] == [i["item_id"] for i in den["items"]]


def test_a_model_without_a_dense_head_serves_the_generative_channel_and_refuses_the_others(tmp_path):
    service = service_with(tmp_path, dense=False)
    (plain,) = service.recommend([Query(k=5, user_id="alice")])
    assert all(item["channels"] == ["generative"] and item["dense_score"] is None for item in plain["items"])
    (refused,) = service.recommend([Query(k=5, user_id="alice", channels="dense")])
    assert isinstance(refused, RequestError) and "no dense head" in str(refused)


def test_a_new_item_gets_its_vector_with_its_trie_entry_and_loses_it_on_removal(tmp_path):
    service = service_with(tmp_path)
    old_index = service.state.index
    free = next((a, b, 0) for a in range(8) for b in range(8) if not service.trie.items_with_prefix((a, b)))
    assert service.apply_catalogue_changes([CatalogueChange("fresh", free, 1, 2)]) == 1
    assert "fresh" in service.state.index and "fresh" not in old_index
    (result,) = service.recommend([Query(k=35, user_id="alice", channels="dense")])  # every unseen item
    assert "fresh" in {item["item_id"] for item in result["items"]}
    assert service.apply_catalogue_changes([CatalogueChange("fresh", None)]) == 1
    assert "fresh" not in service.state.index


def test_a_model_swap_swaps_the_index_with_the_weights(tmp_path):
    service = service_with(tmp_path)
    first = service.state.index
    publish(tmp_path / "m1", seed=1, dense_trie=service.trie)
    service.load_model(tmp_path / "m1")
    assert service.state.index is not first
    (result,) = service.recommend([Query(k=5, user_id="alice", channels="dense")])
    assert result["model_version"] == service.model_version


def test_qdrant_mode_serves_each_version_from_its_own_collection(tmp_path):
    settings = SETTINGS.model_copy(update={"dense_index": "qdrant"})
    service = service_with(tmp_path, settings)
    index = service.state.index
    assert index.kind == "qdrant" and index.store.collection == vector_collection(service.model_version)
    (in_qdrant,) = service.recommend([Query(k=10, user_id="alice", channels="dense")])
    in_memory = service_with(tmp_path / "mem").recommend([Query(k=10, user_id="alice", channels="dense")])[0]
    assert [i["item_id"] for i in in_qdrant["items"]] == [i["item_id"] for i in in_memory["items"]]
    assert [i["dense_score"] for i in in_qdrant["items"]] == pytest.approx(
        [i["dense_score"] for i in in_memory["items"]], rel=1e-4)

"""The HTTP API in-process (FastAPI TestClient over a LocalBackend): routes, auth, limits, schema."""
import pytest
from fastapi.testclient import TestClient

from features.sequences import UserSequence
from serving.app import LocalBackend, create_app
from serving.service import RecommenderService
from serving.settings import ServingSettings
from tests.serving.serving_world import VOCAB, DictSequences, make_trie, publish, tokens_of

HISTORY = ["i1", "i2", "i3"]


def make_client(tmp_path, load=True, **overrides):
    settings = ServingSettings(**{"follow_updates": False, "beam_size": 8, "max_k": 30, "max_history_events": 10,
                                  "max_body_bytes": 2048, **overrides})
    trie = make_trie(40)
    rows = {"alice": UserSequence("alice", tokens_of(trie, HISTORY), 3, 1000, 1)}
    service = RecommenderService(VOCAB, trie, DictSequences(rows), settings)
    if load:
        publish(tmp_path / "m0")
        service.load_model(tmp_path / "m0")
    return TestClient(create_app(settings, LocalBackend(service))), service


def test_recommend_returns_ranked_real_unseen_items(tmp_path):
    client, service = make_client(tmp_path)
    r = client.post("/recommend", json={"user_id": "alice", "k": 5})
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["items"]) == 5 and not {i["item_id"] for i in body["items"]} & set(HISTORY)
    assert body["model_version"] == service.model_version and body["catalogue_version"] == VOCAB.version
    assert set(body["items"][0]) == {"item_id", "title", "sid", "score", "log_prob", "dense_score", "channels", "value",
                                     "action_probs"}
    assert "feast;dur=" in r.headers["server-timing"]
    r = client.post("/recommend/history", json={"history": [{"item_id": "i1", "action": "click"}], "k": 3,
                                                "value_weights": {"click": 1, "like": 10}})
    assert r.status_code == 200 and r.json()["order_by"] == "value" and len(r.json()["items"]) == 3


def test_unknown_user_is_a_cold_start(tmp_path):
    client, _ = make_client(tmp_path)
    r = client.post("/recommend", json={"user_id": "nobody", "k": 4})
    assert r.status_code == 200 and r.json()["cold_start"] is True and len(r.json()["items"]) == 4


def test_health_ready_and_metrics(tmp_path):
    client, service = make_client(tmp_path, load=False)
    health = client.get("/healthz")
    assert health.status_code == 200
    assert health.json()["actions"] == list(service.vocab.actions)  # a client can learn the catalogue's actions
    assert set(health.json()["value_weights"]) <= set(service.vocab.actions)
    assert client.get("/readyz").status_code == 503
    r = client.post("/recommend", json={"user_id": "alice"})
    assert r.status_code == 503 and "not ready" in r.json()["detail"]
    client, service = make_client(tmp_path)
    assert client.get("/readyz").json()["model_version"] == service.model_version
    client.post("/recommend", json={"user_id": "alice"})
    text = client.get("/metrics").text
    assert 'sidstream_serving_requests_total{route="/recommend",status="200"} 1.0' in text
    assert f'sidstream_serving_model_info{{version="{service.model_version}"}} 1.0' in text


def test_api_key(tmp_path):
    client, _ = make_client(tmp_path, api_key="s3cret")
    body = {"user_id": "alice", "k": 2}
    r = client.post("/recommend", json=body)
    assert r.status_code == 401 and "Bearer" in r.json()["detail"] and r.headers["www-authenticate"] == "Bearer"
    assert client.post("/recommend", json=body, headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.post("/recommend", json=body, headers={"Authorization": "Basic s3cret"}).status_code == 401
    assert client.get("/metrics").status_code == 401
    assert client.post("/recommend", json=body, headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert client.get("/healthz").status_code == 200 and client.get("/readyz").status_code == 200


@pytest.mark.parametrize("path, body, status, words", [
    ("/recommend", {"user_id": "alice", "k": 31}, 422, "less than or equal to 30"),
    ("/recommend", {"user_id": "alice", "k": 0}, 422, "greater than or equal to 1"),
    ("/recommend", {"user_id": ""}, 422, "at least 1 character"),
    ("/recommend", {"user_id": "alice", "extra": 1}, 422, "Extra inputs"),
    ("/recommend", {"user_id": "alice", "value_weights": {"smile": 2}}, 422, "unknown actions"),
    ("/recommend", {"user_id": "alice", "channels": "sparse"}, 422, "generative', 'dense' or 'both"),
    ("/recommend/history", {"history": [{"item_id": "i1"}] * 11}, 422, "at most 10 items"),
    ("/recommend/history", {"history": [{"item_id": "ghost"}]}, 422, "not in the catalogue"),
    ("/recommend/history", {"history": [{"item_id": "i1", "action": "teleport"}]}, 422, "unknown action"),
])
def test_limits_and_bad_input_get_4xx_with_a_message(tmp_path, path, body, status, words):
    client, _ = make_client(tmp_path)
    r = client.post(path, json=body)
    assert r.status_code == status
    assert words in r.text


def test_body_size_limit(tmp_path):
    client, _ = make_client(tmp_path)
    r = client.post("/recommend", json={"user_id": "a" * 3000})
    assert r.status_code == 413 and "exceeds the limit of 2048 bytes" in r.json()["detail"]

    def chunks():  # no Content-Length: the bytes actually received are counted
        for _ in range(10):
            yield b" " * 400
    r = client.post("/recommend", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413 and "exceeds the limit of 2048 bytes" in r.json()["detail"]

    def small_chunks():  # streamed but within the limit: the app gets the whole body
        yield b'{"user_id": '
        yield b'"u1", "k": 3}'
    r = client.post("/recommend", content=small_chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 200 and len(r.json()["items"]) == 3


def test_openapi_schema_states_the_limits(tmp_path):
    client, _ = make_client(tmp_path)
    schema = client.get("/openapi.json").json()
    assert {"/recommend", "/recommend/history", "/healthz", "/readyz", "/metrics"} <= set(schema["paths"])
    request = schema["components"]["schemas"]["RecommendRequest"]
    assert request["properties"]["k"]["maximum"] == 30
    history = schema["components"]["schemas"]["HistoryRecommendRequest"]
    assert history["properties"]["history"]["maxItems"] == 10
    assert "Cold start" in schema["info"]["description"]


# ----- the Ray cluster's ingress environment (pure: no Ray started)
def test_haproxy_ingress_env_enables_it_with_a_short_drain_and_free_fallback_ports():
    from serving.app import ingress_env

    ports = iter([41001, 41002, 41003, 41004])
    env = ingress_env(ServingSettings(ingress="haproxy", ingress_drain_s=1.5), lambda: next(ports))
    assert env == {"RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "1.5",
                   "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT": "41001", "RAY_SERVE_FALLBACK_PROXY_GRPC_PORT": "41002",
                   "RAY_SERVE_HAPROXY_METRICS_PORT": "41003", "RAY_SERVE_HAPROXY_STATS_PORT": "41004"}


def test_proxy_ingress_env_turns_haproxy_off_even_if_the_shell_set_it():
    from serving.app import ingress_env

    assert ingress_env(ServingSettings(ingress="proxy"), lambda: 1 / 0) == {"RAY_SERVE_ENABLE_HA_PROXY": "0"}


def test_ingress_is_a_setting_with_haproxy_by_default(monkeypatch):
    assert ServingSettings().ingress == "haproxy"
    monkeypatch.setenv("SIDSTREAM_INGRESS", "proxy")
    assert ServingSettings().ingress == "proxy"
    monkeypatch.setenv("SIDSTREAM_INGRESS", "nginx")
    with pytest.raises(ValueError, match="ingress"):
        ServingSettings()


def test_missing_haproxy_binary_is_named_with_the_way_out(monkeypatch, tmp_path):
    import serving.app as app

    monkeypatch.setattr(app, "haproxy_binary", lambda: None)
    problem = app.ingress_problem(ServingSettings(ingress="haproxy"))
    assert "HAProxy binary" in problem and "SIDSTREAM_INGRESS=proxy" in problem
    assert app.ingress_problem(ServingSettings(ingress="proxy")) is None


def test_haproxy_binary_honours_an_explicit_path(monkeypatch, tmp_path):
    from serving.app import haproxy_binary

    binary = tmp_path / "haproxy"
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    monkeypatch.setenv("RAY_SERVE_HAPROXY_BINARY_PATH", str(binary))
    assert haproxy_binary() == str(binary)
    monkeypatch.setenv("RAY_SERVE_HAPROXY_BINARY_PATH", str(tmp_path / "missing"))
    assert haproxy_binary() is None
    monkeypatch.setenv("RAY_SERVE_HAPROXY_BINARY_PATH", str(tmp_path))  # a directory is not a binary
    assert haproxy_binary() is None


def test_openapi_declares_bearer_auth_only_when_a_key_is_set_and_every_status(tmp_path):
    """Without a key no route asks for a header it would ignore; with one, the guarded routes declare the bearer
    scheme and their 401. Every POST route documents 400 (unreadable body), 413, 422 and 503."""
    client, _ = make_client(tmp_path / "open")
    open_schema = client.get("/openapi.json").json()
    assert "securitySchemes" not in open_schema.get("components", {})
    for path in ("/recommend", "/recommend/history"):
        post = open_schema["paths"][path]["post"]
        assert "security" not in post and "401" not in post["responses"]
        assert {"200", "400", "413", "422", "503"} <= set(post["responses"])
    assert client.post("/recommend", content=b"{not json", headers={"content-type": "application/json",
                                                                     "content-length": "x"}).status_code == 400
    keyed, _ = make_client(tmp_path / "keyed", api_key="s3cret")
    keyed_schema = keyed.get("/openapi.json").json()
    assert keyed_schema["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    for path, method in (("/recommend", "post"), ("/recommend/history", "post"), ("/metrics", "get")):
        operation = keyed_schema["paths"][path][method]
        assert operation["security"] == [{"HTTPBearer": []}] and "401" in operation["responses"]
    assert "security" not in keyed_schema["paths"]["/healthz"]["get"]


def test_json_types_are_not_coerced(tmp_path):
    """The schema says integer, number, boolean: `false`, "3" or 1 in their place are refused (pydantic's lax mode
    would take them), while 3.0 is an integer as JSON Schema has it."""
    client, _ = make_client(tmp_path)
    for body in ({"user_id": "alice", "k": False}, {"user_id": "alice", "k": "3"},
                 {"user_id": "alice", "sid_prefix": [True]}, {"user_id": "alice", "exclude_seen": 1},
                 {"user_id": "alice", "value_weights": {"like": True}}):
        r = client.post("/recommend", json=body)
        assert r.status_code == 422, (body, r.text)
    assert client.post("/recommend", json={"user_id": "alice", "k": 3.0}).status_code == 200


def test_slate_mode_keeps_the_placement_order_and_checks_its_action(tmp_path):
    client, _ = make_client(tmp_path)
    r = client.post("/recommend", json={"user_id": "alice", "k": 5, "mode": "slate"})
    assert r.status_code == 200, r.text
    slate = [i["item_id"] for i in r.json()["items"]]
    topk = [i["item_id"] for i in client.post("/recommend", json={"user_id": "alice", "k": 5}).json()["items"]]
    assert len(set(slate)) == 5 and not set(slate) & set(HISTORY) and slate[0] == topk[0]
    r = client.post("/recommend/history", json={"history": [{"item_id": "i1", "action": "click"}], "k": 3,
                                                "mode": "slate", "slate_action": "like"})
    assert r.status_code == 200 and len(r.json()["items"]) == 3
    for body, words in (({"user_id": "alice", "mode": "slate", "slate_action": "teleport"}, "one of this catalogue"),
                        ({"user_id": "alice", "slate_action": "like"}, "needs mode 'slate'"),
                        ({"user_id": "alice", "mode": "carousel"}, "'topk' or 'slate'")):
        r = client.post("/recommend", json=body)
        assert r.status_code == 422 and words in r.text, r.text

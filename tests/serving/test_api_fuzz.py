"""Property-based fuzz of the HTTP API from its own OpenAPI schema, in-process (no server): for every operation,
bodies generated from the request schema (valid ones) and mutated or arbitrary bodies (invalid ones) never get a
5xx; 200 responses conform to the response schema. schemathesis itself runs against the live app in
tests/integration/test_serving.py."""
import json

import jsonschema
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings, strategies as st

from features.sequences import UserSequence
from serving.app import LocalBackend, create_app
from serving.service import RecommenderService
from serving.settings import ServingSettings
from tests.serving.serving_world import VOCAB, DictSequences, make_trie, publish, tokens_of

JSON_LEAF = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True) | st.text()
ANY_JSON = st.recursive(JSON_LEAF, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner,
                                                                                             max_size=4), max_leaves=12)
PRINTABLE = st.characters(blacklist_categories=("Cc", "Cs"))


def resolve(schema: dict, root: dict) -> dict:
    while "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        schema = root["components"]["schemas"][name]
    return schema


def from_schema(schema: dict, root: dict, names=None):
    """A hypothesis strategy for values valid under a (FastAPI-generated) JSON schema."""
    schema = resolve(schema, root)
    if "anyOf" in schema:
        return st.one_of([from_schema(s, root, names) for s in schema["anyOf"]])
    kind = schema.get("type")
    if kind == "object":
        props = schema.get("properties")
        if props is None:  # a mapping, e.g. value_weights: keys are sometimes real action names
            keys = st.sampled_from(names) if names else st.text(PRINTABLE, min_size=1, max_size=10)
            return st.dictionaries(keys | st.text(max_size=8),
                                   from_schema(schema.get("additionalProperties", {}), root, names), max_size=4)
        required = set(schema.get("required", []))
        return st.fixed_dictionaries({k: from_schema(v, root, names) for k, v in props.items() if k in required},
                                     optional={k: from_schema(v, root, names) for k, v in props.items()
                                               if k not in required})
    if kind == "array":
        return st.lists(from_schema(schema.get("items", {}), root, names), min_size=schema.get("minItems", 0),
                        max_size=min(schema.get("maxItems", 5), 12))
    if kind == "string":
        if "enum" in schema:
            return st.sampled_from(schema["enum"])
        base = st.text(PRINTABLE, min_size=max(1, schema.get("minLength", 0)), max_size=min(schema.get("maxLength", 20), 20))
        return base | st.sampled_from(["alice", "nobody", "i1", "i2", "click", "purchase", "like"])
    if kind == "integer":
        return st.integers(schema.get("minimum", -10**6), schema.get("maximum", 10**6))
    if kind == "number":
        return st.floats(-1e3, 1e3)
    if kind == "boolean":
        return st.booleans()
    if kind == "null":
        return st.none()
    return ANY_JSON


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    settings = ServingSettings(follow_updates=False, beam_size=8, max_k=30, max_history_events=10, max_body_bytes=4096)
    trie = make_trie(40)
    rows = {"alice": UserSequence("alice", tokens_of(trie, ["i1", "i2"]), 2, 1000, 1)}
    service = RecommenderService(VOCAB, trie, DictSequences(rows), settings)
    service.event_sink = [].append  # POST /events: checked events land in a list (Kafka's part is integration)
    path = tmp_path_factory.mktemp("model")
    publish(path)
    service.load_model(path)
    client = TestClient(create_app(settings, LocalBackend(service)), raise_server_exceptions=False)
    return client, client.get("/openapi.json").json()


def operations(schema):
    for path, methods in schema["paths"].items():
        for method, op in methods.items():
            body = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
            yield path, method, body, op


def check(client, schema, path, method, content: bytes, op):
    r = client.request(method, path, content=content, headers={"content-type": "application/json"})
    assert r.status_code < 500, (path, content[:300], r.status_code, r.text[:300])
    if r.status_code == 200 and "application/json" in r.headers.get("content-type", ""):
        response_schema = op["responses"]["200"]["content"]["application/json"]["schema"]
        jsonschema.validate(r.json(), {**resolve(response_schema, schema), "components": schema["components"]})
    return r.status_code


@pytest.mark.slow
def test_schema_valid_bodies_never_get_5xx_and_200s_match_the_response_schema(api):
    client, schema = api
    statuses = {}
    for path, method, body_schema, op in operations(schema):
        strategy = from_schema(body_schema, schema, list(VOCAB.actions)) if body_schema else st.none()

        @settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(strategy)
        def run(body):
            content = b"" if body is None else json.dumps(body).encode()
            status = check(client, schema, path, method, content, op)
            statuses.setdefault(path, set()).add(status)

        run()
    assert 200 in statuses["/recommend"] and 200 in statuses["/recommend/history"]


@pytest.mark.slow
def test_mutated_and_arbitrary_bodies_never_get_5xx(api):
    client, schema = api
    posts = [(p, m, b, op) for p, m, b, op in operations(schema) if b]

    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(st.sampled_from(posts), st.data())
    def run(op_spec, data):
        path, method, body_schema, op = op_spec
        valid = data.draw(from_schema(body_schema, schema, list(VOCAB.actions)))
        how = data.draw(st.sampled_from(["replace_field", "arbitrary_json", "raw_bytes", "drop_field"]))
        if how == "replace_field" and valid:
            key = data.draw(st.sampled_from(sorted(valid)))
            valid[key] = data.draw(ANY_JSON)
            content = json.dumps(valid).encode()  # NaN/Infinity become non-standard JSON tokens: also fair input
        elif how == "drop_field" and valid:
            valid.pop(data.draw(st.sampled_from(sorted(valid))))
            content = json.dumps(valid).encode()
        elif how == "raw_bytes":
            content = data.draw(st.binary(max_size=200))
        else:
            content = json.dumps(data.draw(ANY_JSON)).encode()
        check(client, schema, path, method, content, op)

    run()

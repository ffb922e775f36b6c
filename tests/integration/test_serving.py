"""The Ray Serve app on the real stack: Kafka broker, the stream worker filling Feast, a quickly pretrained model.

- requests return real catalogue items and never already-seen ones with exclude_seen;
- requests enter through HAProxy (its stats page counts them at the replicas' servers);
- bad requests through the real ingress (HAProxy by default) get 4xx with a message, an oversized chunked body 413;
- swap under load: 20 clients call /recommend while 10 model versions (and one corrupt one) are published on
  `model-updates`: no failed request, every response names a published version, every replica serves each new
  version within 5 s (the lags are printed);
- a new item produced to `items` is recommendable (a request forcing its SID prefix returns it) on every replica
  within 2 s.
"""
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch

from catalogue.datasets import load_item_meta, load_sequences
from deploy.streams import backfill
from features.store import UserSequenceStore
from streams.producer import EventProducer
from streams.replay import amazon_events, logged_past
from streams.schemas import ItemEvent
from streams.topics import ensure_topics
from tests.integration.stream_harness import (BEAUTY, StreamEnv, WorkerProcess, build_test_catalogue, choose_users,
                                              wait_for)

pytestmark = [pytest.mark.integration, pytest.mark.slow,
              pytest.mark.skipif(not (BEAUTY / "sequences.txt").exists(), reason="needs ../shared/data")]

REPLICAS = 2
EVENTS = 1500
REPORT = Path(os.environ.get("SIDSTREAM_SERVING_TEST_REPORT", "var/bench/serving_integration.json"))


def quick_pretrain(catalogue, sequences, users, out: Path) -> Path:
    from trainer.data import Tokenizer, as_events, leave_one_out
    from trainer.pretrain import TrainConfig, pretrain

    split = leave_one_out({u: as_events(sequences[u]) for u in users})
    config = TrainConfig(d_model=32, n_layers=2, n_heads=2, dropout=0.0, window_events=20, batch_size=64,
                         max_epochs=1, time_budget_s=6, val_users=50, eval_beam=10, eval_batch=50, warmup_steps=5,
                         threads=1)
    pretrain(split, Tokenizer(catalogue.vocab, catalogue.tokens_of), catalogue.trie, config, out, resume=False,
             progress=False, log=lambda *_: None)
    return out / "model"


def publish_version(base_dir: Path, target: Path, seed: int, catalogue) -> dict:
    """A new model version: the base weights nudged (a stand-in for the online trainer), saved to the registry."""
    from trainer.registry import load_model, read_manifest, save_model

    model, manifest = load_model(base_dir)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 1e-3)
    save_model(target, model, catalogue.vocab, step=seed, extra={"train_config": manifest["train_config"]})
    return read_manifest(target)


@pytest.fixture(scope="module")
def stack(services, tmp_path_factory):
    from catalogue.trie import SidTrie  # noqa: F401
    from deploy.localstack import free_port
    from deploy.serve import start_serving
    from features.store import UserSequenceStore
    from serving.app import shutdown_ray
    from serving.settings import ServingSettings

    root = tmp_path_factory.mktemp("serving")
    catalogue_dir = root / "catalogue"
    catalogue, sequences = build_test_catalogue(BEAUTY, catalogue_dir)
    # the items' titles (the live page shows them); the SIDs stay collaborative, so the build stays fast
    catalogue.titles = {str(i["item_id"]): i["title"] for i in load_item_meta(BEAUTY)
                        if i.get("title") and str(i["item_id"]) in catalogue}
    catalogue.save(catalogue_dir)
    users = choose_users(sequences, EVENTS)
    model_dir = quick_pretrain(catalogue, sequences, sorted(sequences, key=int)[:3000], root / "run")

    env = StreamEnv(services.kafka_bootstrap, root)
    settings = env.settings()
    ensure_topics(settings)
    worker = WorkerProcess(env, catalogue_dir).start()
    saved_env = dict(os.environ)
    try:
        producer = EventProducer(env.bootstrap)
        events = list(amazon_events({u: sequences[u] for u in users}, limit=EVENTS))
        for event in events:
            producer.send(settings.topics.interactions, event)
        producer.producer.flush()
        store = UserSequenceStore(env.feature_settings(), repo_dir=root / "feast")
        histories = {}
        for e in events:
            histories.setdefault(e.user_id, []).append(e.item_id)
        wait_for(lambda: all(r is not None and r.event_count == len(histories[u])
                             for u, r in store.read(list(histories)).items()) or "Feast not filled yet",
                 180, "the worker to fill Feast", worker, interval=1.0)

        os.environ.update(env.env)
        port = free_port()
        serving = ServingSettings(model_dir=model_dir, catalogue_dir=catalogue_dir, replicas=REPLICAS,
                                  cpus_per_replica=0.5, torch_threads=1, http_port=port, follow_updates=True,
                                  batch_max_size=16, update_poll_s=0.05)
        ingress = start_serving(serving, num_cpus=2)
        base = f"http://127.0.0.1:{port}"
        wait_for(lambda: httpx.get(base + "/readyz", timeout=5).status_code == 200, 120, "the replicas to be ready")
        yield {"base": base, "ingress": ingress, "catalogue": catalogue, "histories": histories, "model_dir": model_dir, "env": env,
               "settings": settings, "producer": producer, "root": root, "worker": worker}
        producer.close()
    finally:
        try:
            shutdown_ray()
        finally:
            worker.stop()
            os.environ.clear()
            os.environ.update(saved_env)


def _report(section: str, data: dict) -> None:
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    report = json.loads(REPORT.read_text()) if REPORT.exists() else {}
    report[section] = data
    REPORT.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\n[serving] {section}: {json.dumps(data)}")


def test_recommendations_are_real_unseen_catalogue_items(stack):
    base, catalogue, histories = stack["base"], stack["catalogue"], stack["histories"]
    known = set(catalogue.item_ids)
    with httpx.Client(base_url=base, timeout=30) as client:
        for user in list(histories)[:40]:
            r = client.post("/recommend", json={"user_id": user, "k": 10, "exclude_seen": True})
            assert r.status_code == 200, r.text
            body = r.json()
            items = [i["item_id"] for i in body["items"]]
            assert len(items) == 10 and set(items) <= known
            # "seen" is the sequence the online store keeps (the worker's last window_events events)
            seen = set(histories[user][-stack["settings"].window_events:])
            assert not set(items) & seen, f"{user} was recommended an item already seen"
            assert not body["cold_start"] and body["history_events"] == min(len(histories[user]), 20)
            assert body["sequence_age_ms"] is not None and body["sequence_age_ms"] >= 0
            for item in body["items"]:
                assert tuple(item["sid"]) == catalogue.codes_of(item["item_id"])
        r = client.post("/recommend", json={"user_id": "never-seen-user", "k": 5})
        assert r.status_code == 200 and r.json()["cold_start"] and len(r.json()["items"]) == 5
        assert client.get("/healthz").status_code == 200
        assert "sidstream_serving_requests_total" in client.get("/metrics").text


def test_requests_enter_through_haproxy_and_reach_every_replica(stack):
    """The default ingress really is HAProxy: its stats page lists one server per replica, and requests sent to
    the app's port were forwarded to them (Ray's fallback proxy, a backup server, stays idle)."""
    ingress = stack["ingress"]
    assert ingress.get("RAY_SERVE_ENABLE_HA_PROXY") == "1", ingress
    stats_url = f"http://127.0.0.1:{ingress['RAY_SERVE_HAPROXY_STATS_PORT']}/stats;csv"

    def answered() -> dict[str, int]:  # 2xx responses per replica server, from HAProxy's CSV stats
        lines = httpx.get(stats_url, timeout=10).text.splitlines()
        columns = lines[0].lstrip("# ").split(",")
        name, ok = columns.index("svname"), columns.index("hrsp_2xx")
        rows = [line.split(",") for line in lines[1:] if line]
        return {row[name]: int(row[ok] or 0) for row in rows if row[name].startswith("SERVE_REPLICA")}

    before = answered()
    assert len(before) == REPLICAS, before
    with httpx.Client(base_url=stack["base"], timeout=30) as client:
        for user in list(stack["histories"])[:20]:
            assert client.post("/recommend", json={"user_id": user, "k": 5}).status_code == 200
    after = answered()
    assert sum(after.values()) - sum(before.values()) >= 20, (before, after)


def test_bad_requests_through_the_real_ingress_get_4xx_with_a_message(stack):
    """The unit fuzz talks to the ASGI app; this goes through the ingress in front of the replicas (HAProxy by
    default), which must pass the replica's own 4xx answers through and add no 5xx of its own."""
    import socket
    from urllib.parse import urlsplit

    base = stack["base"]
    over_limit = b'{"user_id": "' + b"x" * (70 * 1024) + b'"}'  # max_body_bytes defaults to 64 KiB
    cases = [
        ("POST", "/recommend", {"content": b"{not json", "headers": {"content-type": "application/json"}}, 422),
        ("POST", "/recommend", {"json": {"user_id": "u", "k": 1000}}, 422),
        ("POST", "/recommend", {"json": {"k": 10}}, 422),
        ("POST", "/recommend/history", {"json": {"history": [{"item_id": "no-such-item", "action": "click"}]}}, 422),
        ("POST", "/recommend", {"content": over_limit, "headers": {"content-type": "application/json"}}, 413),
        ("GET", "/recommend", {}, 405),
        ("GET", "/no-such-route", {}, 404),
    ]
    with httpx.Client(base_url=base, timeout=30) as client:
        for method, path, kwargs, status in cases:
            r = client.request(method, path, **kwargs)
            assert r.status_code == status, (method, path, r.status_code, r.text[:300])
            assert r.json().get("detail"), r.text[:300]
    # a chunked body (no Content-Length) over the limit: refused while it streams, not after buffering it all
    url = urlsplit(base)
    with socket.create_connection((url.hostname, url.port), timeout=30) as sock:
        sock.sendall(b"POST /recommend HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
        chunk = b"x" * 8192
        for _ in range(10):
            sock.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
        sock.sendall(b"0\r\n\r\n")
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    assert reply.split(b"\r\n", 1)[0].split()[1] == b"413", reply[:300]


def test_swap_under_load_drops_nothing_and_every_replica_follows(stack):
    from trainer.registry import model_update_message

    base, settings, catalogue = stack["base"], stack["settings"], stack["catalogue"]
    users = list(stack["histories"])
    initial = httpx.get(base + "/readyz").json()["model_version"]
    producer = stack["producer"]
    responses, failures, stop = [], [], threading.Event()
    lock = threading.Lock()

    def client(cid: int):
        rng = np.random.default_rng(cid)
        with httpx.Client(base_url=base, timeout=30) as c:
            while not stop.is_set():
                try:
                    r = c.post("/recommend", json={"user_id": users[rng.integers(len(users))], "k": 10})
                    got = time.time()
                    if r.status_code != 200:
                        failures.append(f"{r.status_code}: {r.text[:200]}")
                        continue
                    with lock:
                        responses.append((got, r.headers["x-sidstream-replica"], r.json()["model_version"]))
                except httpx.HTTPError as exc:
                    failures.append(repr(exc))

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(20)]
    for t in threads:
        t.start()
    time.sleep(3)
    published = []  # (version, time published)
    corrupt_version = None
    for i in range(10):
        manifest = publish_version(stack["model_dir"], stack["root"] / "models" / f"v{i}", seed=100 + i, catalogue=catalogue)
        message = model_update_message(stack["root"] / "models" / f"v{i}")
        producer.producer.send(settings.topics.model_updates, key=b"sidstream", value=json.dumps(message).encode())
        producer.producer.flush()
        published.append((manifest["version"], time.time()))
        if i == 4:  # a corrupt model: message and weights disagree; it must be refused
            bad = stack["root"] / "models" / "corrupt"
            corrupt = publish_version(stack["model_dir"], bad, seed=999, catalogue=catalogue)
            bad_message = model_update_message(bad)
            (bad / "model.safetensors").write_bytes(b"\x00" * 64)
            corrupt_version = corrupt["version"]
            producer.producer.send(settings.topics.model_updates, key=b"sidstream",
                                   value=json.dumps(bad_message).encode())
            producer.producer.flush()
        time.sleep(1.5)
    time.sleep(6)
    stop.set()
    for t in threads:
        t.join(60)

    versions = [v for v, _ in published]
    assert not failures, failures[:5]
    served = {v for _, _, v in responses}
    assert served <= set(versions) | {initial}, served - set(versions) - {initial}
    assert corrupt_version not in served
    replicas = {r for _, r, _ in responses}
    assert len(replicas) == REPLICAS
    order = {v: i for i, v in enumerate(versions)}
    lags = {}
    for i, (version, t_pub) in enumerate(published):
        for replica in replicas:
            first = min((t for t, r, v in responses if r == replica and order.get(v, -1) >= i and t >= t_pub),
                        default=None)
            lags.setdefault(version, {})[replica] = None if first is None else round(first - t_pub, 3)
    flat = [lag for per in lags.values() for lag in per.values()]
    _report("swap_under_load", {"clients": 20, "versions": len(versions), "responses": len(responses),
                                "failed": len(failures), "replicas": len(replicas),
                                "max_lag_s": max(x for x in flat if x is not None) if any(flat) else None,
                                "median_lag_s": float(np.median([x for x in flat if x is not None])),
                                "lags_s": lags, "corrupt_refused": corrupt_version not in served})
    assert all(lag is not None and lag <= 5.0 for lag in flat), lags


def test_new_item_is_recommendable_on_every_replica_within_two_seconds(stack):
    from catalogue.encoder import hashed_vector

    base, settings, catalogue = stack["base"], stack["settings"], stack["catalogue"]
    item_id = f"serving-new-{int(time.time())}"
    prefix = list(catalogue.semantic_codes(hashed_vector(item_id, catalogue.tokenizer.dim)))  # the worker's SID prefix
    first_seen, stop, lock = {}, threading.Event(), threading.Lock()
    t0 = time.time()
    stack["producer"].send(settings.topics.items, ItemEvent(item_id=item_id, title="", ts=time.time()))
    stack["producer"].producer.flush()

    def poll():
        with httpx.Client(base_url=base, timeout=10) as c:
            while not stop.is_set():
                r = c.post("/recommend", json={"user_id": "new-item-prober", "k": 32, "sid_prefix": prefix})
                assert r.status_code == 200, r.text
                if item_id in {i["item_id"] for i in r.json()["items"]}:
                    with lock:
                        first_seen.setdefault(r.headers["x-sidstream-replica"], time.time() - t0)
                if len(first_seen) == REPLICAS:
                    stop.set()

    threads = [threading.Thread(target=poll, daemon=True) for _ in range(4)]
    for t in threads:
        t.start()
    stop.wait(30)
    stop.set()
    for t in threads:
        t.join(30)
    _report("new_item", {"item_id": item_id, "seconds_to_recommendable_by_replica": first_seen})
    assert len(first_seen) == REPLICAS, f"the new item reached only {first_seen} in 30 s"
    assert max(first_seen.values()) <= 2.0, first_seen


def test_a_backfilled_user_is_served_with_the_past_before_any_stream_event(stack):
    """Right after `backfill`, /recommend for a user the stream never saw reports the past in history_events."""
    sequences = load_sequences(BEAUTY)
    user = next(u for u in sorted(sequences, key=int, reverse=True)
                if u not in stack["histories"] and len(sequences[u]) >= 25)
    store = UserSequenceStore(stack["env"].feature_settings(), repo_dir=stack["root"] / "feast")
    result = backfill(stack["catalogue"], logged_past(sequences={user: sequences[user]}), store,
                      stack["settings"].window_events)
    assert result["users"] == 1 and result["mismatches"] == 0
    with httpx.Client(base_url=stack["base"], timeout=30) as client:
        r = client.post("/recommend", json={"user_id": user, "k": 5})
    assert r.status_code == 200, r.text
    body = r.json()
    # all of the past up to the model's window (20 events in this fixture's model), not a new user
    assert not body["cold_start"] and body["history_events"] == min(len(sequences[user]), 20)


def test_whatif_explain_and_slates_through_the_live_app_read_the_users_stored_history(stack):
    histories, window = stack["histories"], stack["settings"].window_events
    user = max(histories, key=lambda u: len(histories[u]))
    with httpx.Client(base_url=stack["base"], timeout=60) as client:
        r = client.post("/whatif", json={"user_id": user, "k": 5, "edits": [{"op": "remove", "index": 0}]})
        assert r.status_code == 200, r.text
        body = r.json()
        read = histories[user][-min(window, 20):]  # what the worker stored, as far as the model reads
        assert [e["item_id"] for e in body["history"]] == read
        assert [e["item_id"] for e in body["edited_history"]] == read[1:] and len(body["items"]) == 5
        top = body["items"][0]["item_id"]
        r = client.post("/explain", json={"user_id": user, "item_id": top})
        assert r.status_code == 200, r.text
        explained = r.json()
        assert [e["item_id"] for e in explained["events"]] == read
        assert sorted(explained["by_retrieval"]) == list(range(len(read)))
        r = client.post("/whatif", json={"user_id": user, "edits": [{"op": "remove", "index": 99}]})
        assert r.status_code == 422 and "there is no event 99" in r.text
        r = client.post("/recommend", json={"user_id": user, "k": 5, "mode": "slate"})
        assert r.status_code == 200, r.text
        slate = [i["item_id"] for i in r.json()["items"]]
        assert len(set(slate)) == 5 and not set(slate) & set(read)


def test_the_live_page_in_a_real_browser_shows_a_like_in_the_history_and_renders_again(stack):
    """Debian's chromium, headless, driven by selenium through Debian's chromedriver, against the live app: pick a
    user, click an action on a recommendation; the event goes through Kafka and the stream worker into Feast, the
    page shows it in the history and renders the recommendations again."""
    chromium, chromedriver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and chromedriver):
        pytest.skip("no Debian chromium + chromium-driver (deploy/install.sh installs them)")
    from selenium import webdriver  # function-level: only this test drives a browser
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,900"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=chromedriver), options=options)
    shots = REPORT.parent
    try:
        user = sorted(stack["histories"])[0]
        driver.get(f"{stack['base']}/?user={user}")
        wait = WebDriverWait(driver, 60, poll_frequency=0.1)
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "tr.rec button"))
        before = int(driver.find_element(By.ID, "history").get_attribute("data-count"))
        renders = int(driver.find_element(By.ID, "recs").get_attribute("data-renders"))
        driver.save_screenshot(str(shots / "page-before.png"))
        row = driver.find_elements(By.CSS_SELECTOR, "tr.rec")[0]
        item = row.get_attribute("data-item")
        buttons = row.find_elements(By.TAG_NAME, "button")
        button = next((b for b in buttons if b.get_attribute("data-action") == "like"), buttons[0])
        action = button.get_attribute("data-action")
        clicked = time.monotonic()
        button.click()
        wait.until(lambda d: int(d.find_element(By.ID, "history").get_attribute("data-count")) > before)
        shown = time.monotonic() - clicked
        wait.until(lambda d: int(d.find_element(By.ID, "recs").get_attribute("data-renders")) > renders)
        rendered = time.monotonic() - clicked
        last = driver.find_elements(By.CSS_SELECTOR, "tr.event")[-1].find_elements(By.TAG_NAME, "td")
        title = stack["catalogue"].titles.get(item)
        assert last[1].text == (f"{title} {item}" if title else item) and last[2].text == action
        assert not driver.find_element(By.ID, "error").text
        driver.save_screenshot(str(shots / "page-after.png"))
        _report("live_page", {"history_shown_s": round(shown, 2), "recommendations_rendered_s": round(rendered, 2),
                              "item": item, "action": action})
        assert rendered < 10.0, f"the page took {rendered:.1f} s to show the click"
        # a refused event is shown on the page, not lost in the console
        driver.execute_script("act('no-such-item', arguments[0])", action)
        wait.until(lambda d: "not in the catalogue" in d.find_element(By.ID, "error").text)
    finally:
        driver.quit()


def test_schemathesis_finds_no_failure_against_the_live_app(stack):
    """schemathesis itself, as a user would run it (`st run` with serving/schemathesis.toml), against the running
    Ray Serve app through its ingress: no 5xx, and every answer is one the OpenAPI document declares."""
    config = Path(__file__).resolve().parents[2] / "serving" / "schemathesis.toml"
    result = subprocess.run([str(Path(sys.executable).with_name("st")), "--no-color", "--config-file", str(config),
                             "run", f"{stack['base']}/openapi.json", "--max-examples", "10", "--request-timeout", "60"],
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0 and "No issues found" in result.stdout, result.stdout[-6000:] + result.stderr[-2000:]

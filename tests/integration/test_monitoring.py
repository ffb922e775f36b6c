"""The monitor against the real system: a real broker, a real stream worker (drift) or a real online trainer
(model age). Drift is injected the way it happens in production - action rates shift and a cluster of new items
arrives and takes over the traffic - and the alert must fire; a stalled trainer must make the model-age alert
fire while the stream keeps flowing."""
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from deploy.localstack import free_port
from deploy.monitor.cli import Monitor
from deploy.settings import MonitorSettings
from streams.producer import EventProducer
from streams.schemas import InteractionEvent, ItemEvent
from streams.topics import ensure_topics

from .stream_harness import BEAUTY, StreamEnv, WorkerProcess, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
NEW_CLUSTER = ["camping tent waterproof two person", "trail running shoe", "hiking backpack 40 litre",
               "mountain bike helmet", "fishing rod carbon spinning", "tent stakes aluminium", "sleeping bag down",
               "climbing rope dynamic 60 m"]


def _states(snap):
    return {a["name"]: a["state"] for a in snap["alerts"]}


def _tick_until(monitor, predicate, timeout_s, what):
    deadline, snap = time.monotonic() + timeout_s, None
    while time.monotonic() < deadline:
        snap = monitor.tick()
        if predicate(snap):
            return snap
        time.sleep(1.0)
    raise AssertionError(f"timed out waiting for {what}; last alerts {_states(snap) if snap else None}, "
                         f"lag {snap['lag'] if snap else None}, sources {snap['sources'] if snap else None}")


@pytest.fixture(scope="module")
def text_catalogue(tmp_path_factory):
    """A real text catalogue (MiniLM) of 400 Beauty items, 16 codes per level: small enough to build in seconds."""
    if not (BEAUTY / "item_meta.jsonl").is_file():
        pytest.skip(f"Beauty item metadata not found at {BEAUTY} (set SIDSTREAM_DATA_DIR)")
    from catalogue.catalogue import build_catalogue
    from catalogue.datasets import load_item_meta

    items = [i for i in load_item_meta(BEAUTY) if i.get("title")][:400]
    out = tmp_path_factory.mktemp("catalogue") / "beauty400"
    catalogue, _ = build_catalogue(items, None, out, codes_per_level=16, suffix_size=64, iterations=10,
                                   progress=False, log=lambda *_: None)
    return out, catalogue


def test_injected_drift_makes_the_drift_alerts_fire(services, text_catalogue, tmp_path):
    catalogue_dir, catalogue = text_catalogue
    metrics_port = free_port()
    env = StreamEnv(services.kafka_bootstrap, tmp_path, extra={"SIDSTREAM_WORKER_METRICS_PORT": str(metrics_port)})
    settings = env.settings()
    ensure_topics(settings)
    worker = WorkerProcess(env, catalogue_dir).start()
    monitor = None
    try:
        rng = np.random.default_rng(0)
        items = catalogue.item_ids
        producer = EventProducer(env.bootstrap)
        t0 = time.time()

        def interaction(n, item, action):
            user = f"u{n % 100}"
            return InteractionEvent(event_id=f"e{n}", user_id=user, item_id=item, action=action, ts=t0 + n / 1000)

        # phase A: the normal stream, 3 clicks to 1 skip over the whole catalogue
        for n in range(1300):
            producer.send(settings.topics.interactions,
                          interaction(n, items[int(rng.integers(len(items)))], "click" if rng.random() < 0.75 else "skip"))
        producer.producer.flush()
        monitor = Monitor(catalogue_dir, {"worker": f"http://127.0.0.1:{metrics_port}/metrics"},
                          MonitorSettings(reference_events=1000, recent_events=300), stream_settings=settings,
                          history_file=tmp_path / "history.jsonl")
        # the worker commits its offsets on its own clock, so its lag shows up a little after the windows fill
        app_id = env.settings().app_id
        snap = _tick_until(monitor, lambda s: s["drift"]["ready"] and s["drift"]["recent_events"] == 300
                           and s["drift"]["reference_events"] >= 990 and app_id in s["lag"]["groups"], 240,
                           "the worker to turn phase A into windows and commit its offsets")
        before = _states(snap)
        assert not any(before[f"drift_{s}"] == "alert" for s in ("action", "sid_level_1", "sid_level_2")), before
        assert before["drift_new_items"] == "unknown"  # no new items yet
        assert (snap["freshness"]["event_to_feast_s"] or {}).get("p99") is not None  # the worker's hop is measured
        assert settings.topics.interactions in snap["lag"]["groups"][app_id], snap["lag"]

        # phase B: a cluster of new items (outdoor gear in a beauty catalogue) arrives and takes the traffic,
        # and people like far more than before
        new_ids = [f"new-{k}" for k in range(40)]
        for k, item_id in enumerate(new_ids):
            producer.send(settings.topics.items, ItemEvent(item_id=item_id, title=f"{NEW_CLUSTER[k % 8]} model {k}",
                                                           categories=["Sports", "Outdoors"], ts=time.time()))
        producer.producer.flush()
        snap = _tick_until(monitor, lambda s: s["catalogue"]["new_items"] == 40, 120, "40 new items' SIDs")
        for n in range(1300, 1650):
            producer.send(settings.topics.interactions,
                          interaction(n, new_ids[int(rng.integers(40))], "like" if rng.random() < 0.8 else "click"))
        producer.close()
        snap = _tick_until(monitor, lambda s: _states(s)["drift_action"] == "alert"
                           and _states(s)["drift_sid_level_1"] == "alert", 180, "the drift alerts")
        after = _states(snap)
        assert after["drift_new_items"] == "alert", snap["catalogue"]["new_item_codes"]
        assert snap["status"] == "alert"
        rates = snap["drift"]["action_rates"]["recent"]
        assert rates[catalogue.vocab.actions.index("like")] > 0.6
        assert worker.alive()
        # the history the plot is drawn from holds every snapshot
        lines = (tmp_path / "history.jsonl").read_text().splitlines()
        statuses = [json.loads(line)["status"] for line in lines]
        assert statuses[-1] == "alert" and "alert" not in statuses[:2], statuses
    finally:
        if monitor is not None:
            monitor.close()
        worker.stop()


def _tiny_world(root: Path):
    import torch

    from catalogue.catalogue import ItemCatalogue
    from trainer.model import ModelConfig, Transformer
    from trainer.registry import save_model

    rng = np.random.default_rng(0)
    cat = ItemCatalogue.fit([str(i) for i in range(60)], rng.normal(size=(60, 8)).astype(np.float32), levels=2,
                            codes_per_level=8, suffix_size=16, iterations=5, progress=None)
    cat.save(root / "catalogue")
    torch.manual_seed(0)
    model = Transformer(ModelConfig(vocab_size=cat.vocab.size, max_len=1 + 5 * (cat.vocab.sid_length + 1),
                                    d_model=32, n_layers=1, n_heads=2, dropout=0.0))
    save_model(root / "init", model, cat.vocab, extra={"train_config": {"window_events": 4}})
    return ItemCatalogue.load(root / "catalogue")


def _training_rows(catalogue, start, count):
    vocab, rows, rng = catalogue.vocab, [], np.random.default_rng(start)
    for e in range(start, start + count):
        user = f"u{e % 10}"
        tokens = catalogue.tokens_of(str(int(rng.integers(60)))) + [vocab.action_token("click")]
        now = int(time.time() * 1000)
        rows.append((user, json.dumps({"schema_version": 1, "user_id": user, "tokens": tokens, "event_id": f"e{e}",
                                       "event_count": e + 1, "event_ms": now, "produced_ms": now,
                                       "appended_ms": now}).encode()))
    return rows


def test_a_stalled_trainer_makes_the_model_age_alert_fire(services, tmp_path):
    from kafka import KafkaProducer

    from streams.settings import StreamSettings, Topics

    catalogue = _tiny_world(tmp_path)
    run = uuid.uuid4().hex[:8]
    topics_env = {"SIDSTREAM_TOPICS__TRAINING": f"training-{run}", "SIDSTREAM_TOPICS__MODEL_UPDATES": f"updates-{run}",
                  "SIDSTREAM_TOPICS__CATALOGUE": f"catalogue-{run}"}
    port = free_port()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("SIDSTREAM_")}, **topics_env,
           "SIDSTREAM_KAFKA_BOOTSTRAP_SERVERS": services.kafka_bootstrap, "SIDSTREAM_ONLINE_METRICS_PORT": str(port),
           "SIDSTREAM_ONLINE_GROUP_ID": f"trainer-{run}", "SIDSTREAM_TORCH_THREADS": "1"}
    settings = StreamSettings(kafka_bootstrap_servers=services.kafka_bootstrap,
                              topics=Topics(training=f"training-{run}", model_updates=f"updates-{run}",
                                            catalogue=f"catalogue-{run}"))
    ensure_topics(settings, [settings.topics.training, settings.topics.model_updates, settings.topics.catalogue,
                             settings.topics.interactions, settings.topics.dead_letters, settings.topics.items])
    log = open(tmp_path / "trainer.log", "w")
    trainer = subprocess.Popen(
        [sys.executable, "-m", "deploy.cli", "train", "online", "--registry", str(tmp_path / "registry"),
         "--catalogue", str(tmp_path / "catalogue"), "--init", str(tmp_path / "init"), "--set", "micro_batch=8",
         "--set", "publish_every_s=2", "--set", "gate_tolerance=1.0"],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    producer = KafkaProducer(bootstrap_servers=services.kafka_bootstrap, acks="all")
    monitor = None
    try:
        monitor = Monitor(tmp_path / "catalogue", {"trainer": f"http://127.0.0.1:{port}/metrics"},
                          MonitorSettings(model_age_warn_s=8, model_age_alert_s=20), stream_settings=settings)

        fed = [0]

        def feeding(predicate):
            """Each tick first sends 40 more training examples (the stream never stops), then checks."""
            def check(snap):
                assert trainer.poll() is None, (tmp_path / "trainer.log").read_text()[-3000:]
                for user, value in _training_rows(catalogue, fed[0], 40):
                    producer.send(settings.topics.training, key=user.encode(), value=value)
                producer.flush()
                fed[0] += 40
                return predicate(snap)
            return check

        snap = _tick_until(monitor, feeding(lambda s: _states(s)["model_age"] == "ok"
                                            and s["freshness"]["models_announced"] >= 2
                                            and s["quality"]["source"] == "trainer"),
                           180, "a trainer publishing fresh versions")
        assert 0.0 <= snap["quality"]["recall@10"] <= 1.0 and snap["quality"]["events"] >= 500
        # the trainer stalls (stopped, not dead: its process and consumer group stay), the stream goes on
        os.killpg(trainer.pid, signal.SIGSTOP)
        stalled_at = time.monotonic()
        snap = _tick_until(monitor, feeding(lambda s: _states(s)["model_age"] == "alert"), 90, "the model-age alert")
        assert time.monotonic() - stalled_at >= 20 - 3  # not before the threshold (publishes were every ~2 s)
        assert snap["freshness"]["model_age_s"] >= 20
        assert snap["sources"]["trainer"].startswith("error")  # a stopped process does not answer scrapes
        os.killpg(trainer.pid, signal.SIGCONT)
        _tick_until(monitor, feeding(lambda s: _states(s)["model_age"] == "ok"), 90,
                    "the alert to clear once the trainer resumes")
    finally:
        if monitor is not None:
            monitor.close()
        producer.close()
        if trainer.poll() is None:
            os.killpg(trainer.pid, signal.SIGCONT)
            os.killpg(trainer.pid, signal.SIGTERM)
            try:
                trainer.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(trainer.pid, signal.SIGKILL)
        log.close()

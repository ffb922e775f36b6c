"""The online trainer against a real broker: killed with SIGKILL mid-stream, restarted, nothing lost or repeated."""
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
import torch

pytestmark = [pytest.mark.integration, pytest.mark.slow]

WINDOW = 4
REPO = Path(__file__).resolve().parents[2]


def tiny_catalogue(out: Path):
    from catalogue.catalogue import ItemCatalogue

    rng = np.random.default_rng(0)
    cat = ItemCatalogue.fit([str(i) for i in range(60)], rng.normal(size=(60, 8)).astype(np.float32), levels=2,
                            codes_per_level=8, suffix_size=16, iterations=5, progress=None)
    cat.save(out)
    return ItemCatalogue.load(out)


def initial_model(out: Path, vocab):
    from trainer.model import ModelConfig, Transformer
    from trainer.registry import save_model

    torch.manual_seed(0)
    model = Transformer(ModelConfig(vocab_size=vocab.size, max_len=1 + (WINDOW + 1) * (vocab.sid_length + 1),
                                    d_model=32, n_layers=2, n_heads=2, dropout=0.0))
    save_model(out, model, vocab, extra={"train_config": {"window_events": WINDOW}})


def examples(catalogue, users=12, events=12, start=0):
    """(user, event_id, value) in production order; each user's window grows one event at a time."""
    rng = np.random.default_rng(start + 7)
    vocab, out = catalogue.vocab, []
    windows = {f"u{u}": [] for u in range(users)}
    for e in range(start, start + events):
        for user in windows:
            item = str(int(rng.integers(0, 60)))
            toks = windows[user] + catalogue.tokens_of(item) + [vocab.action_token("purchase")]
            windows[user] = toks[-WINDOW * (vocab.sid_length + 1):]
            event_id = f"{user}-{e}"
            now = int(time.time() * 1000)
            value = {"schema_version": 1, "user_id": user, "tokens": windows[user], "event_id": event_id,
                     "event_count": e + 1, "event_ms": now, "produced_ms": now, "appended_ms": now}
            out.append((user, event_id, json.dumps(value).encode()))
    return out


def produce(bootstrap, topic, rows):
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    for user, _, value in rows:
        producer.send(topic, key=user.encode(), value=value)
    producer.flush()
    producer.close()


def test_kill_and_restart_trains_every_example_once_and_announces_versions(services, tmp_path):
    from deploy.streamproc import read_topic
    from trainer.registry import check_model_update, parse_model_update
    from streams.settings import StreamSettings
    from streams.topics import ensure_topics
    from trainer.model_registry import ModelRegistry

    catalogue = tiny_catalogue(tmp_path / "catalogue")
    initial_model(tmp_path / "init", catalogue.vocab)
    run = uuid.uuid4().hex[:8]
    env = {**os.environ, "SIDSTREAM_KAFKA_BOOTSTRAP_SERVERS": services.kafka_bootstrap,
           "SIDSTREAM_TOPICS__TRAINING": f"training-{run}", "SIDSTREAM_TOPICS__MODEL_UPDATES": f"updates-{run}",
           "SIDSTREAM_TOPICS__CATALOGUE": f"catalogue-{run}",
           "SIDSTREAM_REGISTRY_DIR": str(tmp_path / "registry"), "SIDSTREAM_CATALOGUE_DIR": str(tmp_path / "catalogue"),
           "SIDSTREAM_ONLINE_GROUP_ID": f"online-{run}", "SIDSTREAM_CHECKPOINT_EVERY_STEPS": "2",
           "SIDSTREAM_TORCH_THREADS": "1"}
    settings = StreamSettings(kafka_bootstrap_servers=services.kafka_bootstrap)
    settings.topics.training, settings.topics.model_updates = f"training-{run}", f"updates-{run}"
    ensure_topics(settings, [settings.topics.training, settings.topics.model_updates])
    first_half = examples(catalogue, events=12)
    second_half = examples(catalogue, events=8, start=12)
    produce(services.kafka_bootstrap, settings.topics.training, first_half)
    command = [sys.executable, "-m", "deploy.cli", "train-online", "--init", str(tmp_path / "init"),
               "--record-event-ids", "--set", "micro_batch=4", "--set", "publish_every_steps=3",
               "--set", "gate_min_events=4", "--set", "gate_tolerance=1.0", "--set", "beam=10"]
    reg = ModelRegistry(tmp_path / "registry")
    log1 = open(tmp_path / "first.log", "w")
    proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=log1, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while reg.checkpoint() is None and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert reg.checkpoint() is not None, (tmp_path / "first.log").read_text()[-3000:]
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
        log1.close()
    ckpt_state = json.loads((reg.checkpoint() / "manifest.json").read_text())["checkpoint_state"]
    assert sum(ckpt_state["offsets"].values()) < len(first_half), "killed after the whole stream: not mid-stream"

    produce(services.kafka_bootstrap, settings.topics.training, second_half)
    log2 = open(tmp_path / "second.log", "w")
    # idle exit above the 10 s session timeout: the killed member holds the group until it expires
    done = subprocess.run(command + ["--idle-exit", "20"], cwd=REPO, env=env, stdout=log2, stderr=subprocess.STDOUT,
                          timeout=300)
    log2.close()
    second_log = (tmp_path / "second.log").read_text()
    assert done.returncode == 0, second_log[-3000:]
    assert "resumed from checkpoint" in second_log

    produced = first_half + second_half
    ledger = json.loads((reg.checkpoint() / "ledger.json").read_text())
    assert sorted(row[3] for row in ledger) == sorted(e for _, e, _ in produced)  # each exactly once
    for partition in {row[1] for row in ledger}:
        offsets = [row[2] for row in ledger if row[1] == partition]
        assert offsets == list(range(len(offsets)))  # in order, no gap
    order = {e: i for i, (_, e, _) in enumerate(produced)}
    for user in {u for u, _, _ in produced}:  # one user's events were trained in the order they happened
        trained = [row[3] for row in ledger if row[3].startswith(user + "-")]
        assert trained == sorted(trained, key=order.get)

    versions = reg.versions()
    assert len(versions) >= 3  # the --init version plus published ones
    records = read_topic(services.kafka_bootstrap, settings.topics.model_updates)
    messages = [parse_model_update(r.value) for r in records]
    announced = [m["version"] for m in messages]
    assert announced[0] == versions[0] and set(announced) <= set(versions) and len(announced) >= 3
    assert check_model_update(messages[-1], catalogue.vocab).name == messages[-1]["version"]
    last = reg.manifest(versions[-1])
    assert last["metrics"]["prequential"]["events"] >= 4 and last["offsets"]
    assert last["vocab_version"] == catalogue.vocab.version == last["catalogue_version"]

    out = subprocess.run([sys.executable, "-m", "deploy.cli", "model", "list"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and versions[-1] in out.stdout, out.stderr
    out = subprocess.run([sys.executable, "-m", "deploy.cli", "model", "rollback"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert reg.pinned() == last["parent"]
    rolled = [parse_model_update(r.value)["version"]
              for r in read_topic(services.kafka_bootstrap, settings.topics.model_updates)]
    assert rolled[-1] == last["parent"]

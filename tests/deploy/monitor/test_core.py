"""The monitor's core: snapshots from stream events, catalogue entries, announcements and real Prometheus
exposition text (rendered by the components' own metric registries), the terminal view and the plot."""
import json

import numpy as np
import pytest

from catalogue.vocab import Vocabulary
from deploy.monitor.core import FRESHNESS_SCRAPES, ModelAnnouncement, MonitorCore, event_to_served
from deploy.monitor.plot import plot_history
from deploy.monitor.prometheus import parse_metrics
from deploy.monitor.view import render
from deploy.settings import MonitorSettings
from serving.metrics import ServingMetrics
from streams.metrics import StreamMetrics
from trainer.online_metrics import TrainerMetrics

VOCAB = Vocabulary(levels=3, codes_per_level=8, suffix_size=4, actions=("click", "skip", "like"))


def _core(**overrides):
    # no hold times unless a test asks: these tests judge each snapshot's readings
    settings = MonitorSettings(**{"reference_events": 300, "recent_events": 100, "alert_hold_s": 0,
                                  "alert_clear_s": 0, **overrides})
    rng = np.random.default_rng(0)
    base = rng.integers(0, 8, size=(400, 3))
    return MonitorCore(settings, VOCAB, base, [f"i{n}" for n in range(400)]), rng


def _window(codes, action):
    return VOCAB.sid_to_tokens((*codes, 0)) + [VOCAB.action_token(action)]


def test_a_quiet_stream_is_ok_and_a_shift_in_actions_alerts():
    core, rng = _core()
    for _ in range(400):
        core.add_training_example(_window(tuple(rng.integers(0, 8, 3)), rng.choice(["click", "skip"])))
    core.add_model_update({"version": "v1", "created": 1000.0, "metrics": {"prequential": {"recall@10": 0.1}}})
    snap = core.snapshot(now=1010.0)
    states = {a["name"]: a["state"] for a in snap["alerts"]}
    assert states["drift_action"] == "ok" and states["model_age"] == "ok"
    assert snap["freshness"]["model_version"] == "v1" and snap["freshness"]["model_age_s"] == pytest.approx(10)
    for _ in range(100):
        core.add_training_example(_window(tuple(rng.integers(0, 8, 3)), "like"))
    snap = core.snapshot(now=2000.0)
    states = {a["name"]: a["state"] for a in snap["alerts"]}
    assert states["drift_action"] == "alert"
    assert states["model_age"] == "alert"  # 1000 s > the 900 s default
    assert snap["status"] == "alert"
    json.dumps(snap)  # history lines must serialise


def test_new_items_from_one_cluster_alert_once_there_are_enough():
    core, rng = _core()
    for n in range(40):
        core.add_catalogue_entry(f"new{n}", [6, int(rng.integers(8)), int(rng.integers(8)), 0])
    snap = core.snapshot(now=1.0)
    assert snap["catalogue"]["new_items"] == 40 and snap["catalogue"]["items"] == 440  # base + new
    assert {a["name"]: a["state"] for a in snap["alerts"]}["drift_new_items"] == "alert"
    core.add_catalogue_entry("new0", None)  # a deletion removes it again
    assert core.snapshot(now=2.0)["catalogue"]["new_items"] == 39


def test_freshness_and_quality_come_from_real_exposition_text():
    stream, serving, trainer = StreamMetrics(), ServingMetrics(), TrainerMetrics()
    for v in (0.02, 0.03, 0.04):
        stream.event_to_feast.observe(v)
    serving.item_lag.observe(0.2)
    serving.set_model(None, "v7")
    trainer.observe_rolling({"events": 1000, "recall@10": 0.12, "ndcg@10": 0.05, "action_logloss": 1.0})
    core, _ = _core()
    scrapes = {"worker": parse_metrics(stream.render().decode()), "serving": parse_metrics(serving.render().decode()),
               "trainer": parse_metrics(trainer.render().decode())}
    snap = core.snapshot(now=5.0, scrapes=scrapes, lags={"g": {"interactions": 3}},
                         end_offsets={"interactions": 100, "dead-letters": 0})
    fresh = snap["freshness"]
    assert 0.01 < fresh["event_to_feast_s"]["p50"] <= 0.05
    assert fresh["item_to_trie_s"]["p99"] <= 0.25
    assert fresh["served_versions"] == ["v7"]
    assert snap["quality"]["recall@10"] == pytest.approx(0.12) and snap["quality"]["source"] == "trainer"
    assert snap["lag"]["max"] == 3
    for t in (6.0, 7.0):  # the quality baseline needs a few full-window readings
        core.snapshot(now=t, scrapes=scrapes, end_offsets={"interactions": 100, "dead-letters": 0})
    # the next interval: 50 more events of which 10 dead-lettered
    for _ in range(5):
        stream.event_to_feast.observe(4.0)
    scrapes["worker"] = parse_metrics(stream.render().decode())
    trainer.observe_rolling({"events": 1000, "recall@10": 0.03, "ndcg@10": 0.01, "action_logloss": 1.0})
    scrapes["trainer"] = parse_metrics(trainer.render().decode())
    snap = core.snapshot(now=15.0, scrapes=scrapes, end_offsets={"interactions": 150, "dead-letters": 10})
    assert snap["freshness"]["event_to_feast_s"]["count"] == 8
    assert snap["freshness"]["event_to_feast_s"]["p99"] > 2.0
    assert snap["throughput"]["interactions_per_s"] == pytest.approx(50 / 8)  # 50 events since t=7
    states = {a["name"]: a["state"] for a in snap["alerts"]}
    assert states["dead_letter_rate"] == "alert"  # 10 of 50
    assert states["prequential_drop"] == "alert"  # 0.03 vs a baseline of 0.12
    assert states["event_to_feast_p99"] == "warn"


def test_score_drift_needs_enough_observations_then_compares_intervals():
    serving = ServingMetrics()
    core, rng = _core()

    def snap_after(values, now):
        for v in values:
            serving.score.labels("log_prob").observe(v)
        return core.snapshot(now=now, scrapes={"serving": parse_metrics(serving.render().decode())})

    assert snap_after(rng.normal(-3, 0.5, 20), 1.0)["score"]["psi"] is None
    for t in range(2, 6):
        snap = snap_after(rng.normal(-3, 0.5, 100), float(t))
    assert snap["score"]["psi"] is not None and snap["score"]["psi"] < 0.1
    for t in range(6, 9):  # the model got much less sure of what it returns
        snap = snap_after(rng.normal(-9, 0.5, 100), float(t))
    assert snap["score"]["psi"] > 0.25


def test_a_model_swap_restarts_the_served_score_comparison():
    serving = ServingMetrics()
    core, rng = _core()

    def snap_after(values, now, swap=False):
        if swap:
            serving.model_swaps.inc()
        for v in values:
            serving.score.labels("log_prob").observe(v)
        return core.snapshot(now=now, scrapes={"serving": parse_metrics(serving.render().decode())})

    for t in range(1, 6):
        snap = snap_after(rng.normal(-3, 0.5, 100), float(t))
    assert snap["score"]["psi"] is not None and not snap["score"]["reset_by_swap"]
    snap = snap_after(rng.normal(-9, 0.5, 100), 6.0, swap=True)  # the new version scores differently
    assert snap["score"]["reset_by_swap"] and snap["score"]["psi"] is None
    for t in range(7, 12):
        snap = snap_after(rng.normal(-9, 0.5, 100), float(t))
    assert snap["score"]["psi"] < 0.1  # compared with the new version's own scores: no drift


def test_alerts_fire_and_clear_only_after_their_hold_times():
    core, rng = _core(alert_hold_s=30, alert_clear_s=60)

    def age_state(now, created):
        core.models.clear()
        core.add_model_update({"version": f"v{created}", "created": created})
        snap = core.snapshot(now=now)
        alert = {a["name"]: a for a in snap["alerts"]}["model_age"]
        return alert["state"], alert["raw"]

    assert age_state(100.0, 50.0) == ("ok", "ok")
    assert age_state(2000.0, 50.0) == ("ok", "alert")  # too old, but only just seen so
    assert age_state(2020.0, 50.0) == ("ok", "alert")
    assert age_state(2031.0, 50.0) == ("alert", "alert")  # held 31 s
    assert age_state(2040.0, 2035.0) == ("alert", "ok")  # a new version: fine again, not yet for long
    assert age_state(2050.0, 50.0) == ("alert", "alert")  # a flap back resets the clearing clock
    assert age_state(2060.0, 2055.0) == ("alert", "ok")
    assert age_state(2121.0, 2115.0) == ("ok", "ok")  # 61 s of ok readings


def test_render_and_plot(tmp_path):
    core, rng = _core()
    history = tmp_path / "history.jsonl"
    with history.open("w") as f:
        for t in range(6):
            for _ in range(100):
                core.add_training_example(_window(tuple(rng.integers(0, 8, 3)), "like" if t > 3 else "click"))
            core.add_model_update({"version": f"v{t}", "created": 100.0 * t, "metrics": {}})
            snap = core.snapshot(now=100.0 * t + 30, end_offsets={"interactions": 100 * t})
            f.write(json.dumps(snap) + "\n")
    view = render(snap)
    assert "PSI/noise floor" in view and view.startswith("status ALERT")
    assert "drift_action=alert" in view
    info = plot_history(history, tmp_path / "plot.png")
    assert info["snapshots"] == 6 and info["alert_snapshots"] >= 1
    assert (tmp_path / "plot.png").read_bytes()[:4] == b"\x89PNG"


def test_a_stalled_hop_becomes_unknown_and_a_restart_is_not_negative_time():
    core, _ = _core()
    worker = StreamMetrics()
    worker.event_to_feast.observe(0.05)
    for t in range(FRESHNESS_SCRAPES + 1):  # no more pushes to Feast: the window empties
        snap = core.snapshot(now=float(t), scrapes={"worker": parse_metrics(worker.render().decode())})
    assert snap["freshness"]["event_to_feast_s"] is None
    assert {a["name"]: a["state"] for a in snap["alerts"]}["event_to_feast_p99"] == "unknown"
    restarted = StreamMetrics()  # counters start again from zero
    restarted.event_to_feast.observe(3.0)
    snap = core.snapshot(now=99.0, scrapes={"worker": parse_metrics(restarted.render().decode())})
    assert snap["freshness"]["event_to_feast_s"]["count"] == 1
    assert snap["freshness"]["event_to_feast_s"]["p99"] > 2.0


def test_untrained_trainer_gauges_are_not_a_quality_collapse():
    core, _ = _core()
    scrapes = {"trainer": parse_metrics(TrainerMetrics().render().decode())}  # nothing measured yet: NaN
    for t in range(5):
        snap = core.snapshot(now=float(t), scrapes=scrapes)
    assert snap["quality"]["recall@10"] is None
    assert {a["name"]: a["state"] for a in snap["alerts"]}["prequential_drop"] == "unknown"


def test_sampling_noise_on_many_codes_does_not_alert():
    """256 codes, 1,000 recent events, no drift at all: the raw PSI is near the alert threshold, the excess
    over the noise floor is not."""
    vocab = Vocabulary(levels=3, codes_per_level=256, suffix_size=4, actions=("click", "skip"))
    settings = MonitorSettings(reference_events=3000, recent_events=1000)
    rng = np.random.default_rng(3)
    core = MonitorCore(settings, vocab, rng.integers(0, 256, size=(1000, 3)), [str(i) for i in range(1000)])
    for _ in range(4000):
        codes = tuple(int(c) for c in rng.integers(0, 256, 3)) + (0,)
        core.add_training_example(vocab.sid_to_tokens(codes) + [vocab.action_token("click")])
    snap = core.snapshot(now=1.0)
    level1 = snap["drift"]["signals"]["sid_level_1"]
    assert level1["psi"] > 0.2 and level1["noise"] > 0.2  # raw PSI would have alerted
    assert level1["excess"] < 0.1
    assert {a["name"]: a["state"] for a in snap["alerts"]}["drift_sid_level_1"] == "ok"


def test_event_to_served_from_announcements():
    # versions every 20 s, each holding events up to 1 s before it was published; swaps take 0.1 s
    models = [ModelAnnouncement(f"v{i}", 1000.0 + 20 * i, i, None, (1000.0 + 20 * i - 1.0) * 1000) for i in range(6)]
    lag = event_to_served(models, swap_s=0.1)
    assert lag["versions"] == 5
    assert lag["p50"] == pytest.approx(1.1 + 10.0, abs=0.2)  # uniform on [1.1, 21.1]
    assert lag["max"] == pytest.approx(21.1, abs=1e-6)
    assert event_to_served(models[:1]) is None  # one version: no window yet

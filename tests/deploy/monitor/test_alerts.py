"""Alert states against thresholds; missing readings are unknown, not healthy."""
from deploy.monitor.alerts import Rule, evaluate, rules_from, worst
from deploy.settings import MonitorSettings


def test_rule_states():
    rule = Rule("model_age", warn=300, alert=900, unit="s")
    assert [rule.judge(v) for v in (None, 10, 300, 899, 900)] == ["unknown", "ok", "warn", "warn", "alert"]


def test_lower_is_worse_rules():
    rule = Rule("recall", warn=0.05, alert=0.01, higher_is_worse=False)
    assert [rule.judge(v) for v in (0.2, 0.04, 0.005)] == ["ok", "warn", "alert"]


def test_worst_state_ignores_unknown_but_reports_it_when_alone():
    rules = rules_from(MonitorSettings())
    states = evaluate(rules, {"model_age": 1000.0, "drift_action": 0.15})
    by_name = {s.name: s.state for s in states}
    assert by_name["model_age"] == "alert" and by_name["drift_action"] == "warn"
    assert by_name["consumer_lag"] == "unknown"
    assert worst(states) == "alert"
    assert worst(evaluate(rules, {})) == "unknown"
    assert worst(evaluate(rules, {"model_age": 1.0})) == "ok"


def test_thresholds_come_from_settings(monkeypatch):
    monkeypatch.setenv("SIDSTREAM_MONITOR_MODEL_AGE_ALERT_S", "20")
    monkeypatch.setenv("SIDSTREAM_MONITOR_MODEL_AGE_WARN_S", "10")
    rules = {r.name: r for r in rules_from(MonitorSettings())}
    assert rules["model_age"].judge(25) == "alert"

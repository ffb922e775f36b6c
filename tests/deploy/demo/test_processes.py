"""The demo's supervisor: the restart policy (pure) and restarts of real child processes."""
import os
import signal
import sys
import time

from deploy.demo.processes import Child, RestartPolicy, Supervisor


def test_back_off_doubles_within_the_window_and_the_limit_gives_up():
    policy = RestartPolicy(max_restarts=3, window_s=100.0, first_delay_s=1.0, max_delay_s=3.0)
    assert policy.delay([], now=0.0) == 1.0
    assert policy.delay([10.0], now=20.0) == 2.0
    assert policy.delay([10.0, 20.0], now=30.0) == 3.0  # capped
    assert policy.delay([10.0, 20.0, 30.0], now=40.0) is None
    assert policy.delay([10.0, 20.0, 30.0], now=125.0) == 2.0  # older restarts fall out of the window


def wait_until(condition, timeout_s=10.0):
    deadline = time.monotonic() + timeout_s
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)
    return condition()


def test_a_killed_child_is_restarted_after_its_back_off_and_its_log_says_so(tmp_path):
    child = Child("sleeper", [sys.executable, "-c", "import time; time.sleep(60)"], dict(os.environ), tmp_path,
                  tmp_path)
    now = [0.0]
    lines = []
    supervisor = Supervisor([child], RestartPolicy(first_delay_s=2.0), lines.append, clock=lambda: now[0])
    try:
        first_pid = child.proc.pid
        assert supervisor.check() == [] and not child.restarts
        os.kill(first_pid, signal.SIGKILL)
        assert wait_until(lambda: not child.alive())
        assert supervisor.check() == [] and not child.restarts  # noticed; the back-off has not passed
        assert "killed by SIGKILL" in lines[-1] and "restarting in 2 s" in lines[-1]
        now[0] = 2.5
        supervisor.check()
        assert child.alive() and child.proc.pid != first_pid and child.restarts == [2.5]
        assert supervisor.summary() == "restarts: sleeper 1" and supervisor.recovery_s == {"sleeper": [2.5]}
        assert supervisor.report() == {"sleeper": {"restarts": 1, "restart_after_s": [2.5], "down": False}}
        assert "restarted by the demo's supervisor" in child.log_path.read_text()
    finally:
        child.stop(timeout_s=5.0)


def test_a_child_that_keeps_dying_is_given_up_at_the_limit(tmp_path):
    child = Child("crasher", [sys.executable, "-c", "raise SystemExit(3)"], dict(os.environ), tmp_path, tmp_path)
    now = [0.0]
    lines = []
    supervisor = Supervisor([child], RestartPolicy(max_restarts=2, first_delay_s=0.0), lines.append,
                            clock=lambda: now[0])
    given_up = []
    for step in range(20):
        assert wait_until(lambda: not child.alive())
        now[0] += 1.0
        given_up = supervisor.check()
        if given_up:
            break
    assert given_up == [child] and len(child.restarts) == 2
    assert any("exit code 3" in line for line in lines) and "giving up" in lines[-1]
    child.stop(timeout_s=5.0)

"""The demo's child processes: each with its own log file and process group, the wait until one answers, and
the supervisor that starts a dead one again (with a back-off and a limit), as a deployment's restart policy would."""
from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence


class Child:
    """A child process with its own log file and process group (so its own children stop with it)."""

    def __init__(self, name: str, argv: list[str], env: dict, log_dir: Path, cwd: Path):
        self.name, self.log_path = name, log_dir / f"{name}.log"
        self.argv, self.env, self.cwd = argv, env, cwd
        self.restarts: list[float] = []  # monotonic times of each restart
        self._start()

    def _start(self) -> None:
        self.log = open(self.log_path, "a")
        self.proc = subprocess.Popen(self.argv, env=self.env, cwd=self.cwd, stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def restart(self, now: float) -> None:
        """Start the same command again, after the old process group is gone (a dead leader may leave children
        holding its ports); the log file continues."""
        self.stop(timeout_s=5.0)
        with open(self.log_path, "a") as log:
            log.write(f"\n--- restarted by the demo's supervisor (restart {len(self.restarts) + 1}) ---\n")
        self.restarts.append(now)
        self._start()

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM to the whole group, SIGKILL after `timeout_s`; the group is signalled even when its leader
        already exited (Ray's and Faust's own children may still run)."""
        for sig, wait in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
        self.log.close()

    def tail(self, lines: int = 15) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def wait_http(url: str, timeout_s: float, child: Child) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not child.alive():
            return False
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return True
        except Exception:
            pass
        time.sleep(1.0)
    return False


@dataclass(frozen=True)
class RestartPolicy:
    """When a dead child is started again: after a back-off that doubles with each restart in the last
    `window_s` (from `first_delay_s` up to `max_delay_s`), and at most `max_restarts` times in `window_s`."""
    max_restarts: int = 5
    window_s: float = 300.0
    first_delay_s: float = 1.0
    max_delay_s: float = 30.0

    def delay(self, restarts: Sequence[float], now: float) -> float | None:
        """Seconds to wait before the next start of a child restarted at `restarts`; None: give up."""
        recent = sum(1 for t in restarts if now - t < self.window_s)
        if recent >= self.max_restarts:
            return None
        return min(self.max_delay_s, self.first_delay_s * 2 ** recent)


class Supervisor:
    """Watches children; a dead one is restarted by the policy, and one past its limit is reported."""

    def __init__(self, children: Sequence[Child], policy: RestartPolicy, log: Callable[[str], None],
                 clock: Callable[[], float] = time.monotonic):
        self.children, self.policy, self.log, self.clock = children, policy, log, clock
        self.down_since: dict[str, float] = {}
        self.recovery_s: dict[str, list[float]] = {}  # per child: seconds from noticed death to restart

    def check(self) -> list[Child]:
        """Restart what is due; returns the children given up on (dead past the policy's limit)."""
        now, given_up = self.clock(), []
        for child in self.children:
            if child.alive():
                self.down_since.pop(child.name, None)
                continue
            delay = self.policy.delay(child.restarts, now)
            if child.name not in self.down_since:
                self.down_since[child.name] = now
                code = child.proc.returncode
                self.log(f"{child.name} exited ({_exit_reason(code)}); "
                         + ("giving up: restart limit reached" if delay is None else f"restarting in {delay:g} s"))
            if delay is None:
                given_up.append(child)
            elif now - self.down_since[child.name] >= delay:
                child.restart(now)
                self.recovery_s.setdefault(child.name, []).append(round(now - self.down_since.pop(child.name), 2))
                self.log(f"{child.name} restarted (restart {len(child.restarts)})")
        return given_up

    def report(self) -> dict:
        """Per child: restarts, seconds from each noticed death to its restart, and whether it is down now (the
        monitor's snapshot carries this, so the live page shows a restart)."""
        return {c.name: {"restarts": len(c.restarts), "restart_after_s": self.recovery_s.get(c.name, []),
                         "down": not c.alive()} for c in self.children}

    def summary(self) -> str:
        """One line for the demo's header: restarts per child, empty when none."""
        counts = [f"{c.name} {len(c.restarts)}" for c in self.children if c.restarts]
        return f"restarts: {', '.join(counts)}" if counts else ""


def _exit_reason(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"

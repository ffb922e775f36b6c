"""The demo's child processes: each with its own log file and process group, and the wait until one answers."""
from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path


class Child:
    """A child process with its own log file and process group (so its own children stop with it)."""

    def __init__(self, name: str, argv: list[str], env: dict, log_dir: Path, cwd: Path):
        self.name, self.log_path = name, log_dir / f"{name}.log"
        self.log = open(self.log_path, "a")
        self.proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def alive(self) -> bool:
        return self.proc.poll() is None

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

"""Process bookkeeping of the local stack: the services it started (pid, port, log), whether a port or a pid
is in use, stopping a process group, and the one-line error a failed start reports."""
from __future__ import annotations

import os
import signal
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

Log = Callable[[str], None]


class StackError(Exception):
    """A one-line, user-facing reason why the stack could not be brought up."""


@dataclass
class Service:
    name: str
    pid: int
    port: int
    log: str
    address: str
    started_at: float = field(default_factory=time.time)


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped by its parent) counts as gone.
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ", 1)[1][:1] != "Z"
    except OSError:
        return True


def stop_pid(pid: int, timeout_s: float = 15.0) -> bool:
    """SIGTERM the process group, then SIGKILL it if it lingers. Returns False if it was not running."""
    if not pid_alive(pid):
        return False
    for sig, wait in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return True
        except PermissionError:
            os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not pid_alive(pid):
                return True
            time.sleep(0.1)
    return True


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def last_log_line(log_file: Path | None) -> str:
    if log_file is None or not Path(log_file).exists():
        return "(no log)"
    lines = [ln for ln in Path(log_file).read_text(errors="replace").splitlines() if ln.strip()]
    errors = [ln for ln in lines if "ERROR" in ln or "Exception" in ln]
    return (errors or lines or ["(empty log)"])[-1][:300]

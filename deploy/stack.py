"""Handlers of `sidstream up | down | status | smoke` (parsers: deploy/cli/stack.py)."""
from __future__ import annotations

import json
import time

from deploy.cli import CommandError
from deploy.localstack import LocalStack, StackError
from deploy.settings import StackSettings
from deploy.smoke import run_smoke


def cmd_up(args) -> int:
    settings = StackSettings()
    if settings.kafka_bootstrap_servers:
        print(f"SIDSTREAM_KAFKA_BOOTSTRAP_SERVERS is set: using {settings.kafka_bootstrap_servers}, starting nothing")
        return 0
    started = time.monotonic()
    try:
        services = LocalStack(settings).up(redis=args.redis)
    except StackError as exc:
        raise CommandError(str(exc)) from None
    print(f"stack ready in {time.monotonic() - started:.1f} s: "
          + ", ".join(f"{name} {svc.address}" for name, svc in services.items()))
    return 0


def cmd_down(args) -> int:
    stack = LocalStack()
    if not stack.services():
        print("nothing is running (no local stack recorded in "
              f"{stack.state_dir})")
        return 0
    stopped = stack.down(purge=args.purge)
    print(f"stopped: {', '.join(stopped) if stopped else 'nothing (recorded processes had already exited)'}")
    return 0


def cmd_status(args) -> int:
    report = LocalStack().status()
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    if not report:
        print("nothing is running")
        return 0
    for name, svc in report.items():
        state = "running" if svc["running"] else "NOT running"
        print(f"{name:6s} {state:12s} pid {svc['pid']:<8d} {svc['address']:28s} log {svc['log']}")
    return 0 if all(s["running"] for s in report.values()) else 1


def cmd_smoke(args) -> int:
    return run_smoke(online_store=args.online_store)

"""`sidstream up | down | status | smoke`: the local stack's command line."""
from __future__ import annotations

import json
import time


def register(commands, bench) -> None:
    up = commands.add_parser("up", help="start a local Kafka broker (KRaft, from Maven Central jars), optionally Redis")
    up.add_argument("--redis", action="store_true", help="also start redis-server for the Feast Redis online store")
    up.set_defaults(func=cmd_up)
    down = commands.add_parser("down", help="stop exactly what `sidstream up` started")
    down.add_argument("--purge", action="store_true", help="also delete the broker's data")
    down.set_defaults(func=cmd_down)
    status = commands.add_parser("status", help="show the local stack's processes")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=cmd_status)
    smoke = commands.add_parser("smoke", help="a round trip through Kafka and the Feast online store")
    smoke.add_argument("--online-store", choices=["sqlite", "redis"], default="sqlite")
    smoke.set_defaults(func=cmd_smoke)


def cmd_up(args) -> int:
    from deploy.cli import CommandError
    from deploy.localstack import LocalStack, StackError
    from deploy.settings import StackSettings

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
    from deploy.localstack import LocalStack

    stack = LocalStack()
    if not stack.services():
        print("nothing is running (no local stack recorded in "
              f"{stack.state_dir})")
        return 0
    stopped = stack.down(purge=args.purge)
    print(f"stopped: {', '.join(stopped) if stopped else 'nothing (recorded processes had already exited)'}")
    return 0


def cmd_status(args) -> int:
    from deploy.localstack import LocalStack

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
    from deploy.smoke import run_smoke

    return run_smoke(online_store=args.online_store)

"""`sidstream up | down | status | smoke`: the local stack (handlers: deploy/stack.py)."""
from __future__ import annotations

HANDLERS = "deploy.stack"


def register(commands, bench) -> None:
    up = commands.add_parser("up", help="start a local Kafka broker (KRaft, from Maven Central jars), optionally Redis")
    up.add_argument("--redis", action="store_true", help="also start redis-server for the Feast Redis online store")
    up.set_defaults(handler=f"{HANDLERS}:cmd_up")
    down = commands.add_parser("down", help="stop exactly what `sidstream up` started")
    down.add_argument("--purge", action="store_true", help="also delete the broker's data")
    down.set_defaults(handler=f"{HANDLERS}:cmd_down")
    status = commands.add_parser("status", help="show the local stack's processes")
    status.add_argument("--json", action="store_true")
    status.set_defaults(handler=f"{HANDLERS}:cmd_status")
    smoke = commands.add_parser("smoke", help="a round trip through Kafka and the Feast online store")
    smoke.add_argument("--online-store", choices=["sqlite", "redis"], default="sqlite")
    smoke.set_defaults(handler=f"{HANDLERS}:cmd_smoke")

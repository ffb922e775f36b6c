"""`sidstream train online` (also `train-online`), `sidstream model list|pin|unpin|rollback` and `sidstream bench
online` (handlers: deploy/online.py, deploy/bench/online.py)."""
from __future__ import annotations

import argparse
from pathlib import Path

HANDLERS = "deploy.online"


def _online_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--registry", type=Path, help="model registry folder (default: SIDSTREAM_REGISTRY_DIR)")
    p.add_argument("--catalogue", type=Path, help="catalogue folder (default: SIDSTREAM_CATALOGUE_DIR)")
    p.add_argument("--init", type=Path, help="model directory (e.g. a pretrain run's model/) published as the first "
                                             "version when the registry is empty")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="online setting, e.g. --set micro_batch=16 --set replay_ratio=1 --set publish_every_s=10")
    p.add_argument("--group-id", help="consumer group (default: SIDSTREAM_ONLINE_GROUP_ID)")
    p.add_argument("--idle-exit", type=float, help="stop (with a final checkpoint) after this many idle seconds")
    p.add_argument("--record-event-ids", action="store_true",
                   help="keep the (partition, offset, event id) of every trained example in the checkpoint (tests)")
    p.add_argument("--no-announce", action="store_true", help="publish versions without a model-updates message")
    p.add_argument("--no-catalogue-follow", action="store_true",
                   help="do not follow the catalogue topic (new items then stay unknown to prequential scoring)")
    p.set_defaults(handler=f"{HANDLERS}:cmd_train_online")


def register(commands, bench) -> None:
    train = commands.choices.get("train")
    if train is not None:  # attach under `sidstream train` when the trainer room registered first
        for action in train._actions:
            if isinstance(action, argparse._SubParsersAction):
                _online_arguments(action.add_parser("online", help="online post-trainer on the training topic"))
    _online_arguments(commands.add_parser("train-online", help="online post-trainer on the training topic"))

    model = commands.add_parser("model", help="the model registry: list, pin, unpin, rollback")
    model.add_argument("--registry", type=Path, help="registry folder (default: SIDSTREAM_REGISTRY_DIR)")
    sub = model.add_subparsers(dest="model_command", metavar="ACTION")
    model.set_defaults(handler=None, usage_of=model)
    ls = sub.add_parser("list", help="versions, oldest first, with lineage, metrics and pointers")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(handler=f"{HANDLERS}:cmd_model_list")
    for name, text in (("pin", "serve VERSION until unpinned"), ("rollback", "pin --to VERSION, or the parent "
                                                                             "of the version served now")):
        p = sub.add_parser(name, help=text)
        if name == "pin":
            p.add_argument("version")
        else:
            p.add_argument("--to", dest="version")
        p.add_argument("--no-announce", action="store_true", help="change the pointer only (no model-updates message)")
        p.set_defaults(handler=f"{HANDLERS}:cmd_model_pin")
    unpin = sub.add_parser("unpin", help="follow LATEST again")
    unpin.add_argument("--no-announce", action="store_true")
    unpin.set_defaults(handler=f"{HANDLERS}:cmd_model_pin")

    b = bench.add_parser("online", help="prequential continual vs frozen on a chronological Beauty replay")
    b.add_argument("--out", required=True, type=Path)
    b.add_argument("--dataset", type=Path, help="dataset folder (default: <data_dir>/amazon_beauty_2014)")
    b.add_argument("--quick", action="store_true", help="a few thousand events, tiny model: minutes")
    b.add_argument("--users", type=int, default=None,
                   help="replay a random sample of this many users (default: 1,500 with --quick, else all)")
    b.add_argument("--work-dir", type=Path, default=Path("var/bench/online"))
    b.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="online setting")
    b.add_argument("--threads", type=int, default=2)
    b.add_argument("--scenario", choices=("beauty", "shift"), default="beauty",
                   help="beauty: chronological Beauty replay; shift: synthetic world with a taste shift at a known "
                        "event, recovery curves of continual vs frozen")
    b.set_defaults(handler="deploy.bench.online:cmd_bench_online")

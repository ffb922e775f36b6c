"""`sidstream model list|pin|unpin|rollback` on a local registry (no Kafka: --no-announce)."""
import torch

from catalogue.vocab import Vocabulary
from deploy.cli import main
from trainer.model import ModelConfig, Transformer
from trainer.model_registry import ModelRegistry
from trainer.registry import WEIGHTS

VOCAB = Vocabulary(levels=2, codes_per_level=8, suffix_size=4, version="tinyvocab0000001")


def publish(reg, seed, parent=None):
    torch.manual_seed(seed)
    model = Transformer(ModelConfig(vocab_size=VOCAB.size, max_len=16, d_model=32, n_layers=2, n_heads=2))
    return reg.publish(model, VOCAB, step=seed, parent=parent,
                       metrics={"prequential": {"recall@10": 0.1 * seed, "ndcg@10": 0.05, "events": 10}})["version"]


def test_model_commands(tmp_path, capsys):
    reg = ModelRegistry(tmp_path)
    v1 = publish(reg, 1)
    v2 = publish(reg, 2, v1)
    root = ["--registry", str(tmp_path)]
    assert main(["model", *root, "list"]) == 0
    out = capsys.readouterr().out
    assert f"* {v2}" in out and v1 in out and "recall@10 0.2000" in out
    assert main(["model", *root, "rollback", "--no-announce"]) == 0
    assert reg.serving() == v1 and f"serving {v1} (pinned)" in capsys.readouterr().out
    assert main(["model", *root, "unpin", "--no-announce"]) == 0
    assert reg.serving() == v2 and reg.pinned() is None
    assert main(["model", *root, "pin", "v000009-nope", "--no-announce"]) == 1
    assert "not in the registry" in capsys.readouterr().err
    (reg.path(v1) / WEIGHTS).write_bytes(b"corrupt")
    assert main(["model", *root, "pin", v1, "--no-announce"]) == 1
    assert "sha256" in capsys.readouterr().err and reg.pinned() is None


def test_online_attaches_under_train_when_the_trainer_room_registers_first():
    import argparse

    import deploy.cli.online
    import deploy.cli.trainer
    import deploy.online
    from deploy.cli import load_handler

    parser = argparse.ArgumentParser(prog="sidstream")
    commands = parser.add_subparsers(dest="command")
    bench = commands.add_parser("bench").add_subparsers(dest="bench")
    deploy.cli.trainer.register(commands, bench)
    deploy.cli.online.register(commands, bench)
    args = parser.parse_args(["train", "online", "--idle-exit", "3", "--set", "micro_batch=8"])
    assert load_handler(args.handler) is deploy.online.cmd_train_online and args.idle_exit == 3.0
    assert load_handler(parser.parse_args(["train-online"]).handler) is deploy.online.cmd_train_online
    assert parser.parse_args(["bench", "online", "--out", "x.json", "--scenario", "shift"]).scenario == "shift"

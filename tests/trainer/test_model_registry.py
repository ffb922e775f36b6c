import json

import pytest
import torch

from catalogue.vocab import Vocabulary
from trainer.model import ModelConfig, Transformer
from trainer.model_registry import ModelRegistry, read_pointer, write_pointer
from trainer.pretrain import TrainConfig, make_optimizer
from trainer.registry import WEIGHTS, RegistryError, UpdateRefused, check_model_update, model_update_message

VOCAB = Vocabulary(levels=2, codes_per_level=8, suffix_size=4, version="tinyvocab0000001")


def tiny(seed=0):
    torch.manual_seed(seed)
    return Transformer(ModelConfig(vocab_size=VOCAB.size, max_len=32, d_model=32, n_layers=2, n_heads=2, dropout=0.0))


def test_publish_writes_ordered_versions_with_lineage_and_latest_pointer(tmp_path):
    reg = ModelRegistry(tmp_path)
    assert reg.versions() == [] and reg.latest() is None and reg.serving() is None
    a = reg.publish(tiny(0), VOCAB, step=10, offsets={"training:0": 5}, metrics={"recall@10": 0.2},
                    catalogue_version="cat1")
    b = reg.publish(tiny(1), VOCAB, step=20, parent=a["version"], offsets={"training:0": 9},
                    metrics={"recall@10": 0.3}, catalogue_version="cat1")
    assert reg.versions() == [a["version"], b["version"]]
    assert a["version"].startswith("v000001-") and b["version"].startswith("v000002-")
    assert reg.latest() == b["version"] == reg.serving()
    m = reg.manifest(b["version"])
    assert m["parent"] == a["version"] and m["step"] == 20 and m["offsets"] == {"training:0": 9}
    assert m["vocab_version"] == VOCAB.version and m["catalogue_version"] == "cat1"
    assert m["metrics"] == {"recall@10": 0.3} and m["sha256"].startswith(b["version"].split("-")[1])
    model, manifest = reg.load()
    for p, q in zip(model.parameters(), tiny(1).parameters()):
        assert torch.equal(p, q)
    assert not list((tmp_path / "versions").glob(".tmp-*"))


def test_pin_rollback_unpin(tmp_path):
    reg = ModelRegistry(tmp_path)
    v1 = reg.publish(tiny(0), VOCAB, step=1)["version"]
    v2 = reg.publish(tiny(1), VOCAB, step=2, parent=v1)["version"]
    v3 = reg.publish(tiny(2), VOCAB, step=3, parent=v2)["version"]
    assert reg.rollback() == v2 and reg.pinned() == v2 and reg.serving() == v2
    assert reg.rollback() == v1 and reg.serving() == v1
    with pytest.raises(RegistryError, match="oldest"):
        reg.rollback()
    reg.pin(v3)
    assert reg.serving() == v3
    reg.unpin()
    assert reg.pinned() is None and reg.serving() == v3
    rows = reg.list()
    assert [r["version"] for r in rows] == [v1, v2, v3] and rows[-1]["latest"] and rows[-1]["serving"]
    with pytest.raises(RegistryError, match="not in the registry"):
        reg.pin("v999999-nothere")


def test_corrupt_weights_refused_by_registry_and_by_serving(tmp_path):
    reg = ModelRegistry(tmp_path)
    v1 = reg.publish(tiny(0), VOCAB, step=1)["version"]
    message = model_update_message(reg.path(v1))
    assert check_model_update(message, VOCAB) == reg.path(v1).resolve()
    weights = reg.path(v1) / WEIGHTS
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(RegistryError, match="sha256"):
        reg.verify(v1)
    with pytest.raises(RegistryError, match="sha256"):
        reg.load(v1)
    with pytest.raises(RegistryError):
        reg.pin(v1)
    with pytest.raises(UpdateRefused, match="sha256"):
        check_model_update(message, VOCAB)


def test_corrupt_manifest_is_reported_not_fatal_in_list(tmp_path):
    reg = ModelRegistry(tmp_path)
    v1 = reg.publish(tiny(0), VOCAB, step=1)["version"]
    (reg.path(v1) / "manifest.json").write_text("{not json")
    rows = reg.list()
    assert rows[0]["version"] == v1 and "error" in rows[0]


def test_pointer_replace_is_atomic_and_leaves_no_temporaries(tmp_path):
    p = tmp_path / "LATEST"
    assert read_pointer(p) is None
    write_pointer(p, "v1")
    write_pointer(p, "v2")
    assert read_pointer(p) == "v2"
    assert sorted(x.name for x in tmp_path.iterdir()) == ["LATEST"]


def test_checkpoint_roundtrip_keeps_the_newest(tmp_path):
    reg = ModelRegistry(tmp_path)
    model = tiny(0)
    opt = make_optimizer(model, TrainConfig())
    model(torch.ones(1, 4, dtype=torch.long)).sum().backward()
    opt.step()
    for i in range(3):
        path = reg.save_checkpoint(model, VOCAB, opt, step=i, state={"offsets": {"training:0": i}},
                                   files={"replay.json": json.dumps([[1, 2]]).encode()})
    assert reg.checkpoint() == path
    assert len([p for p in (tmp_path / "checkpoints").iterdir()]) == 2
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["checkpoint_state"]["offsets"] == {"training:0": 2}
    assert json.loads((path / "replay.json").read_text()) == [[1, 2]]

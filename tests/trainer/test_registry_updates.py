"""The model-updates message and the checks a reader makes before loading it (trainer/registry.py)."""
import json

import pytest
import torch

from catalogue.vocab import Vocabulary
from streams.schemas import ModelUpdate
from trainer.model import ModelConfig, Transformer
from trainer.registry import (UpdateRefused, check_model_update, model_update_message, parse_model_update,
                              save_model)

VOCAB = Vocabulary(levels=2, codes_per_level=8, suffix_size=4, version="tinyvocab0000001")
OTHER_VOCAB = Vocabulary(levels=2, codes_per_level=8, suffix_size=4, version="othervocab000002")


def publish(directory, vocab=VOCAB, seed=0) -> dict:
    torch.manual_seed(seed)
    model = Transformer(ModelConfig(vocab_size=vocab.size, max_len=32, d_model=16, n_layers=1, n_heads=2,
                                    dropout=0.0))
    return save_model(directory, model, vocab, step=3, extra={"train_config": {"window_events": 8}})


def test_message_of_a_published_model_passes_the_checks(tmp_path):
    manifest = publish(tmp_path / "m1")
    message = model_update_message(tmp_path / "m1", name="sidstream")
    assert message["version"] == manifest["version"] and message["sha256"] == manifest["sha256"]
    assert message["name"] == "sidstream" and message["uri"] == str((tmp_path / "m1").resolve())
    parsed = parse_model_update(json.dumps(message).encode())
    assert parsed == message  # every field rides along, the manifest's own included
    assert check_model_update(parsed, VOCAB) == tmp_path / "m1"


def test_the_schema_reads_the_manifest_fields_and_keeps_the_rest(tmp_path):
    publish(tmp_path / "m1")
    message = model_update_message(tmp_path / "m1")
    update = ModelUpdate.model_validate(message)
    assert update.name == "sidstream" and update.step == 3 and update.vocab == VOCAB.to_json()
    assert update.model_settings == message["model_config"]  # pydantic's own name, read through an alias
    assert update.model_extra["train_config"] == {"window_events": 8}
    assert update.model_dump(by_alias=True, exclude_unset=True) == message


def test_corrupt_weights_are_refused(tmp_path):
    publish(tmp_path / "m1")
    message = model_update_message(tmp_path / "m1")
    weights = tmp_path / "m1" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(UpdateRefused, match="sha256"):
        check_model_update(message, VOCAB)


def test_message_that_disagrees_with_the_manifest_is_refused(tmp_path):
    publish(tmp_path / "m1")
    message = model_update_message(tmp_path / "m1")
    with pytest.raises(UpdateRefused, match="sha256"):
        check_model_update({**message, "sha256": "0" * 64}, VOCAB)
    with pytest.raises(UpdateRefused, match="version"):
        check_model_update({**message, "version": "deadbeef"}, VOCAB)
    with pytest.raises(UpdateRefused, match="not found"):
        check_model_update({**message, "uri": str(tmp_path / "nowhere")}, VOCAB)


def test_other_codebook_version_is_refused(tmp_path):
    publish(tmp_path / "m1", vocab=OTHER_VOCAB)
    with pytest.raises(UpdateRefused, match="codebook version"):
        check_model_update(model_update_message(tmp_path / "m1"), VOCAB)


@pytest.mark.parametrize("raw, reason", [
    (b"{not json", "not JSON"), (b"[1, 2]", "JSON object"), (b'{"uri": "x"}', "lacks"),
    (b'{"uri": "x", "version": "", "sha256": "s"}', r"lacks \['version'\]"),
    (b'{"uri": "x", "version": 7, "sha256": "s"}', r"lacks \['version'\]"),
    (b'{"uri": "x", "version": "v", "sha256": "s", "step": "many"}', "step"),
    (b'{"uri": "x", "version": "v", "sha256": "s", "model_config": [1]}', "model_config"),
])
def test_malformed_model_updates_are_refused(raw, reason):
    with pytest.raises(UpdateRefused, match=reason):
        parse_model_update(raw)

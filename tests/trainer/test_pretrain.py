import json

import numpy as np
import pytest
import torch

from catalogue.trie import SidTrie
from catalogue.vocab import Vocabulary
from trainer import registry
from trainer.data import Tokenizer, as_events, leave_one_out
from trainer.pretrain import TrainConfig, pretrain

VOCAB = Vocabulary(levels=2, codes_per_level=8, suffix_size=2, actions=("click", "purchase"))


def toy_world(n_items=40, n_users=200, seed=0):
    """Each user shops in one of 5 clusters (the SID's first code); easy to learn, chance is low."""
    rng = np.random.default_rng(seed)
    trie = SidTrie(VOCAB)
    for k in range(n_items):
        trie.insert(str(k), (k % 5, (k // 5) % 8, 0))
    seqs = {}
    for u in range(n_users):
        cluster, length = int(rng.integers(5)), int(rng.integers(5, 8))
        members = [k for k in range(n_items) if k % 5 == cluster]
        seqs[str(u)] = [str(k) for k in rng.choice(members, size=length, replace=False)]
    split = leave_one_out({u: as_events(s) for u, s in seqs.items()})
    tok = Tokenizer(VOCAB, lambda i: VOCAB.sid_to_tokens(trie.codes_of(i)))
    return split, tok, trie


def small_config(**kw):
    base = dict(d_model=32, n_layers=1, n_heads=2, dropout=0.0, window_events=6, batch_size=16, lr=5e-3,
                warmup_steps=5, max_epochs=3, val_users=0, eval_beam=10, patience=10, threads=1)
    base.update(kw)
    return TrainConfig(**base)


def test_training_settings_are_checked():
    with pytest.raises(ValueError, match="unknown training settings"):
        TrainConfig.from_overrides(nope=1)
    for key, bad in [("d_model", "abc"), ("window_events", 2.5), ("lr", True), ("event_context", 1),
                     ("softmax", 3)]:
        with pytest.raises(ValueError, match=f"training setting {key} must be"):
            TrainConfig.from_overrides(**{key: bad})
    assert TrainConfig.from_overrides(time_budget_s=900, lr=1, softmax="full").time_budget_s == 900  # int for float


def test_pretrain_learns_checkpoints_and_resumes(tmp_path):
    split, tok, trie = toy_world()
    logs = []
    result = pretrain(split, tok, trie, small_config(max_epochs=6), tmp_path, progress=False, log=logs.append)
    assert result.epochs == 6
    assert result.best_metrics["recall@10"] > 0.6  # chance is 10/40, a perfect cluster model ~1
    manifest = registry.read_manifest(tmp_path / "model")
    model, _ = registry.load_model(tmp_path / "model")
    assert registry.load_vocab(manifest) == VOCAB
    for name, p in result.model.state_dict().items():
        assert torch.equal(p, model.state_dict()[name])
    lines = (tmp_path / "train_log.jsonl").read_text().splitlines()
    assert len(lines) == 6 and "val" in json.loads(lines[-1])
    # resume: a longer run continues from epoch 6 instead of starting over
    logs.clear()
    again = pretrain(split, tok, trie, small_config(max_epochs=7), tmp_path, progress=False, log=logs.append)
    assert any("resumed" in line and "epoch 6" in line for line in logs)
    assert again.epochs == 7
    assert len((tmp_path / "train_log.jsonl").read_text().splitlines()) == 7


def test_resume_is_exact(tmp_path):
    split, tok, trie = toy_world(seed=1)
    straight = pretrain(split, tok, trie, small_config(max_epochs=2, patience=99), tmp_path / "a", progress=False,
                        log=lambda s: None)
    pretrain(split, tok, trie, small_config(max_epochs=2, patience=99), tmp_path / "b", progress=False,
             log=lambda s: None, stop_after_epoch=1)
    resumed = pretrain(split, tok, trie, small_config(max_epochs=2, patience=99), tmp_path / "b", progress=False, log=lambda s: None)
    assert straight.history[-1]["loss"] == pytest.approx(resumed.history[-1]["loss"], rel=1e-5)


def test_corrupt_weights_are_refused(tmp_path):
    split, tok, trie = toy_world()
    pretrain(split, tok, trie, small_config(max_epochs=1), tmp_path, progress=False, log=lambda s: None)
    weights = tmp_path / "model" / registry.WEIGHTS
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(registry.RegistryError, match="sha256"):
        registry.load_model(tmp_path / "model")


def test_resume_with_another_shape_is_refused(tmp_path):
    split, tok, trie = toy_world()
    pretrain(split, tok, trie, small_config(max_epochs=1), tmp_path, progress=False, log=lambda s: None)
    with pytest.raises(ValueError, match="another shape"):
        pretrain(split, tok, trie, small_config(max_epochs=2, d_model=16), tmp_path, progress=False,
                 log=lambda s: None)

"""A tiny serving world for unit tests: a small vocabulary and catalogue, tiny models saved in the registry."""
from pathlib import Path

import numpy as np
import torch

from catalogue.trie import SidTrie
from catalogue.vocab import Vocabulary
from features.sequences import UserSequence
from trainer.model import ModelConfig, Transformer
from trainer.registry import save_model

VOCAB = Vocabulary(levels=2, codes_per_level=8, suffix_size=4, actions=("click", "skip", "like", "downvote", "purchase"),
                   version="tinyvocab0000001")
OTHER_VOCAB = Vocabulary(levels=2, codes_per_level=8, suffix_size=4,
                         actions=("click", "skip", "like", "downvote", "purchase"), version="othervocab000002")
WINDOW = 8


def make_trie(n_items: int = 40, seed: int = 0, vocab: Vocabulary = VOCAB) -> SidTrie:
    rng = np.random.default_rng(seed)
    sids = [(a, b, c) for a in range(8) for b in range(8) for c in range(4)]
    trie = SidTrie(vocab)
    for i, j in enumerate(rng.choice(len(sids), size=n_items, replace=False)):
        trie.insert(f"i{i}", sids[j])
    return trie


def make_model(seed: int = 0, vocab: Vocabulary = VOCAB) -> Transformer:
    torch.manual_seed(seed)
    cfg = ModelConfig(vocab_size=vocab.size, max_len=1 + (WINDOW + 1) * (vocab.sid_length + 1), d_model=32,
                      n_layers=2, n_heads=2, dropout=0.0)
    model = Transformer(cfg).eval()
    with torch.no_grad():
        model.tok_emb.weight.mul_(10)
    return model


def make_dense_model(trie: SidTrie, seed: int = 0, vocab: Vocabulary = VOCAB) -> Transformer:
    """A model with the dense head, one residual row per item of `trie` (random, so vectors differ)."""
    torch.manual_seed(seed)
    items = trie.item_ids()
    cfg = ModelConfig(vocab_size=vocab.size, max_len=1 + (WINDOW + 1) * (vocab.sid_length + 1), d_model=32,
                      n_layers=2, n_heads=2, dropout=0.0, dense_items=len(items), sid_length=vocab.sid_length)
    model = Transformer(cfg).eval()
    with torch.no_grad():
        model.tok_emb.weight.mul_(10)
        model.item_sid_tokens.copy_(torch.tensor([vocab.sid_to_tokens(trie.codes_of(i)) for i in items]))
        model.item_residual.weight.normal_()
    return model


def publish(directory: Path, seed: int = 0, vocab: Vocabulary = VOCAB, step: int = 0, dense_trie=None,
            extra: dict | None = None) -> dict:
    """A model version in the registry: its manifest (what `model-updates` carries, minus name/uri). With
    `dense_trie`, a two-channel model over that catalogue."""
    model = make_model(seed, vocab) if dense_trie is None else make_dense_model(dense_trie, seed, vocab)
    return save_model(directory, model, vocab, step=step,
                      extra={"train_config": {"window_events": WINDOW}, **(extra or {})})


def tokens_of(trie: SidTrie, items, action: str = "purchase", vocab: Vocabulary = VOCAB) -> list[int]:
    out = []
    for item in items:
        out += vocab.sid_to_tokens(trie.codes_of(item)) + [vocab.action_token(action)]
    return out


class DictSequences:
    """The sequence reader a service needs, over a dict (the Feast facade in production)."""

    def __init__(self, rows: dict[str, UserSequence] | None = None):
        self.rows = dict(rows or {})
        self.reads = 0

    def read(self, user_ids):
        self.reads += 1
        return {u: self.rows.get(u) for u in user_ids}

"""Test oracle for the generation engine: item scores without search or cache."""
from __future__ import annotations

from typing import Sequence

import torch


def exhaustive_scores(model, vocab, trie, token_history: Sequence[int], item_ids: Sequence[str]) -> dict[str, float]:
    """Reference: log P(item's SID | history) by scoring every item's full SID with one plain forward pass
    each (no search, no cache), each code normalised over its level's tokens as the engine does."""
    with torch.no_grad():
        out = {}
        n = len(token_history)
        for item in item_ids:
            sid = vocab.sid_to_tokens(trie.codes_of(item))
            logits = model(torch.tensor([list(token_history) + sid]))[0].float()
            total = 0.0
            for level, token in enumerate(sid):
                span = vocab.level_range(level)
                logp = torch.log_softmax(logits[n - 1 + level, span.start : span.stop], dim=-1)
                total += float(logp[token - span.start])
            out[item] = total
        return out

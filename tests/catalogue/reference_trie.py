"""The plain dict-of-dicts trie the array trie (catalogue/trie.py) is tested against: a test oracle, not
production code."""
from __future__ import annotations

from typing import Sequence

import torch

from catalogue.trie import SidCollisionError
from catalogue.vocab import Vocabulary


class ReferenceTrie:
    """Plain dict-of-dicts trie with the same semantics; the parity oracle for SidTrie."""

    def __init__(self, vocab: Vocabulary):
        self.vocab = vocab
        self.root: dict = {}
        self.codes: dict[str, tuple[int, ...]] = {}

    def insert(self, item_id: str, codes: Sequence[int]) -> None:
        codes = tuple(int(c) for c in codes)
        holder = self.item_at(codes)
        if holder is not None and holder != item_id:
            raise SidCollisionError(f"SID {codes} already names {holder!r}")
        if item_id in self.codes:
            self.remove(item_id)
        node = self.root
        for code in codes[:-1]:
            node = node.setdefault(code, {})
        node[codes[-1]] = item_id
        self.codes[item_id] = codes

    def remove(self, item_id: str) -> None:
        codes = self.codes.pop(item_id)
        path = [self.root]
        for code in codes[:-1]:
            path.append(path[-1][code])
        del path[-1][codes[-1]]
        for depth in range(len(codes) - 1, 0, -1):
            if not path[depth]:
                del path[depth - 1][codes[depth - 1]]

    def item_at(self, codes: Sequence[int]) -> str | None:
        node = self.root
        for code in codes:
            if not isinstance(node, dict) or code not in node:
                return None
            node = node[code]
        return node if isinstance(node, str) else None

    def items_with_prefix(self, prefix: Sequence[int]) -> list[str]:
        node = self.root
        for code in prefix:
            if not isinstance(node, dict) or code not in node:
                return []
            node = node[code]
        out: list[str] = []

        def walk(n):
            if isinstance(n, str):
                out.append(n)
                return
            for code in sorted(n):
                walk(n[code])

        walk(node)
        return out

    def next_token_mask(self, prefix_tokens: torch.Tensor) -> torch.Tensor:
        vocab = self.vocab
        tokens = torch.as_tensor(prefix_tokens).tolist()
        mask = torch.zeros((len(tokens), vocab.size), dtype=torch.bool)
        for b, row in enumerate(tokens):
            node: dict | str | None = self.root
            for level, token in enumerate(row):
                code = token - vocab.level_offset(level)
                if not isinstance(node, dict) or code not in node:
                    node = None
                    break
                node = node[code]
            if isinstance(node, dict):
                level = len(row)
                for code in node:
                    mask[b, vocab.level_offset(level) + code] = True
        return mask

"""The live SID trie: which items exist, and which next token continues a real item's SID.

Stored as arrays, not Python node objects, so a million items fit in memory:
- a node at depth d is a SID prefix of d codes, keyed by one int64 (mixed radix over the level sizes);
- per depth, an open-addressing hash table (numpy) maps prefix keys to rows; each row carries the item
  count below it and a bitset of which child codes are live;
- full SIDs (leaves) map to an item slot through one more hash table; item slots hold codes and ids.
Insert and remove touch one row per depth (O(L)). The beam-search mask looks up B prefix keys in one
vectorised probe sequence and unpacks their child bitsets, with no Python loop over beams or children.
Keys are never deleted from the hash tables (a removed prefix keeps its row with count 0 and is reused
when it comes back), which keeps probing simple; memory therefore tracks prefixes ever seen.

`apply_catalogue_change` is the one rule by which a catalogue entry (item -> SID, or a removal) changes a trie;
the stream worker, the online trainer and the serving replicas all follow the catalogue through it.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Literal, Protocol, Sequence

import numpy as np
import torch

from catalogue.vocab import Vocabulary

_EMPTY = np.int64(-1)
_GOLDEN = 0x9E3779B97F4A7C15
_MASK64 = (1 << 64) - 1


class TrieError(ValueError):
    """A SID or item the trie cannot accept or does not hold."""


class UnknownItemError(TrieError, KeyError):
    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


class SidCollisionError(TrieError):
    """Two different items would share one full SID (the catalogue must give them different suffixes)."""


class IntHashTable:
    """int64 key -> int64 value, open addressing with linear probing, vectorised lookup.

    Keys are non-negative; deletion is not supported (callers store a sentinel value instead).
    """

    def __init__(self, capacity: int = 1024):
        capacity = 1 << max(4, int(capacity - 1).bit_length())
        self._alloc(capacity)
        self.count = 0

    def _alloc(self, capacity: int) -> None:
        self.capacity = capacity
        self.shift = 64 - (capacity.bit_length() - 1)
        self.keys = np.full(capacity, _EMPTY, dtype=np.int64)
        self.values = np.full(capacity, -1, dtype=np.int64)

    def _slots(self, keys: np.ndarray) -> np.ndarray:
        return ((keys.astype(np.uint64) * np.uint64(_GOLDEN)) >> np.uint64(self.shift)).astype(np.int64)

    def get(self, key: int, default: int = -1) -> int:
        keys = self.keys
        mask = self.capacity - 1
        slot = ((key * _GOLDEN) & _MASK64) >> self.shift
        while True:
            k = keys.item(slot)  # a Python int: scalar compares stay out of numpy
            if k == key:
                return self.values.item(slot)
            if k == -1:
                return default
            slot = (slot + 1) & mask

    def set(self, key: int, value: int) -> None:
        if (self.count + 1) * 2 > self.capacity:
            self._grow(self.capacity * 2)
        keys = self.keys
        mask = self.capacity - 1
        slot = ((key * _GOLDEN) & _MASK64) >> self.shift
        while True:
            k = keys.item(slot)
            if k == key:
                self.values[slot] = value
                return
            if k == -1:
                keys[slot] = key
                self.values[slot] = value
                self.count += 1
                return
            slot = (slot + 1) & mask

    def lookup(self, keys: np.ndarray) -> np.ndarray:
        """Vectorised get: one probe step per iteration for all keys at once (-1 where absent)."""
        keys = np.asarray(keys, dtype=np.int64)
        out = np.full(keys.shape, -1, dtype=np.int64)
        if keys.size == 0:
            return out
        slots = self._slots(keys)
        pending = np.arange(keys.size)
        mask = self.capacity - 1
        while pending.size:
            found = self.keys[slots]
            hit = found == keys[pending]
            out[pending[hit]] = self.values[slots[hit]]
            go_on = ~hit & (found != _EMPTY)
            pending = pending[go_on]
            slots = (slots[go_on] + 1) & mask
        return out

    def bulk_set(self, keys: np.ndarray, values: np.ndarray) -> None:
        """Vectorised set of distinct keys (new or existing)."""
        keys = np.asarray(keys, dtype=np.int64)
        values = np.asarray(values, dtype=np.int64)
        if keys.size != np.unique(keys).size:
            raise ValueError("bulk_set needs distinct keys")
        # keys already present (rare: bulk loads go into fresh tables) are overwritten one by one
        present = np.flatnonzero(self.lookup(keys) != -1) if self.count else np.empty(0, dtype=np.int64)
        new = np.setdiff1d(np.arange(keys.size), present, assume_unique=True)
        for i in present:
            self.set(int(keys[i]), int(values[i]))
        need = self.count + new.size
        if need * 2 > self.capacity:
            capacity = self.capacity
            while need * 2 > capacity:
                capacity *= 2
            self._grow(capacity)
        self._place(keys[new], values[new])

    def _place(self, keys: np.ndarray, values: np.ndarray) -> None:
        mask = self.capacity - 1
        slots = self._slots(keys)
        idx = np.arange(keys.size)
        while idx.size:
            free = self.keys[slots] == _EMPTY
            # among keys that want the same free slot, the first one wins; the rest probe on
            cand = idx[free]
            cand_slots = slots[free]
            _, first = np.unique(cand_slots, return_index=True)
            winners = cand[first]
            win_slots = cand_slots[first]
            self.keys[win_slots] = keys[winners]
            self.values[win_slots] = values[winners]
            self.count += winners.size
            placed = np.zeros(keys.size, dtype=bool)
            placed[winners] = True
            keep = ~placed[idx]
            idx = idx[keep]
            slots = (slots[keep] + 1) & mask

    def _grow(self, capacity: int) -> None:
        live = self.keys != _EMPTY
        keys, values = self.keys[live], self.values[live]
        self._alloc(capacity)
        self.count = 0
        self._place(keys, values)

    def copy(self) -> "IntHashTable":
        other = IntHashTable.__new__(IntHashTable)
        other.capacity, other.shift, other.count = self.capacity, self.shift, self.count
        other.keys, other.values = self.keys.copy(), self.values.copy()
        return other

    @property
    def nbytes(self) -> int:
        return self.keys.nbytes + self.values.nbytes


class _DepthRows:
    """Rows of one depth: item count below each prefix and a bitset of its live child codes."""

    def __init__(self, child_size: int, capacity: int = 64):
        self.words = (child_size + 63) // 64
        self.counts = np.zeros(capacity, dtype=np.int32)
        self.bits = np.zeros((capacity, self.words), dtype=np.uint64)
        self.used = 0

    def add_rows(self, n: int) -> int:
        first = self.used
        if first + n > self.counts.size:
            capacity = max(self.counts.size * 2, first + n)
            self.counts = np.concatenate([self.counts, np.zeros(capacity - self.counts.size, dtype=np.int32)])
            self.bits = np.concatenate([self.bits, np.zeros((capacity - self.bits.shape[0], self.words), dtype=np.uint64)])
        self.used += n
        return first

    def copy(self) -> "_DepthRows":
        other = _DepthRows.__new__(_DepthRows)
        other.words, other.used = self.words, self.used
        other.counts, other.bits = self.counts.copy(), self.bits.copy()
        return other

    @property
    def nbytes(self) -> int:
        return self.counts.nbytes + self.bits.nbytes


class SidTrie:
    """Live prefix trie over full SIDs (L+1 codes), exactly one item per full SID."""

    def __init__(self, vocab: Vocabulary, capacity: int = 1024):
        self.vocab = vocab
        self.sizes = np.array(vocab.level_sizes, dtype=np.int64)  # children per depth
        self.offsets = np.array(vocab.level_offsets, dtype=np.int64)
        self._size_list = [int(x) for x in self.sizes]
        self.depth = vocab.sid_length
        # a prefix of d codes is keyed by mixed radix over the level sizes (see _prefix_keys)
        self._tables = [IntHashTable(max(16, capacity // 4 if d > 1 else 16)) for d in range(self.depth + 1)]
        self._rows = [_DepthRows(int(self.sizes[d])) for d in range(self.depth)]
        code_dtype = np.int16 if self.sizes.max() <= np.iinfo(np.int16).max else np.int32
        self._item_codes = np.zeros((max(capacity, 16), self.depth), dtype=code_dtype)
        self._item_ids: list[str | None] = []
        self._slot_of: dict[str, int] = {}
        self._free_slots: list[int] = []
        self.version = 0  # bumps on every mutation
        # root row
        self._rows[0].add_rows(1)
        self._tables[0].set(0, 0)

    # ----- helpers
    def _check_codes(self, codes: Sequence[int], full: bool = True) -> tuple[int, ...]:
        try:
            codes = tuple(int(c) for c in codes)
        except (TypeError, ValueError):
            raise TrieError(f"SID codes must be integers, got {codes!r}") from None
        if full and len(codes) != self.depth:
            raise TrieError(f"a SID has {self.depth} codes, got {len(codes)}: {codes}")
        if len(codes) > self.depth:
            raise TrieError(f"a SID prefix has at most {self.depth} codes, got {len(codes)}: {codes}")
        sizes = self._size_list
        for level, code in enumerate(codes):
            if not 0 <= code < sizes[level]:
                raise TrieError(f"code {code} out of range 0..{self.sizes[level] - 1} at level {level} in SID {codes}")
        return codes

    def _prefix_keys(self, codes: tuple[int, ...]) -> list[int]:
        keys = [0]
        key = 0
        for size, code in zip(self._size_list, codes):
            key = key * size + code
            keys.append(key)
        return keys

    # ----- queries
    def __len__(self) -> int:
        return len(self._slot_of)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._slot_of

    def __iter__(self):
        return iter(self._slot_of)

    def item_ids(self) -> list[str]:
        return list(self._slot_of)

    def codes_of(self, item_id: str) -> tuple[int, ...]:
        slot = self._slot_of.get(item_id)
        if slot is None:
            raise UnknownItemError(f"item {item_id!r} is not in the trie")
        return tuple(int(c) for c in self._item_codes[slot])

    def item_at(self, codes: Sequence[int]) -> str | None:
        try:
            codes = self._check_codes(codes)
        except TrieError:
            return None
        slot = self._tables[self.depth].get(self._prefix_keys(codes)[-1])
        return None if slot < 0 else self._item_ids[slot]

    def items_at(self, codes) -> list[str | None]:
        """Vectorised item_at for many full SIDs ([N, L+1] list, array or tensor); None where no item."""
        arr = codes.cpu().numpy() if isinstance(codes, torch.Tensor) else np.asarray(codes, dtype=np.int64)
        arr = arr.astype(np.int64, copy=False).reshape(-1, self.depth) if arr.size else np.zeros((0, self.depth),
                                                                                                  np.int64)
        valid = ((arr >= 0) & (arr < self.sizes[None, :])).all(axis=1)
        keys = np.zeros(arr.shape[0], dtype=np.int64)
        for d in range(self.depth):
            keys = keys * self.sizes[d] + np.where(valid, arr[:, d], 0)
        slots = self._tables[self.depth].lookup(keys)
        slots[~valid] = -1
        ids = self._item_ids
        return [None if slot < 0 else ids[slot] for slot in slots.tolist()]

    def count_with_prefix(self, codes_prefix: Sequence[int]) -> int:
        try:
            codes = self._check_codes(codes_prefix, full=False)
        except TrieError:
            return 0
        d = len(codes)
        key = self._prefix_keys(codes)[-1]
        if d == self.depth:
            return int(self._tables[d].get(key) >= 0)
        row = self._tables[d].get(key)
        return 0 if row < 0 else int(self._rows[d].counts[row])

    def counts_with_prefixes(self, prefixes) -> np.ndarray:
        """Vectorised count_with_prefix for many prefixes of one length d < L+1 ([N, d] array): items under each."""
        arr = np.asarray(prefixes, dtype=np.int64)
        d = arr.shape[1] if arr.ndim == 2 else 0
        if arr.size == 0 or d == 0:
            return np.full(arr.shape[0] if arr.ndim == 2 else 0, len(self), dtype=np.int64)
        if d >= self.depth:
            raise TrieError(f"counts_with_prefixes takes prefixes shorter than a SID ({self.depth} codes), got {d}")
        valid = ((arr >= 0) & (arr < self.sizes[None, :d])).all(axis=1)
        keys = np.zeros(arr.shape[0], dtype=np.int64)
        for level in range(d):
            keys = keys * self.sizes[level] + np.where(valid, arr[:, level], 0)
        rows = self._tables[d].lookup(keys)
        counts = np.asarray(self._rows[d].counts)[np.clip(rows, 0, None)].astype(np.int64)
        return np.where(valid & (rows >= 0), counts, 0)

    def children(self, codes_prefix: Sequence[int]) -> list[int]:
        """Live next codes after a prefix (empty for an unknown prefix or a full SID)."""
        codes = self._check_codes(codes_prefix, full=False)
        d = len(codes)
        if d == self.depth:
            return []
        row = self._tables[d].get(self._prefix_keys(codes)[-1])
        if row < 0:
            return []
        bits = np.unpackbits(self._rows[d].bits[row].view(np.uint8), bitorder="little")
        return np.flatnonzero(bits[: self.sizes[d]]).tolist()

    def items_with_prefix(self, codes_prefix: Sequence[int]) -> list[str]:
        """Items whose SID starts with the prefix, in SID order (empty list for an unknown/invalid prefix)."""
        try:
            codes = self._check_codes(codes_prefix, full=False)
        except TrieError:
            return []
        count = self.count_with_prefix(codes)
        if count == 0:
            return []
        if count > 256:  # a big subtree: one vectorised scan over item slots beats walking it
            n = len(self._item_ids)
            live = np.array([i is not None for i in self._item_ids], dtype=bool)
            match = live & (self._item_codes[:n, : len(codes)] == np.array(codes)).all(axis=1)
            slots = np.flatnonzero(match)
            keys = np.zeros(slots.size, dtype=np.int64)
            for level in range(self.depth):
                keys = keys * self.sizes[level] + self._item_codes[slots, level]
            return [self._item_ids[i] for i in slots[np.argsort(keys)]]
        out: list[str] = []
        stack = [codes]
        while stack:
            prefix = stack.pop()
            if len(prefix) == self.depth:
                item = self.item_at(prefix)
                if item is not None:
                    out.append(item)
                continue
            stack.extend(prefix + (c,) for c in reversed(self.children(prefix)))
        return out

    def free_suffix(self, codes_prefix: Sequence[int]) -> int | None:
        """Smallest unused suffix code under a full L-code prefix, or None when suffix space is full."""
        codes = self._check_codes(codes_prefix, full=False)
        if len(codes) != self.depth - 1:
            raise TrieError(f"free_suffix needs a {self.depth - 1}-code prefix, got {codes}")
        used = set(self.children(codes))
        for s in range(int(self.sizes[-1])):
            if s not in used:
                return s
        return None

    # ----- mutation
    def insert(self, item_id: str, codes: Sequence[int]) -> None:
        """Add an item, or move it when it is already present with another SID. O(L)."""
        if not isinstance(item_id, str) or not item_id:
            raise TrieError(f"item id must be a non-empty string, got {item_id!r}")
        codes = self._check_codes(codes)
        keys = self._prefix_keys(codes)
        leaf_table = self._tables[self.depth]
        holder = leaf_table.get(keys[-1])
        old_slot = self._slot_of.get(item_id)
        if holder >= 0:
            if holder == old_slot:
                return  # same item, same SID: nothing to do
            raise SidCollisionError(
                f"SID {codes} already names item {self._item_ids[holder]!r}; cannot also give it to {item_id!r}")
        if old_slot is not None:
            self.remove(item_id)
        slot = self._free_slots.pop() if self._free_slots else self._new_slot()
        self._item_codes[slot] = codes
        self._item_ids[slot] = item_id
        self._slot_of[item_id] = slot
        leaf_table.set(keys[-1], slot)
        for d in range(self.depth):
            rows = self._rows[d]
            table = self._tables[d]
            row = table.get(keys[d])
            if row < 0:
                row = rows.add_rows(1)
                table.set(keys[d], row)
            rows.counts[row] += 1
            code = codes[d]
            word = rows.bits.item(row, code >> 6) | (1 << (code & 63))
            rows.bits[row, code >> 6] = word
        self.version += 1

    def _new_slot(self) -> int:
        slot = len(self._item_ids)
        if slot >= self._item_codes.shape[0]:
            grown = np.zeros((self._item_codes.shape[0] * 2, self.depth), dtype=self._item_codes.dtype)
            grown[:slot] = self._item_codes
            self._item_codes = grown
        self._item_ids.append(None)
        return slot

    def remove(self, item_id: str) -> None:
        slot = self._slot_of.pop(item_id, None)
        if slot is None:
            raise UnknownItemError(f"item {item_id!r} is not in the trie")
        codes = tuple(int(c) for c in self._item_codes[slot])
        keys = self._prefix_keys(codes)
        self._tables[self.depth].set(keys[-1], -1)
        # walk up: a child bit is cleared once the child's subtree is empty
        child_empty = True
        for d in range(self.depth - 1, -1, -1):
            rows = self._rows[d]
            row = self._tables[d].get(keys[d])
            rows.counts[row] -= 1
            if child_empty:
                code = codes[d]
                rows.bits[row, code >> 6] &= ~np.uint64(1 << (code & 63))
            child_empty = rows.counts[row] == 0
        self._item_ids[slot] = None
        self._free_slots.append(slot)
        self.version += 1

    @classmethod
    def from_codes(cls, vocab: Vocabulary, item_ids: Sequence[str], codes: np.ndarray) -> "SidTrie":
        """Bulk build (vectorised), equivalent to inserting every item in turn."""
        codes = np.asarray(codes, dtype=np.int64)
        n = len(item_ids)
        trie = cls(vocab, capacity=max(16, n))
        if n == 0:
            return trie
        if codes.shape != (n, trie.depth):
            raise TrieError(f"codes must have shape ({n}, {trie.depth}), got {tuple(codes.shape)}")
        if codes.min() < 0 or (codes >= trie.sizes[None, :]).any():
            bad = np.argwhere((codes < 0) | (codes >= trie.sizes[None, :]))[0]
            raise TrieError(f"code {codes[bad[0], bad[1]]} out of range at level {bad[1]} for item {item_ids[bad[0]]!r}")
        ids = list(item_ids)
        if len(set(ids)) != n:
            raise TrieError("from_codes got repeated item ids; insert them one by one to get update semantics")
        keys = np.zeros((n, trie.depth + 1), dtype=np.int64)
        for d in range(trie.depth):
            keys[:, d + 1] = keys[:, d] * trie.sizes[d] + codes[:, d]
        leaf = keys[:, -1]
        uniq_leaf, first, counts = np.unique(leaf, return_index=True, return_counts=True)
        if (counts > 1).any():
            dup = uniq_leaf[counts > 1][0]
            holders = [ids[i] for i in np.flatnonzero(leaf == dup)[:3]]
            raise SidCollisionError(f"items {holders} share one full SID; give them different suffixes")
        trie._item_codes = codes.astype(trie._item_codes.dtype)
        trie._item_ids = list[str | None](ids)
        trie._slot_of = {item: i for i, item in enumerate(ids)}
        trie._tables[trie.depth].bulk_set(leaf, np.arange(n))
        for d in range(trie.depth):
            prefix_keys, inverse, counts = np.unique(keys[:, d], return_inverse=True, return_counts=True)
            rows = trie._rows[d]
            if d == 0:
                start = 0
            else:
                start = rows.add_rows(prefix_keys.size)
                trie._tables[d].bulk_set(prefix_keys, np.arange(start, start + prefix_keys.size))
            row_of_item = start + inverse
            rows.counts[start:start + prefix_keys.size] += counts.astype(np.int32)
            code = codes[:, d]
            bit = (np.uint64(1) << (code & 63).astype(np.uint64))
            flat = rows.bits.reshape(-1)
            np.bitwise_or.at(flat, row_of_item * rows.words + (code >> 6), bit)
        trie.version = 1
        return trie

    # ----- beam-search mask
    def next_token_mask(self, prefix_tokens: torch.Tensor) -> torch.Tensor:
        """[B, t] SID token ids already generated -> [B, vocab.size] bool: True where a token continues
        the prefix of at least one live item. Rows whose prefix is not in the trie (or is not a valid
        SID prefix at all) are all False. The mask is built on the CPU and moved to the input's device."""
        if not isinstance(prefix_tokens, torch.Tensor):
            prefix_tokens = torch.as_tensor(prefix_tokens)
        if prefix_tokens.dim() != 2:
            raise TrieError(f"prefix_tokens must be [B, t], got shape {tuple(prefix_tokens.shape)}")
        batch, t = prefix_tokens.shape
        if t > self.depth - 1:
            raise TrieError(f"prefix length {t} leaves no SID token to generate (SID length {self.depth})")
        tokens = prefix_tokens.to("cpu", torch.int64).numpy()
        keys, valid = self._token_prefix_keys(tokens)
        rows = self._tables[t].lookup(keys) if t else np.zeros(batch, dtype=np.int64)
        rows[~valid] = -1
        found = rows >= 0
        bits = np.zeros((batch, self._rows[t].words), dtype=np.uint64)
        bits[found] = self._rows[t].bits[rows[found]]
        live = np.unpackbits(bits.view(np.uint8), axis=1, bitorder="little")[:, : self.sizes[t]]
        # built in numpy and wrapped without a copy: small torch fills go through its thread pool,
        # whose wake-up costs milliseconds on a busy machine
        mask = np.zeros((batch, self.vocab.size), dtype=np.bool_)
        start = int(self.offsets[t])
        mask[:, start:start + int(self.sizes[t])] = live.view(np.bool_)
        out = torch.from_numpy(mask)
        return out if prefix_tokens.device.type == "cpu" else out.to(prefix_tokens.device, non_blocking=True)

    def _token_prefix_keys(self, tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        batch, t = tokens.shape
        codes = tokens - self.offsets[None, :t]
        valid = np.asarray(((codes >= 0) & (codes < self.sizes[None, :t])).all(axis=1), dtype=bool)
        keys = np.zeros(batch, dtype=np.int64)
        for d in range(t):  # loop over depth (<= L), vectorised over beams
            keys = keys * self.sizes[d] + np.where(valid, codes[:, d], 0)
        return keys, valid

    # ----- copies and memory
    def snapshot(self) -> "SidTrie":
        """An independent copy: later inserts/removes on either side do not show in the other."""
        other = SidTrie.__new__(SidTrie)
        other.vocab, other.sizes, other.offsets, other.depth = self.vocab, self.sizes, self.offsets, self.depth
        other._size_list = self._size_list
        other._tables = [t.copy() for t in self._tables]
        other._rows = [r.copy() for r in self._rows]
        other._item_codes = self._item_codes.copy()
        other._item_ids = list(self._item_ids)
        other._slot_of = dict(self._slot_of)
        other._free_slots = list(self._free_slots)
        other.version = self.version
        return other

    def memory_bytes(self) -> dict:
        arrays = sum(t.nbytes for t in self._tables) + sum(r.nbytes for r in self._rows) + self._item_codes.nbytes
        ids = sys.getsizeof(self._item_ids) + sys.getsizeof(self._slot_of)
        ids += sum(sys.getsizeof(i) for i in self._slot_of)  # the id strings themselves
        return {"arrays": int(arrays), "python": int(ids), "total": int(arrays + ids)}


class SidChange(Protocol):
    """What `apply_catalogue_change` reads of a catalogue entry (`streams.schemas.CatalogueChange`)."""

    item_id: str
    codes: tuple[int, ...] | None  # None: the item is removed


@dataclass(frozen=True)
class ChangeOutcome:
    status: Literal["applied", "unchanged", "refused"]
    reason: str | None = None  # why a change was refused


APPLIED = ChangeOutcome("applied")
UNCHANGED = ChangeOutcome("unchanged")


def apply_catalogue_change(trie: SidTrie, change: SidChange) -> ChangeOutcome:
    """Apply one catalogue entry to the trie, by the one collision rule every follower shares:
    - a SID already held by another item is refused (the holder keeps it; the reason names it);
    - an item given a new SID moves there; an item with the SID it already has is unchanged;
    - a removal takes the item out; the removal of an item the trie does not hold is unchanged;
    - an entry the trie cannot hold (codes out of range, wrong length, empty id) is refused."""
    item_id, codes = change.item_id, change.codes
    if codes is None:
        if item_id not in trie:
            return UNCHANGED
        trie.remove(item_id)
        return APPLIED
    holder = trie.item_at(codes)
    if holder == item_id:
        return UNCHANGED
    if holder is not None:
        return ChangeOutcome("refused", f"SID {tuple(codes)} of {item_id!r} is held by {holder!r}")
    try:
        trie.insert(item_id, codes)
    except TrieError as exc:
        return ChangeOutcome("refused", f"item {item_id!r}: {exc}")
    return APPLIED

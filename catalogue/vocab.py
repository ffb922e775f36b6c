"""The item language's vocabulary: the one place that maps token ids to meanings.

Layout (token ids, contiguous): specials (PAD, BOS, EOS, UNK), then one range of K codes per SID level,
then the collision-suffix range, then one token per action, then optional context tokens. The version
changes whenever the codebooks change, so a model trained on one vocabulary can refuse another.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

ACTIONS: tuple[str, ...] = ("click", "skip", "like", "downvote", "purchase")
SPECIALS: tuple[str, ...] = ("PAD", "BOS", "EOS", "UNK")
FORMAT = "sidstream.vocabulary/1"


class VocabularyError(ValueError):
    """A code, token or name that the vocabulary does not know."""


@dataclass(frozen=True)
class Vocabulary:
    levels: int = 3
    codes_per_level: int = 256
    suffix_size: int = 32
    actions: tuple[str, ...] = ACTIONS
    contexts: tuple[str, ...] = ()
    version: str = "unversioned"
    _action_index: dict = field(init=False, repr=False, compare=False, hash=False)
    _context_index: dict = field(init=False, repr=False, compare=False, hash=False)

    PAD = 0
    BOS = 1
    EOS = 2
    UNK = 3

    def __post_init__(self) -> None:
        if self.levels < 1:
            raise VocabularyError(f"levels must be >= 1, got {self.levels}")
        if self.codes_per_level < 2:
            raise VocabularyError(f"codes_per_level must be >= 2, got {self.codes_per_level}")
        if self.suffix_size < 1:
            raise VocabularyError(f"suffix_size must be >= 1, got {self.suffix_size}")
        object.__setattr__(self, "actions", tuple(self.actions))
        object.__setattr__(self, "contexts", tuple(self.contexts))
        if len(set(self.actions)) != len(self.actions):
            raise VocabularyError(f"duplicate action names in {self.actions}")
        if len(set(self.contexts)) != len(self.contexts):
            raise VocabularyError(f"duplicate context names in {self.contexts}")
        object.__setattr__(self, "_action_index", {a: i for i, a in enumerate(self.actions)})
        object.__setattr__(self, "_context_index", {c: i for i, c in enumerate(self.contexts)})

    # ----- sizes and ranges
    @property
    def sid_length(self) -> int:
        return self.levels + 1

    @property
    def num_specials(self) -> int:
        return len(SPECIALS)

    def level_size(self, level: int) -> int:
        self._check_level(level)
        return self.suffix_size if level == self.levels else self.codes_per_level

    def level_offset(self, level: int) -> int:
        self._check_level(level)
        return len(SPECIALS) + level * self.codes_per_level

    def level_range(self, level: int) -> range:
        start = self.level_offset(level)
        return range(start, start + self.level_size(level))

    @property
    def level_offsets(self) -> list[int]:
        return [self.level_offset(level) for level in range(self.sid_length)]

    @property
    def level_sizes(self) -> list[int]:
        return [self.level_size(level) for level in range(self.sid_length)]

    @property
    def sid_range(self) -> range:
        return range(len(SPECIALS), self.level_range(self.levels).stop)

    @property
    def action_range(self) -> range:
        start = self.sid_range.stop
        return range(start, start + len(self.actions))

    @property
    def context_range(self) -> range:
        start = self.action_range.stop
        return range(start, start + len(self.contexts))

    @property
    def size(self) -> int:
        return self.context_range.stop

    def __len__(self) -> int:
        return self.size

    # ----- SID tokens
    def _check_level(self, level: int) -> None:
        if not 0 <= int(level) <= self.levels:
            raise VocabularyError(f"level {level} out of range 0..{self.levels} (level {self.levels} is the suffix)")

    def sid_token(self, level: int, code: int) -> int:
        size = self.level_size(level)
        if not 0 <= int(code) < size:
            raise VocabularyError(f"code {code} out of range 0..{size - 1} for level {level}")
        return self.level_offset(level) + int(code)

    def sid_to_tokens(self, codes: Sequence[int]) -> list[int]:
        codes = list(codes)
        if len(codes) != self.sid_length:
            raise VocabularyError(f"a SID has {self.sid_length} codes, got {len(codes)}: {codes}")
        return [self.sid_token(level, code) for level, code in enumerate(codes)]

    def prefix_to_tokens(self, codes: Sequence[int]) -> list[int]:
        codes = list(codes)
        if len(codes) > self.sid_length:
            raise VocabularyError(f"a SID prefix has at most {self.sid_length} codes, got {len(codes)}")
        return [self.sid_token(level, code) for level, code in enumerate(codes)]

    def token_level(self, token: int) -> int:
        """The SID level a token belongs to; VocabularyError for a non-SID token."""
        token = int(token)
        if token not in self.sid_range:
            raise VocabularyError(f"token {token} is not a SID token ({self.describe_safe(token)})")
        return min((token - len(SPECIALS)) // self.codes_per_level, self.levels)

    def tokens_to_sid(self, tokens: Sequence[int]) -> tuple[int, ...]:
        tokens = [int(t) for t in tokens]
        if len(tokens) != self.sid_length:
            raise VocabularyError(f"a SID has {self.sid_length} tokens, got {len(tokens)}: {tokens}")
        return self.tokens_to_prefix(tokens)

    def tokens_to_prefix(self, tokens: Sequence[int]) -> tuple[int, ...]:
        codes = []
        for level, token in enumerate(int(t) for t in tokens):
            if level > self.levels or token not in self.level_range(level):
                raise VocabularyError(f"token {token} ({self.describe_safe(token)}) is not a level-{level} SID token")
            codes.append(token - self.level_offset(level))
        return tuple(codes)

    # ----- actions and contexts
    def action_token(self, name: str) -> int:
        try:
            return self.action_range.start + self._action_index[name]
        except KeyError:
            raise VocabularyError(f"unknown action {name!r}; known: {', '.join(self.actions)}") from None

    def action_name(self, token: int) -> str:
        token = int(token)
        if token not in self.action_range:
            raise VocabularyError(f"token {token} is not an action token ({self.describe_safe(token)})")
        return self.actions[token - self.action_range.start]

    def is_action(self, token: int) -> bool:
        return int(token) in self.action_range

    def context_token(self, name: str) -> int:
        try:
            return self.context_range.start + self._context_index[name]
        except KeyError:
            raise VocabularyError(f"unknown context {name!r}; known: {', '.join(self.contexts) or '(none)'}") from None

    def context_name(self, token: int) -> str:
        token = int(token)
        if token not in self.context_range:
            raise VocabularyError(f"token {token} is not a context token ({self.describe_safe(token)})")
        return self.contexts[token - self.context_range.start]

    # ----- descriptions
    def describe(self, token: int) -> str:
        token = int(token)
        if 0 <= token < len(SPECIALS):
            return SPECIALS[token]
        if token in self.sid_range:
            level = self.token_level(token)
            code = token - self.level_offset(level)
            return f"SUF:{code}" if level == self.levels else f"L{level}:{code}"
        if token in self.action_range:
            return f"ACT:{self.action_name(token)}"
        if token in self.context_range:
            return f"CTX:{self.context_name(token)}"
        raise VocabularyError(f"token {token} out of range 0..{self.size - 1}")

    def describe_safe(self, token: int) -> str:
        try:
            return self.describe(token)
        except VocabularyError:
            return "out of range"

    # ----- persistence
    def with_version(self, version: str) -> "Vocabulary":
        return Vocabulary(self.levels, self.codes_per_level, self.suffix_size, self.actions, self.contexts, version)

    def to_json(self) -> dict:
        return {
            "format": FORMAT,
            "version": self.version,
            "levels": self.levels,
            "codes_per_level": self.codes_per_level,
            "suffix_size": self.suffix_size,
            "actions": list(self.actions),
            "contexts": list(self.contexts),
            "specials": list(SPECIALS),
            "size": self.size,
            "ranges": {
                **{f"L{level}": [self.level_range(level).start, self.level_range(level).stop] for level in range(self.levels)},
                "suffix": [self.level_range(self.levels).start, self.level_range(self.levels).stop],
                "actions": [self.action_range.start, self.action_range.stop],
                "contexts": [self.context_range.start, self.context_range.stop],
            },
        }

    @classmethod
    def from_json(cls, d: dict) -> "Vocabulary":
        if d.get("format", FORMAT) != FORMAT:
            raise VocabularyError(f"unsupported vocabulary format {d.get('format')!r}, expected {FORMAT!r}")
        if list(d.get("specials", SPECIALS)) != list(SPECIALS):
            raise VocabularyError(f"vocabulary specials {d.get('specials')} differ from {list(SPECIALS)}")
        vocab = cls(
            levels=int(d["levels"]),
            codes_per_level=int(d["codes_per_level"]),
            suffix_size=int(d["suffix_size"]),
            actions=tuple(d.get("actions", ACTIONS)),
            contexts=tuple(d.get("contexts", ())),
            version=str(d.get("version", "unversioned")),
        )
        if "size" in d and int(d["size"]) != vocab.size:
            raise VocabularyError(f"vocabulary size {d['size']} in file does not match its layout ({vocab.size})")
        return vocab

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "Vocabulary":
        return cls.from_json(json.loads(Path(path).read_text()))

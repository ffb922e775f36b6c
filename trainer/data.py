"""Training data in the item language: logged sequences -> token streams -> windows -> batches.

A user's history is `BOS` followed by one group per event, `s1 .. s_{L+1} action` (ARCHITECTURE.md).
For Amazon 5-core every event is a positive action, spelled "purchase". Training windows are the last
`window_events` events before a sampled end, and the loss is next-token cross-entropy on every position,
weighted separately for SID targets and action targets.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator, Mapping, Sequence

import numpy as np
import torch
from catalogue.datasets import AMAZON_ACTION, DatasetError, load_events

Event = tuple[str, str]  # (item_id, action)


class DataError(ValueError):
    """Input sequences or items the training data cannot use."""

@dataclass(frozen=True)
class EvalCase:
    user: str
    history: tuple[Event, ...]
    target: str


@dataclass(frozen=True)
class LeaveOneOut:
    """The standard split: last event is the test target, second-to-last the validation target.

    Training sees every event before the validation target; validation predicts it from that prefix;
    test predicts the last item from everything before it (validation item included).
    """
    train: dict[str, list[Event]]
    validation: list[EvalCase]
    test: list[EvalCase]


def as_events(items: Sequence[str], action: str = AMAZON_ACTION) -> list[Event]:
    return [(str(item), action) for item in items]


def leave_one_out(sequences: Mapping[str, Sequence[Event]], min_length: int = 3) -> LeaveOneOut:
    train, validation, test = {}, [], []
    for user, events in sequences.items():
        events = [tuple(e) for e in events]
        if len(events) < min_length:
            raise DataError(f"user {user} has {len(events)} events; leave-one-out needs at least {min_length}")
        train[user] = events[:-2]
        validation.append(EvalCase(user, tuple(events[:-2]), events[-2][0]))
        test.append(EvalCase(user, tuple(events[:-1]), events[-1][0]))
    return LeaveOneOut(train, validation, test)


class Tokenizer:
    """Events -> token ids, with each item's SID tokens looked up once."""
    def __init__(self, vocab, tokens_of: Callable[[str], Sequence[int]] | Mapping[str, Sequence[int]]):
        self.vocab = vocab
        self.group = vocab.sid_length + 1  # tokens per event
        self._tokens_of = tokens_of
        self._cache: dict[str, tuple[int, ...]] = {}
        self._action_tokens = {name: vocab.action_token(name) for name in vocab.actions}

    def item_tokens(self, item: str) -> tuple[int, ...]:
        cached = self._cache.get(item)
        if cached is None:
            try:
                raw = self._tokens_of[item] if isinstance(self._tokens_of, Mapping) else self._tokens_of(item)
            except (KeyError, ValueError) as exc:
                raise DataError(f"item {item!r} has no SID in the catalogue") from exc
            cached = tuple(int(t) for t in raw)
            if len(cached) != self.vocab.sid_length:
                raise DataError(f"item {item!r} has {len(cached)} SID tokens, expected {self.vocab.sid_length}")
            self._cache[item] = cached
        return cached

    def action_token(self, action: str) -> int:
        try:
            return self._action_tokens[action]
        except KeyError:
            raise DataError(f"unknown action {action!r}; the vocabulary has {', '.join(self.vocab.actions)}") from None

    def encode(self, events: Sequence[Event], window_events: int | None = None, bos: bool = True) -> list[int]:
        """BOS + the last `window_events` events (all when None) as one flat token list."""
        if window_events is not None:
            events = events[-window_events:] if window_events > 0 else []
        out = [self.vocab.BOS] if bos else []
        for item, action in events:
            out.extend(self.item_tokens(item))
            out.append(self.action_token(action))
        return out

    def encode_stream(self, events: Sequence[Event]) -> np.ndarray:
        """The whole history without BOS, as int64 (windows are slices of it)."""
        return np.asarray(self.encode(events, bos=False), dtype=np.int64)


@dataclass
class Batch:
    inputs: torch.Tensor  # [B, T]
    targets: torch.Tensor  # [B, T]
    weights: torch.Tensor  # [B, T] float, 0 on padding

    @property
    def num_tokens(self) -> int:
        return int((self.weights > 0).sum())


class TokenWindows:
    """Per-epoch training windows over every user's token stream, batched by similar length.

    Each epoch every user yields one window ending at a uniformly sampled event (the last one when the
    history fits), so long histories are covered over epochs without paying for them every step.
    """
    def __init__(
        self,
        sequences: Mapping[str, Sequence[Event]],
        tokenizer: Tokenizer,
        window_events: int = 20,
        sid_weight: float = 1.0,
        action_weight: float = 1.0,
        min_events: int = 1,
    ):
        if window_events < 1:
            raise DataError(f"window_events must be >= 1, got {window_events}")
        self.tokenizer = tokenizer
        self.vocab = tokenizer.vocab
        self.group = tokenizer.group
        self.window_events = window_events
        self.streams = [tokenizer.encode_stream(ev) for ev in sequences.values() if len(ev) >= min_events]
        if not self.streams:
            raise DataError("no training sequences")
        size = self.vocab.size
        self.token_weight = np.zeros(size, dtype=np.float32)
        self.token_weight[self.vocab.sid_range.start : self.vocab.sid_range.stop] = sid_weight
        self.token_weight[self.vocab.action_range.start : self.vocab.action_range.stop] = action_weight

    @property
    def max_tokens(self) -> int:
        """Longest model input: BOS + window (the last target is not an input)."""
        return self.window_events * self.group

    def num_target_tokens(self) -> int:
        return sum(min(len(s), self.window_events * self.group) for s in self.streams)

    def windows(self, rng: np.random.Generator) -> list[np.ndarray]:
        out = []
        for stream in self.streams:
            n_events = len(stream) // self.group
            end = n_events if n_events <= self.window_events else int(rng.integers(self.window_events, n_events + 1))
            start = max(0, end - self.window_events)
            out.append(np.concatenate([[self.vocab.BOS], stream[start * self.group : end * self.group]]))
        return out

    def batches(self, batch_size: int, rng: np.random.Generator) -> Iterator[Batch]:
        windows = self.windows(rng)
        order = rng.permutation(len(windows))
        # sort within chunks of 50 batches by length: little padding, still shuffled across epochs
        chunk = batch_size * 50
        groups = []
        for i in range(0, len(order), chunk):
            part = sorted(order[i : i + chunk], key=lambda j: len(windows[j]))
            groups.extend(part[k : k + batch_size] for k in range(0, len(part), batch_size))
        for g in rng.permutation(len(groups)):
            yield self.collate([windows[j] for j in groups[g]])

    def collate(self, windows: Sequence[np.ndarray]) -> Batch:
        T = max(len(w) for w in windows) - 1
        inputs = np.full((len(windows), T), self.vocab.PAD, dtype=np.int64)
        targets = np.full((len(windows), T), self.vocab.PAD, dtype=np.int64)
        for row, w in enumerate(windows):
            inputs[row, : len(w) - 1] = w[:-1]
            targets[row, : len(w) - 1] = w[1:]
        weights = self.token_weight[targets]
        return Batch(torch.from_numpy(inputs), torch.from_numpy(targets), torch.from_numpy(weights))


def weighted_cross_entropy(logits: torch.Tensor, batch: Batch) -> torch.Tensor:
    """Next-token cross-entropy, weighted per target token and averaged over the weights."""
    losses = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), batch.targets.reshape(-1), reduction="none"
    )
    weights = batch.weights.reshape(-1)
    return (losses * weights).sum() / weights.sum().clamp(min=1e-8)


def token_spans(vocab) -> list[range]:
    """The id ranges a target token's type selects: one per SID level (suffix included), then the actions."""
    return [vocab.level_range(level) for level in range(vocab.sid_length)] + [vocab.action_range]


def level_cross_entropy(model, hidden: torch.Tensor, batch: Batch, spans: Sequence[range]) -> torch.Tensor:
    """Weighted next-token cross-entropy with the softmax taken over the target's own token type.

    The grammar fixes which type comes next (level l+1 after level l, an action after the suffix, level 0
    after an action), so normalising within that type loses nothing, matches how generation reads the
    model (one level at a time under the trie), and scores ~200 candidates instead of the whole vocabulary.
    """
    targets = batch.targets.reshape(-1)
    weights = batch.weights.reshape(-1)
    flat = hidden.reshape(-1, hidden.shape[-1])
    total = flat.new_zeros(())
    for span in spans:
        rows = torch.nonzero((targets >= span.start) & (targets < span.stop) & (weights > 0), as_tuple=True)[0]
        if rows.numel() == 0:
            continue
        logits = model.logits(flat.index_select(0, rows), span)
        losses = torch.nn.functional.cross_entropy(logits, targets.index_select(0, rows) - span.start,
                                                   reduction="none")
        total = total + (losses * weights.index_select(0, rows)).sum()
    return total / weights.sum().clamp(min=1e-8)


def dense_cross_entropy(model, hidden: torch.Tensor, batch: Batch, first_level: range,
                        item_log_q: torch.Tensor | None = None, negatives: int = 0) -> torch.Tensor:
    """The dense channel's loss: at every position whose target is an item's first SID token, the query vector
    against all item vectors, softmax cross-entropy over the model's items (`negatives=0`), or a sampled
    softmax over `negatives` items drawn from `item_log_q` with the log-Q correction (Yi et al., RecSys 2019)
    for catalogues too large to score whole. Targets whose item has no residual row are skipped."""
    L = model.config.sid_length
    targets, weights = batch.targets, batch.weights
    if targets.shape[1] < L:
        return hidden.new_zeros(())
    windows = targets.unfold(1, L, 1)  # [B, T-L+1, L]: the SID that starts at each target position
    starts = (windows[..., 0] >= first_level.start) & (windows[..., 0] < first_level.stop)
    starts &= weights[:, : windows.shape[1]] > 0
    b, t = torch.nonzero(starts, as_tuple=True)
    if b.numel() == 0:
        return hidden.new_zeros(())
    rows = model.residual_rows(windows[b, t])
    known = rows >= 0
    b, t, rows = b[known], t[known], rows[known]
    if rows.numel() == 0:
        return hidden.new_zeros(())
    queries = model.query_vectors(hidden[b, t])
    if not negatives:
        logits = queries @ model.item_vectors(model.item_sid_tokens).T
        return torch.nn.functional.cross_entropy(logits, rows)
    if item_log_q is None:
        raise ValueError("a sampled softmax needs item_log_q, the log-probability of drawing each item")
    sampled = torch.multinomial(item_log_q.exp(), negatives, replacement=True)
    candidates = torch.cat([rows, sampled])
    vectors = model.item_vectors(model.item_sid_tokens[candidates], candidates)
    logits = queries @ vectors.T - item_log_q[candidates]  # log-Q: frequent items are drawn more often
    # a row's own positive may also be drawn as a negative of another row: only the diagonal is its target
    same = candidates[None, :] == rows[:, None]
    same[torch.arange(len(rows)), torch.arange(len(rows))] = False
    logits = logits.masked_fill(same, float("-inf"))
    return torch.nn.functional.cross_entropy(logits, torch.arange(len(rows)))


def load_split(dataset_dir) -> tuple[dict[str, list[str]], LeaveOneOut]:
    """A dataset folder (Amazon sequences.txt or MovieLens u.data) -> (raw item sequences, leave-one-out split
    with each event's action: "purchase" for Amazon, the rating's action for MovieLens)."""
    try:
        events = load_events(dataset_dir)
    except DatasetError as exc:
        raise DataError(f"{exc} (expected an Amazon 5-core or a MovieLens-100K dataset directory)") from None
    return {u: [i for i, _ in ev] for u, ev in events.items()}, leave_one_out(events)

"""The generation engine: histories in, ranked real items with action probabilities out.

Pure core (torch + the catalogue's trie), wrapped by serving's adapters. For a batch of users the beam search
runs in named steps:
1. first step: prefill each history once (left-padded into one batch, KV cache kept) and keep the best
   `beam_size` first-level SID codes per user;
2. extend: one SID level at a time, masking every token that does not continue a live item's SID in the
   trie, so every beam stays on a real item; beams share their user's history cache and only their own few
   tokens are reordered;
3. finish: the last level (the collision suffix) names each candidate's item; items already in the history
   are dropped (configurable) before the best beams are kept;
4. read actions: each finished item's last token goes through the model once more, and the distribution
   over action tokens is P(action | history, item);
then a value function turns those into a score and the top k, best first, are returned.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Collection, Mapping, Sequence

import torch

from trainer.model import KVCache
from trainer.registry import load_model, load_vocab
from trainer.value import DEFAULT_WEIGHTS, ValueFunction

Event = tuple[str, str]  # (item_id, action)
ORDERINGS = ("logprob", "value", "expected_value")
NEG_INF = torch.tensor(float("-inf"))


class GenerationError(ValueError):
    """A request the engine cannot serve (unknown item in a history, bad configuration)."""


@dataclass(frozen=True)
class GenerationConfig:
    beam_size: int = 20
    top_k: int = 10
    exclude_seen: bool = True
    window_events: int | None = 50  # history events fed to the model (None: all that fit max_len)
    # logprob: retrieval likelihood; value: the value function; expected_value: P(item) * value
    order_by: str = "logprob"
    value_weights: Mapping[str, float] | None = None  # None: trainer.value.DEFAULT_WEIGHTS
    with_actions: bool = True  # False skips the action step (retrieval only; values are then 0)

    def __post_init__(self) -> None:
        if self.beam_size < 1 or self.top_k < 1:
            raise GenerationError(f"beam_size and top_k must be >= 1, got {self.beam_size}, {self.top_k}")
        if self.top_k > self.beam_size:
            raise GenerationError(f"top_k {self.top_k} exceeds beam_size {self.beam_size}")
        if self.order_by not in ORDERINGS:
            raise GenerationError(f"order_by must be one of {ORDERINGS}, got {self.order_by!r}")
        if not self.with_actions and self.order_by != "logprob":
            raise GenerationError(f"order_by={self.order_by!r} needs with_actions=True")


@dataclass(frozen=True)
class Beams:
    """The live beams of a batch, `beam_size` per user, best first."""
    tokens: torch.Tensor  # [B, W, t] SID tokens so far
    scores: torch.Tensor  # [B, W] log P(tokens | history); -inf: a dead beam


@dataclass(frozen=True)
class Recommendation:
    item_id: str
    log_prob: float  # log P(item's SID tokens | history) under the model
    action_probs: dict[str, float] = field(default_factory=dict)  # P(action | history, item), sums to 1
    value: float = 0.0
    score: float = 0.0  # what the list is ordered by


class GenerationEngine:
    """Trie-constrained, KV-cached beam search over one `trainer.model.Transformer`."""

    def __init__(self, model, vocab, trie, config: GenerationConfig | None = None):
        self.model = model.eval()
        self.vocab = vocab
        self.trie = trie
        self.config = config or GenerationConfig()
        weights = self.config.value_weights
        if weights is None:  # the defaults, restricted to the actions this vocabulary speaks
            weights = {a: w for a, w in DEFAULT_WEIGHTS.items() if a in vocab.actions}
        self.value_function = ValueFunction(dict(weights))
        self.value_vector = self.value_function.vector(vocab.actions)
        self.group = vocab.sid_length + 1
        self._action_tokens = {a: vocab.action_token(a) for a in vocab.actions}
        if model.config.vocab_size != vocab.size:
            raise GenerationError(f"model vocabulary {model.config.vocab_size} != catalogue vocabulary {vocab.size}")

    # ----- history encoding
    def encode_history(self, events: Sequence[Event]) -> list[int]:
        """BOS + the last window of events as tokens; items must be in the trie."""
        window = self._window_events()
        events = list(events)[-window:] if window else []
        tokens = [self.vocab.BOS]
        for item, action in events:
            try:
                codes = self.trie.codes_of(item)
            except KeyError:
                raise GenerationError(f"history item {item!r} is not in the catalogue") from None
            tokens.extend(self.vocab.sid_to_tokens(codes))
            try:
                tokens.append(self._action_tokens[action])
            except KeyError:
                raise GenerationError(f"unknown action {action!r} in history") from None
        return tokens

    def _window_events(self) -> int:
        fit = (self.model.config.max_len - 1 - self.group) // self.group  # room for BOS and the generated item
        window = self.config.window_events
        return fit if window is None else min(window, fit)

    def _truncate(self, tokens: Sequence[int]) -> list[int]:
        tokens = list(tokens)
        keep = self._window_events() * self.group
        if tokens and tokens[0] == self.vocab.BOS:
            body = tokens[1:]
        else:
            body = tokens
        return [self.vocab.BOS] + body[len(body) - keep :] if len(body) > keep else [self.vocab.BOS] + body

    def items_in_tokens(self, tokens: Sequence[int]) -> set[str]:
        """Items named by complete SID groups in a token history."""
        items, L = set(), self.vocab.sid_length
        level0 = self.vocab.level_range(0)
        i = 0
        while i + L <= len(tokens):
            if tokens[i] in level0:
                try:
                    item = self.trie.item_at(self.vocab.tokens_to_sid(tokens[i : i + L]))
                except ValueError:
                    item = None
                if item is not None:
                    items.add(item)
                    i += L
                    continue
            i += 1
        return items

    # ----- public entry points
    def recommend(self, histories: Sequence[Sequence[Event]]) -> list[list[Recommendation]]:
        """One ranked list per user history of (item_id, action) events."""
        tokens = [self.encode_history(h) for h in histories]
        seen = [{item for item, _ in h} for h in histories]
        return self.recommend_tokens(tokens, seen)

    @torch.no_grad()
    def recommend_tokens(
        self, token_histories: Sequence[Sequence[int]], seen: Sequence[Collection[str]] | None = None
    ) -> list[list[Recommendation]]:
        """One ranked list per token history (BOS-first streams as stored per user)."""
        if not token_histories:
            return []
        if seen is None:
            seen = [self.items_in_tokens(t) if self.config.exclude_seen else set() for t in token_histories]
        if not self.config.exclude_seen:
            seen = [set()] * len(token_histories)
        items, log_probs, action_probs = self.search([self._truncate(t) for t in token_histories], seen)
        return self.rank(items, log_probs, action_probs)

    def rank(self, items: list[list[str | None]], log_probs: torch.Tensor,
             action_probs: torch.Tensor) -> list[list[Recommendation]]:
        """The search's beams as recommendations: valued, ordered by `order_by`, the top k per user."""
        values = (action_probs @ self.value_vector).tolist()
        log_probs, action_probs = log_probs.tolist(), action_probs.tolist()
        actions = self.vocab.actions
        order_by = self.config.order_by
        out = []
        for b in range(len(items)):
            recs = []
            for w, item in enumerate(items[b]):
                if item is None:
                    continue
                lp, value = log_probs[b][w], values[b][w]
                score = lp if order_by == "logprob" else value if order_by == "value" else math.exp(lp) * value
                probs = dict(zip(actions, action_probs[b][w])) if self.config.with_actions else {}
                recs.append(Recommendation(item, lp, probs, value, score))
            recs.sort(key=lambda r: -r.score)
            out.append(recs[: self.config.top_k])
        return out

    # ----- the search
    @torch.no_grad()
    def search(self, token_histories: Sequence[Sequence[int]], seen: Sequence[Collection[str]]):
        """Beam search for a batch. Returns (items [B][W] with None for dead beams, log_probs [B, W],
        action_probs [B, W, A]); beams are in descending log-probability order. With order_by="logprob" only
        the first top_k beams get action probabilities (the rest, never returned, stay 0)."""
        beams, cache = self.first_step(token_histories)
        for level in range(1, self.vocab.sid_length - 1):
            beams, cache = self.extend(beams, cache, level)
        beams, items, cache = self.finish(beams, cache, seen)
        return items, beams.scores, self.read_actions(beams, cache)

    def first_step(self, token_histories: Sequence[Sequence[int]]) -> tuple[Beams, KVCache]:
        """Prefill the histories and keep the best first-level codes: (beams, their expanded cache)."""
        W = self.config.beam_size
        hidden, cache = self.model.prefill(*self._left_pad(token_histories))
        logp, span = self._level_log_probs(hidden, 0)
        # one row for everyone: the root's children are the same for every user
        root = self.trie.next_token_mask(torch.zeros((1, 0), dtype=torch.long))[:, span.start : span.stop]
        scores = torch.where(root, logp, NEG_INF)
        k = min(W, scores.shape[1])
        beam_scores, idx = scores.topk(k, dim=1)
        if k < W:  # fewer level-0 codes than beams: pad with dead beams
            B = len(token_histories)
            beam_scores = torch.cat([beam_scores, NEG_INF.expand(B, W - k)], 1)
            idx = torch.cat([idx, torch.zeros(B, W - k, dtype=torch.long)], 1)
        return Beams((idx + span.start).unsqueeze(-1), beam_scores), cache.expand(W)

    def extend(self, beams: Beams, cache: KVCache, level: int) -> tuple[Beams, KVCache]:
        """One more SID level: every beam's continuations under the trie, the best per user kept."""
        candidates, _, span = self._candidates(beams, cache, level)
        beams, parent, _ = self._keep_best(beams, candidates, span)
        return beams, cache.select(self._rows(parent).reshape(-1))

    def finish(self, beams: Beams, cache: KVCache,
               seen: Sequence[Collection[str]]) -> tuple[Beams, list[list[str | None]], KVCache | None]:
        """The last SID level (the collision suffix): candidates are named, the seen ones dropped, the best kept.

        Returns (beams, their items [B][W] with None for dead beams, the cache of the beams whose actions are
        to be read, or None with with_actions=False).
        """
        B, W, _ = beams.tokens.shape
        candidates, mask, span = self._candidates(beams, cache, self.vocab.sid_length - 1)
        named = self._resolve_and_exclude(candidates, mask, beams.tokens, span, seen)
        beams, parent, code = self._keep_best(beams, candidates, span)
        rows = self._rows(parent)
        items: list[list[str | None]] = [[None] * W for _ in range(B)]
        alive, parent_rows, codes = (beams.scores > float("-inf")).tolist(), rows.tolist(), code.tolist()
        for b in range(B):
            for w in range(W):
                if alive[b][w]:
                    items[b][w] = named.get((parent_rows[b][w], codes[b][w]))
        if not self.config.with_actions:
            return beams, items, None
        acted = self._acted_beams()
        return beams, items, cache.select(rows[:, :acted].reshape(-1), group=acted)

    def read_actions(self, beams: Beams, cache: KVCache | None) -> torch.Tensor:
        """P(action | history, item) [B, W, A] after each finished item's last token, for the beams `finish`
        kept in `cache` (0 for the others, and for all without a cache)."""
        B, W, _ = beams.tokens.shape
        probs = torch.zeros(B, W, len(self.vocab.actions))
        if cache is None:
            return probs
        acted = cache.group
        last = beams.tokens[:, :acted, -1].reshape(B * acted, 1)
        hidden = self.model.decode(last, cache)[:, -1]
        logits = self.model.logits(hidden, self.vocab.action_range)
        probs[:, :acted] = torch.softmax(logits.float(), dim=-1).view(B, acted, -1)
        return probs

    # ----- search helpers
    def _left_pad(self, token_histories: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Histories as one left-padded batch: (tokens [B, T], valid [B, T])."""
        B = len(token_histories)
        T = max(len(t) for t in token_histories)
        tokens = torch.full((B, T), self.vocab.PAD, dtype=torch.long)
        valid = torch.zeros((B, T), dtype=torch.bool)
        for b, t in enumerate(token_histories):
            if len(t):
                tokens[b, T - len(t) :] = torch.as_tensor(list(t), dtype=torch.long)
                valid[b, T - len(t) :] = True
        if not bool(valid[:, -1].all()):
            raise GenerationError("every history needs at least one token (BOS)")
        return tokens, valid

    def _acted_beams(self) -> int:
        """Beams whose actions are read: ordered by log-probability only the best top_k can be returned."""
        W = self.config.beam_size
        return min(W, self.config.top_k) if self.config.order_by == "logprob" else W

    def _level_log_probs(self, hidden: torch.Tensor, level: int) -> tuple[torch.Tensor, range]:
        """log P(code at `level` | history, previous codes), normalised over that level's tokens (the
        grammar allows nothing else there; see trainer.data.level_cross_entropy)."""
        span = self.vocab.level_range(level)
        return torch.log_softmax(self.model.logits(hidden, span).float(), dim=-1), span

    def _candidates(self, beams: Beams, cache: KVCache, level: int) -> tuple[torch.Tensor, torch.Tensor, range]:
        """Every beam's one-code continuations at `level`: (scores [B*W, V] = beam score + the code's log-prob,
        -inf where the trie holds no item; the trie's mask [B*W, V]; the level's token span)."""
        B, W, t = beams.tokens.shape
        hidden = self.model.decode(beams.tokens[:, :, -1].reshape(B * W, 1), cache)[:, -1]
        logp, span = self._level_log_probs(hidden, level)
        mask = self.trie.next_token_mask(beams.tokens.reshape(B * W, t))[:, span.start : span.stop]
        return torch.where(mask, logp + beams.scores.reshape(B * W, 1), NEG_INF), mask, span

    @staticmethod
    def _keep_best(beams: Beams, candidates: torch.Tensor, span: range) -> tuple[Beams, torch.Tensor, torch.Tensor]:
        """The best W candidates of each user: (new beams, their parent beam [B, W], their code [B, W])."""
        B, W, t = beams.tokens.shape
        V = candidates.shape[1]
        scores, idx = candidates.view(B, W * V).topk(W, dim=1)
        parent, code = idx // V, idx % V
        tokens = torch.cat([beams.tokens.gather(1, parent.unsqueeze(-1).expand(-1, -1, t)),
                            (code + span.start).unsqueeze(-1)], 2)
        return Beams(tokens, scores), parent, code

    @staticmethod
    def _rows(parent: torch.Tensor) -> torch.Tensor:
        """Parent beams [B, W] within each user -> rows [B, W] of the batch's B*W beam rows."""
        B, W = parent.shape
        return parent + torch.arange(B)[:, None] * W

    def _resolve_and_exclude(self, cand, mask, beam_tokens, span, seen):
        """Name the item of every live final-step candidate; drop (in place) those already seen."""
        W = beam_tokens.shape[1]
        rows, cols = torch.nonzero(mask & (cand > float("-inf")), as_tuple=True)
        offsets = torch.tensor(self.vocab.level_offsets[: beam_tokens.shape[-1]])
        prefix_codes = beam_tokens.reshape(-1, beam_tokens.shape[-1])[rows] - offsets
        codes = torch.cat([prefix_codes, cols[:, None]], 1).tolist()
        items_at = getattr(self.trie, "items_at", None)  # a vectorised lookup when the trie offers one
        names = items_at(codes) if items_at is not None else [self.trie.item_at(c) for c in codes]
        named = {}
        drop_rows, drop_cols = [], []
        for row, col, item in zip(rows.tolist(), cols.tolist(), names):
            if item is None or item in seen[row // W]:
                drop_rows.append(row)
                drop_cols.append(col)
            else:
                named[(row, col)] = item
        if drop_rows:
            cand[drop_rows, drop_cols] = float("-inf")
        return named


def load_engine(model_dir, catalogue, config: GenerationConfig | None = None) -> GenerationEngine:
    """An engine over a registry model directory and a loaded catalogue (catalogue.catalogue.ItemCatalogue).

    Refuses a model trained on another vocabulary layout. A different vocabulary *version* (new codebooks)
    is refused too, since the model's SID tokens would then mean other items.
    """
    model, manifest = load_model(model_dir)
    trained_on = load_vocab(manifest)
    vocab = catalogue.vocab
    if trained_on.to_json() != vocab.to_json():
        raise GenerationError(f"model {model_dir} was trained on vocabulary {trained_on.version} "
                              f"({trained_on.size} tokens), the catalogue speaks {vocab.version} ({vocab.size})")
    if config is None:
        window = manifest.get("train_config", {}).get("window_events")
        config = GenerationConfig(window_events=window) if window else GenerationConfig()
    return GenerationEngine(model, vocab, catalogue.trie, config)

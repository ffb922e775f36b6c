"""The generation engine: histories in, ranked real items with action probabilities out.

Pure core (torch + the catalogue's trie), wrapped by serving's adapters. For a batch of users it
1. encodes each history once (left-padded into one batch, KV cache kept);
2. runs beam search over the item's SID tokens (L levels + the collision suffix), masking at every
   step every token that does not continue a live item's SID in the trie, so every finished beam is a
   real item; beams share their user's history cache and only their own few tokens are reordered;
3. feeds each finished item's last token once more and reads the distribution over action tokens:
   P(action | history, item); a value function turns it into a score;
4. drops items already in the history (configurable) and returns the top k, best first.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Collection, Mapping, Sequence

import torch

from serving.value import DEFAULT_WEIGHTS, ValueFunction

Event = tuple[str, str]  # (item_id, action)
ORDERINGS = ("logprob", "value", "expected_value")


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
    value_weights: Mapping[str, float] | None = None  # None: serving.value.DEFAULT_WEIGHTS
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
    def _prefill(self, token_histories: Sequence[Sequence[int]]):
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
        cache = self.model.new_cache()
        hidden = self.model.hidden(tokens, valid, cache, last_only=True)[:, -1]
        return hidden, cache

    def _level_log_probs(self, hidden: torch.Tensor, level: int) -> tuple[torch.Tensor, range]:
        """log P(code at `level` | history, previous codes), normalised over that level's tokens (the
        grammar allows nothing else there; see trainer.data.level_cross_entropy)."""
        span = self.vocab.level_range(level)
        return torch.log_softmax(self.model.logits(hidden, span).float(), dim=-1), span

    @torch.no_grad()
    def search(self, token_histories: Sequence[Sequence[int]], seen: Sequence[Collection[str]]):
        """Beam search for a batch. Returns (items [B][W] with None for dead beams, log_probs [B, W],
        action_probs [B, W, A]); beams are in descending log-probability order. With order_by="logprob" only
        the first top_k beams get action probabilities (the rest, never returned, stay 0)."""
        vocab, trie = self.vocab, self.trie
        W, S = self.config.beam_size, vocab.sid_length
        B = len(token_histories)
        hidden, cache = self._prefill(token_histories)
        neg_inf = torch.tensor(float("-inf"))

        # step 0: one row per user (the root's children are the same for everyone)
        logp, span = self._level_log_probs(hidden, 0)
        root = trie.next_token_mask(torch.zeros((1, 0), dtype=torch.long))[:, span.start : span.stop]
        scores = torch.where(root, logp, neg_inf)
        k = min(W, scores.shape[1])
        beam_scores, idx = scores.topk(k, dim=1)
        if k < W:  # fewer level-0 codes than beams: pad with dead beams
            beam_scores = torch.cat([beam_scores, neg_inf.expand(B, W - k)], 1)
            idx = torch.cat([idx, torch.zeros(B, W - k, dtype=torch.long)], 1)
        beam_tokens = (idx + span.start).unsqueeze(-1)  # [B, W, t]
        cache = cache.expand(W)
        user_rows = torch.arange(B).repeat_interleave(W)
        items: list[list[str | None]] = [[None] * W for _ in range(B)]

        action_probs = torch.zeros(B, W, len(vocab.actions))
        # ordered by log-probability, only the best top_k beams can be returned: only they need their actions
        acted = min(W, self.config.top_k) if self.config.order_by == "logprob" else W
        for step in range(1, S + 1 if self.config.with_actions else S):
            if step == S:  # the action after each finished item
                last = beam_tokens[:, :acted, -1].reshape(B * acted, 1)
                hidden = self.model.hidden(last, cache=cache)[:, -1]
                action_logits = self.model.logits(hidden, vocab.action_range)
                action_probs[:, :acted] = torch.softmax(action_logits.float(), dim=-1).view(B, acted, -1)
                break
            last = beam_tokens[:, :, -1].reshape(B * W, 1)
            hidden = self.model.hidden(last, cache=cache)[:, -1]
            logp, span = self._level_log_probs(hidden, step)  # [B*W, V_l]
            mask = trie.next_token_mask(beam_tokens.reshape(B * W, step))[:, span.start : span.stop]
            cand = torch.where(mask, logp + beam_scores.reshape(B * W, 1), neg_inf)
            final = step == S - 1
            if final:
                cand_items = self._resolve_and_exclude(cand, mask, beam_tokens, span, seen, W)
            V = cand.shape[1]
            cand = cand.view(B, W * V)
            beam_scores, idx = cand.topk(W, dim=1)
            parent = idx // V
            token = idx % V
            beam_tokens = torch.cat(
                [beam_tokens.gather(1, parent.unsqueeze(-1).expand(-1, -1, step)), (token + span.start).unsqueeze(-1)], 2
            )
            rows = (user_rows * W).view(B, W).add(parent)
            if not final:
                cache = cache.select(rows.reshape(-1))
            elif self.config.with_actions:
                cache = cache.select(rows[:, :acted].reshape(-1), group=acted)
            if final:
                alive = (beam_scores > float("-inf")).tolist()
                parent_rows = (parent + torch.arange(B)[:, None] * W).tolist()
                tokens = token.tolist()
                for b in range(B):
                    for w in range(W):
                        if alive[b][w]:
                            items[b][w] = cand_items.get((parent_rows[b][w], tokens[b][w]))
        return items, beam_scores, action_probs

    def _resolve_and_exclude(self, cand, mask, beam_tokens, span, seen, W):
        """Name the item of every live final-step candidate; drop (in place) those already seen."""
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


def load_engine(model_dir, catalogue, config: GenerationConfig | None = None) -> GenerationEngine:
    """An engine over a registry model directory and a loaded catalogue (catalogue.catalogue.ItemCatalogue).

    Refuses a model trained on another vocabulary layout. A different vocabulary *version* (new codebooks)
    is refused too, since the model's SID tokens would then mean other items.
    """
    from trainer.registry import load_model, load_vocab

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

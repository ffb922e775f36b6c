"""The generation engine: histories in, ranked real items with action probabilities out.

Pure core (torch + the catalogue's trie + an item index), wrapped by serving's adapters. Two retrieval
channels read one model: the generative channel (trie-constrained beam search over SIDs) and the dense channel
(the query vector at the history's last position against the item vectors, top items from an index). For a
batch of users the search runs in named steps:
1. encode: prefill each history once (left-padded into one batch, KV cache kept);
2. first step: keep the best `beam_size` first-level SID codes per user;
3. extend: one SID level at a time, masking every token that does not continue a live item's SID in the
   trie, so every beam stays on a real item; beams share their user's history cache and only their own few
   tokens are reordered;
4. finish: the last level (the collision suffix) names each candidate's item;
5. dense: the top `dense_candidates` items by dense score from the item index;
6. merge: one candidate list per user, each candidate marked with the channel(s) that found it; a candidate
   one channel did not score gets that channel's score (its dense score from its vector; its SID
   log-probability, and its actions, by feeding its SID tokens through the model once);
7. read actions: each beam item's last token goes through the model once more, and the distribution over
   action tokens is P(action | history, item);
8. rank: by the retrieval score, the value function, or both (`order_by`), the top k.

With `exclude_seen`, items in the history never take a slot: the dense index skips them inside its search,
the beam search masks every SID prefix whose items are all seen, and the last level drops seen items before the
best beams are kept. So a user with at least k unseen items gets k.

Slates (`slate`): the list built one item at a time. Each next item is the best the search above finds
after the history plus the items already placed, each placed item followed by an action token (a given
action, else the item's most likely one), so the second item depends on the first; no diversity rule.

The retrieval score (`order_by="logprob"`) adds the log-probabilities of the channels in use:
`log P_sid(item | history) + dense_weight * log softmax_c(dense score)`, the softmax taken over the user's
merged candidates c (a product of the two channels' distributions; the normaliser is the same for every
candidate of a user, so it changes no order, only the probability `expected_value` reads).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Collection, Mapping, Sequence

import numpy as np
import torch

from trainer.item_index import build_item_index
from trainer.model import KVCache
from trainer.registry import load_model, load_vocab
from trainer.value import ValueFunction

Event = tuple[str, str]  # (item_id, action)
ORDERINGS = ("logprob", "value", "expected_value")
CHANNELS = ("generative", "dense", "both")
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
    channels: str | None = None  # generative | dense | both; None: both when the model has a dense head
    dense_candidates: int | None = None  # the dense channel's candidates per user (None: beam_size)
    dense_weight: float = 1.0  # the dense log-probability's weight in the retrieval score

    def __post_init__(self) -> None:
        if self.beam_size < 1 or self.top_k < 1:
            raise GenerationError(f"beam_size and top_k must be >= 1, got {self.beam_size}, {self.top_k}")
        if self.top_k > self.beam_size:
            raise GenerationError(f"top_k {self.top_k} exceeds beam_size {self.beam_size}")
        if self.order_by not in ORDERINGS:
            raise GenerationError(f"order_by must be one of {ORDERINGS}, got {self.order_by!r}")
        if not self.with_actions and self.order_by != "logprob":
            raise GenerationError(f"order_by={self.order_by!r} needs with_actions=True")
        if self.channels is not None and self.channels not in CHANNELS:
            raise GenerationError(f"channels must be one of {CHANNELS}, got {self.channels!r}")
        if self.dense_candidates is not None and self.dense_candidates < self.top_k:
            raise GenerationError(f"dense_candidates {self.dense_candidates} is below top_k {self.top_k}")


@dataclass(frozen=True)
class Beams:
    """The live beams of a batch, `beam_size` per user, best first."""
    tokens: torch.Tensor  # [B, W, t] SID tokens so far
    scores: torch.Tensor  # [B, W] log P(tokens | history); -inf: a dead beam


@dataclass
class Candidate:
    """One item a channel found for a user, with the evidence gathered so far."""
    item_id: str
    channels: list[str]
    log_prob: float | None = None  # log P(item's SID | history)
    dense_score: float | None = None  # query . item vector
    action_probs: list[float] | None = None


@dataclass(frozen=True)
class Recommendation:
    item_id: str
    log_prob: float | None  # log P(item's SID tokens | history); None when no step computed it (dense only)
    action_probs: dict[str, float] = field(default_factory=dict)  # P(action | history, item), sums to 1
    value: float = 0.0
    score: float = 0.0  # what the list is ordered by
    dense_score: float | None = None  # the dense channel's score, query . item vector
    retrieval: float = 0.0  # the retrieval score (module docstring)
    channels: tuple[str, ...] = ()  # the channel(s) that found the item


class GenerationEngine:
    """Trie-constrained, KV-cached beam search over one `trainer.model.Transformer`."""

    def __init__(self, model, vocab, trie, config: GenerationConfig | None = None, index=None):
        self.model = model.eval()
        self.vocab = vocab
        self.trie = trie
        self.config = config or GenerationConfig()
        self.channels = self.config.channels or ("both" if model.has_dense_head else "generative")
        if self.channels != "generative" and not model.has_dense_head:
            raise GenerationError(f"channels={self.channels!r} needs a model with a dense head; this one was "
                                  f"trained without it (retrain with `sidstream train pretrain`)")
        # the dense channel's item index (trainer.item_index); built from the trie when none is given
        self.index = index if index is not None or self.channels == "generative" else \
            build_item_index(model, vocab, trie)
        weights = self.config.value_weights
        # None: the defaults, restricted to the actions this vocabulary speaks
        self.value_function = ValueFunction(dict(weights)) if weights is not None else \
            ValueFunction.defaults_for(vocab.actions)
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
                raise GenerationError(f"unknown action {action!r} in history; this catalogue's actions: "
                                      f"{', '.join(self.vocab.actions)}") from None
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
        return self.rank(self.search([self._truncate(t) for t in token_histories], seen))

    @torch.no_grad()
    def slate(self, token_histories: Sequence[Sequence[int]], seen: Sequence[Collection[str]], k: int,
              action: str | None = None) -> list[list[Recommendation]]:
        """Up to k items per user in placement order, each found after the history plus the items placed
        before it, those followed by `action` (default: each one's most likely action). A placed item is never
        placed again; `seen` are excluded too (pass empty sets to allow them)."""
        if action is not None and action not in self._action_tokens:
            raise GenerationError(f"unknown action {action!r}; this catalogue's actions: "
                                  f"{', '.join(self.vocab.actions)}")
        if action is None and not self.config.with_actions:
            raise GenerationError("a slate without a given action needs with_actions=True (the most likely action)")
        histories = [list(t) for t in token_histories]
        excluded = [set(s) for s in seen]
        placed: list[list[Recommendation]] = [[] for _ in histories]
        for _ in range(k):
            best = self.rank(self.search([self._truncate(t) for t in histories], excluded))
            for b, recs in enumerate(best):
                if not recs:  # nothing left to place for this user
                    continue
                item = recs[0]
                placed[b].append(item)
                excluded[b].add(item.item_id)
                taken = action or max(item.action_probs, key=item.action_probs.get)
                histories[b] += [*self.vocab.sid_to_tokens(self.trie.codes_of(item.item_id)),
                                 self._action_tokens[taken]]
        return placed

    def rank(self, candidates: list[list[Candidate]], dense_weight: float | None = None) -> list[list[Recommendation]]:
        """Each user's merged candidates as recommendations: valued, ordered by `order_by`, the top k
        (`dense_weight`: instead of the configured one, e.g. to compare weights on one search)."""
        out = []
        for recs in self.value(candidates, dense_weight):
            recs.sort(key=lambda r: -r.score)
            out.append(recs[: self.config.top_k])
        return out

    def value(self, candidates: list[list[Candidate]], dense_weight: float | None = None) -> list[list[Recommendation]]:
        """Each candidate as a recommendation in the order given: its retrieval score, action probabilities,
        value and the score `order_by` sorts by."""
        dense_weight = self.config.dense_weight if dense_weight is None else dense_weight
        actions = self.vocab.actions
        value_vector = self.value_vector.tolist()
        order_by, use_dense = self.config.order_by, self.channels != "generative"
        out = []
        for user in candidates:
            dense_norm = float(np.logaddexp.reduce([c.dense_score for c in user])) if use_dense and user else 0.0
            recs = []
            for c in user:
                retrieval = 0.0
                if self.channels != "dense":
                    retrieval += c.log_prob
                if use_dense:
                    retrieval += dense_weight * (c.dense_score - dense_norm)
                probs = c.action_probs
                value = sum(w * p for w, p in zip(value_vector, probs)) if probs is not None else 0.0
                score = retrieval if order_by == "logprob" else value if order_by == "value" \
                    else math.exp(retrieval) * value
                recs.append(Recommendation(c.item_id, c.log_prob, dict(zip(actions, probs)) if probs else {},
                                           value, score, c.dense_score, retrieval, tuple(c.channels)))
            out.append(recs)
        return out

    def mean_attention(self, tokens: Sequence[int]) -> list[list[float]]:
        """One token stream's causal attention map [T, T], averaged over layers and heads (for /explain)."""
        device = self.model.tok_emb.weight.device
        maps = self.model.attention_weights(torch.tensor([list(tokens)], dtype=torch.long, device=device))
        return maps.mean(dim=(0, 2))[0].tolist()

    @torch.no_grad()
    def score_items(self, token_histories: Sequence[Sequence[int]],
                    items: Sequence[Sequence[str]]) -> list[list[Recommendation]]:
        """Given items instead of searched ones: each user's items in the order given, with the numbers a search
        would give them (SID log-probability, dense score, action probabilities, value); the retrieval score's
        dense part is normalised over the given items."""
        unknown = sorted({i for user in items for i in user if i not in self.trie})
        if unknown:
            raise GenerationError(f"{len(unknown)} items are not in the catalogue, e.g. {unknown[:5]}")
        hidden, prefix = self.encode(token_histories)
        candidates = [{item: Candidate(item, ["given"]) for item in user} for user in items]
        if self.channels != "generative":
            self.merge(candidates, self.model.query_vectors(hidden), [[] for _ in items],
                       hidden.new_zeros((len(items), 0)))
        self.score_sids(hidden, prefix, candidates)
        return self.value([[user[item] for item in order] for user, order in zip(candidates, items)])

    # ----- the search
    @torch.no_grad()
    def search(self, token_histories: Sequence[Sequence[int]],
               seen: Sequence[Collection[str]]) -> list[list[Candidate]]:
        """Both channels for a batch: one merged candidate list per user (module docstring, steps 1-7)."""
        hidden, prefix = self.encode(token_histories)
        B = len(token_histories)
        candidates: list[dict[str, Candidate]] = [{} for _ in range(B)]
        beams = beam_cache = None
        if self.channels != "dense":
            exhausted = self._exhausted_prefixes(seen)
            beams, cache = self.first_step(hidden, prefix, exhausted)
            for level in range(1, self.vocab.sid_length - 1):
                beams, cache = self.extend(beams, cache, level, exhausted)
            beams, items, beam_cache = self.finish(beams, cache, seen)
            scores = beams.scores.tolist()
            for b in range(B):
                for w, item in enumerate(items[b]):
                    if item is not None:
                        candidates[b][item] = Candidate(item, ["generative"], log_prob=scores[b][w])
        if self.channels != "generative":
            queries = self.model.query_vectors(hidden)
            dense_items, dense_scores = self.dense(queries, seen)
            self.merge(candidates, queries, dense_items, dense_scores)
            self.score_sids(hidden, prefix, candidates)
        if beams is not None:
            self.read_actions(beams, items, beam_cache, candidates)
        return [list(c.values()) for c in candidates]

    def encode(self, token_histories: Sequence[Sequence[int]]) -> tuple[torch.Tensor, KVCache]:
        """Prefill the histories: (the last position's hidden state [B, d], the prefix KV cache)."""
        return self.model.prefill(*self._left_pad(token_histories))

    def first_step(self, hidden: torch.Tensor, cache: KVCache,
                   exhausted: list[dict[tuple, list[int]]] | None = None) -> tuple[Beams, KVCache]:
        """Keep the best first-level codes of the encoded histories: (beams, their expanded cache)."""
        W = self.config.beam_size
        B = hidden.shape[0]
        logp, span = self._level_log_probs(hidden, 0)
        # one row for everyone: the root's children are the same for every user
        root = self.trie.next_token_mask(torch.zeros((1, 0), dtype=torch.long))[:, span.start : span.stop]
        scores = torch.where(root, logp, NEG_INF)
        for b, user in enumerate(exhausted or ()):
            codes = user.get((), ())
            if codes:
                scores[b, codes] = float("-inf")
        k = min(W, scores.shape[1])
        beam_scores, idx = scores.topk(k, dim=1)
        if k < W:  # fewer level-0 codes than beams: pad with dead beams
            beam_scores = torch.cat([beam_scores, NEG_INF.expand(B, W - k)], 1)
            idx = torch.cat([idx, torch.zeros(B, W - k, dtype=torch.long)], 1)
        return Beams((idx + span.start).unsqueeze(-1), beam_scores), cache.expand(W)

    def extend(self, beams: Beams, cache: KVCache, level: int,
               exhausted: list[dict[tuple, list[int]]] | None = None) -> tuple[Beams, KVCache]:
        """One more SID level: every beam's continuations under the trie, the best per user kept."""
        candidates, _, span = self._candidates(beams, cache, level)
        if exhausted:
            self._mask_exhausted(candidates, beams, exhausted)
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

    def dense(self, queries: torch.Tensor, seen: Sequence[Collection[str]]) -> tuple[list[list[str]], torch.Tensor]:
        """The dense channel: the top items by query . item vector, seen items skipped inside the search."""
        k = self.config.dense_candidates or self.config.beam_size
        return self.index.search(queries, k, seen if self.config.exclude_seen else None)

    def merge(self, candidates: list[dict[str, Candidate]], queries: torch.Tensor, dense_items: list[list[str]],
              dense_scores: torch.Tensor) -> None:
        """Add the dense channel's items to each user's candidates (in place) and give every generative
        candidate its dense score."""
        for b, (items, scores) in enumerate(zip(dense_items, dense_scores.tolist())):
            for item, score in zip(items, scores):
                found = candidates[b].get(item)
                if found is None:
                    candidates[b][item] = Candidate(item, ["dense"], dense_score=score)
                else:
                    found.channels.append("dense")
                    found.dense_score = score
            unscored = [c for c in candidates[b].values() if c.dense_score is None]
            if unscored:
                vectors = self.index.vectors_of([c.item_id for c in unscored])
                for c, score in zip(unscored, (vectors @ queries[b].float()).tolist()):
                    c.dense_score = score

    def score_sids(self, hidden: torch.Tensor, prefix: KVCache, candidates: list[dict[str, Candidate]]) -> None:
        """The SID log-probability and actions of the candidates the beams did not find, by feeding their SID
        tokens after the history in one batched decode (skipped when nothing reads them)."""
        if self.channels == "dense" and not self.config.with_actions:
            return
        todo = [[c for c in user.values() if c.log_prob is None] for user in candidates]
        K = max((len(t) for t in todo), default=0)
        if K == 0:
            return
        B, L = len(todo), self.vocab.sid_length
        sid_tokens = {c.item_id: self.vocab.sid_to_tokens(self.trie.codes_of(c.item_id)) for u in todo for c in u}
        # padding rows (users with fewer candidates to score) repeat a real SID; their results are not read
        tokens = torch.tensor(next(iter(sid_tokens.values())), dtype=torch.long).repeat(B, K, 1)
        for b, user in enumerate(todo):
            if user:
                tokens[b, : len(user)] = torch.tensor([sid_tokens[c.item_id] for c in user])
        states = self.model.decode(tokens.view(B * K, L), prefix.expand(K)).view(B, K, L, -1)
        log_prob = torch.zeros(B, K)
        for level in range(L):
            level_hidden = hidden[:, None, :].expand(B, K, -1) if level == 0 else states[:, :, level - 1]
            logp, span = self._level_log_probs(level_hidden, level)
            log_prob += logp.gather(-1, (tokens[:, :, level] - span.start)[..., None])[..., 0]
        actions = None
        if self.config.with_actions:
            actions = torch.softmax(self.model.logits(states[:, :, L - 1], self.vocab.action_range).float(), -1)
        log_prob = log_prob.tolist()
        for b, user in enumerate(todo):
            for k, c in enumerate(user):
                c.log_prob = log_prob[b][k]
                if actions is not None:
                    c.action_probs = actions[b, k].tolist()

    def read_actions(self, beams: Beams, items: list[list[str | None]], cache: KVCache | None,
                     candidates: list[dict[str, Candidate]]) -> None:
        """P(action | history, item) after each finished beam item's last token, for the beams `finish` kept
        in `cache` (none without a cache); written into the candidates."""
        if cache is None:
            return
        B = beams.tokens.shape[0]
        acted = cache.group
        last = beams.tokens[:, :acted, -1].reshape(B * acted, 1)
        hidden = self.model.decode(last, cache)[:, -1]
        logits = self.model.logits(hidden, self.vocab.action_range)
        probs = torch.softmax(logits.float(), dim=-1).view(B, acted, -1).tolist()
        for b in range(B):
            for w in range(acted):
                item = items[b][w]
                if item is not None:
                    candidates[b][item].action_probs = probs[b][w]

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
        """Beams whose actions are read: ordered by the SID log-probability alone only the best top_k can be
        returned; merged with the dense channel, any beam can."""
        W = self.config.beam_size
        return min(W, self.config.top_k) if self.config.order_by == "logprob" and self.channels == "generative" else W

    def _exhausted_prefixes(self, seen: Sequence[Collection[str]]) -> list[dict[tuple, list[int]]] | None:
        """Per user, the SID prefixes all of whose items are seen, as {parent prefix: [next codes]}: a beam there
        could only end on a seen item, so the search never enters them."""
        if not self.config.exclude_seen or not any(seen):
            return None
        out: list[dict[tuple, list[int]]] = [{} for _ in seen]
        users, codes = [], []
        for b, items in enumerate(seen):
            for item in items:
                if item in self.trie:
                    users.append(b)
                    codes.append(self.trie.codes_of(item))
        if not codes:
            return out
        users, codes = np.asarray(users, dtype=np.int64), np.asarray(codes, dtype=np.int64)
        for depth in range(1, codes.shape[1]):  # full SIDs are dropped by `finish` itself
            keyed, seen_count = np.unique(np.column_stack([users, codes[:, :depth]]), axis=0, return_counts=True)
            full = keyed[seen_count == self.trie.counts_with_prefixes(keyed[:, 1:])]
            for row in full.tolist():
                out[row[0]].setdefault(tuple(row[1:-1]), []).append(row[-1])
        return out

    def _mask_exhausted(self, candidates: torch.Tensor, beams: Beams, exhausted: list[dict[tuple, list[int]]]) -> None:
        """Mask (in place) the beams' continuations that enter a prefix whose items are all seen."""
        B, W, t = beams.tokens.shape
        offsets = torch.tensor(self.vocab.level_offsets[:t])
        beam_codes = (beams.tokens - offsets).tolist()
        rows, cols = [], []
        for b, user in enumerate(exhausted):
            if not user:
                continue
            for w in range(W):
                codes = user.get(tuple(beam_codes[b][w]))
                if codes:
                    rows.extend([b * W + w] * len(codes))
                    cols.extend(codes)
        if rows:
            candidates[rows, cols] = float("-inf")

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


def generation_config_of(manifest: dict, **overrides) -> GenerationConfig:
    """The generation settings a model was trained and validated with: its window, and the channel weight
    pretraining chose on validation (`generation.dense_weight`), unless overridden."""
    settings = {}
    window = (manifest.get("train_config") or {}).get("window_events")
    if window:
        settings["window_events"] = window
    weight = (manifest.get("generation") or {}).get("dense_weight")
    if weight is not None:
        settings["dense_weight"] = float(weight)
    return GenerationConfig(**{**settings, **overrides})


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
        config = generation_config_of(manifest)
    return GenerationEngine(model, vocab, catalogue.trie, config)

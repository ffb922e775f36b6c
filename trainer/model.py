"""The sidstream transformer: one decoder-only model that retrieves and ranks.

A small GPT (token + learned position embeddings, pre-norm blocks of causal self-attention and an MLP,
RMSNorm, output head tied to the token embedding) that reads a user's flat token stream
`BOS s1 s2 s3 s4 action s1 s2 s3 s4 action ...` and predicts the next token. Retrieval decodes the next
item's SID under the trie; ranking reads the action distribution right after an item's last SID token.

Two ways through the same weights:
- training, `hidden(tokens)` / `forward(tokens)`: the whole sequence, plain causal attention, no cache
  (nanoGPT's forward);
- decoding, `prefill(tokens, valid)` then `decode(tokens, cache)`: prefill encodes a batch of left-padded
  histories once into a KV cache (`valid` marks real tokens, positions restart at 0 on each row's first real
  token, so padding never changes a row's result; the last block computes only the last position, which is all
  a history encoder reads); `decode` extends beams of that cache by new tokens, each beam reading its user's
  shared history from the cache (see `KVCache`).
`logits(hidden, span)` is separate from both, so callers pay for the output projection only where they read it.

The dense channel (`dense_items > 0`): the hidden state at each position that predicts an item's first SID
token (BOS, every action) also yields a query vector (`query_vectors`), scored by its dot product with item
vectors composed in the item language (`item_vectors`: the sum of the item's SID token embeddings, shared with
the generator, plus a learned per-item residual that starts at zero). A new item has a vector from its SID
alone; training gives it its own residual.

One addition to the inputs, the event context: every token also gets the sum of a second embedding over the
tokens of its own event so far (`event_ends` lists the tokens that close an event: the actions and BOS). The
last SID token, where the action is predicted, then carries the whole item in one vector, and an action
token carries (item, action): attention can compare the item at hand with the user's past items and their
actions in one hop, instead of first having to assemble each item from its separate tokens.

And the item's own identity (`item_input`): the token that closes an event (its action) also gets the item's
learned residual row, the one its dense vector has. Codes are shared by many items, so without it a history
item is only the sum of its codes; with it the model reads each past item as SASRec does (an embedding of
its own, tied to the output side), and a new item with no row is read by its codes alone. Beam decoding never
feeds an action token, so only `hidden` and `prefill` look the rows up.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class ModelConfig:
    vocab_size: int
    max_len: int = 256  # longest token stream the position table covers (window events * (L+2) + 1)
    d_model: int = 128
    n_layers: int = 4
    n_heads: int = 4
    mlp_ratio: int = 4
    dropout: float = 0.1
    norm_eps: float = 1e-6
    # tokens that close an event (actions, BOS); empty = no event-context embedding (models saved before it)
    event_ends: tuple[int, ...] = ()
    # the dense channel: items with a learned residual row (0 = no dense head: models saved before it)
    dense_items: int = 0
    sid_length: int = 0  # SID tokens per item, for the composed item vectors
    # add an item's residual row to the input of the token that closes its event (False: models saved before it)
    item_input: bool = False

    def __post_init__(self) -> None:
        if self.vocab_size < 2:
            raise ValueError(f"vocab_size must be >= 2, got {self.vocab_size}")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model {self.d_model} is not divisible by n_heads {self.n_heads}")
        if self.max_len < 1 or self.n_layers < 1:
            raise ValueError("max_len and n_layers must be positive")
        self.event_ends = tuple(int(t) for t in self.event_ends)
        if any(not 0 <= t < self.vocab_size for t in self.event_ends):
            raise ValueError(f"event_ends {self.event_ends} must be token ids below vocab_size {self.vocab_size}")
        if self.dense_items < 0 or (self.dense_items and self.sid_length < 1):
            raise ValueError(f"dense_items={self.dense_items} needs sid_length >= 1, got {self.sid_length}")
        if self.item_input and not (self.dense_items and self.event_ends):
            raise ValueError("item_input needs the dense head's residual rows (dense_items) and event_ends")

    def to_json(self) -> dict:
        data = asdict(self)
        data["event_ends"] = list(self.event_ends)
        return data

    @classmethod
    def from_json(cls, data: dict) -> "ModelConfig":
        return cls(**data)


def _sid_keys(sid_tokens: torch.Tensor, base: int) -> torch.Tensor:
    """One int64 per SID (its tokens as digits in base vocab_size): SIDs compared, sorted and searched at once."""
    keys = torch.zeros(sid_tokens.shape[0], dtype=torch.long)
    for level in range(sid_tokens.shape[1]):
        keys = keys * base + sid_tokens[:, level]
    return keys


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class KVCache:
    """Keys and values of every layer for the tokens decoded so far, in two parts, because beam search shares
    one history among many beams:
    - the prefix, written once by `Transformer.prefill`: the encoded histories, one row per user, `keys`,
      `values` [B, H, P, hd] per layer and `valid` [B, P] (False = left padding);
    - the beams, after `expand(G)`: G rows per user for the tokens `Transformer.decode` adds, `beam_keys`,
      `beam_values` [B*G, H, t, hd]. Beam rows attend to their user's prefix without copying it, so
      reordering beams (`select`) costs O(t) per step instead of O(history).
    Per row it also keeps the position id of the next token and the event-context sum of the open event.
    """

    def __init__(self, n_layers: int):
        self.keys: list[torch.Tensor | None] = [None] * n_layers
        self.values: list[torch.Tensor | None] = [None] * n_layers
        self.valid: torch.Tensor | None = None  # [B, P] bool
        self.next_position: torch.Tensor | None = None  # [rows] position id of each row's next token
        self.event_sum: torch.Tensor | None = None  # [rows, d] event-context sum of each row's open event
        self.group = 0  # beams per prefix row; 0 = not expanded
        self.beam_keys: list[torch.Tensor | None] = [None] * n_layers
        self.beam_values: list[torch.Tensor | None] = [None] * n_layers

    @property
    def length(self) -> int:
        """Tokens in the prefix part."""
        return 0 if self.valid is None else self.valid.shape[1]

    @property
    def beam_length(self) -> int:
        return 0 if self.beam_keys[0] is None else self.beam_keys[0].shape[2]

    def expand(self, group: int) -> "KVCache":
        """A cache with `group` beam rows per prefix row, sharing this cache's prefix."""
        if self.group:
            raise ValueError("cache is already expanded")
        if self.valid is None:
            raise ValueError("expand needs an encoded prefix")
        out = KVCache(len(self.keys))
        out.keys, out.values, out.valid = self.keys, self.values, self.valid
        out.group = group
        out.next_position = self.next_position.repeat_interleave(group)
        if self.event_sum is not None:
            out.event_sum = self.event_sum.repeat_interleave(group, dim=0)
        return out

    def select(self, rows: torch.Tensor, group: int | None = None) -> "KVCache":
        """A new expanded cache whose beam row i is this cache's beam row rows[i].

        Rows must stay within each user's group (beam search's parents do), `group` rows per user in user
        order (default: as many as before); the shared prefix is untouched.
        """
        if not self.group:
            raise ValueError("select picks beams: expand the cache first")
        if group is not None and group < 1:
            raise ValueError(f"group={group} needs at least one beam per user")
        out = KVCache(len(self.keys))
        out.keys, out.values, out.valid = self.keys, self.values, self.valid
        out.group = self.group if group is None else group
        if rows.shape[0] != self.valid.shape[0] * out.group:
            users = self.valid.shape[0]
            raise ValueError(f"{rows.shape[0]} rows do not make groups of {out.group} for {users} users")
        out.next_position = self.next_position.index_select(0, rows)
        if self.event_sum is not None:
            out.event_sum = self.event_sum.index_select(0, rows)
        if self.beam_keys[0] is not None:
            out.beam_keys = [k.index_select(0, rows) for k in self.beam_keys]
            out.beam_values = [v.index_select(0, rows) for v in self.beam_values]
        return out


class CausalSelfAttention(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.n_heads = config.n_heads
        self.qkv = nn.Linear(config.d_model, 3 * config.d_model, bias=False)
        self.proj = nn.Linear(config.d_model, config.d_model, bias=False)
        self.dropout = config.dropout

    def _heads(self, x):
        """Queries, keys and values [B, H, T, hd] of x [B, T, C]."""
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        return tuple(t.view(B, T, self.n_heads, C // self.n_heads).transpose(1, 2) for t in (q, k, v))

    def _out(self, y):
        """Heads [B, H, T, hd] back to [B, T, C], projected."""
        B, H, T, hd = y.shape
        return self.proj(y.transpose(1, 2).reshape(B, T, H * hd))

    def _dropout_p(self) -> float:
        return self.dropout if self.training else 0.0

    def forward(self, x):
        """Training: plain causal attention over the whole sequence."""
        q, k, v = self._heads(x)
        return self._out(F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=self._dropout_p()))

    def prefill(self, x, mask, cache: KVCache, layer: int, last_only: bool = False):
        """Attention over a left-padded prefix, whose keys and values go to `cache`. `mask` [B, 1, T, T] (True =
        attend), or None when no row has padding. With `last_only`, [B, 1, C] for the last position alone."""
        q, k, v = self._heads(x)
        cache.keys[layer], cache.values[layer] = k, v
        if last_only:
            q = q[:, :, -1:]
            mask = None if mask is None else mask[..., -1:, :]
        if mask is None:  # no padding: plain causal (the last query alone may see every key)
            y = F.scaled_dot_product_attention(q, k, v, is_causal=not last_only, dropout_p=self._dropout_p())
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self._dropout_p())
        return self._out(y)

    def decode(self, x, cache: KVCache, layer: int):
        """Attention of beam rows over their user's shared prefix plus their own tokens, which join the cache."""
        q, k, v = self._heads(x)
        G = cache.group
        rows, H, T, hd = q.shape
        B = rows // G
        if cache.beam_keys[layer] is not None:
            k = torch.cat([cache.beam_keys[layer], k], dim=2)
            v = torch.cat([cache.beam_values[layer], v], dim=2)
        cache.beam_keys[layer], cache.beam_values[layer] = k, v
        scale = 1.0 / math.sqrt(hd)
        prefix_k, prefix_v = cache.keys[layer], cache.values[layer]  # [B, H, P, hd]
        P = prefix_k.shape[2]
        # every beam's queries of one user against that user's prefix: one [G*T, P] matmul per (user, head)
        q_grouped = q.view(B, G, H, T, hd).transpose(1, 2).reshape(B, H, G * T, hd)
        s_prefix = (q_grouped @ prefix_k.transpose(-1, -2)) * scale  # [B, H, G*T, P]
        s_prefix = s_prefix.masked_fill(~cache.valid[:, None, None, :], float("-inf"))
        s_beam = (q @ k.transpose(-1, -2)) * scale  # [rows, H, T, t]
        t = k.shape[2]
        causal = torch.arange(t, device=q.device)[None, :] <= torch.arange(t - T, t, device=q.device)[:, None]
        s_beam = s_beam.masked_fill(~causal, float("-inf"))
        s_prefix = s_prefix.view(B, H, G, T, P).transpose(1, 2).reshape(rows, H, T, P)
        p = torch.softmax(torch.cat([s_prefix, s_beam], dim=-1), dim=-1)
        p_prefix = p[..., :P].reshape(B, G, H, T, P).transpose(1, 2).reshape(B, H, G * T, P)
        y_prefix = (p_prefix @ prefix_v).view(B, H, G, T, hd).transpose(1, 2).reshape(rows, H, T, hd)
        return self._out(y_prefix + p[..., P:] @ v)


class MLP(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.up = nn.Linear(config.d_model, config.mlp_ratio * config.d_model, bias=False)
        self.down = nn.Linear(config.mlp_ratio * config.d_model, config.d_model, bias=False)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        return self.dropout(self.down(F.gelu(self.up(x))))


class Block(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.norm1 = RMSNorm(config.d_model, config.norm_eps)
        self.attn = CausalSelfAttention(config)
        self.norm2 = RMSNorm(config.d_model, config.norm_eps)
        self.mlp = MLP(config)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        x = x + self.dropout(self.attn(self.norm1(x)))
        return x + self.mlp(self.norm2(x))

    def prefill(self, x, mask, cache: KVCache, layer: int, last_only: bool = False):
        """As forward, over a padded prefix into `cache`; with `last_only` for the last position alone."""
        attended = self.attn.prefill(self.norm1(x), mask, cache, layer, last_only)
        x = (x[:, -1:] if last_only else x) + self.dropout(attended)
        return x + self.mlp(self.norm2(x))

    def decode(self, x, cache: KVCache, layer: int):
        x = x + self.dropout(self.attn.decode(self.norm1(x), cache, layer))
        return x + self.mlp(self.norm2(x))


class Transformer(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.d_model)
        self.pos_emb = nn.Embedding(config.max_len, config.d_model)
        if config.event_ends:
            self.event_emb = nn.Embedding(config.vocab_size, config.d_model)
            self.register_buffer("is_event_end", torch.zeros(config.vocab_size, dtype=torch.bool), persistent=False)
            self.is_event_end[list(config.event_ends)] = True
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layers))
        self.norm = RMSNorm(config.d_model, config.norm_eps)
        self.head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.head.weight = self.tok_emb.weight  # tied: an output token is scored by its own embedding
        if config.dense_items:
            self.dense_query = nn.Linear(config.d_model, config.d_model, bias=False)
            # each trained item's SID tokens, so a residual row is found by the item's SID (its name in the
            # item language) and the weights file alone says which item a row belongs to
            self.register_buffer("item_sid_tokens", torch.zeros(config.dense_items, config.sid_length,
                                                                dtype=torch.long))
            self.item_residual = nn.Embedding(config.dense_items, config.d_model)
        self.apply(self._init_weights)
        if config.dense_items:
            nn.init.zeros_(self.item_residual.weight)  # a new item starts from its SID alone
        for name, p in self.named_parameters():  # GPT-2's scaled init of the residual projections
            if name.endswith("proj.weight") or name.endswith("down.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layers))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # ----- training
    def hidden(self, tokens: torch.Tensor) -> torch.Tensor:
        """Final normed hidden states [B, T, d] of whole token streams [B, T] (no padding on the left)."""
        x = self.drop(self._embed(tokens))
        for block in self.blocks:
            x = block(x)
        return self.norm(x)

    def _embed(self, tokens: torch.Tensor) -> torch.Tensor:
        """The input of the first block for whole token streams [B, T]: tokens, positions, event context and
        item rows."""
        T = tokens.shape[1]
        self._check_length(T)
        positions = torch.arange(T, device=tokens.device)
        return self.tok_emb(tokens) + self.pos_emb(positions)[None] + self._event_context(tokens) \
            + self._item_input(tokens)

    @torch.no_grad()
    def attention_weights(self, tokens: torch.Tensor) -> torch.Tensor:
        """Causal attention probabilities [n_layers, B, n_heads, T, T] of whole token streams [B, T] (as `hidden`
        reads them): what /explain's attention heuristic aggregates. Spelled out, not fused, to expose them."""
        x = self._embed(tokens)
        T = tokens.shape[1]
        causal = torch.ones(T, T, dtype=torch.bool, device=tokens.device).tril()
        maps = []
        for block in self.blocks:
            q, k, _ = block.attn._heads(block.norm1(x))
            scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])
            maps.append(torch.softmax(scores.masked_fill(~causal, float("-inf")), dim=-1))
            x = block(x)
        return torch.stack(maps)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Logits [B, T, vocab_size] of whole token streams [B, T]."""
        return self.logits(self.hidden(tokens))

    def logits(self, hidden: torch.Tensor, span: range | None = None) -> torch.Tensor:
        """Output logits; with `span`, only for the tokens in that id range (one SID level, the actions),
        which is all beam search and the level-wise loss need and costs a fraction of the full head."""
        if span is None:
            return self.head(hidden)
        return hidden @ self.head.weight[span.start : span.stop].T

    # ----- the dense channel
    @property
    def has_dense_head(self) -> bool:
        return bool(self.config.dense_items)

    def query_vectors(self, hidden: torch.Tensor) -> torch.Tensor:
        """Dense query vectors [..., d] of hidden states at positions that predict an item's first SID token."""
        return self.dense_query(hidden)

    def item_vectors(self, sid_tokens: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        """Item vectors [N, d] composed in the item language: the sum of the embeddings of the item's SID
        tokens [N, L] (the generator's own) plus the item's learned residual row (`rows` [N], -1 = none,
        as for an item that arrived after training; default: row i is item i of `item_sid_tokens`)."""
        composed = self.tok_emb(sid_tokens).sum(1)
        if rows is None:
            return composed + self.item_residual.weight[: sid_tokens.shape[0]]
        known = rows >= 0
        residual = self.item_residual(rows.clamp(min=0)) * known[:, None]
        return composed + residual

    def residual_rows(self, sid_tokens: torch.Tensor) -> torch.Tensor:
        """The residual row [N] of each item named by its SID tokens [N, L]; -1 for an item trained without one."""
        sorted_keys, order = self._sorted_item_keys()
        keys = _sid_keys(sid_tokens, self.config.vocab_size)
        at = torch.searchsorted(sorted_keys, keys).clamp(max=len(order) - 1)
        return torch.where(sorted_keys[at] == keys, order[at], torch.full_like(keys, -1))

    def add_item_rows(self, sid_tokens: torch.Tensor) -> int:
        """Zero residual rows for the items named by SID tokens [N, L] that have none (items that arrived after
        training, now seen by the online trainer); returns how many were added. The parameter keeps its
        identity (its data grows), so an optimiser holding it needs its state grown too (`grow_state`)."""
        new = torch.unique(sid_tokens[self.residual_rows(sid_tokens) < 0], dim=0)
        if not len(new):
            return 0
        weight = self.item_residual.weight
        weight.data = torch.cat([weight.data, weight.data.new_zeros(len(new), weight.shape[1])])
        self.item_residual.num_embeddings = weight.shape[0]
        self.item_sid_tokens = torch.cat([self.item_sid_tokens, new.to(self.item_sid_tokens)])
        self.config.dense_items = weight.shape[0]
        return len(new)

    def _sorted_item_keys(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The residual rows' SID keys, sorted, and their order; sorted again only when `item_sid_tokens`
        changed (loading, a catalogue set-up), since every forward with `item_input` looks rows up."""
        tokens = self.item_sid_tokens
        stamp = (tokens.data_ptr(), tokens._version, tuple(tokens.shape))
        if getattr(self, "_item_keys_stamp", None) != stamp:
            table = _sid_keys(tokens, self.config.vocab_size)
            order = torch.argsort(table)
            self._item_keys = (table[order], order)
            self._item_keys_stamp = stamp
        return self._item_keys

    # ----- decoding
    def prefill(self, tokens: torch.Tensor, valid: torch.Tensor | None = None) -> tuple[torch.Tensor, KVCache]:
        """Encode left-padded histories: (final hidden state of each row's last token [B, d], their KV cache).

        `valid` [B, T] marks real tokens (False = left padding; default all real). Padding gets no position
        and is never attended to, so a padded row computes exactly what it would alone. The last block
        computes only the last position, which is all that is read (about a fifth of a 4-layer encoding);
        the cache holds every position's keys and values.
        """
        B, T = tokens.shape
        if valid is None:
            valid = torch.ones(B, T, dtype=torch.bool, device=tokens.device)
        positions = (valid.long().cumsum(1) - 1).clamp(min=0)
        self._check_length(int(positions.max()) + 1)
        context = self._event_context(tokens, valid)
        x = self.drop(self.tok_emb(tokens) + self.pos_emb(positions) + context + self._item_input(tokens))
        cache = KVCache(self.config.n_layers)
        cache.valid = valid
        cache.next_position = valid.long().sum(1)
        cache.event_sum = self._open_event_sum(tokens, context)
        mask = None if bool(valid.all()) else self._padding_mask(valid)
        last = len(self.blocks) - 1
        for layer, block in enumerate(self.blocks):
            x = block.prefill(x, mask, cache, layer, last_only=layer == last)
        return self.norm(x)[:, -1], cache

    def decode(self, tokens: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """Final hidden states [rows, T, d] of `tokens` [rows, T] appended to the beams of an expanded cache,
        which is extended in place with their keys and values."""
        if not cache.group:
            raise ValueError("decode extends beams: expand the prefilled cache first")
        if self.config.item_input and bool(self.is_event_end[tokens].any()):
            raise ValueError("decode extends beams by SID tokens; an event's end (with its item input) needs prefill")
        T = tokens.shape[1]
        positions = cache.next_position[:, None] + torch.arange(T, device=tokens.device)
        self._check_length(int(positions.max()) + 1)
        context = self._event_context(tokens, carry=cache.event_sum)
        x = self.drop(self.tok_emb(tokens) + self.pos_emb(positions) + context)
        cache.next_position = cache.next_position + T
        cache.event_sum = self._open_event_sum(tokens, context)
        for layer, block in enumerate(self.blocks):
            x = block.decode(x, cache, layer)
        return self.norm(x)

    # ----- inputs and masks
    def _check_length(self, length: int) -> None:
        if length > self.config.max_len:
            raise ValueError(f"token stream of {length} exceeds max_len {self.config.max_len}")

    def _event_context(self, tokens: torch.Tensor, valid: torch.Tensor | None = None,
                       carry: torch.Tensor | None = None) -> torch.Tensor | float:
        """Sum of `event_emb` over each token's event up to and including the token [B, T, d].

        An event ends with (and includes) one of `event_ends`; the next token starts a new sum. `carry` [B, d]
        is the sum of each row's event still open before these tokens (from the cache).
        """
        if not self.config.event_ends:
            return 0.0
        e = self.event_emb(tokens)
        if valid is not None:
            e = e * valid[..., None]  # padding contributes nothing
        ends = self.is_event_end[tokens]  # [B, T]
        total = e.cumsum(1)
        T = tokens.shape[1]
        index = torch.arange(T, device=tokens.device).expand_as(tokens)
        # the last end strictly before each token: its running total is what the token's event starts from
        last_end = torch.where(ends, index, torch.full_like(index, -1)).cummax(1).values
        before = torch.cat([torch.full_like(last_end[:, :1], -1), last_end[:, :-1]], dim=1)
        base = total.gather(1, before.clamp(min=0)[..., None].expand_as(total)) * (before >= 0)[..., None]
        context = total - base
        if carry is not None:  # tokens before this call's first end continue the open event
            context = context + carry[:, None, :] * (before < 0)[..., None]
        return context

    def _item_input(self, tokens: torch.Tensor) -> torch.Tensor | float:
        """The residual row of the item each event-end token closes (the item its L tokens before spell), at
        that token [B, T, d]; zero where the L tokens are no trained item (BOS, padding, a new item)."""
        L = self.config.sid_length
        if not self.config.item_input or tokens.shape[1] <= L:
            return 0.0
        ends = self.is_event_end[tokens]
        ends[:, :L] = False
        b, t = torch.nonzero(ends, as_tuple=True)
        sids = tokens[b[:, None], t[:, None] + torch.arange(-L, 0, device=tokens.device)]  # [n, L]
        rows = self.residual_rows(sids)
        known = rows >= 0
        out = self.item_residual.weight.new_zeros(*tokens.shape, self.config.d_model)
        return out.index_put((b[known], t[known]), self.item_residual(rows[known]))

    def _open_event_sum(self, tokens: torch.Tensor, context: torch.Tensor | float) -> torch.Tensor | None:
        """The event-context sum each row carries into its next token: zero after an event's end."""
        if not self.config.event_ends:
            return None
        return context[:, -1] * (~self.is_event_end[tokens[:, -1]])[:, None]

    @staticmethod
    def _padding_mask(valid: torch.Tensor) -> torch.Tensor:
        """Boolean attention mask [B, 1, T, T] (True = attend): causal, and never to left padding."""
        T = valid.shape[1]
        index = torch.arange(T, device=valid.device)
        causal = index[None, :] <= index[:, None]  # [T, T]
        # a padding query sees only itself, so its softmax is defined; its output is never read
        self_only = index[None, :] == index[:, None]
        return (causal[None] & (valid[:, None, :] | self_only[None]))[:, None]

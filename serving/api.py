"""The HTTP API's shapes (pydantic) and its pure request checks; no web framework here.

Request models are built from the limits in `ServingSettings` (`request_models`), so the OpenAPI schema states
the same bounds the server enforces (k, history length, id lengths) and a schema-driven fuzzer knows them.

Cold start (documented in the schema too): a user id without a sequence in the online store is served from an
empty history, i.e. the model's unconditional next-item distribution under the trie (what a new user most
likely buys first); the response says `cold_start: true` and `sequence_age_ms: null`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, create_model
import hmac

ORDERS = ("logprob", "value", "expected_value")
Order = Literal["logprob", "value", "expected_value"]
Channels = Literal["generative", "dense", "both"]
Mode = Literal["topk", "slate"]
MAX_WEIGHTS = 32
MAX_PREFIX = 8  # codes; longer than any SID this project builds (the service checks the real length)
MAX_CODE = 1 << 20
ID_PATTERN = r"^[^\x00-\x1f]+$"  # ids are printable text: no control characters


def _json_number(value):
    """What JSON Schema calls a number (an integer field also takes 3.0): never a boolean or a string, which
    pydantic's lax mode would turn into one (`false` into 0) although the schema refuses them."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError("must be a JSON number")
    return value


JsonInt = Annotated[int, BeforeValidator(_json_number)]
JsonNumber = Annotated[float, BeforeValidator(_json_number)]


class RequestError(ValueError):
    """A request the API refuses; `status` is the HTTP status (4xx) it maps to."""
    def __init__(self, message: str, status: int = 422):
        super().__init__(message)
        self.status = status


class HistoryEvent(BaseModel):
    model_config = ConfigDict(extra="forbid")
    item_id: str = Field(min_length=1, max_length=200, pattern=ID_PATTERN)
    action: str = Field("purchase", min_length=1, max_length=64,
                        description="one of the catalogue's actions (GET /healthz lists them); the default suits "
                                    "catalogues that have purchase")


_COMMON_DOC = {
    "k": "items to return, best first",
    "exclude_seen": "drop items already in the history used",
    "value_weights": "action -> weight for the value function, e.g. {\"click\": 1, \"like\": 10, \"downvote\": -100}; "
                     "when given, items are ordered by value unless order_by says otherwise",
    "sid_prefix": "only items whose SID starts with these codes (browse a region of the catalogue; an empty "
                  "region gives an empty list)",
    "order_by": "logprob: the retrieval score (SID log-probability, plus the dense channel's log-probability "
                "when it is on); value: the value function; expected_value: P(item) x value",
    "channels": "retrieval channels: generative (trie-constrained beam search over SIDs), dense (item vectors "
                "from an index) or both (default, where the model has a dense head)",
    "mode": "topk (default): the k best items for the history, scored alone; slate: the list built one item at "
            "a time, each next item the best after the history plus the items already placed (each followed by "
            "slate_action), so later items depend on earlier ones; a slate keeps its placement order",
    "slate_action": "slate: the action assumed after each placed item (default: that item's most likely action)",
}


def request_models(max_k: int = 100, max_history_events: int = 200, max_user_id_chars: int = 200):
    """(RecommendRequest, HistoryRecommendRequest) with these limits in their fields (and so in the schema)."""
    config = ConfigDict(extra="forbid")
    common = {
        "k": (JsonInt, Field(10, ge=1, le=max_k, description=_COMMON_DOC["k"])),
        "exclude_seen": (StrictBool, Field(True, description=_COMMON_DOC["exclude_seen"])),
        "value_weights": (dict[str, JsonNumber] | None, Field(None, max_length=MAX_WEIGHTS,
                                                         description=_COMMON_DOC["value_weights"])),
        "order_by": (Order | None, Field(None, description=_COMMON_DOC["order_by"])),
        "channels": (Channels | None, Field(None, description=_COMMON_DOC["channels"])),
        "mode": (Mode, Field("topk", description=_COMMON_DOC["mode"])),
        "slate_action": (str | None, Field(None, min_length=1, max_length=64, description=_COMMON_DOC["slate_action"])),
        "sid_prefix": (list[Annotated[JsonInt, Field(ge=0, le=MAX_CODE)]] | None,
                       Field(None, min_length=1, max_length=MAX_PREFIX, description=_COMMON_DOC["sid_prefix"])),
    }
    recommend = create_model(
        "RecommendRequest", __config__=config,
        __doc__="Recommend for a user whose token sequence is read from the online store (unknown user: cold start).",
        user_id=(str, Field(min_length=1, max_length=max_user_id_chars, pattern=ID_PATTERN)), **common)
    history = create_model(
        "HistoryRecommendRequest", __config__=config,
        __doc__="Recommend for an explicit history of events, oldest first (no online-store read).",
        history=(list[HistoryEvent], Field(max_length=max_history_events,
                                           description=f"at most {max_history_events} events, oldest first")),
        **common)
    return recommend, history


class HistoryEdit(BaseModel):
    model_config = ConfigDict(extra="forbid")
    op: Literal["add", "remove", "set_action"] = Field(description="add an event, remove one, or change its action")
    index: JsonInt | None = Field(None, ge=0, le=100_000, description="the event removed or changed (0 = the oldest "
                                  "the model reads); for add, where the new event goes (default: after the last)")
    item_id: str | None = Field(None, min_length=1, max_length=200, pattern=ID_PATTERN, description="add: the item")
    action: str | None = Field(None, min_length=1, max_length=64, description="add, set_action: the action")


def analysis_models(max_k: int = 100, max_history_events: int = 200, max_user_id_chars: int = 200):
    """(WhatIfRequest, ExplainRequest): a user id or an explicit history (exactly one), with these limits."""
    config = ConfigDict(extra="forbid")
    who = {
        "user_id": (str | None, Field(None, min_length=1, max_length=max_user_id_chars, pattern=ID_PATTERN,
                                      description="read the history from the online store (or give history)")),
        "history": (list[HistoryEvent] | None, Field(None, max_length=max_history_events,
                                                     description="an explicit history, oldest first")),
        "channels": (Channels | None, Field(None, description=_COMMON_DOC["channels"])),
        "value_weights": (dict[str, JsonNumber] | None, Field(None, max_length=MAX_WEIGHTS,
                                                         description=_COMMON_DOC["value_weights"])),
    }
    whatif = create_model(
        "WhatIfRequest", __config__=config,
        __doc__="Score items before and after edits to a history: every action probability and the retrieval "
                "log-probability, and their change.",
        edits=(list[HistoryEdit], Field(min_length=1, max_length=50, description="applied in order")),
        items=(list[Annotated[str, Field(min_length=1, max_length=200, pattern=ID_PATTERN)]] | None,
               Field(None, min_length=1, max_length=max_k,
                     description="the items to score (default: the k best for the unedited history)")),
        k=(JsonInt, Field(10, ge=1, le=max_k, description="how many items when `items` is not given")),
        **who)
    explain = create_model(
        "ExplainRequest", __config__=config,
        __doc__="Which past events an item's action prediction and retrieval score rest on: leave-one-out "
                "occlusion of each event the model reads (exact, one batch).",
        item_id=(str, Field(min_length=1, max_length=200, pattern=ID_PATTERN)),
        action=(str | None, Field(None, min_length=1, max_length=64,
                                  description="the action whose probability is explained (default: the item's "
                                              "most likely action)")),
        **who)
    return whatif, explain


def page_models(max_user_id_chars: int = 200):
    """(HistoryRequest, EventRequest): what the live page reads and writes."""
    config = ConfigDict(extra="forbid")
    user = (str, Field(min_length=1, max_length=max_user_id_chars, pattern=ID_PATTERN))
    history = create_model("HistoryRequest", __config__=config, __doc__="A user's stored history.", user_id=user)
    event = create_model(
        "EventRequest", __config__=config,
        __doc__="An interaction sent to the `interactions` topic, checked as `sidstream produce` checks it.",
        user_id=user, item_id=(str, Field(min_length=1, max_length=200, pattern=ID_PATTERN)),
        action=(str, Field(min_length=1, max_length=64, description="one of the catalogue's actions")))
    return history, event


class ItemScores(BaseModel):
    log_prob: float = Field(description="log P(item's SID | history)")
    dense_score: float | None = Field(None, description="the dense channel's score; null without a dense head")
    value: float = Field(description="the value function over action_probs")
    action_probs: dict[str, float] = Field(description="P(action | history, item)")


class WhatIfItem(BaseModel):
    item_id: str
    before: ItemScores
    after: ItemScores
    change: ItemScores = Field(description="after - before, field by field")


class EventOut(BaseModel):
    item_id: str | None = Field(description="null: the item is no longer in the catalogue")
    action: str
    title: str | None = Field(None, description="the item's title when the catalogue has one")


class HistoryResponse(BaseModel):
    user_id: str
    events: list[EventOut] = Field(description="the events the model reads, oldest first")
    event_count: int = Field(description="events the stream has appended for this user in all")
    last_event_ms: int | None = None
    model_version: str


class EventResponse(BaseModel):
    event_id: str
    user_id: str
    item_id: str
    action: str
    ts: float


class WhatIfResponse(BaseModel):
    user_id: str | None = None
    model_version: str
    history: list[EventOut] = Field(description="the events the model reads, oldest first (edit indices count these)")
    edited_history: list[EventOut]
    items: list[WhatIfItem]


class EventInfluence(BaseModel):
    index: int
    item_id: str | None
    action: str
    log_prob_change: float = Field(description="log P(item's SID) with the event minus without it: how much the "
                                               "retrieval score rests on it")
    dense_score_change: float | None = None
    action_prob_change: dict[str, float] = Field(description="P(action) with the event minus without it")
    attention: float = Field(description="share of attention the event's tokens get from the item's SID positions "
                                         "(a heuristic; see attention_method)")


class ExplainResponse(BaseModel):
    user_id: str | None = None
    model_version: str
    item_id: str
    action: str = Field(description="the action explained")
    method: str = Field(description="how influence is measured")
    scores: ItemScores = Field(description="the item's scores under the whole history")
    events: list[EventInfluence] = Field(description="one per event the model reads, oldest first")
    by_retrieval: list[int] = Field(description="event indices, the largest log_prob_change first")
    by_action: list[int] = Field(description="event indices, the largest change in P(action) first")
    attention_method: str = Field(description="how the attention shares are computed (a heuristic, not exact)")
    by_attention: list[int] = Field(description="event indices, the largest attention share first")


class RecommendedItem(BaseModel):
    item_id: str
    title: str | None = Field(None, description="the item's title when the catalogue has one")
    sid: list[int] = Field(description="the item's semantic id codes (L levels + collision suffix)")
    score: float = Field(description="what the list is ordered by (see order_by)")
    log_prob: float = Field(description="log P(item's SID | history)")
    dense_score: float | None = Field(None, description="the dense channel's score (query . item vector); "
                                                        "null when the model has no dense head")
    channels: list[str] = Field(description="the channel(s) that found the item: generative, dense")
    value: float = Field(description="the value function over action_probs")
    action_probs: dict[str, float] = Field(description="P(action | history, item)")


class RecommendResponse(BaseModel):
    user_id: str | None = None
    items: list[RecommendedItem]
    model_version: str
    catalogue_version: str = Field(description="the vocabulary/codebook version of the catalogue served")
    catalogue_revision: int = Field(description="catalogue-topic updates applied to this replica's trie")
    order_by: Order
    cold_start: bool = Field(False, description="no sequence in the online store: served from an empty history")
    history_events: int = Field(description="events of history the model read")
    sequence_age_ms: int | None = Field(None, description="ms since the user's sequence row was written to the "
                                                          "online store (null: cold start or explicit history)")
    last_event_ms: int | None = None


class ErrorResponse(BaseModel):
    detail: str


class HealthResponse(BaseModel):
    status: str
    model_version: str | None = None
    catalogue_version: str | None = None
    catalogue_revision: int | None = None
    actions: list[str] = Field(default_factory=list, description="the catalogue's action tokens")
    value_weights: dict[str, float] = Field(default_factory=dict, description="the default value-function weights")


@dataclass(frozen=True)
class Query:
    """One request, framework-free: either a user id (history read from the store) or explicit events."""
    k: int
    exclude_seen: bool = True
    value_weights: dict[str, float] | None = None
    order_by: str | None = None
    user_id: str | None = None
    events: tuple[tuple[str, str], ...] | None = None
    sid_prefix: tuple[int, ...] | None = None
    channels: str | None = None
    mode: str = "topk"
    slate_action: str | None = None

    @classmethod
    def from_request(cls, request: BaseModel) -> "Query":
        data = request.model_dump()
        events = data.get("history")
        return cls(k=data["k"], exclude_seen=data["exclude_seen"], value_weights=data.get("value_weights"),
                   order_by=data.get("order_by"), user_id=data.get("user_id"), channels=data.get("channels"),
                   mode=data.get("mode") or "topk", slate_action=data.get("slate_action"),
                   sid_prefix=None if data.get("sid_prefix") is None else tuple(data["sid_prefix"]),
                   events=None if events is None else tuple((e["item_id"], e["action"]) for e in events))


def check_weights(weights: dict[str, float] | None, actions) -> dict[str, float] | None:
    """Weights must name the vocabulary's actions and be finite numbers."""
    if weights is None:
        return None
    unknown = sorted(set(weights) - set(actions))
    if unknown:
        raise RequestError(f"value_weights names unknown actions {unknown}; known: {list(actions)}")
    for name, w in weights.items():
        if not math.isfinite(w) or abs(w) > 1e6:
            raise RequestError(f"value_weights[{name!r}] must be a finite number with |w| <= 1e6, got {w}")
    return dict(weights)


def resolve_order(query: Query, default: str) -> str:
    if query.order_by is not None:
        if query.order_by not in ORDERS:
            raise RequestError(f"order_by must be one of {ORDERS}, got {query.order_by!r}")
        return query.order_by
    return "value" if query.value_weights else default


def check_bearer(header: str | None, api_key: str | None) -> None:
    """Raises RequestError(401) unless the key is off or the header carries it."""
    if not api_key:
        return
    if not header:
        raise RequestError("missing Authorization: Bearer <api key>", 401)
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), api_key.encode()):
        raise RequestError("invalid API key", 401)


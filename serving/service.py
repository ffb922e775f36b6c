"""RecommenderService: the serving core, framework-free (no Ray, no HTTP, no Kafka, no Feast import).

It holds one immutable `ServingState` (model + its manifest, trie + its revision) and answers batches of
`api.Query`. Updates never mutate what a request may be reading: a new model or a changed trie becomes a new
state that replaces the reference in one assignment (writers serialise on a lock; readers take the reference
once per batch), so a request sees one model and one trie from start to end and nothing is dropped while
swapping. A model that fails its checks is refused and logged; the current one keeps serving.
"""
from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from dataclasses import dataclass, field, replace
from typing import Callable, Iterable, Protocol, Sequence

import numpy as np

from catalogue.settings import CatalogueSettings
from catalogue.trie import SidTrie, apply_catalogue_change
from serving.analysis import (ATTENTION_METHOD, Edit, apply_edits, attention_by_event, events_of_tokens,
                              history_tokens, new_event, occlusions, ranked_by)
from serving.api import Query, RequestError, check_weights, resolve_order
from trainer.generation import GenerationConfig, GenerationEngine, GenerationError
from trainer.item_index import ExactIndex, build_item_index, compose_item_vectors, publish_item_vectors
from serving.metrics import ServingMetrics
from serving.settings import ServingSettings
from streams.schemas import CatalogueChange, InteractionEvent, parse_catalogue_entry
from trainer.registry import (RegistryError, UpdateRefused, check_model_update, check_vocab, load_model,
                              model_update_message, parse_model_update)
from trainer.value import default_weights

log = logging.getLogger("sidstream.serving")


class NotReady(RuntimeError):
    """No model has been loaded yet."""


class SequenceReader(Protocol):
    """What the service needs from the feature store: `features.store.UserSequenceStore.read`."""

    def read(self, user_ids: Sequence[str]) -> dict: ...


@dataclass(frozen=True)
class ServingState:
    model: object  # trainer.model.Transformer, eval mode, never mutated once published
    manifest: dict
    trie: object  # catalogue.trie.SidTrie, never mutated once published
    catalogue_revision: int = 0
    index: object = None  # the dense channel's item index (trainer.item_index) over `trie`; None: no dense head
    loaded_at: float = field(default_factory=time.time)

    @property
    def model_version(self) -> str:
        return self.manifest["version"]

    @property
    def window_events(self) -> int | None:
        return (self.manifest.get("train_config") or {}).get("window_events")


@dataclass
class BatchTimings:
    feast_ms: float = 0.0
    generation_ms: float = 0.0
    total_ms: float = 0.0


class RecommenderService:
    def __init__(self, vocab, trie, sequences: SequenceReader | None = None,
                 settings: ServingSettings | None = None, metrics: ServingMetrics | None = None,
                 titles: dict[str, str] | None = None):
        self.vocab = vocab
        self.titles = dict(titles or {})  # item id -> title (the catalogue's, then catalogue-topic entries')
        self.settings = settings or ServingSettings(follow_updates=False)
        self.sequences = sequences
        self.metrics = metrics or ServingMetrics()
        self._pending_trie = trie  # the trie to serve until a model arrives
        self._state: ServingState | None = None
        self._write_lock = threading.Lock()
        self.last_refusal: str | None = None
        self.replica_id = "local"  # the Ray deployment sets its replica's id; responses carry it in a header
        self.default_weights = default_weights(vocab.actions)
        self.metrics.trie_items.set(len(trie))
        # where POST /events sends a checked InteractionEvent (deploy/serve.py: the `interactions` topic); None: off
        self.event_sink: Callable[[InteractionEvent], None] | None = None

    # ----- state
    @property
    def state(self) -> ServingState | None:
        return self._state

    @property
    def ready(self) -> bool:
        return self._state is not None

    @property
    def model_version(self) -> str | None:
        return None if self._state is None else self._state.model_version

    @property
    def trie(self):
        state = self._state
        return self._pending_trie if state is None else state.trie

    # ----- models
    def load_model(self, directory, message: dict | None = None) -> str:
        """Verify and load a registry model directory, then swap it in; returns the version now served.
        Raises UpdateRefused (and keeps the current model) when the model fails a check."""
        try:
            if message is None:
                message = model_update_message(directory)
            directory = check_model_update(message, self.vocab)
            model, manifest = load_model(directory, verify=True)  # hashes the weights it actually reads
            if manifest["sha256"] != message["sha256"]:
                raise UpdateRefused(f"model {message['version']}: weights changed while loading")
            check_vocab(manifest, self.vocab, manifest["version"])
            if model.config.vocab_size != self.vocab.size:
                raise UpdateRefused(f"model {manifest['version']}: vocab_size {model.config.vocab_size} "
                                    f"!= {self.vocab.size}")
        except UpdateRefused as exc:
            return self._refuse(str(exc))
        except (RegistryError, OSError, ValueError, KeyError, RuntimeError) as exc:  # unreadable or wrong shapes
            return self._refuse(f"model {message.get('version') if message else directory}: "
                                f"{type(exc).__name__}: {exc}")
        with self._write_lock:  # the index is built from the trie of the moment, so no change slips between
            old = self._state
            trie = self._pending_trie if old is None else old.trie
            index = self._dense_index(model, manifest, trie) if model.has_dense_head else None
            if old is None:
                self._state = ServingState(model, manifest, trie, index=index)
            else:
                self._state = replace(old, model=model, manifest=manifest, index=index, loaded_at=time.time())
        self.metrics.model_swaps.inc()
        self.metrics.set_model(old.model_version if old else None, manifest["version"])
        created = manifest.get("created")
        # publish -> serving is a swap's lag; a replica's first model (loaded at start, maybe published long
        # before) is not one
        if isinstance(created, (int, float)) and old is not None and old.model_version != manifest["version"]:
            self.metrics.swap_lag.observe(max(0.0, time.time() - created))
        log.info("serving model %s (step %s) from %s", manifest["version"], manifest.get("step"), directory)
        return manifest["version"]

    def _refuse(self, reason: str):
        self.last_refusal = reason
        self.metrics.model_refused.inc()
        log.error("refused model update: %s; still serving %s", reason, self.model_version)
        raise UpdateRefused(reason)

    def handle_model_records(self, records: Sequence[tuple[bytes | None, bytes]]) -> str | None:
        """A batch from the model-updates topic: the newest acceptable message for this model wins (older ones
        in the batch are superseded). Returns the version swapped in, or None."""
        messages = []
        for key, value in records:
            if key is not None and key.decode(errors="replace") != self.settings.model_name:
                continue
            try:
                messages.append(parse_model_update(value))
            except UpdateRefused as exc:
                self.last_refusal = str(exc)
                self.metrics.model_refused.inc()
                log.error("refused model update: %s", exc)
        for message in reversed(messages):
            if message["version"] == self.model_version:
                return None
            try:
                return self.load_model(message["uri"], message)
            except UpdateRefused:
                continue
        return None

    # ----- catalogue
    def apply_catalogue_changes(self, changes: Iterable[CatalogueChange]) -> int:
        """Apply item additions/moves/removals (catalogue.trie.apply_catalogue_change) to a copy of the trie and
        swap it in; returns how many changed it. Refusals are counted and logged with the reason."""
        changes = list(changes)
        if not changes:
            return 0
        with self._write_lock:
            state = self._state
            trie = (state.trie if state else self._pending_trie).snapshot()
            applied = 0
            changed: set[str] = set()
            for change in changes:
                outcome = apply_catalogue_change(trie, change)
                if outcome.status == "applied":
                    applied += 1
                    changed.add(change.item_id)
                    if change.codes is None:
                        self.titles.pop(change.item_id, None)
                    elif change.title:
                        self.titles[change.item_id] = change.title
                elif outcome.status == "refused":
                    self.metrics.catalogue_refused.inc()
                    log.warning("refused catalogue entry %s: %s", change.item_id, outcome.reason)
            if applied:
                if state is None:
                    self._pending_trie = trie
                else:
                    index = self._follow_index(state, trie, changed)
                    self._state = replace(state, trie=trie, index=index,
                                          catalogue_revision=state.catalogue_revision + applied)
        now_ms = time.time() * 1000
        for change in changes:
            start = change.item_produced_ms or change.assigned_ms
            if start:
                self.metrics.item_lag.observe(max(0.0, (now_ms - start) / 1000))
        self.metrics.catalogue_updates.inc(applied)
        self.metrics.trie_items.set(len(trie))
        return applied

    def _dense_index(self, model, manifest: dict, trie):
        """The dense index of a model swapped in: in process, or its version's Qdrant collection."""
        if self.settings.dense_index == "qdrant":
            qdrant = CatalogueSettings()
            return publish_item_vectors(model, self.vocab, trie, manifest["version"], url=qdrant.qdrant_url,
                                        path=qdrant.qdrant_path)
        return build_item_index(model, self.vocab, trie)

    def _follow_index(self, state: ServingState, trie, changed: set[str]):
        """The dense index after catalogue changes: a new or moved item gets its vector (from its SID, plus its
        residual if the model trained on it) at once, a removed one loses it."""
        if state.index is None or not changed:
            return state.index
        present = sorted(i for i in changed if i in trie)
        index = state.index.remove(sorted(changed - set(present)))
        if present:
            items, vectors = compose_item_vectors(state.model, self.vocab, trie, present)
            index = index.upsert(items, vectors)
        return index

    def handle_catalogue_records(self, records: Sequence[tuple[bytes | None, bytes]]) -> int:
        changes = []
        for _, value in records:
            try:
                changes.append(parse_catalogue_entry(value, self.vocab))
            except ValueError as exc:
                self.metrics.catalogue_refused.inc()
                log.warning("refused catalogue entry: %s", exc)
        return self.apply_catalogue_changes(changes)

    # ----- requests
    def recommend(self, queries: Sequence[Query], timings: BatchTimings | None = None) -> list:
        """One result per query, in order: a response dict (api.RecommendResponse's shape) or a RequestError
        (a bad query fails alone, never its batch)."""
        state = self._state
        if state is None:
            raise NotReady("no model loaded yet")
        timings = timings if timings is not None else BatchTimings()
        started = time.perf_counter()
        results: list = [None] * len(queries)
        beam = self.settings.beam_size
        encoder = GenerationEngine(state.model, self.vocab, state.trie, self._config(state, beam, beam),
                                   index=state.index)

        rows: dict[str, object] = {}
        user_ids = sorted({q.user_id for q in queries if q.user_id is not None})
        if user_ids:
            if self.sequences is None:
                raise NotReady("no sequence store configured")
            t0 = time.perf_counter()
            try:
                rows = self.sequences.read(user_ids)
            except Exception as exc:  # the online store is down or not set up: the request may be retried
                log.error("online store read failed: %s", exc)
                raise NotReady(f"online store read failed: {type(exc).__name__}") from exc
            timings.feast_ms = (time.perf_counter() - t0) * 1000
            self.metrics.stage.labels("feast").observe(timings.feast_ms / 1000)

        prepared = []  # (index, beam, tokens, seen, meta)
        now_ms = int(time.time() * 1000)
        for i, q in enumerate(queries):
            try:
                weights = check_weights(q.value_weights, self.vocab.actions)
                order = resolve_order(q, self.settings.order_by)
                if q.k > self.settings.max_k:
                    raise RequestError(f"k={q.k} exceeds the limit {self.settings.max_k}")
                meta = {"user_id": q.user_id, "cold_start": False, "sequence_age_ms": None, "last_event_ms": None}
                if q.events is not None:
                    if len(q.events) > self.settings.max_history_events:
                        raise RequestError(f"history has {len(q.events)} events; the limit is "
                                           f"{self.settings.max_history_events}")
                    tokens = encoder.encode_history(q.events)[1:]
                    seen = {item for item, _ in q.events} if q.exclude_seen else set()
                    events = len(q.events)
                else:
                    row = rows.get(q.user_id)
                    if row is None:
                        tokens, seen, events = [], set(), 0
                        meta["cold_start"] = True
                        self.metrics.cold_starts.inc()
                    else:
                        tokens = list(row.tokens)
                        if tokens and tokens[0] == self.vocab.BOS:
                            tokens = tokens[1:]
                        seen = self.items_in_sequence(state.trie, tokens, encoder) if q.exclude_seen else set()
                        events = len(tokens) // (self.vocab.sid_length + 1)
                        meta["sequence_age_ms"] = max(0, now_ms - int(row.pushed_ms)) if row.pushed_ms else None
                        meta["last_event_ms"] = int(row.last_event_ms) or None
                if q.sid_prefix is not None and len(q.sid_prefix) >= self.vocab.sid_length:
                    raise RequestError(f"sid_prefix has {len(q.sid_prefix)} codes; a prefix has at most "
                                       f"{self.vocab.sid_length - 1}")
                window = encoder._window_events()
                meta["history_events"] = min(events, window)
                beam = max(self.settings.beam_size, q.k)
                channels = self._channels(state, q.channels)
                if q.mode not in ("topk", "slate"):
                    raise RequestError(f"mode must be topk or slate, got {q.mode!r}")
                if q.slate_action is not None and (q.mode != "slate" or q.slate_action not in self.vocab.actions):
                    raise RequestError(f"slate_action {q.slate_action!r} needs mode 'slate' and one of this "
                                       f"catalogue's actions: {list(self.vocab.actions)}")
                # a slate picks each item by the query's own ordering, so its weights and order join the key
                slate = (q.mode, q.slate_action, order, tuple(sorted((weights or {}).items()))) \
                    if q.mode == "slate" else None
                prepared.append((i, (beam, q.sid_prefix, channels, slate), tokens, seen, meta, weights, order))
            except GenerationError as exc:
                results[i] = RequestError(str(exc))
            except RequestError as exc:
                results[i] = exc

        t0 = time.perf_counter()
        for key in sorted({p[1] for p in prepared}, key=lambda k: (k[0], k[1] or (), k[2], k[3] or ())):
            beam, prefix, channels, slate = key
            group = [p for p in prepared if p[1] == key]
            trie = state.trie if prefix is None else self._subtrie(state.trie, prefix)
            # a query ordered by log-probability needs actions for its k best beams only, others for every beam
            top = max(queries[p[0]].k if p[6] == "logprob" else beam for p in group)
            if trie is not None:
                index = state.index
                if index is not None and prefix is not None:  # the dense channel searches the same region
                    items = trie.item_ids()
                    index = ExactIndex(items, state.index.vectors_of(items).numpy())
                histories = [[self.vocab.BOS] + p[2] for p in group]
                if slate is None:
                    engine = GenerationEngine(state.model, self.vocab, trie,
                                              self._config(state, beam, top, channels), index=index)
                    lists = engine.recommend_tokens(histories, [p[3] for p in group])
                else:
                    _, slate_action, slate_order, slate_weights = slate
                    engine = GenerationEngine(state.model, self.vocab, trie, self._config(
                        state, beam, beam, channels, slate_order, dict(slate_weights) or self.default_weights),
                        index=index)
                    lists = engine.slate(histories, [p[3] for p in group], max(queries[p[0]].k for p in group),
                                         slate_action)
            else:
                lists = [[] for _ in group]
            for (i, _, _, _, meta, weights, order), recs in zip(group, lists):
                results[i] = self._response(state, queries[i], recs, meta, weights, order,
                                            keep_order=slate is not None)
        timings.generation_ms = (time.perf_counter() - t0) * 1000
        self.metrics.stage.labels("generation").observe(timings.generation_ms / 1000)
        self.metrics.batch_size.observe(len(queries))
        timings.total_ms = (time.perf_counter() - started) * 1000
        return results

    # ----- the live page's two reads and one write
    def history(self, user_id: str) -> dict:
        """The events of a user's stored sequence the model reads, oldest first, and how many it has seen."""
        state, engine, _, _ = self._analysis_setup(None, [], None, None)
        events, row = self._stored_events(state, user_id)
        window = engine._window_events()
        events = events[-window:] if window else []
        return {"user_id": user_id, "events": [{**e.as_dict(), "title": self.titles.get(e.item_id)} for e in events],
                "event_count": 0 if row is None else int(row.event_count),
                "last_event_ms": None if row is None else (int(row.last_event_ms) or None),
                "model_version": state.model_version}

    def produce_event(self, user_id: str, item_id: str, action: str) -> dict:
        """Check an interaction as `sidstream produce` and the worker would, then send it to the event sink."""
        if self.event_sink is None:
            raise NotReady("this replica has no event sink (no Kafka configured)")
        if action not in self.vocab.actions:
            raise RequestError(f"unknown action {action!r}; this catalogue's actions: {list(self.vocab.actions)}")
        if item_id not in self.trie:
            raise RequestError(f"item {item_id!r} is not in the catalogue")
        now = time.time()
        event = InteractionEvent(event_id=f"ui-{uuid.uuid4().hex}", user_id=user_id, item_id=item_id, action=action,
                                 ts=now)
        try:
            self.event_sink(event)
        except Exception as exc:  # the broker is down: the click may be retried
            log.error("event sink failed: %s", exc)
            raise NotReady(f"could not send the event: {type(exc).__name__}") from exc
        return {"event_id": event.event_id, "user_id": user_id, "item_id": item_id, "action": action, "ts": now}

    def _stored_events(self, state: ServingState, user_id: str):
        """(the events of the user's stored sequence, the row; both empty/None for a user without one)."""
        if self.sequences is None:
            raise NotReady("no sequence store configured")
        try:
            row = self.sequences.read([user_id]).get(user_id)
        except Exception as exc:  # the online store is down or not set up: the request may be retried
            log.error("online store read failed: %s", exc)
            raise NotReady(f"online store read failed: {type(exc).__name__}") from exc
        return ([] if row is None else events_of_tokens(row.tokens, self.vocab, state.trie)), row

    # ----- what-if and attribution (the pure part: serving/analysis.py)
    def whatif(self, user_id: str | None, history, edits: Sequence[Edit], items: Sequence[str] | None = None,
               k: int = 10, channels: str | None = None, value_weights: dict | None = None) -> dict:
        """Items scored before and after edits to a history (api.WhatIfResponse's shape)."""
        state, engine, events, weights = self._analysis_setup(user_id, history, channels, value_weights)
        window = engine._window_events()
        edited = apply_edits(events, edits, self.vocab, state.trie)[-window:] if window else []
        if items is None:
            if k > self.settings.max_k:
                raise RequestError(f"k={k} exceeds the limit {self.settings.max_k}")
            top = GenerationEngine(state.model, self.vocab, state.trie,
                                   self._config(state, max(self.settings.beam_size, k), k, engine.channels),
                                   index=state.index)
            seen = {e.item_id for e in events if e.item_id is not None}
            (best,) = top.recommend_tokens([history_tokens(events, self.vocab.BOS)], [seen])
            items = [r.item_id for r in best[:k]]
        items = list(dict.fromkeys(items))  # each item once, in the order given
        before, after = self._item_scores(engine, [events, edited], items, weights)
        return {"user_id": user_id, "model_version": state.model_version,
                "history": [e.as_dict() for e in events], "edited_history": [e.as_dict() for e in edited],
                "items": [{"item_id": item, "before": b, "after": a, "change": _change(a, b)}
                          for item, b, a in zip(items, before, after)]}

    def explain(self, user_id: str | None, history, item_id: str, action: str | None = None,
                channels: str | None = None, value_weights: dict | None = None) -> dict:
        """Leave-one-out occlusion of every event the model reads, for one item (api.ExplainResponse's shape)."""
        state, engine, events, weights = self._analysis_setup(user_id, history, channels, value_weights)
        if action is not None and action not in self.vocab.actions:
            raise RequestError(f"unknown action {action!r}; this catalogue's actions: {list(self.vocab.actions)}")
        scores = self._item_scores(engine, [events, *occlusions(events)], [item_id], weights)
        whole, without = scores[0][0], [s[0] for s in scores[1:]]
        action = action or max(whole["action_probs"], key=whole["action_probs"].get)
        influence = []
        for index, (event, rest) in enumerate(zip(events, without)):
            change = _change(whole, rest)
            influence.append({**event.as_dict(), "index": index, "log_prob_change": change["log_prob"],
                              "dense_score_change": change["dense_score"],
                              "action_prob_change": change["action_probs"]})
        attention = self._attention(engine, state.trie, events, item_id)
        for event, share in zip(influence, attention):
            event["attention"] = share
        return {"user_id": user_id, "model_version": state.model_version, "item_id": item_id, "action": action,
                "method": "leave-one-out occlusion: each event removed in turn, the item scored again (exact)",
                "attention_method": ATTENTION_METHOD, "scores": whole, "events": influence,
                "by_retrieval": ranked_by([e["log_prob_change"] for e in influence]),
                "by_action": ranked_by([e["action_prob_change"][action] for e in influence]),
                "by_attention": ranked_by(attention)}

    def _attention(self, engine, trie, events, item_id: str) -> list[float]:
        """Each event's attention share from the item's SID positions (analysis.attention_by_event), on the
        same trie snapshot the request's scores came from."""
        tokens = history_tokens(events, self.vocab.BOS) + self.vocab.sid_to_tokens(trie.codes_of(item_id))
        rows = range(len(tokens) - self.vocab.sid_length, len(tokens))
        return attention_by_event(engine.mean_attention(tokens), events, rows)

    def _analysis_setup(self, user_id, history, channels, value_weights):
        """(state, engine, the events the model reads, value weights) of a what-if or explain request."""
        state = self._state
        if state is None:
            raise NotReady("no model loaded yet")
        if (user_id is None) == (history is None):
            raise RequestError("give exactly one of user_id and history")
        weights = check_weights(value_weights, self.vocab.actions) or self.default_weights
        engine = GenerationEngine(state.model, self.vocab, state.trie,
                                  self._config(state, self.settings.beam_size, self.settings.beam_size,
                                               self._channels(state, channels)), index=state.index)
        if history is not None:
            if len(history) > self.settings.max_history_events:
                raise RequestError(f"history has {len(history)} events; the limit is "
                                   f"{self.settings.max_history_events}")
            events = [new_event(item, action, self.vocab, state.trie, f"history event {n}")
                      for n, (item, action) in enumerate(history)]
        else:
            events, _ = self._stored_events(state, user_id)
        window = engine._window_events()
        return state, engine, (events[-window:] if window else []), weights

    def _item_scores(self, engine, histories, items: Sequence[str], weights: dict) -> list[list[dict]]:
        """Each history's scores of the same items (one batch)."""
        try:
            lists = engine.score_items([history_tokens(h, self.vocab.BOS) for h in histories],
                                       [list(items)] * len(histories))
        except GenerationError as exc:
            raise RequestError(str(exc)) from None
        return [[{"log_prob": r.log_prob, "dense_score": r.dense_score, "action_probs": dict(r.action_probs),
                  "value": sum(w * r.action_probs.get(a, 0.0) for a, w in weights.items())} for r in recs]
                for recs in lists]

    def _subtrie(self, trie, prefix: tuple[int, ...]):
        """A trie of the items under a SID prefix (None when there are none): search then cannot leave it."""
        items = trie.items_with_prefix(prefix)
        if not items:
            return None
        sub = SidTrie(self.vocab, capacity=max(16, 2 * len(items)))
        for item in items:
            sub.insert(item, trie.codes_of(item))
        return sub

    def items_in_sequence(self, trie, tokens: list[int], encoder: GenerationEngine) -> set[str]:
        """Items of a stored sequence. The stream worker writes whole `s1..sL+1 action` groups, which are parsed
        in one vectorised lookup; anything else falls back to the engine's token-by-token scan."""
        group = self.vocab.sid_length + 1
        if not tokens or len(tokens) % group:
            return encoder.items_in_tokens(tokens)
        sids = np.asarray(tokens, dtype=np.int64).reshape(-1, group)[:, : group - 1]
        codes = sids - np.asarray(self.vocab.level_offsets[: group - 1], dtype=np.int64)
        if (codes < 0).any() or (codes >= np.asarray(self.vocab.level_sizes[: group - 1])).any():
            return encoder.items_in_tokens(tokens)
        return {item for item in trie.items_at(codes) if item is not None}

    def _config(self, state: ServingState, beam: int, top_k: int, channels: str | None = None,
                order_by: str = "logprob", value_weights: dict | None = None) -> GenerationConfig:
        """The engine returns its `top_k` best candidates by retrieval score, each with its action
        probabilities; the response re-ranks them by the query's own ordering (a slate's engine ranks by it)."""
        return GenerationConfig(beam_size=beam, top_k=top_k, exclude_seen=True, window_events=state.window_events,
                                channels=channels, order_by=order_by, value_weights=value_weights,
                                dense_weight=(state.manifest.get("generation") or {}).get("dense_weight", 1.0))

    @staticmethod
    def _channels(state: ServingState, requested: str | None) -> str:
        """The request's channels (default: both where the model has a dense head)."""
        if state.index is None:
            if requested in ("dense", "both"):
                raise RequestError(f"channels={requested!r}: model {state.model_version} has no dense head; "
                                   f"it serves the generative channel only")
            return "generative"
        return requested or "both"

    def _response(self, state: ServingState, query: Query, recs, meta: dict, weights, order: str,
                  keep_order: bool = False) -> dict:
        weights = weights if weights is not None else self.default_weights
        items = []
        for r in recs:
            value = sum(w * r.action_probs.get(a, 0.0) for a, w in weights.items())
            score = r.retrieval if order == "logprob" else value if order == "value" \
                else math.exp(r.retrieval) * value
            items.append({"item_id": r.item_id, "title": self.titles.get(r.item_id),
                          "sid": list(state.trie.codes_of(r.item_id)), "score": score,
                          "log_prob": r.log_prob, "dense_score": r.dense_score, "channels": list(r.channels),
                          "value": value, "action_probs": r.action_probs})
        if not keep_order:  # a slate keeps its placement order
            items.sort(key=lambda x: -x["score"])
        for item in items[: query.k]:
            self.metrics.score.labels("log_prob").observe(item["log_prob"])
            self.metrics.score.labels("value").observe(item["value"])
        return {**meta, "items": items[: query.k], "model_version": state.model_version,
                "catalogue_version": self.vocab.version, "catalogue_revision": state.catalogue_revision,
                "order_by": order}


def _change(after: dict, before: dict) -> dict:
    """after - before for every score (None where either is None)."""
    def diff(a, b):
        return None if a is None or b is None else a - b
    return {"log_prob": diff(after["log_prob"], before["log_prob"]),
            "dense_score": diff(after["dense_score"], before["dense_score"]),
            "value": after["value"] - before["value"],
            "action_probs": {a: p - before["action_probs"].get(a, 0.0) for a, p in after["action_probs"].items()}}

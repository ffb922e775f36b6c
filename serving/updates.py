"""Following new weights and new items: message checks (pure) and a follower thread over an injected source.

A model update is the registry manifest (trainer/registry.py) plus where the weights live:
    {"name", "uri": <model directory>, "version", "sha256", "step", "metrics", "vocab", ...}
keyed by model name on the `model-updates` topic; `model_update_message(directory)` builds it. A replica
accepts it only when the message, the manifest on disk and the weights' sha256 agree and the model speaks the
catalogue's vocabulary (same layout and codebook version); anything else is refused and logged, and the current
model keeps serving.

A catalogue update is a `streams.schemas.CatalogueEntry` (item id -> SID, or None for a removal) of the same
codebook version.

The Kafka consumer is not here: `TopicFollower` polls any `source` with `poll(timeout_s) -> [(key, value)]`
(deploy/serve.py plugs in a kafka-python reader), so the logic is tested without a broker.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol, Sequence

log = logging.getLogger("sidstream.serving.updates")

REQUIRED = ("uri", "version", "sha256")


class UpdateRefused(ValueError):
    """An update a replica will not apply (corrupt, mismatched or malformed); the current state keeps serving."""


def model_update_message(directory: str | Path, name: str = "sidstream") -> dict:
    """The `model-updates` value for a model directory written by `trainer.registry.save_model`."""
    from trainer.registry import read_manifest

    manifest = read_manifest(directory)
    return {**manifest, "name": name, "uri": str(Path(directory).resolve())}


def parse_model_update(raw: bytes | str | dict) -> dict:
    """The message as a dict with the required fields, or UpdateRefused."""
    if isinstance(raw, (bytes, bytearray)):
        raw = raw.decode("utf-8", errors="replace")
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise UpdateRefused(f"model update is not JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise UpdateRefused(f"model update must be a JSON object, got {type(raw).__name__}")
    missing = [f for f in REQUIRED if not isinstance(raw.get(f), str) or not raw.get(f)]
    if missing:
        raise UpdateRefused(f"model update lacks {missing}")
    return raw


def check_model_update(message: dict, vocab) -> Path:
    """Check a model update against what is on disk and against the catalogue's vocabulary, without loading the
    weights; returns the model directory. The weights' own sha256 is checked again when they are loaded
    (`trainer.registry.load_model`), so a file replaced after this check is still caught."""
    from trainer.registry import RegistryError, read_manifest, sha256_file, WEIGHTS

    directory = Path(message["uri"])
    try:
        manifest = read_manifest(directory)
    except (RegistryError, OSError, json.JSONDecodeError) as exc:
        raise UpdateRefused(f"model {message.get('version')}: {exc}") from None
    for field in ("version", "sha256"):
        if manifest.get(field) != message[field]:
            raise UpdateRefused(f"model {message['version']}: message {field} {message[field]!r} != manifest "
                                f"{manifest.get(field)!r} in {directory}")
    weights = directory / WEIGHTS
    if not weights.is_file():
        raise UpdateRefused(f"model {message['version']}: {weights} is missing")
    if sha256_file(weights) != manifest["sha256"]:
        raise UpdateRefused(f"model {message['version']}: {weights} does not match its sha256 (corrupt or replaced)")
    check_vocab(manifest, vocab, message["version"])
    return directory


def check_vocab(manifest: dict, vocab, version: str) -> None:
    trained_on = manifest.get("vocab")
    if not trained_on:
        raise UpdateRefused(f"model {version}: manifest carries no vocabulary")
    if trained_on.get("version") != vocab.version:
        raise UpdateRefused(f"model {version} was trained on codebook version {trained_on.get('version')}, "
                            f"the catalogue speaks {vocab.version}")
    if trained_on != vocab.to_json():
        raise UpdateRefused(f"model {version}: vocabulary layout differs from the catalogue's "
                            f"({trained_on.get('size')} vs {vocab.size} tokens)")
    size = (manifest.get("model_config") or {}).get("vocab_size")
    if size != vocab.size:
        raise UpdateRefused(f"model {version}: model vocab_size {size} != catalogue vocabulary {vocab.size}")


@dataclass(frozen=True)
class CatalogueChange:
    item_id: str
    codes: tuple[int, ...] | None  # None: removal
    item_produced_ms: int | None = None
    assigned_ms: int | None = None


def parse_catalogue_entry(raw: bytes | str | dict, vocab) -> CatalogueChange:
    """A `catalogue` topic value -> CatalogueChange; UpdateRefused for malformed or other-codebook entries."""
    from streams.schemas import CatalogueEntry, parse

    try:
        entry = parse(CatalogueEntry, raw)
    except ValueError as exc:
        raise UpdateRefused(str(exc)) from None
    if entry.catalogue_version != vocab.version:
        raise UpdateRefused(f"catalogue entry for {entry.item_id!r} has codebook version {entry.catalogue_version}, "
                            f"this replica speaks {vocab.version}")
    codes = None
    if entry.sid is not None:
        codes = tuple(int(c) for c in entry.sid)
        if len(codes) != vocab.sid_length:
            raise UpdateRefused(f"catalogue entry for {entry.item_id!r}: SID {codes} has {len(codes)} codes, "
                                f"expected {vocab.sid_length}")
    return CatalogueChange(entry.item_id, codes, entry.item_produced_ms, entry.assigned_ms)


class RecordSource(Protocol):
    def poll(self, timeout_s: float) -> Sequence[tuple[bytes | None, bytes]]: ...

    def close(self) -> None: ...


class TopicFollower:
    """A daemon thread: poll the source, hand each non-empty batch to `handle`; errors are logged, never fatal.

    `caught_up` is set after the first poll that returns nothing (the backlog has been read)."""

    def __init__(self, name: str, source_factory: Callable[[], RecordSource],
                 handle: Callable[[Sequence[tuple[bytes | None, bytes]]], None], poll_s: float = 0.1):
        self.name, self._factory, self._handle, self.poll_s = name, source_factory, handle, poll_s
        self.stop_event = threading.Event()
        self.caught_up = threading.Event()
        self.batches = 0
        self.errors = 0
        self._thread = threading.Thread(target=self._run, name=f"follow-{name}", daemon=True)

    def start(self) -> "TopicFollower":
        self._thread.start()
        return self

    def _run(self) -> None:
        source = None
        while not self.stop_event.is_set():
            try:
                if source is None:
                    source = self._factory()
                records = source.poll(self.poll_s)
                if records:
                    self._handle(records)
                    self.batches += 1
                else:
                    self.caught_up.set()
            except Exception:  # a broken broker connection or a bug in a handler must not end following
                self.errors += 1
                log.exception("%s follower: poll or apply failed; retrying", self.name)
                time.sleep(min(1.0, self.poll_s * 10))
        if source is not None:
            try:
                source.close()
            except Exception:
                log.debug("%s follower: close failed", self.name, exc_info=True)

    def stop(self, timeout_s: float = 5.0) -> None:
        self.stop_event.set()
        self._thread.join(timeout_s)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

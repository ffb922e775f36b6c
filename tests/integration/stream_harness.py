"""Helpers for stream-worker integration tests: a real worker process, isolated topics, Feast checks."""
from __future__ import annotations

import json
import time
from pathlib import Path

from catalogue.settings import CatalogueSettings
from deploy.streamproc import StreamEnv, WorkerProcess, read_topic  # noqa: F401  (re-exported for the tests)

DATA_DIR = CatalogueSettings().data_dir
BEAUTY = DATA_DIR / "amazon_beauty_2014"


def build_test_catalogue(dataset: Path, out_dir: Path, codes_per_level: int = 256):
    """A real catalogue of the dataset's items from collaborative embeddings (no text model: fast)."""
    from catalogue.catalogue import build_catalogue
    from catalogue.datasets import load_sequences

    sequences = load_sequences(dataset)
    catalogue, _ = build_catalogue([], sequences, out_dir, codes_per_level=codes_per_level, iterations=10,
                                   progress=False, log=lambda *_: None, text_encoder_factory=None)
    return catalogue, sequences


def choose_users(sequences: dict[str, list[str]], events: int) -> list[str]:
    users, total = [], 0
    for user in sorted(sequences, key=int):
        users.append(user)
        total += len(sequences[user])
        if total >= events:
            break
    return users


def wait_for(predicate, timeout_s: float, what: str, worker: WorkerProcess | None = None, interval: float = 1.0):
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except Exception as exc:  # e.g. the worker has not registered the Feast repository yet
            last = f"{type(exc).__name__}: {exc}"
        if last is True:
            return
        if worker is not None and not worker.alive():
            raise AssertionError(f"worker died while waiting for {what}:\n{worker.tail()}")
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what} (last: {last})"
                         + (f"\n{worker.tail()}" if worker else ""))


def dead_letter_reasons(bootstrap: str, topic: str) -> list[str]:
    return [json.loads(r.value)["reason"] for r in read_topic(bootstrap, topic)]

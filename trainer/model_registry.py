"""A versioned model registry on top of `trainer.registry` (one model directory per version).

Layout under `root`:
    versions/<version>/     a `trainer.registry.save_model` directory; its manifest also carries
                            parent, seq, step, consumed offsets, vocabulary and catalogue version, metrics
    LATEST                  the newest published version (one line)
    PINNED                  present when an operator pinned a version: serving follows PINNED over LATEST
    checkpoints/<n>/        the online trainer's resume state (weights, AdamW moments, offsets, replay buffer)
    CHECKPOINT              the current checkpoint's name

Every write is atomic: a version is written in full into a temporary folder and renamed into place, and a
pointer file is replaced with `os.replace`, so a reader (or a trainer killed at any instant) sees either the
old state or the new one. A version's name is `v<seq>-<sha256 prefix>`: ordered, and tied to its weights.
"""
from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from pathlib import Path

from trainer import registry
from trainer.registry import RegistryError

VERSIONS = "versions"
CHECKPOINTS = "checkpoints"
LATEST = "LATEST"
PINNED = "PINNED"
CHECKPOINT = "CHECKPOINT"


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_pointer(path: Path, value: str) -> None:
    """Replace a one-line pointer file atomically (write a temporary file, fsync, rename)."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    with open(tmp, "w") as fh:
        fh.write(value + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def read_pointer(path: Path) -> str | None:
    try:
        value = path.read_text().strip()
    except FileNotFoundError:
        return None
    return value or None


def _rewrite_manifest(directory: Path, manifest: dict) -> None:
    tmp = directory / (registry.MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, directory / registry.MANIFEST)


class ModelRegistry:
    """Versions, the LATEST/PINNED pointers and the trainer's checkpoints under one local directory."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.versions_dir = self.root / VERSIONS
        self.checkpoints_dir = self.root / CHECKPOINTS

    # ----- versions
    def path(self, version: str) -> Path:
        if not version or "/" in version or version.startswith("."):
            raise RegistryError(f"bad version name {version!r}")
        return self.versions_dir / version

    def versions(self) -> list[str]:
        """Published version names, oldest first."""
        if not self.versions_dir.is_dir():
            return []
        names = [p.name for p in self.versions_dir.iterdir() if p.is_dir() and not p.name.startswith(".")]
        return sorted(names, key=lambda n: (self._seq_of(n), n))

    @staticmethod
    def _seq_of(name: str) -> int:
        try:
            return int(name[1:].split("-", 1)[0])
        except ValueError:
            return -1

    def manifest(self, version: str) -> dict:
        directory = self.path(version)
        if not directory.is_dir():
            raise RegistryError(f"version {version!r} is not in the registry {self.root}")
        return registry.read_manifest(directory)

    def list(self) -> list[dict]:
        """One summary row per version, oldest first, with `latest`/`pinned`/`serving` flags."""
        latest, pinned, serving = self.latest(), self.pinned(), self.serving()
        rows = []
        for name in self.versions():
            try:
                m = self.manifest(name)
            except (RegistryError, OSError, json.JSONDecodeError) as exc:
                rows.append({"version": name, "error": str(exc)})
                continue
            rows.append({"version": name, "parent": m.get("parent"), "step": m.get("step"),
                         "created": m.get("created"), "sha256": m.get("sha256"), "metrics": m.get("metrics", {}),
                         "latest": name == latest, "pinned": name == pinned, "serving": name == serving})
        return rows

    def latest(self) -> str | None:
        return read_pointer(self.root / LATEST)

    def pinned(self) -> str | None:
        return read_pointer(self.root / PINNED)

    def serving(self) -> str | None:
        """What replicas should serve: the pinned version when there is one, else the latest."""
        return self.pinned() or self.latest()

    def publish(self, model, vocab, *, step: int, parent: str | None = None, offsets: dict | None = None,
                metrics: dict | None = None, catalogue_version: str | None = None, extra: dict | None = None) -> dict:
        """Write a new version atomically and point LATEST at it. Returns its manifest."""
        self.versions_dir.mkdir(parents=True, exist_ok=True)
        existing = self.versions()
        seq = (self._seq_of(existing[-1]) + 1) if existing else 1
        tmp = self.versions_dir / f".tmp-{uuid.uuid4().hex}"
        try:
            manifest = registry.save_model(tmp, model, vocab, step=step, metrics=metrics, extra={
                **(extra or {}), "parent": parent, "seq": seq, "offsets": dict(offsets or {}),
                "vocab_version": getattr(vocab, "version", None), "catalogue_version": catalogue_version})
            version = f"v{seq:06d}-{manifest['sha256'][:12]}"
            manifest["version"] = version
            _rewrite_manifest(tmp, manifest)
            _fsync_dir(tmp)
            os.rename(tmp, self.path(version))
            _fsync_dir(self.versions_dir)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        write_pointer(self.root / LATEST, version)
        return manifest

    def verify(self, version: str) -> dict:
        """The manifest, after checking the weights against their sha256; RegistryError when they differ."""
        directory = self.path(version)
        manifest = self.manifest(version)
        weights = directory / registry.WEIGHTS
        if not weights.is_file():
            raise RegistryError(f"version {version}: {weights} is missing")
        if registry.sha256_file(weights) != manifest.get("sha256"):
            raise RegistryError(f"version {version}: {weights} does not match its sha256 (corrupt or replaced)")
        return manifest

    def load(self, version: str | None = None):
        """(model, manifest) of `version` (default: the serving one), sha256-verified."""
        version = version or self.serving()
        if version is None:
            raise RegistryError(f"registry {self.root} has no published version")
        self.manifest(version)
        return registry.load_model(self.path(version), verify=True)

    def pin(self, version: str) -> None:
        self.verify(version)
        write_pointer(self.root / PINNED, version)

    def unpin(self) -> None:
        try:
            os.remove(self.root / PINNED)
        except FileNotFoundError:
            pass

    def rollback(self, to: str | None = None) -> str:
        """Pin `to`, or the parent of the version now served (else the one published before it).

        Pinning (not deleting) keeps the trainer's newer versions for inspection; `unpin` resumes following
        LATEST."""
        if to is None:
            current = self.serving()
            if current is None:
                raise RegistryError("nothing is served: no version to roll back from")
            to = self.manifest(current).get("parent")
            if not to or not self.path(to).is_dir():
                names = self.versions()
                index = names.index(current) if current in names else len(names)
                if index == 0:
                    raise RegistryError(f"{current} is the oldest version: nothing to roll back to")
                to = names[index - 1]
        self.pin(to)
        return to

    # ----- the trainer's checkpoints (resume state, not served)
    def save_checkpoint(self, model, vocab, optimizer, *, step: int, state: dict, files: dict[str, bytes] | None = None,
                        keep: int = 2) -> Path:
        """Weights + optimizer + `state` (offsets, counters) (+ extra files), then the CHECKPOINT pointer flip."""
        self.checkpoints_dir.mkdir(parents=True, exist_ok=True)
        name = f"c{time.time_ns():020d}"
        tmp = self.checkpoints_dir / f".tmp-{name}"
        try:
            registry.save_model(tmp, model, vocab, step=step, extra={"checkpoint_state": state}, optimizer=optimizer)
            for filename, data in (files or {}).items():
                with open(tmp / filename, "wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
            _fsync_dir(tmp)
            os.rename(tmp, self.checkpoints_dir / name)
            _fsync_dir(self.checkpoints_dir)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        write_pointer(self.root / CHECKPOINT, name)
        old = sorted(p.name for p in self.checkpoints_dir.iterdir() if p.is_dir() and p.name.startswith("c"))
        for stale in old[:-keep]:
            if stale != name:
                shutil.rmtree(self.checkpoints_dir / stale, ignore_errors=True)
        for p in self.checkpoints_dir.glob(".tmp-*"):  # left by a trainer killed mid-write
            if p != tmp:
                shutil.rmtree(p, ignore_errors=True)
        return self.checkpoints_dir / name

    def checkpoint(self) -> Path | None:
        name = read_pointer(self.root / CHECKPOINT)
        return None if name is None else self.checkpoints_dir / name

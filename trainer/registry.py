"""The model registry format: versioned safetensors weights + a JSON manifest with their sha256.

A model directory holds
    model.safetensors   the weights (tied head stored once, as tok_emb.weight)
    manifest.json       {"format", "version", "sha256", "step", "created", "model_config", "vocab", "metrics", ...}
`version` is a content hash prefix of the weights, so equal weights get equal versions and a replica can
tell whether it already serves them. Training checkpoints add optimizer.safetensors (AdamW moments) and
the training state needed to resume. Nothing is pickled.

A model is announced on `model-updates` as its manifest plus where it lives (`model_update_message`, schema
`streams.schemas.ModelUpdate`). A reader accepts it only when the message, the manifest on disk and the weights'
sha256 agree and the model speaks the reader's vocabulary (same layout and codebook version): `check_model_update`;
anything else is `UpdateRefused`, and the reader keeps the model it has.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch
from pydantic import ValidationError
from safetensors.torch import load_file, save_file

from catalogue.catalogue import sha256_file
from catalogue.vocab import Vocabulary
from streams.schemas import ModelUpdate
from trainer.model import ModelConfig, Transformer

FORMAT = "sidstream.model/1"
WEIGHTS = "model.safetensors"
OPTIMIZER = "optimizer.safetensors"
MANIFEST = "manifest.json"


class RegistryError(ValueError):
    """A model directory that is missing, corrupt or of another format."""


def _weights(model: Transformer) -> dict[str, torch.Tensor]:
    state = model.state_dict()
    state.pop("head.weight", None)  # tied to tok_emb.weight
    return {k: v.detach().contiguous().cpu() for k, v in state.items()}


def _atomic_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def save_model(
    directory: str | Path,
    model: Transformer,
    vocab=None,
    step: int = 0,
    metrics: dict | None = None,
    extra: dict | None = None,
    optimizer: torch.optim.Optimizer | None = None,
) -> dict:
    """Write weights (and optionally optimizer state) then the manifest last, so a reader never sees a
    manifest whose files are incomplete. Returns the manifest."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    weights_path = directory / WEIGHTS
    tmp = directory / (WEIGHTS + ".tmp")
    save_file(_weights(model), str(tmp))
    os.replace(tmp, weights_path)
    digest = sha256_file(weights_path)
    manifest = {
        "format": FORMAT,
        "version": digest[:16],
        "sha256": digest,
        "step": int(step),
        "created": time.time(),
        "model_config": model.config.to_json(),
        "vocab": vocab.to_json() if vocab is not None else None,
        "metrics": metrics or {},
        **(extra or {}),
    }
    if optimizer is not None:
        tensors, layout = optimizer_to_tensors(optimizer)
        opt_path = directory / OPTIMIZER
        save_file(tensors, str(directory / (OPTIMIZER + ".tmp")))
        os.replace(directory / (OPTIMIZER + ".tmp"), opt_path)
        manifest["optimizer"] = {"sha256": sha256_file(opt_path), "param_groups": layout}
    _atomic_json(directory / MANIFEST, manifest)
    return manifest


def read_manifest(directory: str | Path) -> dict:
    path = Path(directory) / MANIFEST
    if not path.exists():
        raise RegistryError(f"{path} not found: not a model directory")
    manifest = json.loads(path.read_text())
    if manifest.get("format") != FORMAT:
        raise RegistryError(f"{path}: format {manifest.get('format')!r}, expected {FORMAT!r}")
    return manifest


def load_model(directory: str | Path, verify: bool = True) -> tuple[Transformer, dict]:
    """(model in eval mode, manifest); the weights' sha256 is checked against the manifest."""
    directory = Path(directory)
    manifest = read_manifest(directory)
    weights_path = directory / WEIGHTS
    if verify and sha256_file(weights_path) != manifest["sha256"]:
        raise RegistryError(f"{weights_path}: sha256 does not match the manifest (corrupt or replaced)")
    model = Transformer(ModelConfig.from_json(manifest["model_config"]))
    state = load_file(str(weights_path))
    state["head.weight"] = state["tok_emb.weight"]
    model.load_state_dict(state)
    return model.eval(), manifest


def load_vocab(manifest: dict) -> Vocabulary:
    if not manifest.get("vocab"):
        raise RegistryError("manifest carries no vocabulary")
    return Vocabulary.from_json(manifest["vocab"])


def optimizer_to_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list[dict]]:
    state = optimizer.state_dict()
    tensors = {}
    for index, slots in state["state"].items():
        for name, value in slots.items():
            value = value if torch.is_tensor(value) else torch.tensor(value)
            tensors[f"{index}.{name}"] = value.detach().contiguous().cpu()
    return tensors, state["param_groups"]


def load_optimizer(directory: str | Path, optimizer: torch.optim.Optimizer, manifest: dict) -> None:
    path = Path(directory) / OPTIMIZER
    if "optimizer" not in manifest or not path.exists():
        raise RegistryError(f"{directory} has no optimizer state to resume from")
    if sha256_file(path) != manifest["optimizer"]["sha256"]:
        raise RegistryError(f"{path}: sha256 does not match the manifest")
    flat = load_file(str(path))
    state: dict[int, dict] = {}
    for key, value in flat.items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": manifest["optimizer"]["param_groups"]})


# ----- model updates (the `model-updates` message and the checks a reader makes before loading it)
class UpdateRefused(ValueError):
    """An update a reader will not apply (corrupt, mismatched or malformed); the current state keeps serving."""


MODEL_UPDATE_REQUIRED = tuple(name for name, f in ModelUpdate.model_fields.items() if f.is_required())


def model_update_message(directory: str | Path, name: str = "sidstream") -> dict:
    """The `model-updates` value for a model directory written by `save_model`."""
    manifest = read_manifest(directory)
    return {**manifest, "name": name, "uri": str(Path(directory).resolve())}


def parse_model_update(raw: bytes | str | dict) -> dict:
    """The message as a dict (the fields it carried, validated by `streams.schemas.ModelUpdate`), or UpdateRefused."""
    if isinstance(raw, (bytes, bytearray)):
        raw = raw.decode("utf-8", errors="replace")
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise UpdateRefused(f"model update is not JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise UpdateRefused(f"model update must be a JSON object, got {type(raw).__name__}")
    try:
        update = ModelUpdate.model_validate(raw)
    except ValidationError as exc:
        errors = exc.errors()
        lacking = [f for f in MODEL_UPDATE_REQUIRED if any(e["loc"][:1] == (f,) for e in errors)]
        if lacking:
            raise UpdateRefused(f"model update lacks {lacking}") from None
        where = ".".join(str(p) for p in errors[0].get("loc", ())) or "value"
        raise UpdateRefused(f"model update: {where}: {errors[0].get('msg')}") from None
    return update.model_dump(by_alias=True, exclude_unset=True)


def check_model_update(message: dict, vocab: Vocabulary) -> Path:
    """Check a model update against what is on disk and against the reader's vocabulary, without loading the
    weights; returns the model directory. The weights' own sha256 is checked again when they are loaded
    (`load_model`), so a file replaced after this check is still caught."""
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


def check_vocab(manifest: dict, vocab: Vocabulary, version: str) -> None:
    """UpdateRefused unless the manifest's model was trained on exactly this vocabulary."""
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

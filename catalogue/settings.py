"""Catalogue settings (env prefix SIDSTREAM_)."""
from __future__ import annotations

from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict

# ../shared/data beside the checkout, where the evaluation data lives; never copied into the repository.
DEFAULT_DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data"


class CatalogueSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SIDSTREAM_", extra="ignore")

    data_dir: Path = DEFAULT_DATA_DIR
    catalogue_dir: Path = Path("var/catalogue")
    qdrant_path: str | None = None  # local-mode folder; None means in-memory
    qdrant_url: str | None = None  # a Qdrant server; wins over qdrant_path when set
    qdrant_collection: str = "items"

# the spaces item vectors (and so SIDs) can be fitted in; here so the CLI parser can name them without torch
EMBEDDING_SOURCES = ("auto", "text", "collaborative")

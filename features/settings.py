"""Feature-store settings (env prefix SIDSTREAM_)."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic_settings import BaseSettings, SettingsConfigDict


class FeatureSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SIDSTREAM_", extra="ignore")

    feast_repo_path: Path = Path("var/feast")  # generated repository: feature_store.yaml + definitions
    feast_project: str = "sidstream"
    online_store: Literal["sqlite", "redis"] = "sqlite"
    redis_url: str = "redis://127.0.0.1:6379"
    # "provider": rows go to the online store as Feast value protos (fast path);
    # "push_source": through FeatureStore.push on the push source (pandas/arrow conversion per batch)
    feast_write_path: Literal["provider", "push_source"] = "provider"

"""Stream settings (env prefix SIDSTREAM_): the Kafka cluster and the topic names of ARCHITECTURE.md."""
from __future__ import annotations

from pydantic import BaseModel
from pydantic_settings import BaseSettings, SettingsConfigDict


class Topics(BaseModel):
    interactions: str = "interactions"
    items: str = "items"
    catalogue: str = "catalogue"  # compacted
    training: str = "training"
    model_updates: str = "model-updates"
    dead_letters: str = "dead-letters"


class StreamSettings(BaseSettings):
    # Nested names use a double underscore: SIDSTREAM_TOPICS__INTERACTIONS=...
    model_config = SettingsConfigDict(env_prefix="SIDSTREAM_", env_nested_delimiter="__", extra="ignore")

    kafka_bootstrap_servers: str = "127.0.0.1:9092"  # where `sidstream up` puts its broker
    topics: Topics = Topics()
    partitions: int = 4

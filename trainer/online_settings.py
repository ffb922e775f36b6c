"""Online post-trainer settings (env prefix SIDSTREAM_): Kafka and topics from streams, plus the trainer's own."""
from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from streams.settings import StreamSettings


class OnlineSettings(StreamSettings):
    model_config = SettingsConfigDict(env_prefix="SIDSTREAM_", env_nested_delimiter="__", extra="ignore")

    registry_dir: Path = Path("var/registry")  # versions/, LATEST, PINNED, checkpoints/ (trainer/model_registry.py)
    catalogue_dir: Path = Path("var/catalogue")  # the same SIDSTREAM_CATALOGUE_DIR as catalogue.settings
    model_name: str = "sidstream"  # key of this model's messages on the model-updates topic
    online_group_id: str = "sidstream-online-trainer"  # the consumer group on the training topic
    torch_threads: int = Field(2, ge=1)
    checkpoint_every_steps: int = Field(20, ge=1)  # checkpoint (and commit offsets) at least this often
    poll_s: float = Field(0.2, gt=0)
    online_metrics_port: int = Field(0, ge=0)  # Prometheus metrics of the trainer on this port (0: off)
    # with SIDSTREAM_DENSE_INDEX=qdrant and a Qdrant server: item-vector collections of this many newest versions
    # are kept (plus the pinned and the served one); older ones are dropped after each publish
    vector_versions_kept: int = Field(3, ge=1)

"""Trainer settings (env prefix SIDSTREAM_)."""
from __future__ import annotations

from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict


class TrainerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SIDSTREAM_", extra="ignore")

    bench_dir: Path = Path("var/bench")  # built catalogues and benchmark run folders (cached between runs)
    torch_threads: int = 2  # the CPU is shared: two threads at most unless told otherwise

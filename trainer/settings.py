"""Trainer settings (env prefix SIDSTREAM_)."""
from __future__ import annotations

from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict

# SIDs of the catalogues that `train pretrain`, `bench quality` and `bench generate` build from a dataset
# (README: on Beauty, collaborative SIDs gave 30% more test Recall@10 than text SIDs at the same training time)
DEFAULT_SID_SOURCE = "collaborative"


class TrainerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SIDSTREAM_", extra="ignore")

    bench_dir: Path = Path("var/bench")  # built catalogues and benchmark run folders (cached between runs)
    torch_threads: int = 2  # the CPU is shared: two threads at most unless told otherwise

"""Settings from the environment (`CAIRN_*`) or a `.env` file; defaults run everything locally."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CAIRN_", env_file=".env", extra="ignore")

    home: Path = Field(default=Path(".cairn"), description="local state: databases, logs")
    database_url: str | None = Field(
        default=None, description="SQLAlchemy async URL; default sqlite+aiosqlite:///<home>/cairn.db"
    )
    temporal_address: str = "localhost:7233"
    temporal_namespace: str = "default"
    temporal_tls: bool = False
    temporal_tls_cert: Path | None = None
    temporal_tls_key: Path | None = None
    temporal_api_key: str | None = None
    journey_task_queue: str = "cairn-journeys"
    delivery_task_queue: str = "cairn-delivery"
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    ui_port: int = 8233
    temporal_port: int = 7233
    journeys_dir: Path = Path("journeys")
    log_level: str = "INFO"
    log_json: bool = False

    @property
    def store_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.home / 'cairn.db').resolve()}"


@lru_cache
def get_settings() -> Settings:
    return Settings()

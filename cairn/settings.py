"""Settings from the environment (`CAIRN_*`) or a `.env` file; defaults run everything locally."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import secrets
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from cairn.journey_run import DELIVERY_TASK_QUEUE, JOURNEY_TASK_QUEUE
from cairn.private_files import write_private


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
    journey_task_queue: str = JOURNEY_TASK_QUEUE
    delivery_task_queue: str = DELIVERY_TASK_QUEUE
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    worker_metrics_port: int | None = Field(
        default=None, ge=1, le=65535,
        description="serve the worker's Prometheus metrics (Cairn's counters and the Temporal "
                    "SDK's) on http://<worker_metrics_host>:<port>/metrics; unset: off")
    worker_metrics_host: str = Field(
        default="0.0.0.0", description="the address the worker's metrics port listens on")
    # Segment's documented limits: a source that respects them is never refused for size.
    max_call_bytes: int = Field(
        default=32 * 1024, gt=0,
        description="largest single call (`/v1/track`...), and largest item of a batch, in bytes")
    max_batch_bytes: int = Field(
        default=500 * 1024, gt=0,
        description="largest `/v1/batch` or `/v1/import` body, in bytes after decompression")
    routing_process: bool = Field(
        default=True,
        description="`cairn api` routes accepted events in a process of its own (both cores "
                    "at work: the API stores and answers, the other process routes); false "
                    "routes inside the API process, after each answer")
    worker_cached_runs: int = Field(
        default=1000, ge=1,
        description="journey runs a worker keeps in memory between their workflow tasks "
                    "(Temporal's `max_cached_workflows`); a run evicted from the cache is "
                    "rebuilt from its history when it next wakes, so this bounds the worker's "
                    "memory however many runs wait")
    worker_strict_sandbox: bool = Field(
        default=False,
        description="import the interpreter's modules afresh for every run, as tests do, so a "
                    "non-deterministic call in workflow code fails at once; costs about 190 KB "
                    "per cached run and 24 ms per new run. Off: imported once, shared by runs")
    ui_port: int = 8233
    temporal_ui_url: str | None = Field(
        default=None,
        description="where people open the Temporal UI (the console links runs there); "
                    "default: http://localhost:<ui_port>, the UI `cairn dev` starts")
    temporal_port: int = 7233
    journeys_dir: Path = Path("journeys")
    log_level: str = "INFO"
    log_json: bool = False

    # Channels: which provider sends each channel. `outbox` records the rendered message in the
    # deliveries ledger instead of sending (no account needed); each provider reads its own
    # CAIRN_<PROVIDER>_* settings (see cairn/channels/).
    email_provider: Literal["outbox", "smtp", "postmark"] = "outbox"
    sms_provider: Literal["outbox", "twilio"] = "outbox"
    whatsapp_provider: Literal["outbox", "twilio"] = "outbox"
    push_provider: Literal["outbox", "fcm"] = "outbox"
    web_push_provider: Literal["outbox", "webpush"] = "outbox"
    notify_provider: Literal["outbox", "slack"] = "outbox"
    facebook_audiences: bool = Field(default=False, description="sync `facebook` audiences")
    google_audiences: bool = Field(default=False, description="sync `google` audiences")
    hubspot_tasks: bool = Field(default=False, description="mirror tasks into HubSpot")
    webhooks_enabled: bool = Field(
        default=True, description="call webhook steps' URLs; false records them only"
    )
    disabled_channels: list[str] = Field(default_factory=list)
    public_url: str = Field(
        default="http://127.0.0.1:8000",
        description="where contacts reach the API: unsubscribe links, provider callbacks",
    )
    secret_key: SecretStr | None = Field(
        default=None,
        description="signs unsubscribe links; default: a random key kept in <home>/secret_key",
    )
    smtp_sink_port: int = Field(default=1025, description="`cairn dev`'s local SMTP sink")
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="web origins allowed to call the API from a browser, comma-separated "
                    "(`https://app.example.com`); none by default: CORS closed")
    inbox_token_seconds: int = Field(
        default=900, gt=0, le=86_400,
        description="how long an inbox token (`POST /v1/contacts/{id}/inbox-token`) is valid")

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return [origin.strip().rstrip("/") for origin in value.split(",") if origin.strip()]
        return value

    payload_encryption: bool = Field(
        default=True,
        description="encrypt Temporal payloads (AES-256-GCM, per-contact data keys); "
                    "false only for tests that must read histories in clear")
    master_keys: SecretStr | None = Field(
        default=None,
        description="master keys wrapping the data keys: `id:base64-of-32-bytes`, comma "
                    "separated, newest first (it encrypts; all decrypt); default: a key "
                    "generated once in <home>/master_key")
    codec_ui_without_key: bool = Field(
        default=False,
        description="let the Temporal UI (an Origin in codec_cors_origins) call the codec "
                    "endpoints without a key; `cairn dev` sets it for its own UI")
    codec_cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="origins (the Temporal UI's) allowed to call /codec/encode and /codec/decode")

    @field_validator("codec_cors_origins", mode="before")
    @classmethod
    def _origins(cls, value: object) -> object:
        """A JSON list (as the environment gives lists) or comma-separated origins."""
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [origin.strip() for origin in text.split(",") if origin.strip()]
        return value

    @property
    def temporal_ui(self) -> str:
        """The Temporal UI's address, without a trailing slash."""
        return (self.temporal_ui_url or f"http://localhost:{self.ui_port}").rstrip("/")

    @property
    def mail_dir(self) -> Path:
        """Where `cairn dev`'s SMTP sink keeps the messages it received."""
        return self.home / "mail"

    def signing_key(self) -> bytes:
        """The key for unsubscribe links: set, or created once per home and kept."""
        if self.secret_key is not None:
            return self.secret_key.get_secret_value().encode()
        path = self.home / "secret_key"
        if not path.exists():
            # another process of the same home may have made it first
            with contextlib.suppress(FileExistsError):
                write_private(path, secrets.token_urlsafe(32))
        return path.read_text(encoding="utf-8").strip().encode()

    def address_key(self) -> bytes:
        """The key of the keyed hashes that keep an erased contact's suppressed addresses:
        derived from the workspace key, so it lives outside the database it protects."""
        return hmac.new(self.signing_key(), b"cairn erased suppressions", hashlib.sha256).digest()

    @property
    def store_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.home / 'cairn.db').resolve()}"


@lru_cache
def get_settings() -> Settings:
    return Settings()

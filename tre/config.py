"""Settings: one object, read from ``TRE_*`` environment variables."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

import platformdirs
from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from tre.errors import InputError
from tre.store import sqlite_url


class Environment(StrEnum):
    DEVELOPMENT = "development"
    PRODUCTION = "production"


def default_home() -> Path:
    return Path(platformdirs.user_data_dir("tre", appauthor=False))


class Settings(BaseSettings):
    """Where the TRE keeps its state. ``TRE_HOME`` holds everything in the embedded mode."""

    model_config = SettingsConfigDict(env_prefix="TRE_", extra="ignore")

    home: Path = Field(default_factory=default_home)
    database_url: str | None = Field(default=None, description="SQLAlchemy URL; default a SQLite file in home.")
    environment: Environment = Environment.DEVELOPMENT
    object_store_url: str | None = Field(
        default=None, description="file:///dir or s3://bucket/prefix; default a directory in home."
    )
    s3_endpoint_url: str | None = Field(default=None, description="S3 endpoint for s3:// stores and sources.")
    vault_addr: str | None = Field(default=None, description="Vault (OpenBao) URL, e.g. http://127.0.0.1:8200.")
    vault_token: SecretStr | None = Field(
        default=None, description="Prefer vault_token_file: env vars leak into dumps."
    )
    vault_token_file: Path | None = None
    extract_memory_limit: str = "1GB"

    @model_validator(mode="after")
    def _production_needs_explicit_database(self) -> Settings:
        if self.environment is Environment.PRODUCTION and self.database_url is None:
            raise ValueError("TRE_DATABASE_URL must be set when TRE_ENVIRONMENT=production")
        return self

    @property
    def store_url(self) -> str:
        return self.database_url or sqlite_url(self.home / "tre.db")

    @property
    def objects_url(self) -> str:
        return self.object_store_url or (self.home / "objects").as_uri()

    def vault_credentials(self) -> tuple[str, str]:
        """The Vault URL and token; InputError naming the settings when either is missing."""
        token = self.vault_token.get_secret_value() if self.vault_token else None
        if self.vault_token_file is not None:
            token = _read_token_file(self.vault_token_file)
        if not self.vault_addr or not token:
            raise InputError(
                "Vault is not configured: set TRE_VAULT_ADDR and TRE_VAULT_TOKEN_FILE ('tre up' sets both)"
            )
        return self.vault_addr, token


def _read_token_file(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise InputError(f"TRE_VAULT_TOKEN_FILE {path}: cannot read it ({exc.strerror})") from None

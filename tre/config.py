"""Settings: one object, read from ``TRE_*`` environment variables."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

import platformdirs
from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

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

    @model_validator(mode="after")
    def _production_needs_explicit_database(self) -> Settings:
        if self.environment is Environment.PRODUCTION and self.database_url is None:
            raise ValueError("TRE_DATABASE_URL must be set when TRE_ENVIRONMENT=production")
        return self

    @property
    def store_url(self) -> str:
        return self.database_url or sqlite_url(self.home / "tre.db")

"""One typed settings object. Built by get_settings() when needed, never at import time."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Everything the embedded default writes lives under `home` (JOURNEY_HOME)."""

    model_config = SettingsConfigDict(env_prefix="JOURNEY_", extra="ignore")

    home: Path = Field(default=Path(".journey"), description="Workspace folder")
    mlflow_tracking_uri: str | None = Field(
        default=None,
        description="MLflow tracking URI (default sqlite:///<home>/mlflow.db)",
    )
    redis_url: str | None = Field(default=None, description="Redis for the Feast online store; default SQLite")
    feast_project: str = "journeyml"
    ingest_chunk_rows: int = Field(default=500_000, ge=1_000)
    api_keys: str = Field(default="", description="Comma-separated API keys")
    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    reload_interval_s: float = Field(default=10.0, gt=0)
    holdout_share: float = Field(default=0.05, ge=0, le=1)
    batch_workers: int = Field(
        default=0, ge=0, le=64, description="Chunks `journey score` scores at once (0: one per core; 1: in sequence)"
    )
    reasons_method: Literal["leaf", "shap"] = Field(
        default="leaf",
        description="How reasons are computed: leaf (TreeSHAP's expectation given the leaves reached, "
        "the cost of a prediction) or shap (exact TreeSHAP, 20-80x the cost)",
    )

    @property
    def root(self) -> Path:
        return self.home.expanduser().resolve()

    @property
    def events_dir(self) -> Path:
        return self.root / "events"

    @property
    def quarantine_dir(self) -> Path:
        return self.root / "quarantine"

    @property
    def customers_path(self) -> Path:
        return self.root / "customers.parquet"

    @property
    def features_dir(self) -> Path:
        return self.root / "features"

    @property
    def feast_dir(self) -> Path:
        return self.root / "feast"

    @property
    def scores_dir(self) -> Path:
        return self.root / "scores"

    @property
    def bundle_dir(self) -> Path:
        return self.root / "bundles"

    @property
    def tracking_uri(self) -> str:
        import os

        if self.mlflow_tracking_uri:
            return self.mlflow_tracking_uri
        if os.environ.get("MLFLOW_TRACKING_URI"):
            return os.environ["MLFLOW_TRACKING_URI"]
        return f"sqlite:///{self.root / 'mlflow.db'}"

    @property
    def api_key_list(self) -> list[str]:
        return [k.strip() for k in self.api_keys.split(",") if k.strip()]


def get_settings() -> Settings:
    return Settings()

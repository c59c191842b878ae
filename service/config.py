"""Service configuration, read from the environment only."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise SystemExit(f"{name} must be an integer, got {raw!r}") from None


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise SystemExit(f"{name} must be a number, got {raw!r}") from None


@dataclass(frozen=True)
class Settings:
    """Everything the service can be told at start.

    ``database_url`` empty means "start an embedded PostgreSQL under ``data_dir``".
    """

    database_url: str = field(default="", repr=False)
    grpc_host: str = "[::]"
    grpc_port: int = 50051
    log_level: str = "INFO"
    log_format: str = "json"
    data_dir: Path = Path(".data")
    db_pool_size: int = 20
    powerschool_timeout: float = 10.0
    powerschool_connections: int = 100
    powerschool_connections_per_host: int = 32
    shutdown_grace: float = 10.0
    roster_page_size: int = 1000
    sync_poll_seconds: float = 30.0
    run_scheduler: bool = True
    worker_concurrency: int = 32
    delivery_lease_seconds: float = 60.0
    delivery_poll_seconds: float = 1.0
    delivery_max_age_hours: float = 24.0
    delivery_backoff_base: float = 1.0
    delivery_backoff_cap: float = 300.0
    breaker_threshold: int = 5
    breaker_cooldown: float = 2.0
    breaker_max_cooldown: float = 30.0

    @classmethod
    def from_env(cls) -> Settings:
        """Read ``DATABASE_URL``, ``GRPC_PORT``, ``LOG_LEVEL``, ``LOG_FORMAT`` and tuning knobs."""
        log_format = os.environ.get("LOG_FORMAT", "json").strip().lower() or "json"
        if log_format not in {"json", "console"}:
            raise SystemExit(f"LOG_FORMAT must be 'json' or 'console', got {log_format!r}")
        return cls(
            database_url=os.environ.get("DATABASE_URL", "").strip(),
            grpc_host=os.environ.get("GRPC_HOST", "[::]").strip() or "[::]",
            grpc_port=_env_int("GRPC_PORT", 50051),
            log_level=os.environ.get("LOG_LEVEL", "INFO").strip().upper() or "INFO",
            log_format=log_format,
            data_dir=Path(os.environ.get("WRITEBACK_DATA_DIR", ".data")),
            db_pool_size=_env_int("DB_POOL_SIZE", 20),
            powerschool_timeout=_env_float("POWERSCHOOL_TIMEOUT", 10.0),
            powerschool_connections_per_host=_env_int("POWERSCHOOL_CONNECTIONS_PER_HOST", 32),
            roster_page_size=_env_int("ROSTER_PAGE_SIZE", 1000),
            sync_poll_seconds=_env_float("SYNC_POLL_SECONDS", 30.0),
            worker_concurrency=_env_int("WORKER_CONCURRENCY", 32),
            delivery_lease_seconds=_env_float("DELIVERY_LEASE_SECONDS", 60.0),
            delivery_poll_seconds=_env_float("DELIVERY_POLL_SECONDS", 1.0),
            delivery_max_age_hours=_env_float("DELIVERY_MAX_AGE_HOURS", 24.0),
            delivery_backoff_base=_env_float("DELIVERY_BACKOFF_BASE", 1.0),
            delivery_backoff_cap=_env_float("DELIVERY_BACKOFF_CAP", 300.0),
            breaker_threshold=_env_int("BREAKER_THRESHOLD", 5),
            breaker_cooldown=_env_float("BREAKER_COOLDOWN", 2.0),
            breaker_max_cooldown=_env_float("BREAKER_MAX_COOLDOWN", 30.0),
        )

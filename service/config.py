"""Service configuration, read from the environment only and validated before anything starts.

Each tunable is declared once, below, as a :class:`Settings` field that names its environment
variable, how its text is read and what is allowed. :meth:`Settings.from_env` and the README's
configuration table (checked by a test) both follow these declarations.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
_LOG_FORMATS = ("json", "console")
ROLES = ("api", "worker", "all")
"""What a process runs: the gRPC API only, delivery and the roster schedule only, or both."""
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


@dataclass(frozen=True)
class EnvVar:
    """One environment variable: the Settings field it sets, how its text is read (``parse``
    raises ValueError on text outside ``allowed``), and whether its value is a secret that
    must never be echoed back."""

    name: str
    field: str
    default: object
    parse: Callable[[str], object]
    allowed: str
    secret: bool = False


class ConfigError(ValueError):
    """The environment holds one or more bad values; ``problems`` names each variable, its
    value (unless secret) and what is allowed. ``str()`` is one line."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid configuration: " + "; ".join(problems))
        self.problems = problems


def _integer(low: int, high: int | None = None) -> tuple[Callable[[str], int], str]:
    def parse(text: str) -> int:
        value = int(text)
        if value < low or (high is not None and value > high):
            raise ValueError(text)
        return value

    allowed = f"an integer from {low} to {high}" if high is not None else f"an integer >= {low}"
    return parse, allowed


def _seconds(*, zero_ok: bool = False) -> tuple[Callable[[str], float], str]:
    def parse(text: str) -> float:
        value = float(text)
        # NaN and infinity compare oddly and would make every wait forever or never.
        if not (value >= 0 if zero_ok else value > 0) or value == float("inf"):
            raise ValueError(text)
        return value

    return parse, ("a number >= 0" if zero_ok else "a number > 0")


def _choice(options: tuple[str, ...], *, upper: bool) -> tuple[Callable[[str], str], str]:
    def parse(text: str) -> str:
        value = text.upper() if upper else text.lower()
        if value not in options:
            raise ValueError(text)
        return value

    return parse, "one of " + ", ".join(options)


def _boolean(text: str) -> bool:
    if text.lower() in _TRUE:
        return True
    if text.lower() in _FALSE:
        return False
    raise ValueError(text)


def _text(text: str) -> str:
    return text


def _bootstrap_token(text: str) -> str:
    # A short or guessable bootstrap token would be the weakest way into every district.
    if len(text) < 32 or any(c.isspace() for c in text):
        raise ValueError("too short")
    return text


def _postgres_url(text: str) -> str:
    if not text.startswith(("postgresql://", "postgres://")):
        raise ValueError("not a PostgreSQL URL")
    return text


SECRET_KEY_BYTES = 32


def parse_secret_keys(text: str) -> tuple[bytes, ...]:
    """Keys from comma- or newline-separated base64 text, each 32 bytes (AES-256); raises
    ValueError naming the position of a bad one, never its text."""
    keys = []
    for n, part in enumerate(p.strip() for p in text.replace("\n", ",").split(",")):
        if not part:
            continue  # a trailing comma or newline
        try:
            key = base64.b64decode(part, validate=True)
        except binascii.Error:
            key = b""
        if len(key) != SECRET_KEY_BYTES:
            raise ValueError(f"key {n + 1} is not {SECRET_KEY_BYTES} bytes of base64")
        keys.append(key)
    if not keys:
        raise ValueError("no key")
    return tuple(keys)


def _secret_keys(text: str) -> str:
    parse_secret_keys(text)
    return text


def parse_allowlist(text: str) -> tuple[str, ...]:
    """Host names (lower case) and CIDRs (normalised) from comma-separated text; ValueError
    for an entry that is neither."""
    entries = []
    for part in (p.strip().lower().rstrip(".") for p in text.split(",")):
        if not part:
            continue
        if "/" in part or part.replace(".", "").isdigit() or ":" in part:
            entries.append(str(ipaddress.ip_network(part, strict=False)))
        elif all(label and label.replace("-", "").isalnum() for label in part.split(".")):
            entries.append(part)
        else:
            raise ValueError(part)
    return tuple(entries)


def _allowlist(text: str) -> str:
    return ",".join(parse_allowlist(text))


def _http_url(text: str) -> str:
    if not text.startswith(("http://", "https://")):
        raise ValueError("not an http(s) URL")
    return text


def _file(text: str) -> str:
    if not Path(text).is_file():
        raise ValueError("no such file")
    return text


def _env(
    name: str,
    default: T,
    reader: tuple[Callable[[str], object], str],
    *,
    secret: bool = False,
) -> T:
    parse, allowed = reader
    return field(
        default=default,
        repr=not secret,
        metadata={"env": (name, parse, allowed, secret)},
    )


@dataclass(frozen=True)
class Settings:
    """Everything the service can be told at start.

    ``database_url`` empty means "start an embedded PostgreSQL under ``data_dir``".
    """

    database_url: str = _env(
        "DATABASE_URL", "", (_postgres_url, "a postgresql:// or postgres:// URL"), secret=True
    )
    grpc_host: str = _env("GRPC_HOST", "[::]", (_text, "a host name or address"))
    grpc_port: int = _env("GRPC_PORT", 50051, _integer(0, 65535))
    log_level: str = _env("LOG_LEVEL", "INFO", _choice(_LOG_LEVELS, upper=True))
    log_format: str = _env("LOG_FORMAT", "json", _choice(_LOG_FORMATS, upper=False))
    log_flush_ms: float = _env("LOG_FLUSH_MS", 50.0, _seconds(zero_ok=True))
    metrics_port: int = _env("METRICS_PORT", 9464, _integer(0, 65535))
    data_dir: Path = _env(  # noqa: RUF009  (a Path is immutable)
        "WRITEBACK_DATA_DIR", Path(".data"), (Path, "a directory path")
    )
    db_pool_size: int = _env("DB_POOL_SIZE", 20, _integer(1, 1000))
    submit_batch_max_rows: int = _env("SUBMIT_BATCH_MAX_ROWS", 100, _integer(1, 1000))
    submit_batch_wait_ms: float = _env("SUBMIT_BATCH_WAIT_MS", 5.0, _seconds(zero_ok=True))
    powerschool_timeout: float = _env("POWERSCHOOL_TIMEOUT", 10.0, _seconds())
    powerschool_connections: int = _env("POWERSCHOOL_CONNECTIONS", 100, _integer(1))
    powerschool_connections_per_host: int = _env(
        "POWERSCHOOL_CONNECTIONS_PER_HOST", 32, _integer(1)
    )
    shutdown_grace: float = _env("SHUTDOWN_GRACE_SECONDS", 10.0, _seconds(zero_ok=True))
    shutdown_drain: float = _env("SHUTDOWN_DRAIN_SECONDS", 5.0, _seconds(zero_ok=True))
    grpc_reuse_port: bool = _env("GRPC_REUSE_PORT", False, (_boolean, "true or false"))
    # Issue 13: what a process does, and how many serve one port on a host.
    role: str = _env("ROLE", "all", _choice(ROLES, upper=False))
    grpc_processes: int = _env("GRPC_PROCESSES", 1, _integer(1, 64))
    otlp_endpoint: str = _env(
        "OTEL_EXPORTER_OTLP_ENDPOINT", "", (_http_url, "an http:// or https:// URL")
    )
    roster_page_size: int = _env("ROSTER_PAGE_SIZE", 1000, _integer(1, 10_000))
    sync_poll_seconds: float = _env("SYNC_POLL_SECONDS", 30.0, _seconds())
    full_sync_interval: float = _env("FULL_SYNC_INTERVAL", 86_400.0, _seconds())
    run_scheduler: bool = _env("SYNC_SCHEDULER", True, (_boolean, "true or false"))
    worker_concurrency: int = _env("WORKER_CONCURRENCY", 32, _integer(1, 10_000))
    delivery_lease_seconds: float = _env("DELIVERY_LEASE_SECONDS", 60.0, _seconds())
    delivery_poll_seconds: float = _env("DELIVERY_POLL_SECONDS", 1.0, _seconds())
    delivery_max_age_hours: float = _env("DELIVERY_MAX_AGE_HOURS", 24.0, _seconds())
    delivery_backoff_base: float = _env("DELIVERY_BACKOFF_BASE", 1.0, _seconds())
    delivery_backoff_cap: float = _env("DELIVERY_BACKOFF_CAP", 300.0, _seconds())
    breaker_threshold: int = _env("BREAKER_THRESHOLD", 5, _integer(1))
    breaker_cooldown: float = _env("BREAKER_COOLDOWN", 2.0, _seconds())
    breaker_max_cooldown: float = _env("BREAKER_MAX_COOLDOWN", 30.0, _seconds())
    # Secrets at rest and outbound calls (issue 11).
    secret_key: str = _env(
        "WRITEBACK_SECRET_KEY",
        "",
        (_secret_keys, "comma-separated base64 keys of 32 bytes (head -c32 /dev/urandom | base64)"),
        secret=True,
    )
    secret_key_file: str = _env("WRITEBACK_SECRET_KEY_FILE", "", (_text, "a file path"))
    allow_insecure_upstreams: bool = _env(
        "ALLOW_INSECURE_UPSTREAMS", False, (_boolean, "true or false")
    )
    upstream_allowlist: str = _env(
        "UPSTREAM_ALLOWLIST", "", (_allowlist, "comma-separated host names or CIDRs")
    )
    auth: str = _env("AUTH", "on", _choice(("on", "off"), upper=False))
    bootstrap_admin_token: str = _env(
        "WRITEBACK_BOOTSTRAP_ADMIN_TOKEN",
        "",
        (_bootstrap_token, "at least 32 characters, no spaces"),
        secret=True,
    )
    tls_cert: str = _env("GRPC_TLS_CERT", "", (_file, "a PEM certificate file"))
    tls_key: str = _env("GRPC_TLS_KEY", "", (_file, "a PEM private key file"))
    tls_client_ca: str = _env("GRPC_TLS_CLIENT_CA", "", (_file, "a PEM file of CA certificates"))
    grpc_max_receive_bytes: int = _env(
        "GRPC_MAX_RECEIVE_BYTES", 16 * 1024 * 1024, _integer(1024 * 1024, 256 * 1024 * 1024)
    )
    caller_rate_limit: int = _env("CALLER_RATE_LIMIT", 1000, _integer(0, 1_000_000))
    rpc_default_deadline: float = _env("RPC_DEFAULT_DEADLINE", 120.0, _seconds())
    rpc_max_deadline: float = _env("RPC_MAX_DEADLINE", 600.0, _seconds())
    # The hot path (issue 13).
    student_cache_size: int = _env("STUDENT_CACHE_SIZE", 50_000, _integer(0, 10_000_000))
    uvloop: bool = _env("UVLOOP", True, (_boolean, "true or false"))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Settings from ``environ`` (the process environment by default); unset or blank
        variables keep their defaults. Raises :class:`ConfigError` listing every bad
        variable at once."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        problems: list[str] = []
        bad: set[str] = set()
        for var in variables():
            raw = env.get(var.name, "").strip()
            if not raw:
                continue
            try:
                values[var.field] = var.parse(raw)
            except ValueError:
                bad.add(var.name)
                shown = "(hidden)" if var.secret else repr(raw)
                problems.append(f"{var.name}={shown} (allowed: {var.allowed})")
        settings = cls(**values)
        problems += _inconsistencies(settings, bad)
        if problems:
            raise ConfigError(problems)
        return settings


def _inconsistencies(s: Settings, bad: set[str]) -> list[str]:
    """Pairs of variables that are each fine alone but contradict each other (pairs with a
    variable already reported as ``bad`` are not judged on its default)."""
    pairs = [
        (
            "DELIVERY_BACKOFF_BASE",
            s.delivery_backoff_base,
            "DELIVERY_BACKOFF_CAP",
            s.delivery_backoff_cap,
        ),
        ("BREAKER_COOLDOWN", s.breaker_cooldown, "BREAKER_MAX_COOLDOWN", s.breaker_max_cooldown),
        (
            "POWERSCHOOL_CONNECTIONS_PER_HOST",
            s.powerschool_connections_per_host,
            "POWERSCHOOL_CONNECTIONS",
            s.powerschool_connections,
        ),
        (
            "RPC_DEFAULT_DEADLINE",
            s.rpc_default_deadline,
            "RPC_MAX_DEADLINE",
            s.rpc_max_deadline,
        ),
    ]
    problems = [
        f"{low}={low_value:g} must not exceed {high}={high_value:g}"
        for low, low_value, high, high_value in pairs
        if low_value > high_value and not {low, high} & bad
    ]
    if s.grpc_processes > 1 and s.grpc_port == 0 and not {"GRPC_PROCESSES", "GRPC_PORT"} & bad:
        problems.append("GRPC_PROCESSES above 1 needs a fixed GRPC_PORT (not 0) to share")
    tls = {"GRPC_TLS_CERT", "GRPC_TLS_KEY", "GRPC_TLS_CLIENT_CA"}
    if bool(s.tls_cert) != bool(s.tls_key) and not tls & bad:
        problems.append("GRPC_TLS_CERT and GRPC_TLS_KEY must be set together")
    if s.tls_client_ca and not s.tls_cert and not tls & bad:
        problems.append("GRPC_TLS_CLIENT_CA needs GRPC_TLS_CERT and GRPC_TLS_KEY (a TLS port)")
    identities = {"WRITEBACK_BOOTSTRAP_ADMIN_TOKEN", "GRPC_TLS_CLIENT_CA", "DATABASE_URL"}
    if (
        s.auth == "on"
        and s.database_url
        and not s.bootstrap_admin_token
        and not s.tls_client_ca
        and not identities & bad
    ):
        problems.append(
            "with DATABASE_URL set, AUTH=on needs an identity source: "
            "WRITEBACK_BOOTSTRAP_ADMIN_TOKEN or GRPC_TLS_CLIENT_CA "
            "(or AUTH=off, not for production)"
        )
    return problems


def variables() -> list[EnvVar]:
    """Every environment variable the settings read, in declaration order."""
    out = []
    for f in fields(Settings):
        name, parse, allowed, secret = f.metadata["env"]
        out.append(EnvVar(name, f.name, f.default, parse, allowed, secret))
    return out

"""One typed configuration object, built once at start-up.

Precedence, lowest to highest: the defaults below < a TOML file <
``ACTORCHAT_*`` environment variables < explicit overrides (CLI flags or
keyword arguments). Every field is validated once, in ``Config.validate``,
with a message that names the setting; nothing deep inside reads globals.

A file may use top-level keys (``mock_tokens = 20``) or sections whose name
prefixes the key (``[mock]`` ``tokens = 20``). Named models live under
``[models.NAME]``.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import os
import re
import secrets
import socket
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, get_type_hints

from actorchat._redact import redact
from actorchat.errors import ConfigurationError

log = logging.getLogger("actorchat.config")

__all__ = ["Config", "ModelConfig", "load_config"]

ENV_PREFIX = "ACTORCHAT_"
#: A node id: safe inside a Redis key and its hash tag (no ``{``, ``}``, ``:``).
_NODE_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


def _new_node_id() -> str:
    """``host-pid-random``: unique per process, readable in ``live_nodes()``."""
    host = re.sub(r"[^A-Za-z0-9.-]", "-", socket.gethostname())[:40] or "node"
    return f"{host}-{os.getpid()}-{secrets.token_hex(3)}"


RESTART_TYPES = ("permanent", "transient", "temporary")


@dataclass(slots=True)
class ModelConfig:
    """A named model: which provider serves it and how to reach it."""

    name: str
    provider: str = "mock"
    model: str = ""
    base_url: str = ""
    api_key_env: str = ""
    api_key_file: str = ""
    context_window: int = 8192
    max_tokens: int = 1024
    temperature: float | None = None
    system_prompt: str | None = None
    connect_timeout: float = 10.0
    first_token_timeout: float = 30.0
    idle_timeout: float = 30.0
    max_attempts: int = 3
    max_concurrency: int = 64
    requests_per_minute: float = 0.0
    max_waiting: int = 10_000
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Config:
    """Every setting of an actorchat process, with its default."""

    # Store
    data_dir: Path = Path("actorchat-data")
    store: str = "sqlite"
    sqlite_synchronous: str = "NORMAL"
    #: ``store = "postgres"``: a libpq URL (``postgresql://user@host:5432/db``);
    #: left out of ``repr``: it may hold the password.
    database_url: str = field(default="", repr=False)
    #: A file holding the database password (else the URL's, or ``PGPASSWORD``).
    database_password_file: str = ""
    database_pool_size: int = 10

    # Cluster (membership and placement; see actorchat/cluster/)
    #: A Redis URL (``redis://host:6379/0``); empty: a single process, no
    #: cluster. Left out of ``repr``: it may hold the password.
    redis_url: str = field(default="", repr=False)
    #: This process's name in the cluster; empty: generated at start
    #: (host name, pid and a random suffix).
    node_id: str = ""
    #: Seconds a node's lease lasts; it is renewed every third of it.
    lease_ttl: float = 5.0
    #: Seconds a call to Redis may take (connect, read, write).
    redis_timeout: float = 2.0

    # The embedded deterministic model
    mock_tokens: int = 40
    mock_delay_ms: float = 20.0
    mock_failure_rate: float = 0.0
    mock_crash_rate: float = 0.0

    # Models
    default_model: str = "mock"
    system_prompt: str = ""
    models: dict[str, ModelConfig] = field(default_factory=dict)

    # Supervision (per conversation, OTP-style)
    restart: str = "permanent"
    max_restarts: int = 3
    max_seconds: float = 5.0

    # Conversations
    idle_timeout: float = 600.0
    max_queued_messages: int = 100
    max_content_chars: int = 100_000
    history_limit: int = 50
    subscriber_queue: int = 1000
    #: Tune CPython's collector for many long-lived actors: raise the
    #: thresholds at start, freeze what bulk starts and restart bursts
    #: create, pause it during those bursts and a mass stop (process-wide).
    gc_freeze: bool = True

    # Server
    host: str = "127.0.0.1"
    port: int = 8000
    jwt_secret: str = ""
    log_level: str = "INFO"
    # Server: auth, heartbeat, limits (PROTOCOL.md rule 14), shutdown
    jwt_leeway: float = 30.0
    dev_token_ttl: float = 86_400.0
    allowed_origins: str = ""
    auth_timeout: float = 10.0
    ping_interval: float = 25.0
    send_timeout: float = 30.0
    max_frame_bytes: int = 1_048_576
    outbound_queue: int = 16_384
    socket_send_buffer: int = 0
    rate_limit_messages: int = 30
    rate_limit_window: float = 10.0
    max_connections: int = 10_000
    max_batch: int = 10_000
    max_broadcast: int = 10_000
    max_conversations_per_user: int = 100_000
    max_page: int = 1000
    reply_timeout: float = 300.0
    shutdown_grace: float = 30.0
    #: Directory of the web app served at ``/``; empty: the checkout's
    #: ``web/`` when present; ``off``: serve the API only.
    web_dir: str = ""
    log_format: str = "text"

    def validate(self) -> Config:
        """Check every field once; raise ``ConfigurationError`` naming it."""
        problems: list[str] = []
        # Config(data_dir="~/...") from Python: any path-like, as from a file.
        try:
            self.data_dir = Path(self.data_dir).expanduser()
        except TypeError:
            problems.append(f"data_dir: must be a path (got {self.data_dir!r})")

        def need(ok: bool, name: str, why: str) -> None:
            if not ok:
                value = getattr(self, name)
                if name in ("database_url", "redis_url"):  # passwords stay out of messages
                    value = redact(str(value))
                problems.append(f"{name}: {why} (got {value!r})")

        # The kind itself is checked where stores are made (``create_store``):
        # the store registry sits on a floor above the configuration.
        need(bool(self.store), "store", "must name a store kind")
        need(
            self.sqlite_synchronous.upper() in ("OFF", "NORMAL", "FULL", "EXTRA"),
            "sqlite_synchronous",
            "must be OFF, NORMAL, FULL or EXTRA",
        )
        if self.store == "postgres":
            need(
                self.database_url.startswith(("postgresql://", "postgres://")),
                "database_url",
                "store = 'postgres' needs a postgresql:// URL",
            )
        need(
            not self.redis_url or self.redis_url.startswith(("redis://", "rediss://", "unix://")),
            "redis_url",
            "must be a redis://, rediss:// or unix:// URL (empty: no cluster)",
        )
        if not self.node_id:
            self.node_id = _new_node_id()
        need(
            _NODE_ID.fullmatch(self.node_id) is not None,
            "node_id",
            "must be 1-64 letters, digits, '.', '_' or '-'",
        )
        need(self.lease_ttl >= 0.1, "lease_ttl", "must be at least 0.1 (seconds)")
        need(self.redis_timeout > 0, "redis_timeout", "must be > 0")
        need(self.database_pool_size >= 1, "database_pool_size", "must be at least 1")
        need(self.mock_tokens >= 1, "mock_tokens", "must be at least 1")
        need(self.mock_delay_ms >= 0, "mock_delay_ms", "must be >= 0")
        need(0 <= self.mock_failure_rate <= 1, "mock_failure_rate", "must be within 0..1")
        need(0 <= self.mock_crash_rate <= 1, "mock_crash_rate", "must be within 0..1")
        need(self.restart in RESTART_TYPES, "restart", f"must be one of {RESTART_TYPES}")
        need(self.max_restarts >= 0, "max_restarts", "must be >= 0")
        need(self.max_seconds > 0, "max_seconds", "must be > 0")
        need(self.idle_timeout >= 0, "idle_timeout", "must be >= 0 (0 disables)")
        need(self.max_queued_messages >= 1, "max_queued_messages", "must be at least 1")
        need(self.max_content_chars >= 1, "max_content_chars", "must be at least 1")
        need(self.history_limit >= 0, "history_limit", "must be >= 0")
        need(self.subscriber_queue >= 2, "subscriber_queue", "must be at least 2")
        need(0 <= self.port < 65536, "port", "must be a TCP port (0: any free port)")
        need(self.jwt_leeway >= 0, "jwt_leeway", "must be >= 0")
        need(self.dev_token_ttl > 0, "dev_token_ttl", "must be > 0")
        need(self.auth_timeout > 0, "auth_timeout", "must be > 0")
        need(self.ping_interval >= 0, "ping_interval", "must be >= 0 (0 disables)")
        need(self.send_timeout > 0, "send_timeout", "must be > 0")
        need(self.max_frame_bytes >= 1024, "max_frame_bytes", "must be at least 1024")
        need(self.outbound_queue >= 2, "outbound_queue", "must be at least 2")
        need(self.socket_send_buffer >= 0, "socket_send_buffer", "must be >= 0 (0: the kernel's)")
        need(self.rate_limit_messages >= 1, "rate_limit_messages", "must be at least 1")
        need(self.rate_limit_window > 0, "rate_limit_window", "must be > 0")
        need(self.max_connections >= 1, "max_connections", "must be at least 1")
        need(self.max_batch >= 1, "max_batch", "must be at least 1")
        need(self.max_broadcast >= 1, "max_broadcast", "must be at least 1")
        need(self.max_conversations_per_user >= 1, "max_conversations_per_user", "must be >= 1")
        need(self.max_page >= 1, "max_page", "must be at least 1")
        need(self.reply_timeout > 0, "reply_timeout", "must be > 0")
        need(self.shutdown_grace >= 0, "shutdown_grace", "must be >= 0")
        need(self.log_format in ("text", "json"), "log_format", "must be 'text' or 'json'")
        if self.default_model not in self.all_models():
            problems.append(
                f"default_model: no model named {self.default_model!r} "
                f"(configured: {sorted(self.all_models())})"
            )
        if len(problems) == 1:
            raise ConfigurationError(f"invalid configuration: {problems[0]}")
        if problems:
            raise ConfigurationError("invalid configuration:\n  " + "\n  ".join(problems))
        return self

    def all_models(self) -> dict[str, ModelConfig]:
        """The configured models, with the embedded ``mock`` always present."""
        models = dict(self.models)
        models.setdefault("mock", ModelConfig(name="mock", provider="mock", model="mock"))
        return models

    def replace(self, **changes: Any) -> Config:
        """Return a copy with some fields changed (and validated)."""
        return dataclasses.replace(self, **changes).validate()


_HINTS: dict[str, Any] | None = None


def _hints() -> dict[str, Any]:
    global _HINTS
    if _HINTS is None:
        _HINTS = get_type_hints(Config)
    return _HINTS


def _coerce(name: str, value: Any) -> Any:
    """Turn a string (env, CLI) or TOML value into the field's type."""
    hint = _hints()[name]
    try:
        if hint is bool:
            if isinstance(value, str):
                low = value.strip().lower()
                if low in ("1", "true", "yes", "on"):
                    return True
                if low in ("0", "false", "no", "off", ""):
                    return False
                raise ValueError(value)
            return bool(value)
        if hint is int:
            if isinstance(value, bool):
                raise ValueError(value)
            return int(str(value).replace("_", ""))
        if hint is float:
            return float(value)
        if hint is Path:
            return Path(str(value)).expanduser()
        if hint is str:
            return str(value)
    except (TypeError, ValueError) as exc:
        typename = getattr(hint, "__name__", str(hint))
        msg = f"invalid configuration: {name}: must be {typename} (got {value!r})"
        raise ConfigurationError(msg) from exc
    return value


def _model_from(name: str, raw: Mapping[str, Any]) -> ModelConfig:
    known = {f.name for f in fields(ModelConfig)} - {"name", "options"}
    kwargs: dict[str, Any] = {k: v for k, v in raw.items() if k in known}
    options = {k: v for k, v in raw.items() if k not in known and k != "name"}
    try:
        return ModelConfig(name=name, options=options, **kwargs)
    except TypeError as exc:
        msg = f"invalid configuration: models.{name}: {exc}"
        raise ConfigurationError(msg) from exc


def _flatten(raw: Mapping[str, Any]) -> dict[str, Any]:
    names = {f.name for f in fields(Config)}
    flat: dict[str, Any] = {}
    for key, value in raw.items():
        if key == "models":
            if not isinstance(value, Mapping):
                raise ConfigurationError("invalid configuration: [models] must be a table")
            flat["models"] = {n: _model_from(n, m) for n, m in value.items()}
        elif isinstance(value, Mapping):
            for sub, subvalue in value.items():
                flat[f"{key}_{sub}"] = subvalue
        else:
            flat[key] = value
    unknown = sorted(set(flat) - names)
    if unknown:
        msg = f"invalid configuration: unknown settings {unknown}"
        raise ConfigurationError(msg)
    return flat


def _warn_misspelt(env: Mapping[str, str]) -> None:
    """Warn about ``ACTORCHAT_*`` variables that look like a setting but are not one.

    Not an error: tools around actorchat use the prefix for their own
    variables. Only near misses (``ACTORCHAT_MOCK_TOKEN``) are reported.
    """
    known = [ENV_PREFIX + f.name.upper() for f in fields(Config) if f.name != "models"]
    for key in env:
        if key.startswith(ENV_PREFIX) and key not in known and key != ENV_PREFIX + "CONFIG":
            close = difflib.get_close_matches(key, known, n=1, cutoff=0.85)
            if close:
                log.warning("ignoring %s: no such setting (did you mean %s?)", key, close[0])


def load_config(
    path: str | os.PathLike[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    **overrides: Any,
) -> Config:
    """Build the configuration: defaults < file < environment < overrides.

    ``path`` defaults to ``$ACTORCHAT_CONFIG`` when that is set. Overrides
    whose value is ``None`` are ignored, so CLI parsers can pass every flag.
    """
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    path = path or env.get(ENV_PREFIX + "CONFIG") or None
    if path:
        try:
            with open(path, "rb") as fh:
                values.update(_flatten(tomllib.load(fh)))
        except OSError as exc:
            msg = f"cannot read config file {path}: {exc.strerror}"
            raise ConfigurationError(msg) from exc
        except tomllib.TOMLDecodeError as exc:
            msg = f"config file {path} is not valid TOML: {exc}"
            raise ConfigurationError(msg) from exc
    for f in fields(Config):
        if f.name == "models":
            continue
        raw = env.get(ENV_PREFIX + f.name.upper())
        if raw is not None:
            values[f.name] = raw
    _warn_misspelt(env)
    values.update({k: v for k, v in overrides.items() if v is not None})
    unknown = sorted(set(values) - {f.name for f in fields(Config)})
    if unknown:
        msg = f"invalid configuration: unknown settings {unknown}"
        raise ConfigurationError(msg)
    typed = {k: (v if k == "models" else _coerce(k, v)) for k, v in values.items()}
    return Config(**typed).validate()

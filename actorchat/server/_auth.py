"""Who is calling: HS256 JWTs checked with PyJWT, and the embedded dev auth.

A token's ``sub`` is the user id (a string, RFC 7519), ``exp`` is required,
and ``role: "admin"`` opens the operations endpoints. With no secret
configured the server runs in *dev mode*: it signs with a random secret of
its own, hands tokens out at ``POST /api/v1/auth/token``, and lets everyone
use the operations endpoints. Configuring ``jwt_secret``
(``ACTORCHAT_JWT_SECRET``) turns all of that off.

The dev secret is kept in the data dir (``dev-auth.key``, mode 0600, made on
first start): a dev token is good for ``dev_token_ttl`` as promised, across
restarts, and on every process that shares the data dir. Clients that save
their token and reconnect would otherwise loop on 4001 after each restart.
"""

from __future__ import annotations

import logging
import os
import secrets
import stat
import time
from dataclasses import dataclass
from pathlib import Path

import jwt

from actorchat._validate import check_no_nul
from actorchat.errors import AuthError, AuthRequired, ConfigurationError, InvalidRequest

__all__ = ["DEV_KEY_FILE", "Authenticator", "Identity", "load_dev_key"]

log = logging.getLogger("actorchat.server")

#: The dev-mode signing key's file, in the data dir.
DEV_KEY_FILE = "dev-auth.key"

_ALGORITHM = "HS256"
#: Longest user id accepted, in dev tokens and in ``sub``.
MAX_USER_ID = 128


@dataclass(slots=True, frozen=True)
class Identity:
    """An authenticated caller: user id, token expiry (epoch seconds), admin flag."""

    user_id: str
    expires_at: float
    admin: bool = False


def load_dev_key(path: Path) -> str:
    """The dev-mode signing key kept at ``path``; made (mode 0600) if missing.

    Made in a temporary file and linked into place, so that processes
    starting at once on one data dir agree on one key: the first link wins
    and the others read it.
    """
    try:
        return _read_key(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise _key_error(path, exc) from exc
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(32) + "\n")
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # another process made it first: use theirs
        return _read_key(path)
    except OSError as exc:
        raise _key_error(path, exc) from exc
    finally:
        tmp.unlink(missing_ok=True)


def _read_key(path: Path) -> str:
    with open(path, encoding="ascii") as f:
        mode = os.fstat(f.fileno()).st_mode
        key = f.read().strip()
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("%s can be read by others; it signs dev tokens: chmod 600 it", path)
    if len(key) < 16:
        msg = f"{path}: the dev auth key is missing or too short; delete the file to make a new one"
        raise ConfigurationError(msg)
    return key


def _key_error(path: Path, exc: OSError) -> ConfigurationError:
    reason = exc.strerror or str(exc)
    return ConfigurationError(
        f"data_dir: cannot keep the dev auth key in {path}: {reason} "
        "(set --data-dir / ACTORCHAT_DATA_DIR, or ACTORCHAT_JWT_SECRET)"
    )


class Authenticator:
    """Verifies tokens and, in dev mode, issues them.

    Args:
        secret: the HS256 key; empty means dev mode.
        leeway: seconds of clock skew tolerated on ``exp``, ``nbf`` and ``iat``.
        dev_token_ttl: default lifetime of dev tokens, in seconds.
        dev_key: dev mode's signing key (``load_dev_key``); without one, a
            key of this process's own, and tokens die with it.
    """

    def __init__(
        self,
        secret: str,
        leeway: float = 30.0,
        dev_token_ttl: float = 86_400.0,
        dev_key: str | None = None,
    ) -> None:
        self.dev_mode = not secret
        self._key = secret or dev_key or secrets.token_urlsafe(32)
        self.leeway = leeway
        self.dev_token_ttl = dev_token_ttl

    def verify(self, token: object) -> Identity:
        """The identity a token proves; raises ``AuthError`` otherwise.

        ``AuthRequired`` when there is no token at all, ``AuthError`` when it
        is malformed, wrongly signed, expired, or lacks ``sub`` or ``exp``.
        """
        if token is None or token == "":
            raise AuthRequired("a token is required")
        if not isinstance(token, str):
            raise AuthError("the token must be a string")
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=[_ALGORITHM],
                leeway=self.leeway,
                options={"require": ["exp", "sub"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise AuthError("the token has expired") from exc
        except jwt.MissingRequiredClaimError as exc:
            raise AuthError(
                f"the token has no {exc.claim!r} claim (sub and exp are required)"
            ) from exc
        except jwt.PyJWTError as exc:
            raise AuthError("the token is invalid") from exc
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub or len(sub) > MAX_USER_ID or "\x00" in sub:
            raise AuthError("the token's sub must be a non-empty string")
        exp = claims.get("exp")
        if not isinstance(exp, int | float):
            raise AuthError("the token's exp must be a number")
        admin = claims.get("role") == "admin" or self.dev_mode
        return Identity(sub, float(exp) + self.leeway, admin)

    def issue(self, user_id: object, expires_in: object = None, role: object = None) -> str:
        """A signed token for ``user_id`` (dev auth and tests)."""
        if not isinstance(user_id, str) or not user_id or len(user_id) > MAX_USER_ID:
            raise InvalidRequest(f"user_id must be a string of 1 to {MAX_USER_ID} characters")
        check_no_nul(user_id, "user_id")
        ttl = self.dev_token_ttl if expires_in is None else expires_in
        if not isinstance(ttl, int | float) or isinstance(ttl, bool) or not 0 < ttl <= 10**8:
            raise InvalidRequest("expires_in must be a number of seconds > 0")
        now = int(time.time())
        claims: dict[str, object] = {"sub": user_id, "iat": now, "exp": now + int(max(ttl, 1))}
        if role is not None:
            if not isinstance(role, str):
                raise InvalidRequest("role must be a string")
            claims["role"] = role
        return jwt.encode(claims, self._key, algorithm=_ALGORITHM)

"""Who is calling: HS256 JWTs checked with PyJWT, and the embedded dev auth.

A token's ``sub`` is the user id (a string, RFC 7519), ``exp`` is required,
and ``role: "admin"`` opens the operations endpoints. With no secret
configured the server runs in *dev mode*: it signs with a random secret of
its own, hands tokens out at ``POST /api/v1/auth/token``, and lets everyone
use the operations endpoints. Configuring ``jwt_secret``
(``ACTORCHAT_JWT_SECRET``) turns all of that off.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass

import jwt

from actorchat.errors import AuthError, AuthRequired, InvalidRequest

__all__ = ["Authenticator", "Identity"]

_ALGORITHM = "HS256"
#: Longest user id accepted, in dev tokens and in ``sub``.
MAX_USER_ID = 128


@dataclass(slots=True, frozen=True)
class Identity:
    """An authenticated caller: user id, token expiry (epoch seconds), admin flag."""

    user_id: str
    expires_at: float
    admin: bool = False


class Authenticator:
    """Verifies tokens and, in dev mode, issues them.

    Args:
        secret: the HS256 key; empty means dev mode with a per-process key.
        leeway: seconds of clock skew tolerated on ``exp``, ``nbf`` and ``iat``.
        dev_token_ttl: default lifetime of dev tokens, in seconds.
    """

    def __init__(self, secret: str, leeway: float = 30.0, dev_token_ttl: float = 86_400.0) -> None:
        self.dev_mode = not secret
        # A dev key lives as long as the process: tokens die with it, and a
        # token minted for one dev server never opens another.
        self._key = secret or secrets.token_urlsafe(32)
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
        if not isinstance(sub, str) or not sub or len(sub) > MAX_USER_ID:
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

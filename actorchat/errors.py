"""The exceptions actorchat raises, under one root.

Every error that crosses a public boundary (the Python API, the store, a
provider, the wire protocol) is one of these. Low-level errors are wrapped at
the boundary with ``raise ... from exc`` so that callers catch one tree and
still see the cause::

    ActorchatError
    ├── ConfigurationError        bad settings, or gevent not monkey-patched
    ├── NotFound                  no such conversation or message
    ├── Forbidden                 the conversation belongs to another user
    ├── InvalidRequest            a call or frame with a missing or wrong field
    │   ├── MessageTooLong        content over the configured limit
    │   ├── InvalidJSON           a frame or body that is not a JSON object
    │   └── UnknownType           a frame whose ``type`` the protocol does not define
    ├── RateLimited               too many messages; carries ``retry_after``
    ├── Overloaded                a configured capacity is full
    ├── ConversationError         a conversation could not do what was asked
    │   ├── ConversationFailed    it crashed past its restart intensity
    │   └── ConversationCrashed   it crashed while holding the request
    ├── ProviderError             the model backend failed (after retries)
    │   └── Timeout               the model did not answer in time
    ├── StoreError                the store could not read or write
    │   └── Fenced                a newer owner took the conversation over
    └── AuthError                 invalid or expired credentials
        └── AuthRequired          no credentials where they are needed

The protocol's error codes are derived from this tree in one table,
``error_code()``, so the server never decides a code anywhere else.
"""

from __future__ import annotations

__all__ = [
    "ActorchatError",
    "AuthError",
    "AuthRequired",
    "ConfigurationError",
    "ConversationCrashed",
    "ConversationError",
    "ConversationFailed",
    "Fenced",
    "Forbidden",
    "InvalidJSON",
    "InvalidRequest",
    "MessageTooLong",
    "NotFound",
    "Overloaded",
    "ProviderError",
    "RateLimited",
    "StoreError",
    "Timeout",
    "UnknownType",
    "error_code",
]


class ActorchatError(Exception):
    """Root of every error actorchat raises on purpose."""

    #: The protocol error code; subclasses override it.
    code: str = "INTERNAL_ERROR"


class ConfigurationError(ActorchatError):
    """Settings are invalid, or the process is not set up to run actors."""


class NotFound(ActorchatError):
    """No conversation (or message) has the given id."""

    code = "NOT_FOUND"


class Forbidden(ActorchatError):
    """The conversation exists but belongs to another user."""

    code = "FORBIDDEN"


class InvalidRequest(ActorchatError):
    """A request is malformed: a field is missing or has the wrong type."""

    code = "INVALID_MESSAGE"


class MessageTooLong(InvalidRequest):
    """Message content is longer than the configured limit."""

    code = "MESSAGE_TOO_LONG"


class InvalidJSON(InvalidRequest):
    """A frame (or request body) is not a JSON object."""

    code = "INVALID_JSON"


class UnknownType(InvalidRequest):
    """A frame names a ``type`` the protocol does not define."""

    code = "UNKNOWN_TYPE"


class RateLimited(ActorchatError):
    """The caller sent more than its rate allows."""

    code = "RATE_LIMITED"

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Overloaded(ActorchatError):
    """A configured capacity (queue, connections, conversations) is full."""

    code = "OVERLOADED"


class ConversationError(ActorchatError):
    """A conversation could not carry out the request."""


class ConversationFailed(ConversationError):
    """The conversation crashed more often than its restart intensity allows.

    It stays failed; its history can still be read from the store.
    """


class ConversationCrashed(ConversationError):
    """The conversation crashed and could not hand the request on."""


class ProviderError(ActorchatError):
    """The model backend failed, after any retries."""

    code = "PROVIDER_ERROR"


class Timeout(ProviderError):
    """The model (or an internal wait) did not answer in time."""

    code = "TIMEOUT"


class StoreError(ActorchatError):
    """The store could not read or write."""


class Fenced(StoreError):
    """A write carried an owner epoch older than the conversation's.

    Another process (with a newer epoch) owns the conversation now; this
    one must stop writing to it. A client told this reconnects, and its
    next request reaches the new owner.
    """

    code = "CONVERSATION_MOVED"


class AuthError(ActorchatError):
    """Credentials are invalid or expired."""

    code = "AUTH_FAILED"


class AuthRequired(AuthError):
    """No credentials were given where they are needed."""

    code = "AUTH_REQUIRED"


def error_code(exc: BaseException) -> str:
    """Map any exception to its protocol error code.

    The one place where codes are decided: anything outside the tree is an
    ``INTERNAL_ERROR`` and its details never reach a client.
    """
    if isinstance(exc, ActorchatError):
        return exc.code
    return "INTERNAL_ERROR"

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
    ├── ClusterError              the cluster's coordinator (Redis) failed or refused
    └── AuthError                 invalid or expired credentials
        └── AuthRequired          no credentials where they are needed

Each class carries its protocol error code (``code``) and the HTTP status
of a response that reports it (``http_status``): that is the one table.
``error_code()`` reads the code of any exception, ``HTTP_STATUS`` (code ->
status) is collected from the classes, and ``code_for_status()`` answers the
other way round for the HTTP errors the web framework raises by itself, so
the server never decides a code or a status anywhere else.
"""

from __future__ import annotations

__all__ = [
    "HTTP_STATUS",
    "ActorchatError",
    "AuthError",
    "AuthRequired",
    "ClusterError",
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
    "code_for_status",
    "error_code",
]


class ActorchatError(Exception):
    """Root of every error actorchat raises on purpose."""

    #: The protocol error code; subclasses override it.
    code: str = "INTERNAL_ERROR"
    #: The HTTP status of a response carrying this error; subclasses override it.
    http_status: int = 500


class ConfigurationError(ActorchatError):
    """Settings are invalid, or the process is not set up to run actors."""


class NotFound(ActorchatError):
    """No conversation (or message) has the given id."""

    code = "NOT_FOUND"
    http_status = 404


class Forbidden(ActorchatError):
    """The conversation exists but belongs to another user."""

    code = "FORBIDDEN"
    http_status = 403


class InvalidRequest(ActorchatError):
    """A request is malformed: a field is missing or has the wrong type."""

    code = "INVALID_MESSAGE"
    http_status = 400


class MessageTooLong(InvalidRequest):
    """Message content is longer than the configured limit."""

    code = "MESSAGE_TOO_LONG"
    http_status = 413


class InvalidJSON(InvalidRequest):
    """A frame (or request body) is not a JSON object."""

    code = "INVALID_JSON"
    http_status = 400


class UnknownType(InvalidRequest):
    """A frame names a ``type`` the protocol does not define."""

    code = "UNKNOWN_TYPE"
    http_status = 400


class RateLimited(ActorchatError):
    """The caller sent more than its rate allows."""

    code = "RATE_LIMITED"
    http_status = 429

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Overloaded(ActorchatError):
    """A configured capacity (queue, connections, conversations) is full."""

    code = "OVERLOADED"
    http_status = 503


class ConversationError(ActorchatError):
    """A conversation could not carry out the request."""


class ConversationFailed(ConversationError):
    """The conversation crashed more often than its restart intensity allows.

    It stays failed; its history can still be read from the store. A request
    that needs it running is refused (409: the conversation's state, not the
    request, is at fault).
    """

    code = "CONVERSATION_FAILED"
    http_status = 409


class ConversationCrashed(ConversationError):
    """The conversation crashed and could not hand the request on."""


class ProviderError(ActorchatError):
    """The model backend failed, after any retries."""

    code = "PROVIDER_ERROR"
    http_status = 502


class Timeout(ProviderError):
    """The model (or an internal wait) did not answer in time."""

    code = "TIMEOUT"
    http_status = 504


class StoreError(ActorchatError):
    """The store could not read or write."""


class Fenced(StoreError):
    """A write carried an owner epoch older than the conversation's.

    Another process (with a newer epoch) owns the conversation now; this
    one must stop writing to it. A client told this reconnects, and its
    next request reaches the new owner.
    """

    code = "CONVERSATION_MOVED"
    http_status = 409


class ClusterError(ActorchatError):
    """The cluster's coordinator (Redis) could not be reached or refused a call.

    Raised by ``actorchat.cluster`` for every failure of membership or the
    directory, with one line saying what was being done (never a password);
    the redis-py error is its ``__cause__``.
    """

    code = "CLUSTER_UNAVAILABLE"
    http_status = 503


class AuthError(ActorchatError):
    """Credentials are invalid or expired."""

    code = "AUTH_FAILED"
    http_status = 401


class AuthRequired(AuthError):
    """No credentials were given where they are needed."""

    code = "AUTH_REQUIRED"
    http_status = 401


def error_code(exc: BaseException) -> str:
    """Map any exception to its protocol error code.

    The one place where codes are decided: anything outside the tree is an
    ``INTERNAL_ERROR`` and its details never reach a client.
    """
    if isinstance(exc, ActorchatError):
        return exc.code
    return "INTERNAL_ERROR"


def _tree(root: type[ActorchatError]) -> list[type[ActorchatError]]:
    """``root`` and its subclasses, each before its own subclasses, in definition order."""
    out = [root]
    for sub in root.__subclasses__():
        out.extend(_tree(sub))
    return out


def _statuses() -> dict[str, int]:
    table: dict[str, int] = {}
    for cls in _tree(ActorchatError):
        if table.setdefault(cls.code, cls.http_status) != cls.http_status:
            raise AssertionError(f"{cls.__name__}: code {cls.code} has two HTTP statuses")
    return table


#: The HTTP status of each protocol error code, read from the classes above.
HTTP_STATUS: dict[str, int] = _statuses()

# The other way round: each status's most general class (a parent is met
# before its subclasses), so 400 is INVALID_MESSAGE, not one of its kinds.
_CODE_OF_STATUS: dict[int, str] = {}
for _cls in _tree(ActorchatError):
    _CODE_OF_STATUS.setdefault(_cls.http_status, _cls.code)
del _cls


def code_for_status(status: int) -> str:
    """The protocol code of an HTTP error that was not raised as one of these classes.

    For what the web framework refuses by itself (no such route, a body
    over the limit): the code of the most general class answered with that
    status. Any other 4xx (a method the route does not take, say) is a
    malformed request like a 400; anything else is ``INTERNAL_ERROR``.
    """
    code = _CODE_OF_STATUS.get(status)
    if code is not None:
        return code
    if 400 <= status < 500:
        return InvalidRequest.code
    return ActorchatError.code

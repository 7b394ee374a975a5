"""Shared plumbing of the providers that stream Server-Sent Events over HTTP.

One module of ~600 lines on purpose: retries, timeouts, the read loop and
error mapping change together (a retry is only safe before the first delta
reached the read loop), and splitting them would spread one policy over files.

``HttpProvider`` does everything that is not about one API's format, so
that the OpenAI and Anthropic providers (and a third party's) only build a
request body and parse events:

- One pooled ``requests.Session`` per provider, its pool sized to the
  model's ``max_concurrency``, so that streams reuse warm connections.
- Timeouts, per model: ``connect_timeout`` to open the connection;
  ``first_token_timeout``, a deadline from sending the request to the first
  text delta (pings and role-only chunks do not count); ``idle_timeout``,
  the longest silence of the connection once text flows (the socket's read
  timeout, which applies to every read).
- Retries with exponential backoff and jitter on connection errors, 408,
  429, 5xx (529 included) and streams that break, but only while no text
  has been yielded: once a delta reached the conversation, a failure ends
  the reply, so that no text is ever duplicated. ``Retry-After`` (and
  ``retry-after-ms``) is honoured.
- The response is closed in a ``finally``: when a reply is cancelled the
  upstream connection really closes, and the backend stops generating.
- API keys come from the environment (``api_key_env``) or a file
  (``api_key_file``) only; they are never logged nor put in an error.

``requests`` and ``sseclient`` are imported when a provider is built, not
when this module is: importing actorchat must not import ``ssl`` before
``actorchat.patch()`` runs.

Options read from ``ModelConfig.options`` (the ``[models.NAME]`` table):
``backoff_base`` (s, default 0.5), ``backoff_max`` (s, default 8),
``max_retry_after`` (s, default 60: a longer ``Retry-After`` fails at
once), ``headers`` (extra request headers), ``extra_body`` (merged into
the JSON body), ``trust_env`` (default true: honour the proxy variables,
read once when the provider is built).
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import time
from abc import abstractmethod
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import gevent

from actorchat._records import Usage
from actorchat.config import ModelConfig
from actorchat.errors import ConfigurationError, ProviderError, Timeout
from actorchat.providers._base import GenerationRequest, Provider, StreamEnd, StreamItem
from actorchat.providers._context import FittedContext, fit_context

if TYPE_CHECKING:
    import requests

__all__ = [
    "Attempt",
    "HttpProvider",
    "backoff_delay",
    "option",
    "parse_retry_after",
    "read_api_key",
]

log = logging.getLogger("actorchat.providers")

_ERRNO_TEXT = re.compile(r"\[Errno -?\d+\] ([^)'\"\]]+)")


_SURROGATE = re.compile("[\ud800-\udfff]")


def _text(delta: str) -> str:
    """``delta`` as text UTF-8 can hold: a lone surrogate (JSON can escape one) becomes U+FFFD.

    Stored as it came, it failed the reply's write to the store.
    """
    return _SURROGATE.sub("\ufffd", delta)


def _os_reason(exc: BaseException) -> str:
    """The innermost reason (``Connection refused``) in a ``requests`` error.

    ``requests`` wraps urllib3's error, which wraps the system's: the text of
    the outer ones repeats the URL and their classes.
    """
    found = _ERRNO_TEXT.findall(str(exc))
    if found:
        return str(found[-1]).strip()
    inner: BaseException = exc
    for _ in range(8):  # .reason (urllib3), then the last exception among the args
        nested = getattr(inner, "reason", None)
        if not isinstance(nested, BaseException):
            nested = next((a for a in reversed(inner.args) if isinstance(a, BaseException)), None)
        if nested is None:
            break
        inner = nested
    return str(inner) or type(inner).__name__


#: How long to wait for the end of a response after its last event, so that
#: the connection goes back to the pool instead of being closed.
_DRAIN_TIMEOUT = 0.5
#: How much of an error response's body is read for its message.
_ERROR_BODY_BYTES = 4096
_RETRY_STATUSES = frozenset({408, 429})


def read_api_key(model: ModelConfig, env: Mapping[str, str] | None = None) -> str | None:
    """The model's API key, from ``api_key_env`` or else ``api_key_file``.

    Returns None when neither is configured (local servers need no key).
    Raises ``ConfigurationError`` when one is configured but gives nothing,
    naming the variable or file, never the key.
    """
    env = os.environ if env is None else env
    if model.api_key_env:
        value = env.get(model.api_key_env, "").strip()
        if value:
            return value
        if not model.api_key_file:
            msg = (
                f"model {model.name!r}: the environment variable {model.api_key_env} "
                "(api_key_env) is not set or empty"
            )
            raise ConfigurationError(msg)
    if model.api_key_file:
        path = Path(model.api_key_file).expanduser()
        try:
            value = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            msg = f"model {model.name!r}: cannot read api_key_file {path}: {exc.strerror}"
            raise ConfigurationError(msg) from None
        if not value:
            raise ConfigurationError(f"model {model.name!r}: api_key_file {path} is empty")
        return value
    return None


def option(model: ModelConfig, name: str, default: Any, kind: type | tuple[type, ...]) -> Any:
    """A provider option from ``ModelConfig.options``, type-checked once."""
    value = model.options.get(name, default)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind):
        msg = f"model {model.name!r}: option {name} has the wrong type (got {value!r})"
        raise ConfigurationError(msg)
    return value


def parse_retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds a backend asks us to wait (``retry-after-ms`` or ``Retry-After``).

    ``Retry-After`` may be seconds or an HTTP date; None when absent or
    unreadable.
    """
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            return max(float(millis) / 1000.0, 0.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    import email.utils  # lazily, as it pulls in socket

    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - (time.time() if now is None else now), 0.0)


def backoff_delay(retry: int, base: float, cap: float, rng: random.Random) -> float:
    """Wait before retry number ``retry`` (1-based): exponential, "equal jitter".

    Half of ``min(cap, base * 2**(retry-1))`` is fixed and half random, so
    that conversations failing together do not retry together.
    """
    ceiling = min(cap, base * 2.0 ** (retry - 1))
    return ceiling / 2 + rng.uniform(0.0, ceiling / 2)


class Attempt:
    """What one HTTP attempt learned, for the retry decision.

    A parser sets ``retryable`` (and may set ``retry_after``) before it
    raises a ``ProviderError`` that is worth retrying, e.g. a broken stream
    or a mid-stream "overloaded" event.
    """

    __slots__ = ("deltas", "retry_after", "retryable", "yielded")

    def __init__(self) -> None:
        self.yielded = False
        self.retryable = False
        self.retry_after: float | None = None
        self.deltas = 0


def _set_read_timeout(response: requests.Response, seconds: float) -> None:
    """Change the read timeout of a response's socket for the reads to come."""
    conn = getattr(response.raw, "connection", None)
    sock = getattr(conn, "sock", None)
    if sock is not None:
        try:
            sock.settimeout(seconds)
        except OSError:
            pass


class HttpProvider(Provider):
    """Base class of providers that stream Server-Sent Events over HTTP.

    A subclass MUST set ``default_base_url`` and implement ``endpoint``,
    ``build_body`` and ``parse``; it MAY override ``auth_headers``,
    ``check_path`` and ``error_detail``. See the module docstring for what
    this class does for it.
    """

    #: Used when the model's ``base_url`` is empty.
    default_base_url = ""
    #: Path below ``base_url`` that ``check()`` requests.
    check_path = "/models"
    #: Seconds a ``check()`` answer is reused.
    CHECK_TTL = 5.0

    #: Set by the limits wrapper: reserves one request of the model's
    #: rate budget for a retry and returns how long to wait before sending it.
    retry_budget: Callable[[], float] | None = None

    def __init__(self, model: ModelConfig, *, env: Mapping[str, str] | None = None) -> None:
        import http.client  # imports ssl: never before actorchat.patch()

        import requests
        import sseclient
        import urllib3.exceptions

        self.model = model
        base = (model.base_url or self.default_base_url).rstrip("/")
        parts = urlsplit(base)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            msg = f"model {model.name!r}: base_url must be an http(s) URL (got {base!r})"
            raise ConfigurationError(msg)
        for name in ("connect_timeout", "first_token_timeout", "idle_timeout"):
            if getattr(model, name) <= 0:
                raise ConfigurationError(f"model {model.name!r}: {name} must be > 0")
        if model.max_attempts < 1:
            raise ConfigurationError(f"model {model.name!r}: max_attempts must be at least 1")
        self.base_url = base
        self.url = self.endpoint(base)
        self._api_key = read_api_key(model, env)
        self.backoff_base = float(option(model, "backoff_base", 0.5, float))
        self.backoff_max = float(option(model, "backoff_max", 8.0, float))
        self.max_retry_after = float(option(model, "max_retry_after", 60.0, float))
        extra_headers = option(model, "headers", {}, dict)
        self.extra_body: dict[str, Any] = dict(option(model, "extra_body", {}, dict))
        self.headers: dict[str, str] = {
            "Content-Type": "application/json",
            "Accept": "text/event-stream",
            # Compressed event streams arrive in bursts; ask for none.
            "Accept-Encoding": "identity",
        }
        self.headers.update({str(k): str(v) for k, v in extra_headers.items()})
        self.headers.update(self.auth_headers(self._api_key))

        pool = (model.max_concurrency if model.max_concurrency > 0 else 256) + 2
        session = requests.Session()
        adapter = requests.adapters.HTTPAdapter(
            pool_connections=2, pool_maxsize=pool, max_retries=0
        )
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        # Proxy variables (HTTPS_PROXY, NO_PROXY) are read once, here:
        # requests would scan the environment and ~/.netrc on every request.
        session.trust_env = False
        if option(model, "trust_env", True, bool):
            session.proxies.update(requests.utils.get_environ_proxies(base))
        self._session = session
        self._sse = sseclient.SSEClient
        # Before the first text, a read may wait as long as the first-token
        # deadline allows; afterwards the socket's timeout becomes idle_timeout.
        self._first_read_timeout = max(model.first_token_timeout, model.idle_timeout)
        self._requests_errors: tuple[type[BaseException], ...] = (requests.RequestException,)
        self._read_errors: tuple[type[BaseException], ...] = (
            urllib3.exceptions.HTTPError,
            requests.RequestException,
            http.client.HTTPException,
            OSError,
            UnicodeDecodeError,
        )
        self._read_timeouts: tuple[type[BaseException], ...] = (
            urllib3.exceptions.ReadTimeoutError,
            requests.exceptions.ReadTimeout,
            TimeoutError,
        )
        self._rng = random.Random()
        self._checked_at = float("-inf")
        self._check_ok = False
        self.requests_sent = 0
        self.retries = 0
        self.timeouts = 0

    def use_retry_budget(self, budget: Callable[[], float]) -> None:
        self.retry_budget = budget

    def __repr__(self) -> str:
        # Never the key, nor the headers that carry it.
        return f"<{type(self).__name__} model={self.model.name!r} url={self.url!r}>"

    # What subclasses provide ------------------------------------------------------

    @abstractmethod
    def endpoint(self, base_url: str) -> str:
        """The streaming endpoint's URL, given ``base_url`` without a trailing slash."""

    def auth_headers(self, api_key: str | None) -> dict[str, str]:
        """Headers that carry the key (none by default)."""
        return {}

    def temperature(self, request: GenerationRequest) -> float | None:
        """The request's temperature, else the model's; None: the backend's default."""
        return request.temperature if request.temperature is not None else self.model.temperature

    @abstractmethod
    def build_body(self, request: GenerationRequest, fitted: FittedContext) -> dict[str, Any]:
        """The JSON request body, from the context cut to fit the window."""

    @abstractmethod
    def parse(
        self, events: Iterator[Any], fitted: FittedContext, attempt: Attempt
    ) -> Iterator[StreamItem]:
        """Turn SSE events (with ``.event`` and ``.data``) into deltas and one ``StreamEnd``.

        Count text deltas in ``attempt.deltas``. A stream that ends without
        its end marker raises ``self.broken(attempt, ...)``; a mid-stream
        error event raises a ``ProviderError``, with ``attempt.retryable``
        set when a retry could help.
        """

    def error_detail(self, status: int, body: bytes) -> str:
        """The readable part of an error response (``{"error": {"message"}}``)."""
        text = body.decode("utf-8", errors="replace").strip()
        try:
            data = json.loads(text)
        except ValueError:
            return text[:300]
        error = data.get("error") if isinstance(data, dict) else None
        if isinstance(error, dict):
            kind = error.get("type") or error.get("code") or ""
            message = error.get("message") or ""
            return f"{kind}: {message}" if kind else str(message)
        if isinstance(error, str):
            return error
        return text[:300]

    # Helpers for subclasses -----------------------------------------------------------

    #: Error types in a mid-stream ``error`` event worth another attempt.
    retryable_errors: frozenset[str] = frozenset()

    def stream_error(self, error: Any, attempt: Attempt) -> ProviderError:
        """A mid-stream ``error`` event as a ``ProviderError`` (retryable if its type says so)."""
        if isinstance(error, dict):
            kind = str(error.get("type") or error.get("code") or "error")
            message = str(error.get("message") or "")
        else:
            kind, message = "error", str(error)
        if kind in self.retryable_errors:
            attempt.retryable = True
        text = f"model {self.model.name!r}: error in the stream: {kind}: {message}"
        return ProviderError(self._scrub(text))

    def broken(self, attempt: Attempt, what: str) -> ProviderError:
        """A retryable failure: the stream broke before its end."""
        attempt.retryable = True
        return ProviderError(self._scrub(f"model {self.model.name!r}: {what}"))

    @staticmethod
    def estimated_end(
        finish_reason: str,
        fitted: FittedContext,
        attempt: Attempt,
        prompt_tokens: int | None = None,
        completion_tokens: int | None = None,
    ) -> StreamEnd:
        """The ``StreamEnd``, counting what the backend did not report.

        A missing prompt count is the context estimate; a missing
        completion count is the number of text deltas (servers that stream
        send one token per delta). Either makes ``Usage.estimated`` true.
        """
        estimated = prompt_tokens is None or completion_tokens is None
        usage = Usage(
            fitted.prompt_tokens if prompt_tokens is None else prompt_tokens,
            attempt.deltas if completion_tokens is None else completion_tokens,
            estimated,
        )
        return StreamEnd(finish_reason, usage)

    def _scrub(self, text: str) -> str:
        key = self._api_key
        return text.replace(key, "***") if key else text

    # The Provider interface ------------------------------------------------------------

    def stream(self, request: GenerationRequest) -> Iterator[StreamItem]:
        """Send the request, retrying as the module docstring says; stream the reply."""
        model = self.model
        fitted = fit_context(
            request.system_prompt,
            request.messages,
            model.context_window,
            request.max_tokens or model.max_tokens,
        )
        body = self.build_body(request, fitted)
        if self.extra_body:
            body.update(self.extra_body)
        payload = json.dumps(body).encode("utf-8")
        attempt_no = 0
        while True:
            attempt_no += 1
            attempt = Attempt()
            try:
                yield from self._attempt(payload, fitted, attempt)
                return
            except ProviderError as exc:
                if isinstance(exc, Timeout):
                    self.timeouts += 1
                if attempt.yielded or not attempt.retryable:
                    raise
                if attempt_no >= model.max_attempts:
                    tries = "1 attempt" if attempt_no == 1 else f"{attempt_no} attempts"
                    msg = f"{exc} (gave up after {tries})"
                    raise ProviderError(msg) from exc
                delay = self._retry_delay(attempt_no, attempt.retry_after, exc)
                self.retries += 1
                log.info(
                    "model %s: attempt %d of %d failed (%s); retrying in %.2fs",
                    model.name,
                    attempt_no,
                    model.max_attempts,
                    exc,
                    delay,
                )
                if delay > 0:
                    gevent.sleep(delay)

    def _retry_delay(self, attempt_no: int, retry_after: float | None, exc: ProviderError) -> float:
        if retry_after is not None:
            if retry_after > self.max_retry_after:
                msg = (
                    f"{exc} (the backend asks to retry after {retry_after:.0f}s, "
                    f"more than max_retry_after={self.max_retry_after:.0f}s)"
                )
                raise ProviderError(msg) from exc
            # Honour it, plus a little jitter so that waiters spread out.
            delay = retry_after + self._rng.uniform(0.0, min(self.backoff_base, 0.25))
        else:
            delay = backoff_delay(attempt_no, self.backoff_base, self.backoff_max, self._rng)
        budget = self.retry_budget
        if budget is not None:
            delay = max(delay, budget())
        return delay

    def _attempt(
        self, payload: bytes, fitted: FittedContext, attempt: Attempt
    ) -> Iterator[StreamItem]:
        """One HTTP request and its stream; raises ``ProviderError`` on failure."""
        model = self.model
        self.requests_sent += 1
        # gevent.Timeout is a BaseException, which would stop every actor:
        # it must raise our Timeout (an Exception) instead.
        first_token = gevent.Timeout(
            model.first_token_timeout,
            Timeout(
                f"model {model.name!r}: no text within first_token_timeout="
                f"{model.first_token_timeout:g}s"
            ),
        )
        response: requests.Response | None = None
        first_token.start()
        try:
            try:
                response = self._session.post(
                    self.url,
                    data=payload,
                    headers=self.headers,
                    stream=True,
                    timeout=(model.connect_timeout, self._first_read_timeout),
                )
            except self._requests_errors as exc:
                raise self._request_failed(exc, attempt) from exc
            if response.status_code != 200:
                raise self._http_failed(response, attempt)
            events = self._events(response)
            end: StreamEnd | None = None
            try:
                for item in self.parse(events, fitted, attempt):
                    if type(item) is str:
                        if not item.isascii():
                            item = _text(item)
                        if not attempt.yielded:
                            first_token.cancel()
                            attempt.yielded = True
                            _set_read_timeout(response, model.idle_timeout)
                        yield item
                    elif isinstance(item, StreamEnd):
                        end = item
                        break
                if end is None:
                    raise self.broken(attempt, "the stream ended without its end event")
                first_token.cancel()
                self._drain(response, events)
            except self._read_errors as exc:
                raise self._read_failed(exc, attempt) from exc
            yield end
        finally:
            first_token.close()
            if response is not None:
                # Closes the connection unless the body was read to its end
                # (then it is back in the pool): a cancel stops the backend.
                try:
                    response.close()
                except self._read_errors:
                    pass  # closing a broken socket must not hide why it broke

    def _events(self, response: requests.Response) -> Iterator[Any]:
        """SSE events from the body, as each HTTP chunk arrives."""
        raw = response.raw
        source: Iterator[bytes]
        if raw.chunked and raw.supports_chunked_reads():
            source = raw.read_chunked(None, decode_content=True)
        else:
            source = iter(lambda: raw.read1(65536), b"")
        events: Iterator[Any] = self._sse(source).events()
        return events

    def _drain(self, response: requests.Response, events: Iterator[Any]) -> None:
        """Read what follows the last event, so the connection can be reused."""
        _set_read_timeout(response, _DRAIN_TIMEOUT)
        try:
            for _ in events:
                pass
        except self._read_errors:
            pass  # the connection is closed instead of reused

    def _request_failed(self, exc: BaseException, attempt: Attempt) -> ProviderError:
        import requests

        name = self.model.name
        if isinstance(exc, requests.exceptions.ConnectTimeout):
            attempt.retryable = True
            what = f"could not connect within connect_timeout={self.model.connect_timeout:g}s"
            return ProviderError(f"model {name!r}: {what}")
        if isinstance(exc, requests.exceptions.Timeout):
            return Timeout(
                f"model {name!r}: no response within first_token_timeout="
                f"{self.model.first_token_timeout:g}s"
            )
        # The reason only: requests' text names the host, port and its own
        # classes, and this message reaches chat clients (the whole
        # exception stays chained, and the conversation logs it).
        if isinstance(exc, requests.exceptions.ConnectionError):
            attempt.retryable = True
            return ProviderError(
                self._scrub(f"model {name!r}: connection failed: {_os_reason(exc)}")
            )
        return ProviderError(self._scrub(f"model {name!r}: request failed: {_os_reason(exc)}"))

    def _read_failed(self, exc: BaseException, attempt: Attempt) -> ProviderError:
        name = self.model.name
        if isinstance(exc, self._read_timeouts):
            if attempt.yielded:
                what = f"no data for idle_timeout={self.model.idle_timeout:g}s"
            else:
                what = f"no text within first_token_timeout={self.model.first_token_timeout:g}s"
            return Timeout(f"model {name!r}: {what}")
        return self.broken(attempt, f"the stream broke: {type(exc).__name__}: {exc}")

    def _http_failed(self, response: requests.Response, attempt: Attempt) -> ProviderError:
        status = response.status_code
        try:
            body = response.raw.read(_ERROR_BODY_BYTES, decode_content=True) or b""
        except self._read_errors:
            body = b""
        detail = self.error_detail(status, body)
        if status in _RETRY_STATUSES or status >= 500:
            attempt.retryable = True
            attempt.retry_after = parse_retry_after(response.headers)
        msg = f"model {self.model.name!r}: HTTP {status} from the backend"
        if detail:
            msg += f": {detail}"
        return ProviderError(self._scrub(msg))

    def check(self) -> bool:
        """Whether the backend answers ``GET <base_url><check_path>`` (not 5xx, 401, 403).

        The answer is kept for ``CHECK_TTL`` seconds, so that frequent
        readiness probes do not turn into a stream of requests upstream.
        """
        now = time.monotonic()
        if now - self._checked_at < self.CHECK_TTL:
            return self._check_ok
        timeout = self.model.connect_timeout
        try:
            response = self._session.get(
                self.base_url + self.check_path, headers=self.headers, timeout=(timeout, timeout)
            )
        except self._read_errors:
            ok = False
        else:
            ok = response.status_code < 500 and response.status_code not in (401, 403)
            response.close()
        self._checked_at, self._check_ok = time.monotonic(), ok
        return ok

    def close(self) -> None:
        """Close the session's pooled connections."""
        self._session.close()

    def stats(self) -> dict[str, int]:
        """Upstream counters: requests sent (retries included), retries, timeouts."""
        return {
            "requests": self.requests_sent,
            "retries": self.retries,
            "timeouts": self.timeouts,
        }

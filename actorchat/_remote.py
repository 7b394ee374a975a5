"""``actorchat chat --url``: the chat command against a running server.

One process owns a data directory, so while ``actorchat serve`` runs on it
the embedded ``actorchat chat`` is refused. This client talks to that
server instead, through the public HTTP API any other client uses:
``POST /api/v1/auth/token`` for a dev token when no token is given,
``POST /api/v1/conversations`` for a new conversation, then
``POST /api/v1/conversations/<id>/messages`` with
``Accept: text/event-stream``, whose events are the protocol's frames. What
it prints is what the embedded mode prints: the reply's text on stdout as it
arrives, ``actorchat: CODE: message`` on stderr when the reply fails.

Every failure is a ``RemoteError``, one line for the user and never a
traceback: the person at the prompt needs to know what to change (the URL,
the token, the conversation id), not where in ``requests`` it broke.

A disconnect never cancels a reply (the protocol's rule, so that a client
that drops keeps its answer): after Ctrl-C the server finishes the reply
and stores it in the conversation.

Imported by the CLI only after monkey-patching: it imports ``requests``,
and with it ``ssl``.
"""

from __future__ import annotations

import getpass
import json
import os
from collections.abc import Iterator, Mapping
from typing import Any, TextIO
from urllib.parse import quote, urlsplit

import requests
import sseclient

from actorchat._version import __version__

__all__ = ["TOKEN_ENV", "RemoteError", "chat", "default_user"]

#: The environment variable that holds the bearer token (``--token`` wins).
TOKEN_ENV = "ACTORCHAT_TOKEN"
#: Longest wait to open a connection; ``--timeout`` bounds every read.
_CONNECT_TIMEOUT = 10.0
#: Finish reasons of a reply that answered (the others exit 1).
_ANSWERED = ("stop", "length")


class RemoteError(Exception):
    """A failure told in one line; the CLI prints ``actorchat: <it>`` and exits 1."""


class _ApiError(RemoteError):
    """An actorchat error body: ``{"error": {"code", "message"}}`` with its status.

    The message alone is what the user reads, as the embedded mode prints an
    ``ActorchatError``; the code and status let callers add what to do.
    """

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def default_user() -> str:
    """The user a dev token is asked for: the login name, as a shell user expects.

    Falls back to ``cli`` where there is no login name at all (a container
    running as a uid without a passwd entry), rather than failing a command
    that did not need one.
    """
    try:
        return getpass.getuser() or "cli"
    except (OSError, KeyError, ImportError):
        return "cli"


def _os_reason(exc: BaseException) -> str:
    """The innermost reason of a ``requests`` error (``Connection refused``).

    ``requests`` wraps urllib3's error, which wraps the system's; the outer
    texts repeat the URL and class names, which tell a user nothing.
    """
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    found = ""
    while todo:
        e = todo.pop(0)
        if id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, OSError) and e.strerror:
            found = e.strerror
        nested = [getattr(e, "reason", None), e.__cause__, e.__context__, *e.args]
        todo.extend(n for n in nested if isinstance(n, BaseException))
    return found or type(exc).__name__


class _Api:
    """``requests`` against one server's base URL, failures turned into ``RemoteError``."""

    def __init__(self, url: str, timeout: float) -> None:
        self.base = url
        self.read_timeout = timeout
        self.timeouts = (min(_CONNECT_TIMEOUT, timeout), timeout)
        self.session = requests.Session()
        self.session.headers["User-Agent"] = f"actorchat-cli/{__version__}"
        self.token: str | None = None

    def close(self) -> None:
        self.session.close()

    def call(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any],
        *,
        stream: bool = False,
    ) -> requests.Response:
        """Send one request; a response of any status comes back, a network failure raises."""
        headers = {"Accept": "text/event-stream" if stream else "application/json"}
        if stream:
            # A compressed event stream arrives in bursts; ask for none.
            headers["Accept-Encoding"] = "identity"
        if self.token is not None:
            headers["Authorization"] = f"Bearer {self.token}"
        try:
            return self.session.request(
                method,
                self.base + path,
                json=dict(body),
                headers=headers,
                timeout=self.timeouts,
                stream=stream,
                # A redirect would turn the POST into a GET: say where it points instead.
                allow_redirects=False,
            )
        except requests.exceptions.ConnectTimeout:
            msg = f"cannot reach {self.base}: no connection within {self.timeouts[0]:g}s"
            raise RemoteError(msg) from None
        except requests.exceptions.ConnectionError as exc:
            reason = _os_reason(exc)
            hint = " (is `actorchat serve` running there?)" if "refused" in reason.lower() else ""
            raise RemoteError(f"cannot reach {self.base}: {reason}{hint}") from None
        except requests.exceptions.Timeout:
            msg = f"{self.base} sent no answer within {self.read_timeout:g}s (--timeout)"
            raise RemoteError(msg) from None
        except requests.RequestException as exc:
            raise RemoteError(f"request to {self.base} failed: {_os_reason(exc)}") from None

    def not_actorchat(self, response: requests.Response) -> RemoteError:
        """The error for an answer no actorchat server gives (a wrong URL or port)."""
        request = response.request
        what = f"{request.method} {urlsplit(request.url or '').path}"
        status = response.status_code
        location = response.headers.get("Location")
        if 300 <= status < 400 and location:
            return RemoteError(
                f"{self.base} redirects {what} to {location}: give --url that address"
            )
        kind = response.headers.get("Content-Type", "").split(";")[0] or "no content type"
        return RemoteError(
            f"{self.base} does not look like an actorchat server "
            f"(HTTP {status}, {kind}, to {what}); check --url"
        )

    def error(self, response: requests.Response) -> RemoteError:
        """What a failed response says: its actorchat error, or that this is no actorchat server."""
        body = _json(response)
        error = body.get("error") if body is not None else None
        if isinstance(error, dict):
            code, message = error.get("code"), error.get("message")
            if isinstance(code, str) and isinstance(message, str):
                return _ApiError(response.status_code, code, message)
        return self.not_actorchat(response)

    def success(self, response: requests.Response, status: int, key: str) -> str:
        """``body[key]`` of a response that must have ``status``, as a string."""
        if response.status_code != status:
            raise self.error(response)
        body = _json(response)
        value = body.get(key) if body is not None else None
        if not isinstance(value, str) or not value:
            raise self.not_actorchat(response)
        return value


def _json(response: requests.Response) -> dict[str, Any] | None:
    """A response's JSON object, or None when it has none (an HTML page, a proxy's text)."""
    try:
        body = response.json()
    except ValueError:  # requests' JSONDecodeError, or bytes that are not UTF-8
        return None
    except requests.RequestException:  # the body broke off: nothing to read an error from
        return None
    return body if isinstance(body, dict) else None


def _token(given: str | None, env: Mapping[str, str]) -> tuple[str | None, str]:
    """The bearer token and where it came from (named in errors, never shown)."""
    if given:
        return given, "--token"
    from_env = env.get(TOKEN_ENV, "").strip()
    if from_env:
        return from_env, TOKEN_ENV
    return None, "dev auth"


def _dev_token(api: _Api, user: str) -> str:
    """A dev token for ``user``, or why this server gives none."""
    response = api.call("POST", "/api/v1/auth/token", {"user_id": user})
    if response.status_code == 200:
        return api.success(response, 200, "token")
    error = api.error(response)
    if isinstance(error, _ApiError):
        if error.code == "NOT_FOUND":
            raise RemoteError(
                f"{api.base} requires a token (it has no dev auth): "
                f"pass --token TOKEN or set {TOKEN_ENV}"
            )
        if error.code == "INVALID_MESSAGE":
            raise RemoteError(f"--user {user!r}: {error.message}")
    raise error


def _explain(error: RemoteError, api: _Api, source: str, user: str | None) -> RemoteError:
    """An API error with what the user can do about it, where the server's words lack it."""
    if not isinstance(error, _ApiError):
        return error
    if error.status == 401:
        if source == "dev auth":
            return RemoteError(f"{api.base} refused its own dev token: {error.message}")
        return RemoteError(
            f"{api.base} refused the token from {source} ({error.message}); "
            f"pass a valid --token or {TOKEN_ENV}"
        )
    if error.code == "FORBIDDEN" and user is not None:
        return RemoteError(f"{error.message} (signed in as {user!r}; --user names another)")
    return error


def _events(api: _Api, response: requests.Response) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(type, data)`` of each SSE event of a reply as it arrives, once the answer is a stream.

    Not a generator itself: a refusal (an unknown conversation, a bad
    token) raises here, before anything is printed.
    """
    if response.status_code != 200:
        raise api.error(response)
    if not response.headers.get("Content-Type", "").startswith("text/event-stream"):
        raise api.not_actorchat(response)
    return _parse(api, response)


def _parse(api: _Api, response: requests.Response) -> Iterator[tuple[str, dict[str, Any]]]:
    """The events as they come: each SSE ``data`` is a whole ``{type, data}`` protocol frame."""
    for event in sseclient.SSEClient(response.iter_content(None)).events():
        try:
            obj = json.loads(event.data)
        except ValueError:
            raise api.not_actorchat(response) from None
        data = obj.get("data") if isinstance(obj, dict) else None
        yield str(event.event), data if isinstance(data, dict) else {}


def chat(
    url: str,
    text: str,
    *,
    conversation: str | None = None,
    model: str | None = None,
    token: str | None = None,
    user: str | None = None,
    timeout: float = 120.0,
    verbose: bool = False,
    out: TextIO,
    err: TextIO,
    env: Mapping[str, str] | None = None,
) -> int:
    """Send ``text`` to the server at ``url`` and print the reply as it streams.

    Args:
        url: the server's base URL (``http://127.0.0.1:8000``, or a proxy's
            path prefix).
        text: the user message.
        conversation: continue this conversation; None starts one.
        model: the model of a new conversation (the server's default if None).
        token: bearer token; None reads ``ACTORCHAT_TOKEN``, and without one
            a dev token for ``user`` is fetched.
        user: who asks for a dev token (default: the login name).
        timeout: seconds any read may wait for the server.
        verbose: print the conversation line even for ``conversation``.
        out: where the reply's text goes.
        err: where errors and the conversation line go.
        env: the environment (``os.environ`` by default).

    Returns:
        The exit status: 0 for a reply that finished (``stop``, ``length``),
        1 for one that did not, 130 when interrupted.

    Raises:
        RemoteError: the message could not be sent (the server cannot be
            reached, refused the token or the conversation, or is no
            actorchat server) or the stream broke off. A failed reply is
            printed, as the server tells it, not raised.
    """
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise RemoteError(
            f"--url must be an http(s) URL such as http://127.0.0.1:8000, not {url!r}"
        )
    api = _Api(url.strip().rstrip("/"), timeout)
    try:
        return _chat(api, text, conversation, model, token, user, verbose, out, err, env)
    finally:
        api.close()


def _chat(
    api: _Api,
    text: str,
    conversation: str | None,
    model: str | None,
    token: str | None,
    user: str | None,
    verbose: bool,
    out: TextIO,
    err: TextIO,
    env: Mapping[str, str] | None,
) -> int:
    api.token, source = _token(token, os.environ if env is None else env)
    dev_user = None
    if api.token is None:
        dev_user = default_user() if user is None else user
        api.token = _dev_token(api, dev_user)
    try:
        if conversation is None:
            response = api.call("POST", "/api/v1/conversations", {"model": model} if model else {})
            cid = api.success(response, 201, "id")
        else:
            cid = conversation
        path = f"/api/v1/conversations/{quote(cid, safe='')}/messages"
        response = api.call("POST", path, {"content": text}, stream=True)
        events = _events(api, response)
    except RemoteError as exc:
        raise _explain(exc, api, source, dev_user) from None
    with response:
        reason, done = _print_reply(api, cid, events, out, err)
    if done and (verbose or conversation is None):
        print(f"[conversation {cid}, finish_reason={reason}]", file=err)
    if not done:
        return 130
    return 0 if reason in _ANSWERED else 1


def _print_reply(
    api: _Api,
    cid: str,
    events: Iterator[tuple[str, dict[str, Any]]],
    out: TextIO,
    err: TextIO,
) -> tuple[str, bool]:
    """Print the reply's text as it arrives; ``(finish_reason, not interrupted)``.

    The output is the embedded mode's, event for event: deltas on ``out``,
    ``actorchat: CODE: message`` on ``err`` for an error event.
    """
    reason = "none"
    failed = False
    try:
        for kind, data in events:
            if kind == "stream_content":
                out.write(str(data.get("content", "")))
                out.flush()
            elif kind == "error":
                failed = True
                print(f"\nactorchat: {data.get('code')}: {data.get('message')}", file=err)
            elif kind == "stream_complete":
                reason = str(data.get("finish_reason"))
    except KeyboardInterrupt:
        print(
            "\nactorchat: interrupted; the server still finishes the reply and stores it "
            f"in conversation {cid}",
            file=err,
        )
        return reason, False
    except requests.RequestException as exc:
        reason_text = _os_reason(exc)
        if "timed out" in str(exc).lower():
            reason_text = f"no event for {api.read_timeout:g}s (--timeout)"
        out.write("\n")
        raise RemoteError(
            f"the reply from {api.base} broke off: {reason_text} "
            f"(a server still running finishes it in conversation {cid})"
        ) from None
    out.write("\n")
    if reason == "none" and not failed:
        print(f"actorchat: {api.base} ended the stream before the reply ended", file=err)
    return reason, True

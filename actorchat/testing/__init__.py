"""Test doubles that tests, benches and users share.

``FakeOpenAIServer`` and ``FakeAnthropicServer`` are real HTTP servers on
127.0.0.1 that stream the real Server-Sent Events formats of
``/v1/chat/completions`` and ``/v1/messages``, with knobs (``Behavior``) for
the failures real backends have: slow first byte, slow tokens, HTTP 429
with ``Retry-After``, 500, 529, a mid-stream error event, a dropped
connection, a hang. They record every request (``RecordedRequest``).

Call ``actorchat.patch()`` first, then, for example::

    from actorchat.testing import Behavior, FakeOpenAIServer

    with FakeOpenAIServer(Behavior(tokens=["Hel", "lo"], delay=0.01)) as srv:
        model = ModelConfig("fast", provider="openai", base_url=srv.base_url)
        ...

From a shell: ``python -m actorchat.testing openai --port 8089 --tokens 20
--delay-ms 10`` serves until interrupted.
"""

from __future__ import annotations

from actorchat.testing._fake import (
    Behavior,
    FakeAnthropicServer,
    FakeOpenAIServer,
    FakeServer,
    RecordedRequest,
)

__all__ = [
    "Behavior",
    "FakeAnthropicServer",
    "FakeOpenAIServer",
    "FakeServer",
    "RecordedRequest",
]

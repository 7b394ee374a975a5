"""The ``Provider`` extension point: where replies come from.

A provider turns a ``GenerationRequest`` into a stream: ``str`` items are
text deltas, in order, and the stream ends with exactly one ``StreamEnd``
carrying usage and the finish reason. A ``tuple`` of ``str`` is several
deltas that are ready at once (the mock with no delay has its whole reply
at once): each is still its own delta, with its own index, but they cross
the generator chain in one step instead of one per token. Built-in providers
register through ``register_provider`` (``_registry.py``) exactly as a
third-party one would.

A subclass MUST implement ``stream``. It MAY override ``close`` (release
pools), ``check`` (readiness) and ``waits`` (False only if ``stream`` never
waits). Rules the conversation relies on:

- ``stream`` is a generator: the conversation may stop iterating at any
  point (a cancel, a crash) and the generator is then closed, so an HTTP
  provider closes its upstream response in a ``finally``; a cancel also
  raises ``GenerationCancelled`` inside a blocked read, which must propagate.
- A backend failure raises ``actorchat.errors.ProviderError`` (or its
  subclass ``Timeout``); any other exception is a bug and crashes the
  conversation, which the supervisor then restarts.
- Retries are the provider's business, and only before the first delta was
  yielded, so that no text is ever duplicated.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from actorchat._records import Usage
from actorchat.config import ModelConfig

__all__ = [
    "ChatTurn",
    "GenerationCancelled",
    "GenerationRequest",
    "Provider",
    "StreamEnd",
    "StreamItem",
]


class GenerationCancelled(Exception):
    """Raised inside a generation to stop it (``cancel_stream``).

    An ``Exception``, not a ``BaseException``: Pykka stops *every* actor
    when a ``BaseException`` escapes one, so nothing we raise may be one.
    """


class ChatTurn(NamedTuple):
    """One message of the model's context.

    A named tuple: one is built per message of the context for every reply,
    and a frozen dataclass costs several times more to create.
    """

    role: str
    content: str


@dataclass(slots=True)
class GenerationRequest:
    """What a provider needs to produce one reply.

    ``attempt`` counts regenerations of the same turn (0 first), so a
    deterministic provider can give a different reply when asked again.
    """

    model: ModelConfig
    messages: list[ChatTurn]
    system_prompt: str = ""
    max_tokens: int | None = None
    temperature: float | None = None
    attempt: int = 0
    conversation_id: str = ""


@dataclass(slots=True)
class StreamEnd:
    """The last item of every stream."""

    finish_reason: str = "stop"
    usage: Usage = field(default_factory=Usage)


StreamItem = str | tuple[str, ...] | StreamEnd


class Provider(ABC):
    """Base class of model backends; see the module docstring for the contract."""

    #: Registry name, e.g. ``"mock"``, ``"openai"``.
    name: str = ""

    @abstractmethod
    def stream(self, request: GenerationRequest) -> Iterator[StreamItem]:
        """Yield text deltas then one ``StreamEnd``; raise ``ProviderError`` on failure."""

    def waits(self) -> bool:
        """Whether ``stream`` can wait (network, sleep, a pool slot).

        A provider whose stream never waits (the mock with no delay) says
        False: its generations then run to the end where they start, without
        a greenlet of their own -- one could not interleave with anything
        anyway, and creating and ending a greenlet cost ~15 us per reply.
        """
        return True

    def prompt_tokens(self, request: GenerationRequest) -> int | None:
        """The prompt's size as this provider counts it, for a reply that got no usage.

        A reply cancelled or failed before the backend reported usage still
        cost its prompt. None (the default) means: estimate it from the
        context as sent (``fit_context``), which is what HTTP providers do.
        """
        return None

    def use_retry_budget(self, budget: Callable[[], float]) -> None:  # noqa: B027 - optional hook
        """Draw retries from the model's rate budget (``budget()``: seconds to wait).

        Called by the model's limits when they bound its rate; a provider
        that retries MAY honour it, so that retries count against the limit.
        """

    def stats(self) -> dict[str, Any]:
        """Counters for operators (in flight, queued, retries, errors...); may be empty."""
        return {}

    def check(self) -> bool:
        """Whether the backend looks reachable (for ``/readyz``)."""
        return True

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections and pools; called once at shutdown."""

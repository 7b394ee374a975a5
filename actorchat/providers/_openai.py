"""The OpenAI-compatible provider: ``POST <base_url>/chat/completions``, streamed.

One implementation serves OpenAI and every server that speaks its API:
vLLM, llama.cpp's server, LM Studio, Ollama's ``/v1``. ``base_url`` is the
API root that ends before ``/chat/completions`` (``https://api.openai.com/v1``,
``http://127.0.0.1:8080/v1``).

Parsing is defensive, because these servers differ: a first delta with
only the role, ``"usage": null`` on every chunk, the usage in a chunk whose
``choices`` is ``[]`` or ``null`` (or in the last choice chunk), a stream
that ends without ``[DONE]`` after its ``finish_reason``, an ``error``
object in the middle of a stream, and no usage at all (llama.cpp sends
none even when asked): then the provider counts for itself and marks the
usage ``estimated``. A stream with no ``finish_reason`` at all is cut
short, ``[DONE]`` or not: llama.cpp's server ends a request that a newer one
interrupts with a role-only chunk and ``[DONE]``, which must not pass for
an empty answer.

Options: ``max_tokens_field`` (``"max_tokens"``, or ``"max_completion_tokens"``
for OpenAI's reasoning models), ``include_usage`` (default true; some old
servers reject ``stream_options``), plus those of ``HttpProvider``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping
from typing import Any

from actorchat.config import Config, ModelConfig
from actorchat.errors import ConfigurationError
from actorchat.providers._base import GenerationRequest, Provider, StreamItem
from actorchat.providers._context import FittedContext
from actorchat.providers._http import Attempt, HttpProvider, option

__all__ = ["OpenAIProvider"]

log = logging.getLogger("actorchat.providers")

#: OpenAI's finish reasons, in the protocol's terms (unknown ones: "stop").
FINISH_REASONS = {
    "stop": "stop",
    "length": "length",
    "content_filter": "stop",
    "tool_calls": "stop",
    "function_call": "stop",
}
#: Error types in a stream's ``error`` object that a retry may cure.
_RETRYABLE_ERRORS = frozenset(
    {"server_error", "overloaded", "overloaded_error", "rate_limit_exceeded", "timeout"}
)


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class OpenAIProvider(HttpProvider):
    """Streams from an OpenAI-compatible ``/chat/completions`` endpoint."""

    retryable_errors = _RETRYABLE_ERRORS

    name = "openai"
    default_base_url = "https://api.openai.com/v1"

    def __init__(self, model: ModelConfig, *, env: Mapping[str, str] | None = None) -> None:
        super().__init__(model, env=env)
        field = option(model, "max_tokens_field", "max_tokens", str)
        if field not in ("max_tokens", "max_completion_tokens"):
            msg = (
                f"model {model.name!r}: option max_tokens_field must be "
                f"'max_tokens' or 'max_completion_tokens' (got {field!r})"
            )
            raise ConfigurationError(msg)
        self.max_tokens_field: str = field
        self.include_usage = bool(option(model, "include_usage", True, bool))

    def endpoint(self, base_url: str) -> str:
        if base_url.endswith("/chat/completions"):
            return base_url
        return base_url + "/chat/completions"

    def auth_headers(self, api_key: str | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {api_key}"} if api_key else {}

    def build_body(self, request: GenerationRequest, fitted: FittedContext) -> dict[str, Any]:
        messages: list[dict[str, str]] = []
        if fitted.system_prompt:
            messages.append({"role": "system", "content": fitted.system_prompt})
        messages.extend({"role": t.role, "content": t.content} for t in fitted.messages)
        body: dict[str, Any] = {
            "model": self.model.model or self.model.name,
            "messages": messages,
            "stream": True,
            self.max_tokens_field: fitted.max_tokens,
        }
        if self.include_usage:
            body["stream_options"] = {"include_usage": True}
        temperature = self.temperature(request)
        if temperature is not None:
            body["temperature"] = temperature
        return body

    def parse(
        self, events: Iterator[Any], fitted: FittedContext, attempt: Attempt
    ) -> Iterator[StreamItem]:
        finish: str | None = None
        usage: dict[str, Any] | None = None
        done = False
        for event in events:
            data = event.data
            if data == "[DONE]":
                done = True
                break
            try:
                chunk = json.loads(data)
            except ValueError:
                log.debug("model %s: skipped a chunk that is not JSON", self.model.name)
                continue
            if not isinstance(chunk, dict):
                continue
            error = chunk.get("error")
            if error:
                raise self.stream_error(error, attempt)
            chunk_usage = chunk.get("usage")
            if isinstance(chunk_usage, dict):
                usage = chunk_usage
            choices = chunk.get("choices")
            if not isinstance(choices, list):
                continue  # the usage chunk: "choices": [] or null
            for choice in choices:
                if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                    continue
                delta = choice.get("delta")
                if isinstance(delta, dict):
                    text = delta.get("content")
                    if isinstance(text, str) and text:
                        attempt.deltas += 1
                        yield text
                reason = choice.get("finish_reason")
                if isinstance(reason, str) and reason:
                    finish = reason
        if finish is None:
            # No finish_reason: the stream was cut short, even if it said
            # [DONE] (llama.cpp's server ends a request it interrupts that
            # way). Before any text it is retried; after, the reply fails.
            what = (
                "the stream was cut short: [DONE] came before any finish_reason"
                if done
                else "the stream ended before the model finished"
            )
            raise self.broken(attempt, what)
        prompt = completion = None
        if usage is not None:
            prompt = _int(usage.get("prompt_tokens"))
            completion = _int(usage.get("completion_tokens"))
        reason = FINISH_REASONS.get(finish or "stop", "stop")
        yield self.estimated_end(reason, fitted, attempt, prompt, completion)


def _factory(model: ModelConfig, config: Config) -> Provider:
    return OpenAIProvider(model)

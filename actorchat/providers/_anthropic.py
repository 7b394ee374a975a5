"""The Anthropic provider: the Messages API (``POST <base_url>/v1/messages``), streamed.

``base_url`` is the API root without ``/v1`` (default
``https://api.anthropic.com``). The key goes in ``x-api-key``, the API
version in ``anthropic-version`` (option ``anthropic_version``, default
``2023-06-01``). The system prompt is the top-level ``system`` field;
``max_tokens`` is required by the API and always sent.

Events handled: ``message_start`` (input usage), ``content_block_delta``
with ``text_delta`` (the text; other deltas, e.g. thinking or tool input,
are skipped), ``message_delta`` (stop reason and *cumulative* usage: the
last one wins), ``message_stop`` (the end), ``ping`` (ignored) and
``error``: ``overloaded_error``, ``api_error`` and ``rate_limit_error`` are
retried if no text was yielded yet, like HTTP 429, 5xx and 529.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping
from typing import Any

from actorchat.config import Config, ModelConfig
from actorchat.providers._base import GenerationRequest, Provider, StreamItem
from actorchat.providers._context import FittedContext
from actorchat.providers._http import Attempt, HttpProvider, option

__all__ = ["AnthropicProvider"]

log = logging.getLogger("actorchat.providers")

#: Anthropic's stop reasons, in the protocol's terms (unknown ones: "stop").
STOP_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "stop",
    "pause_turn": "stop",
    "refusal": "stop",
}
_RETRYABLE_ERRORS = frozenset({"overloaded_error", "api_error", "rate_limit_error"})


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _input_tokens(usage: Mapping[str, Any]) -> int | None:
    """Prompt tokens: fresh input plus cache writes and reads, as billed."""
    base = _int(usage.get("input_tokens"))
    if base is None:
        return None
    extra = (_int(usage.get("cache_creation_input_tokens")) or 0) + (
        _int(usage.get("cache_read_input_tokens")) or 0
    )
    return base + extra


class AnthropicProvider(HttpProvider):
    """Streams from Anthropic's Messages API."""

    retryable_errors = _RETRYABLE_ERRORS

    name = "anthropic"
    default_base_url = "https://api.anthropic.com"
    check_path = "/v1/models"

    def __init__(self, model: ModelConfig, *, env: Mapping[str, str] | None = None) -> None:
        self.version = str(option(model, "anthropic_version", "2023-06-01", str))
        super().__init__(model, env=env)

    def endpoint(self, base_url: str) -> str:
        if base_url.endswith("/v1/messages"):
            return base_url
        return base_url + "/v1/messages"

    def auth_headers(self, api_key: str | None) -> dict[str, str]:
        headers = {"anthropic-version": self.version}
        if api_key:
            headers["x-api-key"] = api_key
        return headers

    def build_body(self, request: GenerationRequest, fitted: FittedContext) -> dict[str, Any]:
        # The API wants the first message from the user; consecutive turns
        # of one role (a reply that failed empty) are merged into one.
        messages: list[dict[str, str]] = []
        for turn in fitted.messages:
            role = "assistant" if turn.role == "assistant" else "user"
            if not messages and role == "assistant":
                continue
            if messages and messages[-1]["role"] == role:
                messages[-1]["content"] += "\n\n" + turn.content
            else:
                messages.append({"role": role, "content": turn.content})
        body: dict[str, Any] = {
            "model": self.model.model or self.model.name,
            "max_tokens": fitted.max_tokens,
            "messages": messages,
            "stream": True,
        }
        if fitted.system_prompt:
            body["system"] = fitted.system_prompt
        temperature = self.temperature(request)
        if temperature is not None:
            body["temperature"] = temperature
        return body

    def parse(
        self, events: Iterator[Any], fitted: FittedContext, attempt: Attempt
    ) -> Iterator[StreamItem]:
        prompt: int | None = None
        completion: int | None = None
        stop_reason: str | None = None
        stopped = False
        for event in events:
            try:
                data = json.loads(event.data)
            except ValueError:
                log.debug("model %s: skipped an event that is not JSON", self.model.name)
                continue
            if not isinstance(data, dict):
                continue
            kind = data.get("type") or event.event
            if kind == "content_block_delta":
                delta = data.get("delta")
                if isinstance(delta, dict) and delta.get("type") == "text_delta":
                    text = delta.get("text")
                    if isinstance(text, str) and text:
                        attempt.deltas += 1
                        yield text
            elif kind == "message_start":
                message = data.get("message")
                usage = message.get("usage") if isinstance(message, dict) else None
                if isinstance(usage, dict):
                    # Its output count is a placeholder until a message_delta.
                    prompt = _input_tokens(usage)
            elif kind == "message_delta":
                delta = data.get("delta")
                if isinstance(delta, dict) and isinstance(delta.get("stop_reason"), str):
                    stop_reason = delta["stop_reason"]
                usage = data.get("usage")
                if isinstance(usage, dict):
                    # Cumulative: the latest counts replace the earlier ones.
                    output = _int(usage.get("output_tokens"))
                    completion = completion if output is None else output
                    total_input = _input_tokens(usage)
                    prompt = prompt if total_input is None else total_input
            elif kind == "message_stop":
                stopped = True
                break
            elif kind == "error":
                raise self.stream_error(data.get("error"), attempt)
            # ping, content_block_start/stop and unknown events: nothing to do
        if not stopped:
            # Without message_stop the reply was cut short, whatever came before.
            raise self.broken(attempt, "the stream ended before message_stop")
        reason = STOP_REASONS.get(stop_reason or "end_turn", "stop")
        yield self.estimated_end(reason, fitted, attempt, prompt, completion)


def _factory(model: ModelConfig, config: Config) -> Provider:
    return AnthropicProvider(model)

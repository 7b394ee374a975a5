"""Fitting a conversation into a model's context window.

A model accepts at most ``context_window`` tokens, prompt and reply
together. A long conversation must never turn into an error from the
backend, so every request is cut to fit before it is sent: the system
prompt, then the most recent turns that fit, newest first, with room kept
for the reply.

Tokens are *estimated*, not counted, because a tokenizer is rarely at hand
(and differs per model). The estimate is one token per three bytes of
UTF-8, rounded up, plus ``MESSAGE_OVERHEAD`` tokens of framing per message.
Real tokenizers average about four bytes per token on English text and
about three bytes (one CJK character) on Chinese or Japanese, so the
estimate errs on the side of sending less: a request cut by it fits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from actorchat.providers._base import ChatTurn

__all__ = [
    "BYTES_PER_TOKEN",
    "MESSAGE_OVERHEAD",
    "FittedContext",
    "estimate_tokens",
    "fit_context",
]

#: Bytes of UTF-8 per estimated token (pessimistic for English).
BYTES_PER_TOKEN = 3
#: Tokens of chat-template framing counted for every message.
MESSAGE_OVERHEAD = 4
#: Tokens counted once per request for the reply's opening (``assistant:``).
_REPLY_PRIMING = 3


def estimate_tokens(text: str) -> int:
    """Estimate how many tokens ``text`` costs (see the module docstring)."""
    if not text:
        return 0
    return -(-len(text.encode("utf-8")) // BYTES_PER_TOKEN)


def _message_cost(text: str) -> int:
    return estimate_tokens(text) + MESSAGE_OVERHEAD


def _keep_tail(text: str, tokens: int) -> str:
    """The end of ``text`` that fits in ``tokens`` (the question is usually last)."""
    limit = max(tokens, 0) * BYTES_PER_TOKEN
    raw = text.encode("utf-8")
    if len(raw) <= limit:
        return text
    return raw[len(raw) - limit :].decode("utf-8", errors="ignore")


def _keep_head(text: str, tokens: int) -> str:
    """The start of ``text`` that fits in ``tokens`` (instructions come first)."""
    limit = max(tokens, 0) * BYTES_PER_TOKEN
    raw = text.encode("utf-8")
    if len(raw) <= limit:
        return text
    return raw[:limit].decode("utf-8", errors="ignore")


@dataclass(slots=True, frozen=True)
class FittedContext:
    """What a provider sends: the cut context and the reply's token budget.

    ``prompt_tokens`` is the estimate of what is sent; providers report it
    (with ``Usage.estimated``) when the backend sends no usage.
    ``dropped`` counts the oldest turns left out.
    """

    system_prompt: str
    messages: list[ChatTurn]
    prompt_tokens: int
    max_tokens: int
    dropped: int = 0


def fit_context(
    system_prompt: str,
    messages: Sequence[ChatTurn],
    context_window: int,
    max_tokens: int,
) -> FittedContext:
    """Cut a request to fit ``context_window`` with room for the reply.

    The reply keeps ``max_tokens`` of room, but never more than half the
    window, so that a model configured with ``max_tokens`` close to its
    window still gets a useful prompt. The system prompt gets at most half
    of the prompt budget (its head is kept). Turns are then taken newest
    first while they fit; the newest turn is always sent, cut to its tail
    if it alone is too long. Empty messages (a cancelled reply with no
    text) are skipped, as some backends reject them. The reply's budget is
    what the window has left, at most ``max_tokens``.
    """
    window = max(context_window, 16)
    reserve = max(min(max_tokens, window // 2), 1)
    budget = window - reserve - _REPLY_PRIMING

    system = system_prompt
    if system:
        system = _keep_head(system, budget // 2 - MESSAGE_OVERHEAD)
    used = _message_cost(system) if system else 0

    picked: list[ChatTurn] = []
    dropped = 0
    candidates = [m for m in messages if m.content]
    skipped_empty = len(messages) - len(candidates)
    for i in range(len(candidates) - 1, -1, -1):
        turn = candidates[i]
        cost = _message_cost(turn.content)
        if used + cost <= budget:
            picked.append(turn)
            used += cost
            continue
        if not picked:
            # At least one token of it, however small the window.
            room = max(budget - used - MESSAGE_OVERHEAD, 1)
            turn = ChatTurn(turn.role, _keep_tail(turn.content, room))
            picked.append(turn)
            used += _message_cost(turn.content)
            dropped = i
        else:
            dropped = i + 1
        break
    picked.reverse()
    prompt_tokens = used + _REPLY_PRIMING
    reply = max(min(max_tokens, window - prompt_tokens), 1)
    return FittedContext(system, picked, prompt_tokens, reply, dropped + skipped_empty)

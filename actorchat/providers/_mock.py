"""The embedded model: deterministic, offline, and honestly simulated.

The same context gives the same reply, whatever the conversation's id; a
regeneration (``attempt`` > 0) gives a different one. Replies read like a
model's: sentences with punctuation that refer to the user's words, and
for a quarter of contexts each a Markdown list or code block (always when
the user asks for a list or code), so that clients render what real models
write. Tokens are words with their leading space, as real tokenizers split
them; a token that starts a line carries its newline instead.
"""

from __future__ import annotations

import functools
import hashlib
import random
import re
from collections.abc import Callable, Iterator
from typing import Any

import gevent

from actorchat._records import Usage
from actorchat.config import Config, ModelConfig
from actorchat.errors import ProviderError
from actorchat.providers._base import GenerationRequest, Provider, StreamEnd, StreamItem

__all__ = ["MockCrash", "MockProvider"]

_OPENERS = (
    "Simulated reply about",
    "Here is a simulated answer on",
    "A mock model's thoughts on",
    "Speaking as the embedded mock, about",
)
_WORDS = [
    "actors",
    "keep",
    "their",
    "own",
    "state",
    "and",
    "talk",
    "only",
    "through",
    "messages",
    "so",
    "one",
    "crash",
    "stays",
    "local",
    "a",
    "supervisor",
    "restarts",
    "what",
    "failed",
    "and",
    "the",
    "history",
    "comes",
    "back",
    "from",
    "the",
    "store",
    "every",
    "conversation",
    "runs",
    "in",
    "its",
    "own",
    "lightweight",
    "greenlet",
    "while",
    "tokens",
    "stream",
    "to",
    "each",
    "watching",
    "client",
    "in",
    "order",
    "with",
    "nothing",
    "lost",
    "along",
    "the",
    "way",
    "the",
    "model",
    "here",
    "is",
    "simulated",
    "and",
    "deterministic",
    "which",
    "makes",
    "tests",
    "repeatable",
    "and",
    "benchmarks",
    "fair",
]
_ENDINGS = (".", ".", ".", "!", "?", ";")


# Replies remembered per provider: contexts (system prompt included) up to
# this many characters, and up to this many of them (then the memo starts again).
_MEMO_CHARS = 4096
_MEMO_ENTRIES = 4096


class MockCrash(RuntimeError):
    """An injected crash: the conversation dies as from an unexpected bug."""


def _topic(text: str) -> list[str]:
    # maxsplit: a 4 MB message must not be split whole to find four words.
    words = [w.strip(".,!?;:\"'()") for w in text.split(maxsplit=8)[:8]]
    return [w for w in words if w][:4] or ["nothing"]


class MockProvider(Provider):
    """Streams ``tokens`` words, ``delay_ms`` apart (before each, the first too).

    ``failure_rate`` is the chance a request fails like a backend would
    (``ProviderError``: the reply ends with ``finish_reason="error"``);
    ``crash_rate`` the chance the generation raises ``MockCrash`` (the
    conversation crashes and is restarted). Both for fault injection.
    """

    name = "mock"

    def __init__(
        self,
        tokens: int = 40,
        delay_ms: float = 20.0,
        failure_rate: float = 0.0,
        crash_rate: float = 0.0,
    ) -> None:
        self.tokens = tokens
        self.delay = delay_ms / 1000.0
        self.failure_rate = failure_rate
        self.crash_rate = crash_rate
        self._chaos = random.Random()
        self._memo: dict[tuple[Any, ...], tuple[tuple[str, ...], int]] = {}

    def waits(self) -> bool:
        return self.delay > 0

    def prompt_tokens(self, request: GenerationRequest) -> int:
        """The prompt's size in words, as the mock's usage counts it."""
        return self._reply(request)[1]

    def reply_tokens(self, request: GenerationRequest) -> list[str]:
        """The reply's tokens: a pure function of context and attempt."""
        return list(self._reply(request)[0])

    def _reply(self, request: GenerationRequest) -> tuple[tuple[str, ...], int]:
        """The reply's tokens and the prompt's size in words.

        Remembered for short contexts: a broadcast asks the same question of
        thousands of conversations, and hashing it each time was ~5 us of a
        reply's ~100.
        """
        messages = request.messages
        key = None
        if len(request.system_prompt) + sum(len(t.content) for t in messages) <= _MEMO_CHARS:
            key = (tuple(messages), request.system_prompt, request.attempt, request.max_tokens)
            hit = self._memo.get(key)
            if hit is not None:
                return hit
        out = self._compute_reply(request)
        if key is not None:
            if len(self._memo) >= _MEMO_ENTRIES:
                self._memo.clear()
            self._memo[key] = out
        return out

    def _compute_reply(self, request: GenerationRequest) -> tuple[tuple[str, ...], int]:
        context = "\0".join(f"{t.role}\1{t.content}" for t in request.messages)
        digest = hashlib.blake2b(context.encode(), digest_size=32)
        digest.update(str(request.attempt).encode())
        last_user = next((t.content for t in reversed(request.messages) if t.role == "user"), "")
        n = min(request.max_tokens or self.tokens, self.tokens)
        tokens = _compose(digest.digest(), n, last_user)
        prompt = len(context.split()) + len(request.system_prompt.split())
        return tokens, prompt

    def stream(self, request: GenerationRequest) -> Iterator[StreamItem]:
        if self.failure_rate and self._chaos.random() < self.failure_rate:
            raise ProviderError("simulated backend failure (mock failure_rate)")
        crash_at = -1
        if self.crash_rate and self._chaos.random() < self.crash_rate:
            crash_at = self._chaos.randrange(self.tokens)
        tokens, prompt = self._reply(request)
        delay = self.delay
        if not delay:
            # Nothing to wait for: the reply goes out as one batch of deltas.
            if 0 <= crash_at < len(tokens):
                if crash_at:
                    yield tokens[:crash_at]
                raise MockCrash("simulated crash (mock crash_rate)")
            yield tokens
            yield StreamEnd("stop", Usage(prompt, len(tokens)))
            return
        sleep = gevent.sleep
        for i, token in enumerate(tokens):
            sleep(delay)
            if i == crash_at:
                raise MockCrash("simulated crash (mock crash_rate)")
            yield token
        yield StreamEnd("stop", Usage(prompt, len(tokens)))


@functools.lru_cache(maxsize=4096)
def _compose(seed: bytes, n: int, last_user: str) -> tuple[str, ...]:
    """Compose a reply from its seed; cached, since a broadcast asks the same
    question many times.

    Choices are read straight from a hash stream (BLAKE2b, re-hashed as it
    runs out) rather than from ``random.Random``: seeding a Mersenne twister
    per reply cost more than streaming the reply.
    """
    topic = " ".join(_topic(last_user))
    stream = bytearray(seed)
    block = seed
    need = 4 * n + 64  # Markdown shapes read up to 8 bytes a token
    while len(stream) < need:
        block = hashlib.blake2b(block, digest_size=64).digest()
        stream += block
    pos = 0

    def pick(k: int) -> int:
        nonlocal pos
        value = (stream[pos] << 8 | stream[pos + 1]) % k
        pos += 2
        return value

    out = _OPENERS[pick(len(_OPENERS))].split()
    out.append(f"“{topic}”:")
    shape = _shape(seed, n - len(out), last_user)
    if shape == "list":
        out += _list_items(n - len(out), pick)
    elif shape == "code":
        out += _code_block(n - len(out), pick)
    else:
        sentence = 0
        length = 6 + pick(7)
        while len(out) < n:
            word = _WORDS[pick(len(_WORDS))]
            if sentence == 0:
                word = word.capitalize()
            sentence += 1
            if sentence >= length:
                word += _ENDINGS[stream[pos] % len(_ENDINGS)]
                pos += 1
                sentence = 0
                length = 6 + stream[pos] % 7
                pos += 1
            out.append(word)
        out = out[:n]
        if not out[-1].endswith(_ENDINGS):
            out[-1] += "."
    # A token that starts a line carries its newline instead of a space.
    return (out[0], *(w if w[0] == "\n" else " " + w for w in out[1:]))


#: Asking for one by name gets one (whole word, in the first 200 characters).
_ASKED = re.compile(r"\b(list|steps|code|python)\b")


def _shape(seed: bytes, room: int, last_user: str) -> str:
    """Prose, a bulleted list or a code block: a quarter of replies each are
    Markdown, decided by the seed (so, like the words, by the context), and
    a user who asks for a list or code gets one. Markdown needs room: 12
    tokens or more after the opening."""
    if room < 12:
        return "prose"
    asked = _ASKED.search(last_user[:200].lower())
    if asked is not None:
        return "list" if asked.group(1) in ("list", "steps") else "code"
    return {0: "list", 1: "code"}.get(seed[-1] % 4, "prose")


def _list_items(room: int, pick: Callable[[int], int]) -> list[str]:
    """``room`` tokens as a bulleted list of 3 to 5 short items."""
    items = min(3 + pick(3), room // 3)
    out: list[str] = []
    for i in range(items):
        size = room // items + (1 if i < room % items else 0)
        words = [_WORDS[pick(len(_WORDS))] for _ in range(size)]
        words[0] = ("\n\n- " if i == 0 else "\n- ") + words[0].capitalize()
        words[-1] += "."
        out += words
    return out


def _code_block(room: int, pick: Callable[[int], int]) -> list[str]:
    """``room`` tokens as a fenced Python block of a line a token, then a sentence."""
    lines = min(room - 2, 6)
    out = ["\n\n```python"]
    for _ in range(lines):
        a, b, c = (_WORDS[pick(len(_WORDS))] for _ in range(3))
        out.append(f'\n{a} = {b}.{c}("{_WORDS[pick(len(_WORDS))]}")')
    out.append("\n```")
    rest = room - len(out)
    if rest:
        words = [_WORDS[pick(len(_WORDS))] for _ in range(rest)]
        words[0] = "\n\n" + words[0].capitalize()
        words[-1] += "."
        out += words
    return out


def _factory(model: ModelConfig, config: Config) -> Provider:
    opts = model.options
    return MockProvider(
        tokens=int(opts.get("tokens", config.mock_tokens)),
        delay_ms=float(opts.get("delay_ms", config.mock_delay_ms)),
        failure_rate=float(opts.get("failure_rate", config.mock_failure_rate)),
        crash_rate=float(opts.get("crash_rate", config.mock_crash_rate)),
    )

"""The embedded mock writes Markdown too: lists and code blocks, deterministically."""

from __future__ import annotations

from actorchat import ModelConfig
from actorchat.providers import ChatTurn, GenerationRequest, MockProvider


def _reply(text: str, tokens: int = 40, attempt: int = 0) -> list[str]:
    mock = MockProvider(tokens=tokens, delay_ms=0)
    request = GenerationRequest(
        model=ModelConfig("mock", provider="mock"),
        messages=[ChatTurn("user", text)],
        max_tokens=tokens,
        attempt=attempt,
    )
    return mock.reply_tokens(request)


def test_asked_for_a_list_it_writes_one() -> None:
    tokens = _reply("Could you list the steps?")
    text = "".join(tokens)
    assert len(tokens) == 40 and all(tokens)
    items = [line for line in text.split("\n") if line.startswith("- ")]
    assert 3 <= len(items) <= 5 and all(item.endswith(".") for item in items)
    assert "\n\n- " in text  # a blank line before the list: Markdown starts one there


def test_asked_for_code_it_writes_a_fenced_block() -> None:
    tokens = _reply("show me some code")
    text = "".join(tokens)
    assert len(tokens) == 40
    assert "\n\n```python\n" in text and text.count("```") == 2
    assert text.endswith(".")


def test_a_quarter_of_contexts_each_are_lists_and_code_and_the_same_context_repeats() -> None:
    replies = ["".join(_reply(f"question number {i}")) for i in range(200)]
    lists = sum("\n- " in r for r in replies)
    code = sum("```" in r for r in replies)
    assert 30 <= lists <= 70 and 30 <= code <= 70, (lists, code)
    assert replies == ["".join(_reply(f"question number {i}")) for i in range(200)]
    assert _reply("question number 1") != _reply("question number 1", attempt=1)


def test_short_replies_stay_prose() -> None:
    for i in range(50):
        tokens = _reply(f"a list of {i}", tokens=12)
        assert len(tokens) == 12 and "\n" not in "".join(tokens)

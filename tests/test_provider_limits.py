"""Per-model pools and rate limits : bound, bucket, ordered queue, stats."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gevent
import pytest
from gevent.event import Event

from actorchat import ChatSystem, ErrorEvent, ModelConfig, StreamComplete, StreamContent
from actorchat.config import Config
from actorchat.errors import Overloaded, ProviderError
from actorchat.providers import GenerationCancelled, LimitedProvider, create_provider
from actorchat.providers._limits import Limiter, TokenBucket
from actorchat.testing import Behavior, FakeOpenAIServer
from tests.conftest import make_config
from tests.helpers import of_type, wait_for
from tests.provider_helpers import WAIT, collect, fake_server_fixtures, model_for, request

server, _fresh = fake_server_fixtures(FakeOpenAIServer)


def limited(server: FakeOpenAIServer, **fields: Any) -> LimitedProvider:
    p = create_provider(model_for(server, "openai", **fields), Config())
    assert isinstance(p, LimitedProvider)
    return p


# -- the token bucket and the limiter, driven directly -----------------------------------


def test_token_bucket_refills_continuously_up_to_its_burst() -> None:
    bucket = TokenBucket(rate=2.0, capacity=2.0, now=0.0)
    assert bucket.try_take(0.0) == 0.0
    assert bucket.try_take(0.0) == 0.0
    assert bucket.try_take(0.0) == pytest.approx(0.5)  # empty: next token in 0.5 s
    assert bucket.try_take(0.25) == pytest.approx(0.25)
    assert bucket.try_take(0.5) == 0.0
    assert bucket.try_take(100.0) == 0.0  # refilled, but only up to capacity
    assert bucket.try_take(100.0) == 0.0
    assert bucket.try_take(100.0) > 0.0


def test_token_bucket_take_runs_into_debt_for_retries() -> None:
    bucket = TokenBucket(rate=1.0, capacity=1.0, now=0.0)
    assert bucket.take(0.0) == 0.0
    assert bucket.take(0.0) == pytest.approx(1.0)
    assert bucket.take(0.0) == pytest.approx(2.0)
    assert bucket.try_take(0.0) == pytest.approx(3.0)  # newcomers wait for the debt


def test_limiter_bounds_queues_in_order_and_refuses_past_the_queue() -> None:
    limiter = Limiter("m", max_concurrency=2, requests_per_minute=0, max_waiting=2)
    limiter.acquire()
    limiter.acquire()
    assert limiter.in_flight == 2
    order: list[int] = []

    def waiter(n: int) -> None:
        limiter.acquire()
        order.append(n)

    waiting = [gevent.spawn(waiter, n) for n in (1, 2)]
    gevent.idle()
    assert limiter.queued == 2 and order == []
    with pytest.raises(Overloaded, match="at capacity"):
        limiter.acquire()
    assert limiter.rejected == 1
    limiter.release()
    gevent.joinall(waiting[:1], timeout=WAIT)
    assert order == [1]
    limiter.release()
    gevent.joinall(waiting, timeout=WAIT)
    assert order == [1, 2] and limiter.in_flight == 2 and limiter.queued == 0


def test_cancelled_waiter_leaves_the_queue() -> None:
    limiter = Limiter("m", max_concurrency=1, requests_per_minute=0, max_waiting=5)
    limiter.acquire()
    g = gevent.spawn(limiter.acquire)
    gevent.idle()
    assert limiter.queued == 1
    g.kill(GenerationCancelled, block=True, timeout=WAIT)
    assert limiter.queued == 0
    limiter.release()
    assert limiter.in_flight == 0


def test_zero_waiting_refuses_at_once() -> None:
    limiter = Limiter("m", max_concurrency=1, requests_per_minute=0, max_waiting=0)
    limiter.acquire()
    with pytest.raises(Overloaded):
        limiter.acquire()


# -- against the fake server ------------------------------------------------------------------


def _run(p: LimitedProvider, text: str, out: dict[str, Any]) -> None:
    try:
        out[text] = "".join(collect(p.stream(request(p.model, text)))[0])
    except Exception as exc:
        out[text] = exc


def test_concurrency_bound(server: FakeOpenAIServer) -> None:
    server.reset(Behavior(tokens=3, delay=0.1))  # long enough to outlast the spawning
    p = limited(server, max_concurrency=2)
    out: dict[str, Any] = {}
    texts = [f"q{i}" for i in range(6)]
    greenlets = []
    for text in texts:
        greenlets.append(gevent.spawn(_run, p, text, out))
        gevent.idle()  # each one reaches the limiter before the next starts
    assert p.stats()["in_flight"] == 2
    assert p.stats()["queued"] == 4
    gevent.joinall(greenlets, timeout=WAIT)
    assert all(out[t] == "w0 w1 w2" for t in texts), out
    assert server.max_active == 2
    stats = p.stats()
    assert (stats["in_flight"], stats["queued"], stats["completed"]) == (0, 0, 6)


def test_waiting_generations_start_in_arrival_order(server: FakeOpenAIServer) -> None:
    server.reset(Behavior(tokens=2, delay=0.1))
    p = limited(server, max_concurrency=1)
    out: dict[str, Any] = {}
    texts = [f"q{i}" for i in range(5)]
    greenlets = []
    for text in texts:
        greenlets.append(gevent.spawn(_run, p, text, out))
        gevent.idle()
    assert p.stats()["queued"] == 4
    gevent.joinall(greenlets, timeout=WAIT)
    # One slot: each request starts after the one before it ended.
    assert [r.json["messages"][-1]["content"] for r in server.requests] == texts


def test_requests_per_minute_spaces_requests(server: FakeOpenAIServer) -> None:
    server.reset(Behavior(tokens=1))
    p = limited(server, requests_per_minute=600, options={"burst": 1})  # one per 0.1 s
    out: dict[str, Any] = {}
    greenlets = [gevent.spawn(_run, p, f"r{i}", out) for i in range(4)]
    gevent.joinall(greenlets, timeout=WAIT)
    assert len(out) == 4 and all(v == "w0" for v in out.values())
    times = [r.received_at for r in server.requests]
    # Lower bounds only (0.3 s, less the first request's own latency):
    # the bucket cannot let them through earlier.
    assert times[3] - times[0] >= 0.2
    assert [r.json["messages"][-1]["content"] for r in server.requests] == [
        "r0",
        "r1",
        "r2",
        "r3",
    ]


def test_retries_draw_from_the_rate_budget(server: FakeOpenAIServer) -> None:
    server.script(Behavior(status=500))
    server.default = Behavior(tokens=["ok"])
    p = limited(server, requests_per_minute=300, options={"burst": 1})  # one per 0.2 s
    collect(p.stream(request(p.model)))
    first, second = server.requests
    # 0.2 s less the first request's latency; without the budget it is ~0.01 s.
    assert second.received_at - first.received_at >= 0.1
    assert p.stats()["retries"] == 1
    assert p.stats()["upstream_requests"] == 2


def test_stats_count_errors_timeouts_and_rejections(server: FakeOpenAIServer) -> None:
    server.reset(Behavior(status=500))
    p = limited(server, max_attempts=2, max_concurrency=1, max_waiting=0)
    with pytest.raises(ProviderError):
        collect(p.stream(request(p.model)))
    server.reset(Behavior(ttfb=60.0))
    p.model.first_token_timeout = 0.2
    with pytest.raises(ProviderError):
        collect(p.stream(request(p.model)))
    server.reset(Behavior(tokens=1000, delay=0.02))
    started = Event()

    def hold() -> None:
        stream = p.stream(request(p.model))
        try:
            next(stream)
            started.set()
            gevent.sleep(WAIT)
        finally:
            stream.close()  # type: ignore[attr-defined]

    holder = gevent.spawn(hold)
    assert started.wait(WAIT)
    with pytest.raises(Overloaded):
        collect(p.stream(request(p.model)))
    holder.kill(GenerationCancelled, block=True, timeout=WAIT)
    stats = p.stats()
    assert stats["errors"] == 2
    assert stats["timeouts"] == 1
    assert stats["retries"] == 1
    assert stats["rejected"] == 1
    assert stats["in_flight"] == 0 and stats["queued"] == 0


def test_the_mock_gets_counters_but_no_bound() -> None:
    mock = create_provider(ModelConfig("mock", max_concurrency=1, max_waiting=0), Config())
    assert isinstance(mock, LimitedProvider)
    assert mock.limiter.max_concurrency == 0
    streams = [mock.stream(request(mock.model, f"m{i}")) for i in range(5)]
    for s in streams:
        next(s)  # five at once, none refused
    assert mock.stats()["in_flight"] == 5
    for s in streams:
        s.close()  # type: ignore[attr-defined]
    assert mock.stats()["in_flight"] == 0


# -- through conversations -----------------------------------------------------------------------


@pytest.fixture
def chat_factory(tmp_path: Path, server: FakeOpenAIServer) -> Iterator[Any]:
    systems: list[ChatSystem] = []

    def make(**fields: Any) -> ChatSystem:
        m = model_for(server, "openai", **fields)
        system = ChatSystem(make_config(tmp_path, models={"m": m}, default_model="m")).start()
        systems.append(system)
        return system

    yield make
    for system in systems:
        system.stop()


def test_conversations_wait_in_order_for_the_models_slots(
    chat_factory: Any, server: FakeOpenAIServer
) -> None:
    server.reset(Behavior(tokens=2, delay=0.02))
    chat = chat_factory(max_concurrency=1)
    ids = [chat.start_conversation() for _ in range(4)]
    results = chat.broadcast_message(ids, "same question", timeout=WAIT)
    assert all(v == "w0 w1" for v in results.values()), results
    assert server.max_active == 1
    assert len(server.requests) == 4


def test_full_queue_answers_overloaded_and_keeps_the_message(
    chat_factory: Any, server: FakeOpenAIServer
) -> None:
    server.reset(Behavior(tokens=1000, delay=0.02))
    chat = chat_factory(max_concurrency=1, max_waiting=0)
    busy, refused = chat.start_conversation(), chat.start_conversation()
    with chat.subscribe(busy, replay=False) as sub:
        chat.post_message(busy, "long one")
        first, _ = wait_for(sub, of_type(StreamContent))
    with chat.subscribe(refused, replay=False) as sub:
        chat.post_message(refused, "me too")
        error, _ = wait_for(sub, of_type(ErrorEvent))
        complete, _ = wait_for(sub, of_type(StreamComplete))
    assert error.code == "OVERLOADED"
    assert complete.finish_reason == "error"
    assert chat.get_history(refused)[0].content == "me too"
    assert chat.get_stats(refused).restarts == 0
    assert chat.providers["m"].stats()["rejected"] == 1  # type: ignore[attr-defined]
    assert chat.cancel(busy, first.message_id)
    server.reset(Behavior(tokens=["free", " now"]))
    assert chat.send_message(refused, "again?", timeout=WAIT) == "free now"

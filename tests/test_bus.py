"""The event bus: bounded subscribers, merging, overflow, replay."""

from __future__ import annotations

import pytest

from actorchat import ChatSystem, EventBus, StreamComplete, StreamContent, StreamStart, Usage
from tests.helpers import WAIT, of_type, wait_for


def deltas(bus: EventBus, n: int, start: int = 0, mid: str = "m1") -> None:
    for i in range(start, start + n):
        bus.publish(StreamContent("c1", mid, f"t{i} ", i))


def test_fast_subscriber_sees_every_delta() -> None:
    bus = EventBus(default_queue=100)
    sub = bus.subscribe("c1")
    deltas(bus, 40)
    got = sub.drain()
    assert [e.index for e in got] == list(range(40))  # type: ignore[attr-defined]


def test_slow_subscriber_gets_merged_deltas_without_gaps() -> None:
    bus = EventBus()
    sub = bus.subscribe("c1", maxsize=10)
    deltas(bus, 100)
    got = sub.drain()
    assert len(got) <= 10 and not sub.closed
    text = "".join(e.content for e in got)  # type: ignore[attr-defined]
    assert text == "".join(f"t{i} " for i in range(100))
    expected = 0
    for e in got:
        first = e.first_index if e.first_index is not None else e.index  # type: ignore[attr-defined]
        assert first == expected
        expected = e.index + 1  # type: ignore[attr-defined]


def test_full_subscriber_is_closed_not_waited_for() -> None:
    bus = EventBus()
    sub = bus.subscribe("c1", maxsize=4)
    for i in range(10):  # different messages cannot merge
        bus.publish(StreamStart("c1", f"m{i}", "mock", "u"))
    assert sub.closed and sub.close_reason == "overflow"
    assert bus.subscriber_count("c1") == 0
    assert len(sub.drain()) == 4


def test_join_mid_reply_replays_what_was_missed() -> None:
    bus = EventBus()
    bus.publish(StreamStart("c1", "m1", "mock", "u1"))
    deltas(bus, 5)
    late = bus.subscribe("c1")
    resumed = bus.subscribe("c1", after_index=2)
    deltas(bus, 2, start=5)
    bus.publish(StreamComplete("c1", "m1", Usage(), "stop"))
    assert [type(e).__name__ for e in late.drain()][:2] == ["StreamStart", "StreamContent"]
    got = resumed.drain()
    assert [e.index for e in got if isinstance(e, StreamContent)] == [3, 4, 5, 6]
    assert bus.in_progress("c1") == []


def test_slow_subscriber_does_not_slow_the_actors(make_system) -> None:  # type: ignore[no-untyped-def]
    system: ChatSystem = make_system(mock_tokens=50)
    ids = system.start_conversations(200)
    stuck = system.subscribe(None, maxsize=16)  # never read
    one = system.subscribe(ids[0], maxsize=8)  # never read either
    results = system.broadcast_message(ids, "go", timeout=WAIT)
    assert all(isinstance(r, str) for r in results.values())
    assert stuck.closed and stuck.close_reason == "overflow" and len(stuck) <= 16
    assert len(one) <= 8
    # A fresh subscriber is served normally afterwards.
    sub = system.subscribe(ids[1])
    system.post_message(ids[1], "again")
    wait_for(sub, of_type(StreamComplete))


@pytest.mark.parametrize("maxsize", [1000, 10, 4, 1])
def test_a_batch_of_deltas_arrives_exactly_as_one_at_a_time(maxsize: int) -> None:
    def run(batched: bool) -> tuple[list[tuple[object, ...]], bool, list[int]]:
        bus = EventBus()
        sub = bus.subscribe("c1", maxsize=maxsize)
        everyone = bus.subscribe(None, maxsize=maxsize)
        bus.publish(StreamStart("c1", "m1", "mock", "u1"))
        events = [StreamContent("c1", "m1", f"t{i} ", i) for i in range(25)]
        if batched:
            bus.publish_deltas(events[:3])
            bus.publish_deltas(events[3:])
        else:
            for e in events:
                bus.publish(e)
        replay = [e.index for e in bus.in_progress("c1") if isinstance(e, StreamContent)]
        got = [
            (
                type(e).__name__,
                getattr(e, "content", ""),
                getattr(e, "index", None),
                getattr(e, "first_index", None),
            )
            for s in (sub, everyone)
            for e in s.drain()
        ]
        return got, sub.closed, replay

    assert run(batched=True) == run(batched=False)
    assert run(batched=True)[2] == list(range(25))


def test_a_listener_hears_every_event_as_published_and_cannot_fail_the_publisher(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bus = EventBus()
    heard: list[object] = []
    undo = bus.listen(heard.append)

    def broken(_item: object) -> None:
        raise RuntimeError("a bug in a listener")

    bus.listen(broken)
    bus.publish(StreamStart("c1", "m1", "mock", "u1"))
    batch = [StreamContent("c1", "m1", t, i) for i, t in enumerate(("a", "b"))]
    bus.publish_deltas(batch)
    bus.publish(StreamComplete("c1", "m1", Usage(), "stop"))
    assert [type(h).__name__ for h in heard] == ["StreamStart", "list", "StreamComplete"]
    assert heard[1] == batch  # deltas published together come together
    assert "a bus listener failed" in caplog.text
    undo()
    bus.publish(StreamStart("c1", "m2", "mock", "u2"))
    assert len(heard) == 3

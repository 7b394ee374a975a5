"""Prometheus metrics of one server (``GET /metrics``).

Each server owns its own ``CollectorRegistry`` so that several servers in
one process (the tests) never share or double-register series. Counters
that the actor system already keeps (``ChatSystem.metrics``: messages,
tokens, restarts, crashes; live conversations, replies in progress) are
read at scrape time by a custom collector instead of being counted again
here, so there is one source of truth; the rest (frames, connections,
latencies, what only the server sees) is counted here, much of it from the
bus events the server fans out anyway.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from actorchat._system import ChatSystem

__all__ = ["CONTENT_TYPE", "ServerMetrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class HotCounters:
    """Counters bumped once per token or frame: plain ints, read at scrape time.

    prometheus-client guards every ``inc`` with a lock, which under gevent
    is a greenlet lock: too dear on a path taken once per delta per client.
    """

    __slots__ = ("frames_out", "stream_events")

    def __init__(self) -> None:
        self.frames_out = 0
        self.stream_events = {"stream_start": 0, "stream_content": 0, "stream_complete": 0}


#: The series read from ``ChatSystem.metrics``: (name, its attribute, help).
_SYSTEM_COUNTERS = (
    ("actorchat_messages", "messages", "User messages stored"),
    ("actorchat_tokens", "tokens", "Reply chunks generated"),
    ("actorchat_restarts", "restarts", "Conversation restarts by the supervisor"),
    ("actorchat_crashes", "crashes", "Conversation crashes"),
    ("actorchat_provider_errors", "provider_errors", "Replies failed by the backend"),
    ("actorchat_passivations", "passivated", "Idle conversations stopped"),
)


class _SystemCollector(Collector):
    """Reads the actor system's own counters, and the hot ones, at scrape time."""

    def __init__(self, chat: ChatSystem, hot: HotCounters) -> None:
        self._chat = chat
        self._hot = hot

    def collect(self) -> Iterator[Metric]:
        chat = self._chat
        hot = self._hot
        sent = CounterMetricFamily("actorchat_ws_frames_sent", "Frames written")
        sent.add_metric([], hot.frames_out)
        yield sent
        events = CounterMetricFamily(
            "actorchat_stream_events", "Stream events published, by type", labels=["type"]
        )
        for kind, value in hot.stream_events.items():
            events.add_metric([kind], value)
        yield events
        m = chat.metrics
        live = GaugeMetricFamily(
            "actorchat_conversations_live", "Conversations with a running actor"
        )
        live.add_metric([], chat.conversation_count())
        yield live
        gen = GaugeMetricFamily("actorchat_generations_in_progress", "Replies being generated")
        gen.add_metric([], max(m.generating, 0))
        yield gen
        in_flight = GaugeMetricFamily(
            "actorchat_model_in_flight", "Upstream generations running, by model", labels=["model"]
        )
        queued = GaugeMetricFamily(
            "actorchat_model_queued",
            "Generations waiting for the model, by model",
            labels=["model"],
        )
        for name, provider in sorted(chat.providers.items()):
            counters = provider.stats()
            in_flight.add_metric([name], counters.get("in_flight", 0))
            queued.add_metric([name], counters.get("queued", 0))
        yield in_flight
        yield queued
        for name, attr, doc in _SYSTEM_COUNTERS:
            c = CounterMetricFamily(name, doc)
            c.add_metric([], getattr(m, attr))
            yield c


class ServerMetrics:
    """Every series the server exports, in a registry of its own."""

    def __init__(self, chat: ChatSystem) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.connections = Gauge(
            "actorchat_ws_connections", "Open WebSocket connections", registry=r
        )
        self.connections_total = Counter(
            "actorchat_ws_connections_accepted", "WebSocket connections accepted", registry=r
        )
        self.slow_clients = Counter(
            "actorchat_ws_slow_client_closes", "Connections closed as too slow", registry=r
        )
        self.frames_in = Counter(
            "actorchat_ws_frames_received", "Client frames by type", ["type"], registry=r
        )
        self.conversations_stored = Gauge(
            "actorchat_conversations_stored", "Conversations in the store", registry=r
        )
        self.conversations_created = Counter(
            "actorchat_conversations_created", "Conversations created", registry=r
        )
        self.ttft = Histogram(
            "actorchat_time_to_first_token_seconds",
            "From stream_start to the first chunk",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.latency = Histogram(
            "actorchat_request_duration_seconds",
            "Handling time of a WebSocket frame or HTTP request",
            ["kind"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.errors = Counter(
            "actorchat_errors", "Error frames and responses, by code", ["code"], registry=r
        )
        self.finished = Counter(
            "actorchat_replies", "Replies finished, by finish reason", ["reason"], registry=r
        )
        self.hot = HotCounters()
        r.register(_SystemCollector(chat, self.hot))
        self._chat = chat

    def render(self) -> bytes:
        """The exposition text (refreshes the store count first)."""
        try:
            self.conversations_stored.set(self._chat.count_conversations())
        except Exception:  # noqa: BLE001 - a scrape must not fail on a busy store
            pass
        return generate_latest(self.registry)

"""Property: a malformed frame gets exactly one protocol ``error`` frame, nothing else.

Hypothesis draws frames that are wrong in every way a client can get them
wrong (not JSON, not an object, no or a bad ``type``, ``data`` not an
object, a required field missing or of the wrong type, a bad ``id``) and
sends them over a real connection. After each, a ``ping`` with a fresh id
marks the end of the answer: everything before the ``pong`` must be one
``error`` frame with a protocol code and a plain message, and the
connection must still be serving.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actorchat.server import Server
from tests.server_support import Client, running_server

CODES = {
    "INVALID_JSON",
    "INVALID_MESSAGE",
    "UNKNOWN_TYPE",
    "MESSAGE_TOO_LONG",
    "NOT_FOUND",
    "FORBIDDEN",
}

# type -> required fields with a generator of values of the right type
REQUIRED: dict[str, dict[str, st.SearchStrategy[Any]]] = {
    "join_conversation": {"conversation_id": st.text(min_size=1, max_size=20)},
    "leave_conversation": {"conversation_id": st.text(min_size=1, max_size=20)},
    "send_message": {
        "conversation_id": st.text(min_size=1, max_size=20),
        "content": st.text(max_size=50),
    },
    "cancel_stream": {
        "conversation_id": st.text(min_size=1, max_size=20),
        "message_id": st.text(min_size=1, max_size=20),
    },
    "typing": {"conversation_id": st.text(min_size=1, max_size=20), "is_typing": st.booleans()},
    "rename_conversation": {
        "conversation_id": st.text(min_size=1, max_size=20),
        "title": st.text(max_size=20),
    },
    "delete_conversation": {"conversation_id": st.text(min_size=1, max_size=20)},
    "stream_response": {"conversation_id": st.text(min_size=1, max_size=20)},
}
# types whose fields are all optional: malformed only through a wrongly typed one
OPTIONAL_STRINGS = {
    "create_conversation": ["title", "model", "system_prompt"],
    "list_conversations": ["before"],
}

json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
not_a_string = st.one_of(
    st.booleans(),
    st.floats(allow_nan=False),
    st.lists(json_scalars, max_size=3),
    st.dictionaries(st.text(max_size=5), json_scalars, max_size=3),
)
not_an_object = st.one_of(json_scalars, st.lists(json_values, max_size=3))
bad_id = st.one_of(st.booleans(), st.floats(allow_nan=False), st.lists(json_scalars, max_size=2))


def _not_json() -> st.SearchStrategy[str]:
    def invalid(text: str) -> bool:
        try:
            return not isinstance(json.loads(text), dict)
        except ValueError:
            return True

    return st.text(max_size=200).filter(invalid)


@st.composite
def missing_or_mistyped(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(sorted(REQUIRED)))
    fields = {name: draw(strategy) for name, strategy in REQUIRED[kind].items()}
    victim = draw(st.sampled_from(sorted(fields)))
    if draw(st.booleans()):
        del fields[victim]
    else:
        fields[victim] = draw(st.one_of(not_a_string, st.lists(json_scalars, min_size=1)))
    extra = draw(st.dictionaries(st.sampled_from(["x", "y", "z"]), json_values, max_size=2))
    return json.dumps({"type": kind, "data": {**extra, **fields}})


@st.composite
def wrong_optional(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(sorted(OPTIONAL_STRINGS)))
    name = draw(st.sampled_from(OPTIONAL_STRINGS[kind]))
    return json.dumps({"type": kind, "data": {name: draw(not_a_string)}})


@st.composite
def bad_envelope(draw: st.DrawFn) -> str:
    choice = draw(st.integers(0, 3))
    if choice == 0:  # no type, or a type that is not a string
        obj = draw(st.dictionaries(st.sampled_from(["data", "id", "token"]), json_values))
        if draw(st.booleans()):
            obj["type"] = draw(st.one_of(not_a_string, st.integers(), st.none()))
    elif choice == 1:  # a type the protocol does not have
        kind = draw(st.text(max_size=30).filter(lambda t: t not in _KNOWN))
        obj = {"type": kind, "data": draw(json_values)}
    elif choice == 2:  # data that is not an object
        kind = draw(st.sampled_from(sorted(_KNOWN - {"auth"})))
        obj = {"type": kind, "data": draw(not_an_object.filter(lambda v: v is not None))}
    else:  # an id that cannot be echoed
        obj = {"type": "ping", "id": draw(bad_id)}
    return json.dumps(obj)


_KNOWN = {
    *REQUIRED,
    *OPTIONAL_STRINGS,
    "auth",
    "ping",
    "typing_start",
    "typing_stop",
}

malformed = st.one_of(_not_json(), bad_envelope(), missing_or_mistyped(), wrong_optional())


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("prop"), rate_limit_messages=100_000) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server: Server) -> Iterator[Client]:
    c = Client(server, "fuzzer")
    yield c
    c.close()


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(frame=malformed)
def test_malformed_frames_only_ever_get_error_frames(client: Client, frame: str) -> None:
    client.send_raw(frame)
    marker = client.send("ping")
    answer = []
    while True:
        got = client.recv()
        if got["type"] == "pong" and got.get("reply_to") == marker:
            break
        answer.append(got)
    assert len(answer) == 1, answer
    (error,) = answer
    assert error["type"] == "error"
    assert set(error) <= {"type", "data", "reply_to"}
    assert error["data"]["code"] in CODES, error
    assert isinstance(error["data"]["message"], str) and error["data"]["message"]
    assert "Traceback" not in error["data"]["message"]

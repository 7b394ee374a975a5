"""The wire format: parsing and validating client frames, building server frames.

Everything here is pure (no I/O, no greenlets) so it can be tested, and
fuzzed, on its own. A client frame becomes a ``Request`` or raises one of
the ``actorchat.errors`` exceptions whose ``code`` is the protocol's error
code; the connection turns those into ``error`` frames. Field rules follow
``PROTOCOL.md``: ids are strings on the wire, and a numeric
``conversation_id`` (as classic clients send) is matched as its decimal
string (rule 16).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from actorchat.errors import InvalidJSON, InvalidRequest, UnknownType

__all__ = [
    "CLIENT_TYPES",
    "Request",
    "encode",
    "error_frame",
    "frame",
    "parse",
]

#: Longest ``id`` echoed back as ``reply_to``; a longer one is refused.
MAX_ID_CHARS = 256

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def encode(obj: Mapping[str, Any]) -> str:
    """JSON text of a frame: compact, UTF-8 (no ``\\u`` escapes)."""
    return _dumps(obj)


def frame(kind: str, data: Mapping[str, Any], reply_to: Any = None, **top: Any) -> str:
    """An encoded server frame; ``reply_to`` and ``top`` go at the top level."""
    out: dict[str, Any] = {"type": kind, "data": data}
    if reply_to is not None:
        out["reply_to"] = reply_to
    out.update(top)
    return encode(out)


def error_frame(code: str, message: str, reply_to: Any = None, **details: Any) -> str:
    """An encoded ``error`` frame; ``details`` (ids, ``retry_after``) join ``data``."""
    data: dict[str, Any] = {"code": code, "message": message}
    data.update({k: v for k, v in details.items() if v is not None})
    return frame("error", data, reply_to)


@dataclass(slots=True)
class Request:
    """A validated client frame: its type, its normalised fields, its ``id``."""

    type: str
    fields: dict[str, Any]
    id: str | int | None = None

    def __getitem__(self, name: str) -> Any:
        return self.fields[name]

    def get(self, name: str, default: Any = None) -> Any:
        return self.fields.get(name, default)


# -- field validators: (value, field name) -> normalised value, or raise -----

Check = Callable[[Any, str], Any]


def _conversation_id(value: Any, name: str) -> str:
    if isinstance(value, str) and value and len(value) <= MAX_ID_CHARS:
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise InvalidRequest(f"{name} must be a non-empty string (or an integer)")


def _string(value: Any, name: str) -> str:
    if isinstance(value, str):
        return value
    raise InvalidRequest(f"{name} must be a string")


def _boolean(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    raise InvalidRequest(f"{name} must be true or false")


def _count(value: Any, name: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise InvalidRequest(f"{name} must be an integer >= 0")


def _page_size(value: Any, name: str) -> int:
    # As over HTTP: a page of nothing is a mistake, not a request for the default.
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    raise InvalidRequest(f"{name} must be an integer >= 1")


def _index(value: Any, name: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value >= -1:
        return value
    raise InvalidRequest(f"{name} must be an integer >= -1")


def _message_type(value: Any, name: str) -> str:
    if value == "user":
        return "user"
    raise InvalidRequest(f"{name} must be 'user' (the only type a client may send)")


# type -> {field: (required, check)}
_SCHEMAS: dict[str, dict[str, tuple[bool, Check]]] = {
    "auth": {"token": (True, _string)},
    "create_conversation": {
        "title": (False, _string),
        "model": (False, _string),
        "system_prompt": (False, _string),
    },
    "join_conversation": {
        "conversation_id": (True, _conversation_id),
        "history_limit": (False, _count),
        "after_index": (False, _index),
        "message_id": (False, _conversation_id),
    },
    "leave_conversation": {"conversation_id": (True, _conversation_id)},
    "send_message": {
        "conversation_id": (True, _conversation_id),
        "content": (True, _string),
        "message_type": (False, _message_type),
    },
    "stream_response": {
        "conversation_id": (True, _conversation_id),
        "message_id": (False, _conversation_id),
        "assistant_id": (False, _string),
    },
    "cancel_stream": {
        "conversation_id": (True, _conversation_id),
        "message_id": (True, _conversation_id),
    },
    "typing": {"conversation_id": (True, _conversation_id), "is_typing": (True, _boolean)},
    "typing_start": {"conversation_id": (True, _conversation_id)},
    "typing_stop": {"conversation_id": (True, _conversation_id)},
    "list_conversations": {"limit": (False, _page_size), "before": (False, _conversation_id)},
    "rename_conversation": {"conversation_id": (True, _conversation_id), "title": (True, _string)},
    "delete_conversation": {"conversation_id": (True, _conversation_id)},
    "ping": {},
}

#: Every frame type a client may send.
CLIENT_TYPES: frozenset[str] = frozenset(_SCHEMAS)


def request_id(obj: Mapping[str, Any]) -> str | int | None:
    """The frame's ``id`` if it is one we can echo, else None (never raises)."""
    rid = obj.get("id")
    if isinstance(rid, str) and len(rid) <= MAX_ID_CHARS:
        return rid
    if isinstance(rid, int) and not isinstance(rid, bool) and abs(rid) < 2**63:
        return rid
    return None


def load(text: str | bytes) -> dict[str, Any]:
    """Decode a frame into a JSON object, or raise ``InvalidJSON``."""
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise InvalidJSON("the frame is not valid JSON") from exc
    if not isinstance(obj, dict):
        raise InvalidJSON("the frame must be a JSON object")
    # JSON may escape half of a UTF-16 pair ("\ud800"), which decodes to a
    # string no UTF-8 text can hold: echoed back, stored or sent on, it broke
    # the connection or the store. Such escapes are rare, so only a frame
    # that has one is searched.
    escaped = (
        _SURROGATE_ESCAPE.search(text)
        if isinstance(text, str)
        else _SURROGATE_ESCAPE_BYTES.search(
            text
        )  # bytes (binary frames, bodies): not decoded again
    )
    if escaped and _holds_lone_surrogate(obj):
        raise InvalidJSON("the frame is not valid text: it escapes a lone UTF-16 surrogate")
    return obj


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE_ESCAPE_BYTES = re.compile(rb"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def _holds_lone_surrogate(obj: Any) -> bool:
    # Iterative: json.loads accepts nestings deeper than Python's recursion limit.
    stack = [obj]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def parse(obj: dict[str, Any]) -> Request:
    """Validate a decoded frame against its type's schema.

    Raises ``UnknownType`` for a type the protocol lacks and
    ``InvalidRequest`` naming the first missing or wrongly typed field.
    """
    kind = obj.get("type")
    if not isinstance(kind, str):
        raise InvalidRequest("type must be a string")
    schema = _SCHEMAS.get(kind)
    if schema is None:
        shown = kind if len(kind) <= 64 else kind[:64] + "..."
        raise UnknownType(f"unknown type {shown!r}")
    rid = obj.get("id")
    if rid is not None and request_id(obj) is None:
        raise InvalidRequest(f"id must be a string (up to {MAX_ID_CHARS} characters) or an integer")
    data = obj.get("data")
    if data is None:
        data = {}
    elif not isinstance(data, dict):
        raise InvalidRequest("data must be an object")
    if kind == "auth" and "token" not in data and "token" in obj:
        # Classic clients send the token at the top level; PROTOCOL.md accepts both.
        data = {**data, "token": obj["token"]}
    fields: dict[str, Any] = {}
    for name, (required, check) in schema.items():
        value = data.get(name)
        if value is None:
            if required:
                where = "data.token (or token)" if kind == "auth" else f"data.{name}"
                raise InvalidRequest(f"{kind}: {where} is required")
            continue
        fields[name] = check(value, f"data.{name}")
    return Request(kind, fields, request_id(obj))

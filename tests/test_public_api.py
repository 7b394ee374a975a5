"""The public surface is what the README promises, and nothing private leaks."""

from __future__ import annotations

import actorchat
from actorchat import errors, providers, stores

PROMISED = {
    "ChatSystem",
    "Config",
    "Conversation",
    "ConversationDeleted",
    "ConversationState",
    "ConversationStats",
    "ConversationUpdated",
    "ErrorEvent",
    "Event",
    "EventBus",
    "Message",
    "MessageReceived",
    "ModelConfig",
    "StreamComplete",
    "StreamContent",
    "StreamStart",
    "Subscription",
    "Usage",
    "__version__",
    "broadcast_message",
    "conversation_count",
    "default_system",
    "errors",
    "get_history",
    "get_stats",
    "is_patched",
    "load_config",
    "patch",
    "send_message",
    "start_conversation",
    "start_conversations",
}


def test_all_is_the_promised_surface() -> None:
    assert set(actorchat.__all__) == PROMISED
    assert actorchat.__all__ == sorted(actorchat.__all__)
    for name in actorchat.__all__:
        assert hasattr(actorchat, name), name


def test_extension_points_are_exported() -> None:
    assert {
        "Provider",
        "MockProvider",
        "GenerationRequest",
        "StreamEnd",
        "register_provider",
    } <= set(providers.__all__)
    assert {"Store", "SQLiteStore", "MemoryStore"} <= set(stores.__all__)


def test_one_exception_root_and_one_code_table() -> None:
    for name in errors.__all__:
        obj = getattr(errors, name)
        if isinstance(obj, type):
            assert issubclass(obj, errors.ActorchatError)
    assert errors.error_code(errors.MessageTooLong("x")) == "MESSAGE_TOO_LONG"
    assert errors.error_code(errors.Timeout("x")) == "TIMEOUT"
    assert errors.error_code(errors.Fenced("x")) == "CONVERSATION_MOVED"
    assert issubclass(errors.Fenced, errors.StoreError)
    assert errors.error_code(KeyError("secret")) == "INTERNAL_ERROR"


def test_store_kinds_have_one_home() -> None:
    assert {"register_store", "store_kinds", "create_store", "StoreKind"} <= set(stores.__all__)
    assert stores.store_kinds() == ["memory", "postgres", "sqlite"]
    assert stores.store_kind("postgres").durable and stores.store_kind("sqlite").durable
    assert set(providers.provider_kinds()) >= {"mock", "openai", "anthropic"}

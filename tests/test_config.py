"""Configuration: defaults < file < environment < overrides, validated once."""

from __future__ import annotations

from pathlib import Path

import pytest

from actorchat import load_config
from actorchat.errors import ConfigurationError


def test_precedence(tmp_path: Path) -> None:
    f = tmp_path / "actorchat.toml"
    f.write_text(
        "mock_tokens = 7\nmock_delay_ms = 3\n[mock]\nfailure_rate = 0.5\n"
        '[models.fast]\nprovider = "mock"\ntokens = 2\n'
    )
    cfg = load_config(f, env={})
    assert (cfg.mock_tokens, cfg.mock_delay_ms, cfg.mock_failure_rate) == (7, 3.0, 0.5)
    assert cfg.models["fast"].options == {"tokens": 2}
    cfg = load_config(f, env={"ACTORCHAT_MOCK_TOKENS": "9", "ACTORCHAT_DATA_DIR": "/tmp/x"})
    assert cfg.mock_tokens == 9 and str(cfg.data_dir) == "/tmp/x"
    cfg = load_config(f, env={"ACTORCHAT_MOCK_TOKENS": "9"}, mock_tokens=11, idle_timeout=None)
    assert cfg.mock_tokens == 11 and cfg.idle_timeout == 600.0
    assert load_config(env={"ACTORCHAT_CONFIG": str(f)}).mock_tokens == 7


def test_a_config_built_in_python_takes_a_string_data_dir(tmp_path: Path) -> None:
    from actorchat.config import Config

    cfg = Config(data_dir=str(tmp_path / "d")).validate()  # type: ignore[arg-type]
    assert cfg.data_dir == tmp_path / "d"
    assert Config(data_dir="~/x").validate().data_dir == Path("~/x").expanduser()  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="data_dir: must be a path"):
        Config(data_dir=None).validate()  # type: ignore[arg-type]


def test_defaults_need_no_file_or_key() -> None:
    cfg = load_config(env={})
    assert cfg.default_model == "mock" and cfg.store == "sqlite"
    assert "mock" in cfg.all_models()


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"ACTORCHAT_MOCK_TOKENS": "many"}, "mock_tokens: must be int"),
        ({"ACTORCHAT_MOCK_TOKENS": "0"}, "mock_tokens: must be at least 1"),
        ({"ACTORCHAT_RESTART": "sometimes"}, "restart: must be one of"),
        ({"ACTORCHAT_DEFAULT_MODEL": "gpt-9"}, "default_model: no model named 'gpt-9'"),
        ({"ACTORCHAT_GC_FREEZE": "perhaps"}, "gc_freeze: must be bool"),
    ],
)
def test_invalid_settings_name_the_setting(env: dict[str, str], needle: str) -> None:
    with pytest.raises(ConfigurationError, match=needle):
        load_config(env=env)


def test_one_problem_is_one_line_and_several_are_listed() -> None:
    with pytest.raises(ConfigurationError) as one:
        load_config(env={"ACTORCHAT_MOCK_TOKENS": "0"})
    assert str(one.value) == "invalid configuration: mock_tokens: must be at least 1 (got 0)"
    with pytest.raises(ConfigurationError) as two:
        load_config(env={"ACTORCHAT_MOCK_TOKENS": "0", "ACTORCHAT_MAX_RESTARTS": "-1"})
    assert str(two.value).splitlines()[1:] == [
        "  mock_tokens: must be at least 1 (got 0)",
        "  max_restarts: must be >= 0 (got -1)",
    ]


def test_a_misspelt_variable_is_reported_not_silently_ignored(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level("WARNING", logger="actorchat.config"):
        cfg = load_config(env={"ACTORCHAT_MOCK_TOKEN": "5", "ACTORCHAT_CHROMIUM": "/x"})
    assert cfg.mock_tokens == 40
    assert [r.getMessage() for r in caplog.records] == [
        "ignoring ACTORCHAT_MOCK_TOKEN: no such setting (did you mean ACTORCHAT_MOCK_TOKENS?)"
    ]


def test_file_errors_are_clear(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("mock_tokens = [")
    with pytest.raises(ConfigurationError, match="not valid TOML"):
        load_config(bad, env={})
    with pytest.raises(ConfigurationError, match="cannot read config file"):
        load_config(tmp_path / "missing.toml", env={})
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("colour = 'blue'\n")
    with pytest.raises(ConfigurationError, match="unknown settings"):
        load_config(unknown, env={})


def test_postgres_settings_are_checked_and_the_password_never_shown(tmp_path: Path) -> None:
    env = {
        "ACTORCHAT_STORE": "postgres",
        "ACTORCHAT_DATABASE_URL": "postgresql://chat@db:5432/chat",
        "ACTORCHAT_DATABASE_POOL_SIZE": "4",
    }
    cfg = load_config(env=env)
    assert (cfg.store, cfg.database_url, cfg.database_pool_size) == (
        "postgres",
        "postgresql://chat@db:5432/chat",
        4,
    )
    with pytest.raises(ConfigurationError, match="database_url: store = 'postgres' needs"):
        load_config(env={"ACTORCHAT_STORE": "postgres"})
    with pytest.raises(ConfigurationError) as caught:
        load_config(env={**env, "ACTORCHAT_DATABASE_URL": "mysql://chat:s3cret@db/chat"})
    assert "s3cret" not in str(caught.value) and "chat:***@db" in str(caught.value)
    with pytest.raises(ConfigurationError, match="database_pool_size"):
        load_config(env={**env, "ACTORCHAT_DATABASE_POOL_SIZE": "0"})
    # A password file that cannot be read is one clear line when the store is built.
    from actorchat.stores import create_store

    missing = load_config(env=env, database_password_file=str(tmp_path / "nope"))
    with pytest.raises(ConfigurationError, match="cannot read database_password_file"):
        create_store(missing)

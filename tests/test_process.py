"""Whole-process behaviour: patching, the CLI, the module-level shortcuts.

These run real subprocesses, since monkey-patching is per process.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import actorchat

ENV = {k: v for k, v in os.environ.items() if not k.startswith("ACTORCHAT_")}


def run(code: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(ENV, ACTORCHAT_DATA_DIR=str(tmp_path / "data"), ACTORCHAT_MOCK_DELAY_MS="0")
    return subprocess.run(
        [sys.executable, "-W", "error", *args, *(["-c", code] if code else [])],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=tmp_path,
    )


def test_importing_and_patching_warns_nothing(tmp_path: Path) -> None:
    out = run("import actorchat; actorchat.patch(); print(actorchat.is_patched())", tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "True" and out.stderr == ""


def test_unpatched_process_gets_a_configuration_error_not_a_hang(tmp_path: Path) -> None:
    code = (
        "import actorchat\n"
        "try:\n"
        "    actorchat.ChatSystem().start()\n"
        "except actorchat.errors.ConfigurationError as exc:\n"
        "    print('refused:', exc)\n"
    )
    out = run(code, tmp_path)
    assert out.returncode == 0, out.stderr
    assert "refused: actorchat needs a gevent monkey-patched process" in out.stdout


def test_module_level_shortcuts(tmp_path: Path) -> None:
    code = (
        "import actorchat\n"
        "actorchat.patch()\n"
        "cid = actorchat.start_conversation()\n"
        "print(bool(actorchat.send_message(cid, 'Hello!')))\n"
        "print(len(actorchat.get_history(cid)), actorchat.get_stats(cid).messages)\n"
        "ids = actorchat.start_conversations(100)\n"
        "res = actorchat.broadcast_message(ids, 'hi')\n"
        "print(len(res), actorchat.conversation_count())\n"
    )
    out = run(code, tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "2", "2", "100", "101"]


def test_cli_version_and_chat(tmp_path: Path) -> None:
    out = run("", tmp_path, "-m", "actorchat", "version")
    assert out.stdout.strip() == f"actorchat {actorchat.__version__}"
    out = run("", tmp_path, "-m", "actorchat", "chat", "--mock-tokens", "8", "Hello", "actors")
    assert out.returncode == 0, out.stderr
    assert "“Hello actors”" in out.stdout
    assert (tmp_path / "data" / "actorchat.sqlite3").exists()


def test_cli_reports_bad_config_without_a_traceback(tmp_path: Path) -> None:
    out = run("", tmp_path, "-m", "actorchat", "chat", "--mock-tokens", "0", "hi")
    assert out.returncode == 1
    assert "mock_tokens: must be at least 1" in out.stderr
    assert "Traceback" not in out.stderr


def test_cli_usage_help_and_version_flag(tmp_path: Path) -> None:
    out = run("", tmp_path, "-m", "actorchat", "--version")
    assert out.returncode == 0 and out.stdout.strip() == f"actorchat {actorchat.__version__}"
    out = run("", tmp_path, "-m", "actorchat")
    assert out.returncode == 2 and "serve" in out.stderr and "chat" in out.stderr
    # A mistyped flag is blamed on the command that has it, with its usage.
    out = run("", tmp_path, "-m", "actorchat", "serve", "--prot", "9000")
    assert out.returncode == 2
    assert "actorchat serve: error: unrecognized arguments: --prot 9000" in out.stderr
    for argv in (["--bogus", "chat", "hi"], ["--bogus"]):  # before any command: the top level's
        out = run("", tmp_path, "-m", "actorchat", *argv)
        assert out.returncode == 2
        assert "actorchat: error: unrecognized arguments: --bogus" in out.stderr


def test_cli_reads_the_message_from_stdin_and_survives_a_closed_pipe(tmp_path: Path) -> None:
    env = dict(ENV, ACTORCHAT_DATA_DIR=str(tmp_path / "data"), ACTORCHAT_MOCK_DELAY_MS="0")
    out = subprocess.run(
        [sys.executable, "-m", "actorchat", "chat", "-"],
        input="from a pipe",
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    assert "“from a pipe”" in out.stdout
    # The reader goes away after a few bytes (``| head -c 20``). The reply
    # (20,000 words, ~120 KB) must outgrow the pipe's buffer (64 KB), or the
    # command may write it all before the reader leaves and rightly exit 0.
    config = tmp_path / "long.toml"
    config.write_text('[models.mock]\nprovider = "mock"\nmax_tokens = 50000\n')
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "actorchat",
            "chat",
            "--config",
            str(config),
            "--mock-tokens",
            "20000",
            "long",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=tmp_path,
    )
    assert proc.stdout is not None and proc.stderr is not None
    assert len(proc.stdout.read(20)) == 20
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(120) == 1
    assert "Traceback" not in err and "BrokenPipe" not in err


def test_cli_says_why_a_reply_failed(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:  # a port where nothing listens
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = tmp_path / "actorchat.toml"
    config.write_text(
        "[models.down]\n"
        'provider = "openai"\n'
        f'base_url = "http://127.0.0.1:{port}/v1"\n'
        'model = "m"\n'
        "max_attempts = 1\n"
    )
    out = run("", tmp_path, "-m", "actorchat", "chat", "--config", str(config),
              "--model-name", "down", "hi")  # fmt: skip
    assert out.returncode == 1
    assert (
        "actorchat: PROVIDER_ERROR: model 'down': connection failed: Connection refused "
        "(gave up after 1 attempt)"
    ) in out.stderr
    said = [line for line in out.stderr.splitlines() if line.startswith("actorchat: ")]
    assert len(said) == 1 and "HTTPConnectionPool" not in said[0]
    assert "Traceback" not in out.stderr
    # The operator's log line keeps the first cause, past the retries.
    logged = [line for line in out.stderr.splitlines() if " failed: model 'down'" in line]
    assert len(logged) == 1 and "(cause: ConnectionError: HTTPConnectionPool" in logged[0]


def test_a_data_dir_that_cannot_be_used_is_one_clear_line(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    for bad in (tmp_path / "a-file", tmp_path / "a-file" / "below"):
        env = dict(ENV, ACTORCHAT_DATA_DIR=str(bad))
        out = subprocess.run(
            [sys.executable, "-m", "actorchat", "chat", "hi"],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
            cwd=tmp_path,
        )
        assert out.returncode == 1
        assert out.stderr.startswith(f"actorchat: cannot open SQLite store {bad}")
        assert "ACTORCHAT_DATA_DIR" in out.stderr and "Traceback" not in out.stderr
        if bad == tmp_path / "a-file":
            assert f"{bad} is a file, not a directory" in out.stderr


def test_a_second_process_on_the_same_data_dir_is_refused(tmp_path: Path) -> None:
    # Two processes appending to one conversation numbered its turns twice
    # (found by a new user running `actorchat chat` beside `make run`).
    from actorchat import ChatSystem
    from actorchat.config import load_config

    config = load_config(env={}, data_dir=tmp_path / "data", mock_delay_ms=0)
    with ChatSystem(config) as chat:
        cid = chat.start_conversation()
        out = run("", tmp_path, "-m", "actorchat", "chat", "--conversation", cid, "hi")
        assert out.returncode == 1
        assert "is in use by another actorchat process" in out.stderr
        assert f"(pid {os.getpid()})" in out.stderr and "Traceback" not in out.stderr
    out = run("", tmp_path, "-m", "actorchat", "chat", "--conversation", cid, "hi")
    assert out.returncode == 0, out.stderr


def test_serve_on_a_busy_port_is_one_clear_line(tmp_path: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        out = run("", tmp_path, "-m", "actorchat", "serve", "--port", str(port))
    assert out.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in out.stderr
    assert "--port" in out.stderr and "Traceback" not in out.stderr

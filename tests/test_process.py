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


def test_module_level_shortcuts_of_seed_000(tmp_path: Path) -> None:
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

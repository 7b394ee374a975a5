"""The server package's public surface, and importing it the documented way."""

from __future__ import annotations

import subprocess
import sys

import actorchat.server


def test_public_names() -> None:
    assert actorchat.server.__all__ == ["WS_PATH", "Server", "create_app", "serve"]
    assert actorchat.server.WS_PATH == "/api/v1/chat/ws"


def test_import_after_patch_raises_no_monkey_patch_warning() -> None:
    code = (
        "import warnings; warnings.simplefilter('error');"
        "import actorchat; actorchat.patch();"
        "import actorchat.server; print('ok')"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"

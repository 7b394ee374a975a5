"""Dev auth's signing key lives in the data dir: tokens outlive a restart."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import requests

from actorchat.errors import ConfigurationError
from actorchat.server._auth import DEV_KEY_FILE, load_dev_key
from tests.server_support import WAIT, Client, dev_token, running_server


def _list(url: str, token: str) -> requests.Response:
    return requests.get(
        f"{url}/api/v1/conversations", headers={"Authorization": f"Bearer {token}"}, timeout=WAIT
    )


def test_a_dev_token_from_before_a_restart_still_works(tmp_path: Path) -> None:
    with running_server(tmp_path) as server:
        token = dev_token(server, "alice")
        cid = requests.post(
            f"{server.url}/api/v1/conversations",
            json={"title": "kept"},
            headers={"Authorization": f"Bearer {token}"},
            timeout=WAIT,
        ).json()["id"]
    key = tmp_path / "data" / DEV_KEY_FILE
    assert stat.S_IMODE(key.stat().st_mode) == 0o600

    with running_server(tmp_path) as again:
        r = _list(again.url, token)
        assert r.status_code == 200, r.text
        assert [c["id"] for c in r.json()["conversations"]] == [cid]
        # And over the WebSocket, as a client that saved its token reconnects.
        client = Client(again, user=None)
        assert client.auth(token)["data"]["user_id"] == "alice"


def test_a_token_from_another_data_dir_is_refused(tmp_path: Path) -> None:
    with running_server(tmp_path / "one") as one:
        token = dev_token(one, "alice")
    with running_server(tmp_path / "two") as two:
        r = _list(two.url, token)
        assert r.status_code == 401
        assert r.json()["error"]["code"] == "AUTH_FAILED"


def test_processes_starting_at_once_agree_on_one_key(tmp_path: Path) -> None:
    path = tmp_path / DEV_KEY_FILE
    pids = []
    for _ in range(4):
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            try:
                load_dev_key(path)
                os._exit(0)
            except BaseException:
                os._exit(1)
        pids.append(pid)
    codes = [os.waitpid(pid, 0)[1] for pid in pids]
    assert codes == [0, 0, 0, 0]
    assert load_dev_key(path) == path.read_text().strip()
    assert sorted(p.name for p in tmp_path.iterdir()) == [DEV_KEY_FILE]  # no temp files left


def test_an_unreadable_or_empty_key_says_what_to_do(tmp_path: Path) -> None:
    path = tmp_path / DEV_KEY_FILE
    path.write_text("")
    with pytest.raises(ConfigurationError, match="delete the file"):
        load_dev_key(path)
    with pytest.raises(ConfigurationError, match="data_dir: cannot keep the dev auth key"):
        load_dev_key(tmp_path / "missing-dir" / DEV_KEY_FILE)

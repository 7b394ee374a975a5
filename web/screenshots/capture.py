"""Take the README's screenshots of the web app (light and dark).

Run from the repository root::

    .venv/bin/python web/screenshots/capture.py

It starts a server in a process of its own with two models: the embedded
``mock`` and ``coder``, a fake OpenAI-compatible server (in this process)
that streams a Markdown answer with a code block; then drives Debian's
Chromium through the chat workspace and the swarm dashboard and writes
``workspace-light.png``, ``workspace-dark.png``, ``dashboard-light.png`` and
``dashboard-dark.png`` beside this file.
"""

from __future__ import annotations

from actorchat._gevent import patch

patch()

import re  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

import requests  # noqa: E402

from actorchat.testing import Behavior, FakeOpenAIServer  # noqa: E402
from tests.web_support import browser_missing, launch_browser, web_server_process  # noqa: E402

ANSWER = """Start them in one call: the batch API creates every actor at once, \
in one store transaction.

```python
import actorchat

actorchat.patch()
with actorchat.ChatSystem() as chat:
    ids = chat.start_conversations(10_000)
    replies = chat.broadcast_message(ids, "Tell me a joke")
    print(len(replies), "replies")
```

Each conversation is a **Pykka actor** on its own greenlet:

- a crash restarts *only* that conversation (the supervisor keeps the rest going);
- replies stream token by token, so `stream_content` frames arrive as they are generated;
- an idle conversation is *passivated* and comes back on its next message.
"""


def tokens(text: str) -> list[str]:
    """Split like a tokenizer would: words with their leading whitespace."""
    out: list[str] = []
    word = ""
    for ch in text:
        if ch in " \n" and word.strip():
            out.append(word)
            word = ""
        word += ch
    out.append(word)
    return out


def main() -> int:
    missing = browser_missing()
    if missing:
        print(missing, file=sys.stderr)
        return 1
    behavior = Behavior(tokens=tokens(ANSWER), delay=0.03, prompt_tokens=42)
    with (
        FakeOpenAIServer(behavior) as fake,
        tempfile.TemporaryDirectory() as tmp,
        web_server_process(
            Path(tmp),
            mock_tokens=24,
            mock_delay_ms=40.0,
            models={"coder": {"provider": "openai", "base_url": fake.base_url}},
        ) as base,
        launch_browser() as browser,
    ):
        workspace(base, browser)
        dashboard(base, browser)
    return 0


def workspace(base: str, browser: object) -> None:
    token = requests.post(f"{base}/api/v1/auth/token", json={"user_id": "alice"}, timeout=30)
    auth = {"Authorization": f"Bearer {token.json()['token']}"}
    for title, text in [
        ("Weekend plans", "Suggest a hike near the lake"),
        ("Supervision trees", "Explain one_for_one"),
        ("Release notes draft", "Summarise the changes"),
    ]:
        conv = requests.post(
            f"{base}/api/v1/conversations", json={"title": title}, headers=auth, timeout=30
        ).json()
        requests.post(
            f"{base}/api/v1/conversations/{conv['id']}/messages",
            json={"content": text},
            headers=auth,
            timeout=60,
        ).raise_for_status()
    ctx = browser.new_context(  # type: ignore[attr-defined]
        viewport={"width": 1280, "height": 800}, color_scheme="light", bypass_csp=True
    )
    page = ctx.new_page()
    page.goto(f"{base}/")
    page.get_by_label("User name").fill("alice")
    page.get_by_role("button", name="Log in").click()
    page.locator("#conn-status", has_text="Connected").wait_for()
    page.get_by_label("Model").select_option("coder")
    page.get_by_role("button", name="New chat").click()
    page.wait_for_function("/#\\/c\\//.test(location.hash)")
    box = page.get_by_role("textbox", name="Message")
    box.fill("How do I start 10,000 conversations from Python?")
    box.press("Enter")
    page.locator("article[data-role=assistant][data-state=done]").wait_for(timeout=60_000)
    box.fill("And what happens when one of them crashes?")
    box.press("Enter")
    page.wait_for_function(
        "() => Number(document.querySelector('article[data-state=streaming]')"
        "?.dataset.chunks ?? 0) >= 14"
    )
    page.screenshot(path=str(HERE / "workspace-light.png"))
    page.locator("article[data-role=assistant][data-state=done]").nth(1).wait_for(timeout=60_000)
    page.emulate_media(color_scheme="dark")
    page.locator("article[data-role=assistant]").nth(0).scroll_into_view_if_needed()
    page.wait_for_function("getComputedStyle(document.body).backgroundColor !== 'rgb(244, 245, 247)'")
    page.screenshot(path=str(HERE / "workspace-dark.png"))
    ctx.close()


def dashboard(base: str, browser: object) -> None:
    ctx = browser.new_context(  # type: ignore[attr-defined]
        viewport={"width": 1280, "height": 900}, color_scheme="light", bypass_csp=True
    )
    page = ctx.new_page()
    page.goto(f"{base}/dashboard.html")
    page.get_by_label("User name").fill("swarm")
    page.get_by_role("button", name="Log in").click()
    page.locator("#conn-status", has_text="Live").wait_for()
    page.get_by_role("button", name="Start 10,000").click()
    page.locator("#start-status", has_text="Started 10,000").wait_for(timeout=120_000)
    page.wait_for_function("window.__swarm.counts[1] === 10000", timeout=60_000)
    # Some history in the charts first (one sample a second).
    page.wait_for_function("window.__swarm.charts.memory.values.length >= 25", timeout=90_000)
    for theme in ("light", "dark"):
        page.emulate_media(color_scheme=theme)
        # Mid-broadcast, just after the kill: replies generating (blue) beside
        # the crashed cells (red) that the supervisor is about to restart.
        page.get_by_role("button", name="Broadcast").click()
        page.wait_for_function("window.__swarm.counts[2] > 4000", timeout=60_000)
        page.get_by_role("button", name="Kill 10% at random").click()
        page.locator("#kill-status", has_text=re.compile("^Killed")).wait_for(timeout=60_000)
        page.evaluate("new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
        page.screenshot(path=str(HERE / f"dashboard-{theme}.png"), full_page=True)
        page.locator("#kill-status", has_text="Recovered").wait_for(timeout=120_000)
        page.locator("#broadcast-status", has_text="complete").wait_for(timeout=120_000)
    ctx.close()


if __name__ == "__main__":
    sys.exit(main())

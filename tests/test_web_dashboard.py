"""The swarm dashboard in a real headless Chromium, against a real server.

Start 1,000 conversations, broadcast to all of them, kill 10 % at random and
see every one recover, checking the page against the server's own numbers.
Waits are Playwright's ``expect`` with deadlines, never sleeps. Without a
browser the tests are skipped, with the reason printed (``-ra``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests.server_support import WAIT, dev_token
from tests.web_support import browser_missing, launch_browser, needs_browser, web_server

MISSING = browser_missing()
pytestmark = needs_browser()

if MISSING is None:
    from playwright.sync_api import Page, expect

    expect.set_options(timeout=WAIT * 1000)

N = 1000
#: Replies long enough (~1 s) for the grid to show them generating.
TOKENS = 20
DELAY_MS = 50.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with web_server(
        tmp_path_factory.mktemp("dash"), mock_tokens=TOKENS, mock_delay_ms=DELAY_MS
    ) as srv:
        yield srv


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with launch_browser() as b:
        yield b


@pytest.fixture
def page(browser: Any) -> Iterator[Page]:
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    p = ctx.new_page()
    p.on("console", lambda m: m.type == "error" and errors.append(m.text))
    p.on("pageerror", lambda e: errors.append(f"uncaught: {e}"))
    yield p
    ctx.close()
    assert errors == [], "the page logged errors"


def stats(server: Any) -> dict[str, Any]:
    r = requests.get(
        f"{server.url}/api/v1/admin/stats",
        headers={"Authorization": f"Bearer {dev_token(server, 'ops')}"},
        timeout=WAIT,
    )
    r.raise_for_status()
    body: dict[str, Any] = r.json()
    return body


def legend(page: Page, state: str) -> Any:
    return page.locator(f"#legend li[data-state={state}] .count")


def test_start_broadcast_kill_and_recover(server: Any, page: Page) -> None:
    page.goto(f"{server.url}/dashboard.html")
    page.get_by_label("User name").fill("swarm")
    page.get_by_role("button", name="Log in").click()
    expect(page.locator("#conn-status")).to_have_text("Live")

    page.get_by_role("button", name="Start 1,000").click()
    expect(page.locator("#start-status")).to_contain_text("Started 1,000 conversations")
    expect(page.locator("#cell-count")).to_have_text("1,000")
    expect(legend(page, "idle")).to_have_text("1,000")
    assert stats(server)["live"] >= N
    # The grid is drawn: 1,000 cells, every one idle.
    drawn = page.evaluate("() => [window.__swarm.grid.n, window.__swarm.grid.cols]")
    assert drawn[0] == N and drawn[1] > 1
    expect(page.locator("#swarm-grid")).to_have_attribute(
        "aria-label", re.compile("1,000 conversations: 1,000 idle")
    )

    tokens0 = stats(server)["tokens_total"]
    page.get_by_label("Broadcast a message to all").fill("Hello, swarm!")
    page.get_by_role("button", name="Broadcast").click()
    expect(page.locator("#broadcast-status")).to_contain_text("accepted by 1,000")
    expect(page.locator("#broadcast-status")).to_contain_text(
        "All 1,000 replies complete", timeout=60_000
    )
    after = stats(server)
    assert after["tokens_total"] - tokens0 >= N * TOKENS
    assert after["states"]["generating"] == 0
    expect(legend(page, "idle")).to_have_text("1,000")
    expect(page.locator("#chart-tokens .chart-value")).to_have_text(re.compile(r"\d"))

    restarts0 = stats(server)["restarts_total"]
    page.get_by_role("button", name="Kill 10% at random").click()
    expect(page.locator("#kill-status")).to_contain_text(
        "Recovered 100 of 100 killed conversations", timeout=60_000
    )
    for state in ("crashed", "restarting", "failed"):
        expect(legend(page, state)).to_have_text("0")
    expect(legend(page, "idle")).to_have_text("1,000")
    final = stats(server)
    assert final["restarts_total"] - restarts0 >= 100
    assert final["states"]["failed"] == 0 and final["states"]["crashed"] == 0
    # The restarts chart shows them (within the next sample).
    expect(page.locator("#chart-restarts .chart-value")).to_have_text(re.compile(r"^[1-9]\d{2,}$"))

    # The swarm survives a reload (remembered in this browser).
    page.reload()
    expect(page.locator("#cell-count")).to_have_text("1,000")
    expect(legend(page, "idle")).to_have_text("1,000")

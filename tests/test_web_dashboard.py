"""The swarm dashboard in a real headless Chromium, against a real server.

Start 1,000 conversations, broadcast to all of them, kill 10 % at random and
see every one recover, checking the page against the server's own numbers;
a broadcast clicked during a start waits for it; the embedded model's crash
rate set from the page; every colour of the grid explained on it.
Waits are Playwright's ``expect`` with deadlines, never sleeps. Without a
browser the tests are skipped, with the reason printed (``-ra``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
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


def login(page: Page, server: Any, user: str) -> None:
    page.goto(f"{server.url}/dashboard.html")
    page.get_by_label("User name").fill(user)
    page.get_by_role("button", name="Log in").click()
    expect(page.locator("#conn-status")).to_have_text("Live")


def test_broadcast_clicked_while_starting_waits_for_the_start(server: Any, page: Page) -> None:
    login(page, server, "eager")
    # The start's request is held back until the test lets it through.
    held: list[Any] = []
    page.route("**/api/v1/conversations/batch", lambda route: held.append(route))
    broadcasts: list[str] = []
    page.on("request", lambda r: "/conversations/broadcast" in r.url and broadcasts.append(r.url))
    with page.expect_request("**/api/v1/conversations/batch"):
        page.get_by_role("button", name="Start 10", exact=True).click()
    expect(page.locator("#start-status")).to_have_text("Starting 10 conversations…")

    page.get_by_label("Broadcast a message to all").fill("Hello, early swarm!")
    button = page.get_by_role("button", name="Broadcast")
    button.click()
    status = page.locator("#broadcast-status")
    expect(status).to_contain_text("Waiting for the conversations being started")
    expect(button).to_be_disabled()
    assert len(held) == 1 and broadcasts == []

    held[0].continue_()
    expect(page.locator("#start-status")).to_contain_text("Started 10 conversations")
    expect(status).to_contain_text("accepted by 10")
    expect(status).to_contain_text("All 10 replies complete", timeout=60_000)
    expect(button).to_be_enabled()
    assert len(broadcasts) == 1


def faults(server: Any, rate: float | None = None) -> dict[str, Any]:
    """The embedded model's fault rates (GET), after setting the crash rate (PUT) if given."""
    url = f"{server.url}/api/v1/admin/faults"
    auth = {"Authorization": f"Bearer {dev_token(server, 'ops')}"}
    if rate is None:
        r = requests.get(url, headers=auth, timeout=WAIT)
    else:
        r = requests.put(url, json={"mock_crash_rate": rate}, headers=auth, timeout=WAIT)
    r.raise_for_status()
    body: dict[str, Any] = r.json()
    return body


def test_the_page_says_what_each_colour_means(server: Any, page: Page) -> None:
    login(page, server, "colours")
    help_ = page.locator(".state-help")
    expect(help_.get_by_role("heading", name="What the colours mean")).to_be_visible()
    # Every state the grid can draw is explained, next to a swatch of the grid's colour.
    rows = page.evaluate(
        """async () => {
        const { STATES } = await import('/js/swarm-grid.js');
        const paint = (css) => {
          const probe = document.createElement('span');
          probe.style.backgroundColor = css;
          document.body.append(probe);
          const rgb = getComputedStyle(probe).backgroundColor;
          probe.remove();
          return rgb;
        };
        return STATES.map((s, i) => {
          const item = document.querySelector(`.state-help [data-state="${s}"]`);
          const swatch = item?.querySelector('.swatch');
          return {
            state: s,
            text: item?.querySelector('dd')?.textContent.trim() ?? '',
            swatch: swatch ? getComputedStyle(swatch).backgroundColor : null,
            grid: paint(window.__swarm.grid.colors[i]),
          };
        });
      }"""
    )
    assert len(rows) == 7
    for row in rows:
        assert row["text"], row
        assert row["swatch"] == row["grid"], row
    expect(help_.locator("[data-state]")).to_have_count(len(rows))


def test_crash_rate_control(browser: Any, tmp_path: Path) -> None:
    # A server of its own: every reply crashing leaves failed conversations behind.
    with web_server(tmp_path, mock_tokens=TOKENS, mock_delay_ms=DELAY_MS) as srv:
        ctx = browser.new_context(viewport={"width": 1280, "height": 900})
        errors: list[str] = []
        try:
            page = ctx.new_page()
            page.on("console", lambda m: m.type == "error" and errors.append(m.text))
            page.on("pageerror", lambda e: errors.append(f"uncaught: {e}"))
            login(page, srv, "chaos")
            status = page.locator("#faults-status")

            def preset(label: str) -> Any:
                return page.get_by_role("button", name=label, exact=True)

            expect(status).to_have_text("Now 0 %: the embedded model never crashes.")
            expect(preset("0 %")).to_have_attribute("aria-pressed", "true")

            preset("20 %").click()
            expect(status).to_contain_text("Now 20 % of the embedded model's replies crash")
            expect(preset("20 %")).to_have_attribute("aria-pressed", "true")
            expect(preset("0 %")).to_have_attribute("aria-pressed", "false")
            assert faults(srv)["mock_crash_rate"] == 0.2

            # Out of range: said on the page, nothing sent.
            other = page.get_by_label("Other (%)")
            other.fill("150")
            other.press("Enter")
            expect(status).to_have_text("Give a crash rate from 0 to 100 %.")
            expect(other).to_have_attribute("aria-invalid", "true")
            assert faults(srv)["mock_crash_rate"] == 0.2

            # Every reply crashes: the crash count goes up by one per conversation at least.
            other.fill("100")
            page.get_by_role("button", name="Set").click()
            expect(status).to_contain_text("Now 100 % of the embedded model's replies crash")
            expect(other).not_to_have_attribute("aria-invalid", "true")
            for label in ("0 %", "1 %", "5 %", "20 %"):
                expect(preset(label)).to_have_attribute("aria-pressed", "false")
            assert faults(srv)["mock_crash_rate"] == 1.0
            crashes0 = stats(srv)["crashes_total"]
            page.get_by_role("button", name="Start 10", exact=True).click()
            expect(page.locator("#start-status")).to_contain_text("Started 10 conversations")
            page.get_by_role("button", name="Broadcast").click()
            expect(page.locator("#broadcast-status")).to_contain_text("accepted by 10")
            page.wait_for_function(
                "(n) => (window.__swarm.lastStats?.crashes_total ?? 0) >= n", arg=crashes0 + 10
            )
            assert stats(srv)["crashes_total"] >= crashes0 + 10
            # A reload shows the rate the server has.
            page.reload()
            expect(status).to_contain_text("Now 100 %")
            expect(other).to_have_value("100")
            preset("0 %").click()
            expect(status).to_have_text("Now 0 %: the embedded model never crashes.")
            assert faults(srv)["mock_crash_rate"] == 0.0
        finally:
            ctx.close()
            faults(srv, 0.0)
        assert errors == [], "the page logged errors"

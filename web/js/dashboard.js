// The swarm dashboard, the swarm experiment: start N conversations, broadcast
// to all of them, watch each one's state on a canvas grid, crash 10 % of them
// (or set the embedded model's crash rate) and watch the supervisor bring them
// back; live server charts beside it.
//
// Only the public protocol: the batch and broadcast endpoints, and the
// operations endpoints (stats stream, conversations by state, kill, faults). State
// polling runs in a worker (swarm-worker.js); the page applies the changed
// cells and repaints at most once per animation frame.

import { apiFetch, readEventStream } from "./api.js";
import { LineChart } from "./charts.js";
import { fmt, initChrome, showUser } from "./chrome.js";
import { describeError } from "./errors.js";
import { clearSession, currentToken, loadSession, renewAfterRefusal, showLogin } from "./session.js";
import { STATE_CODE, STATES, SwarmGrid } from "./swarm-grid.js";
import { swarmTitle } from "./swarm-marker.js";

const $ = (id) => document.getElementById(id);
const MAX_PER_REQUEST = 10_000; // the server's default max_batch and max_broadcast
const POLL_MS = 500;
const SHOWN_STATES = ["idle", "generating", "crashed", "restarting", "failed", "passivated"];
const HEALTHY = new Set([STATE_CODE.idle, STATE_CODE.generating]);

const pct = (rate) => `${fmt(Number((rate * 100).toFixed(3)))} %`;
const secs = (ms) => `${(ms / 1000).toFixed(ms < 10_000 ? 2 : 1)} s`;

function sample(array, k) {
  // Partial Fisher–Yates: k distinct random elements.
  const a = array.slice();
  for (let i = 0; i < k; i++) {
    const j = i + Math.floor(Math.random() * (a.length - i));
    [a[i], a[j]] = [a[j], a[i]];
  }
  return a.slice(0, k);
}

class Dashboard {
  constructor() {
    this.ids = [];
    this.counts = new Array(STATES.length).fill(0);
    this.raf = 0;
    this.broadcast = null;
    this.recovery = null;
    this.lastStats = null;
    this.legendNodes = new Map();
    this.labelAt = 0;
    this.polls = [];
    this.starting = null; // the start in progress (a promise that never rejects)
    this.crashRate = null;
    // Main-thread time of this page's own work, per call (bench/dashboard.py reports it).
    this.work = { diff: [], draw: [], cells: [] };
  }

  timed(kind, fn) {
    const t0 = performance.now();
    fn();
    const list = this.work[kind];
    list.push(performance.now() - t0);
    if (list.length > 5000) list.shift();
  }

  async start() {
    initChrome({
      onLogout: () => {
        clearSession();
        location.reload();
      },
    });
    this.session = loadSession() ?? (await showLogin({ hide: [$("dashboard")] }));
    $("dashboard").hidden = false;
    showUser(this.session.userId);
    this.grid = new SwarmGrid($("swarm-grid"));
    this.buildLegend();
    this.charts = {
      active: new LineChart($("chart-active"), { title: "Active (generating)", colorVar: "--st-generating", format: (v) => fmt(Math.round(v)) }),
      tokens: new LineChart($("chart-tokens"), { title: "Tokens / s", colorVar: "--primary", format: (v) => fmt(Math.round(v)) }),
      restarts: new LineChart($("chart-restarts"), { title: "Restarts (total)", colorVar: "--st-restarting", format: (v) => fmt(Math.round(v)) }),
      memory: new LineChart($("chart-memory"), { title: "Memory (RSS, MB)", colorVar: "--st-failed", format: (v) => fmt(Math.round(v)) }),
    };
    this.worker = new Worker(new URL("./swarm-worker.js", import.meta.url), { type: "module" });
    this.worker.onmessage = (ev) => this.onWorker(ev.data);
    this.worker.postMessage({ type: "init", token: await currentToken(), intervalMs: POLL_MS });
    this.bindUi();
    this.loadFaults();
    await this.restore();
    this.streamStats();
    window.__swarm = this; // for diagnostics, the browser tests and bench/dashboard.py
  }

  storageKey() {
    return `actorchat.swarm:${this.session.userId}`;
  }

  // -- the swarm's cells ------------------------------------------------------------------

  addCells(ids) {
    this.timed("cells", () => this.addCellsNow(ids));
  }

  addCellsNow(ids) {
    const start = this.ids.length;
    for (const id of ids) this.ids.push(id);
    this.grid.resize(this.ids.length);
    this.counts[STATE_CODE.unknown] += ids.length;
    for (let i = start; i < this.ids.length; i++) this.grid.set(i, STATE_CODE.unknown);
    this.worker.postMessage({ type: "add", ids });
    $("grid-empty").hidden = this.ids.length > 0;
    $("cell-count").textContent = fmt(this.ids.length);
    this.save();
    this.requestDraw();
  }

  save() {
    // Serialising 10,000 ids is a few milliseconds: done when the page is idle.
    if (this.saving) return;
    this.saving = true;
    const write = () => {
      this.saving = false;
      try {
        localStorage.setItem(this.storageKey(), JSON.stringify(this.ids));
      } catch {
        /* storage full: the swarm is just not remembered */
      }
    };
    if (window.requestIdleCallback) requestIdleCallback(write, { timeout: 2000 });
    else setTimeout(write, 0);
  }

  async restore() {
    let ids = [];
    try {
      ids = JSON.parse(localStorage.getItem(this.storageKey()) ?? "[]");
    } catch {
      ids = [];
    }
    if (!Array.isArray(ids) || !ids.length) return;
    try {
      await apiFetch(`/api/v1/conversations/${encodeURIComponent(ids[0])}`, { token: await currentToken() });
    } catch (err) {
      if (err.status === 404) {
        localStorage.removeItem(this.storageKey());
        this.setStatus("start-status", "The swarm saved in this browser no longer exists on the server (a fresh store?): start a new one.");
        return;
      }
    }
    this.addCells(ids);
    this.setStatus("start-status", `Showing the swarm of ${fmt(ids.length)} conversations saved in this browser.`);
  }

  forget() {
    this.ids = [];
    this.counts.fill(0);
    this.grid.resize(0);
    this.worker.postMessage({ type: "reset" });
    localStorage.removeItem(this.storageKey());
    this.broadcast = null;
    this.recovery = null;
    $("grid-empty").hidden = false;
    $("cell-count").textContent = "0";
    for (const id of ["start-status", "broadcast-status", "kill-status"]) this.setStatus(id, "");
    this.requestDraw();
  }

  onWorker(msg) {
    if (msg.type === "error") {
      if (msg.status === 403) {
        this.banner("The operations endpoints need a token with the admin role.", "Log in with such a token (in dev mode every user may use them).");
      } else if (msg.status === 401) {
        this.onRefused();
      }
      return;
    }
    if (msg.type !== "diff") return;
    this.polls.push(msg.ms); // how long the state polls take (bench/dashboard.py reads it)
    if (this.polls.length > 1000) this.polls.shift();
    this.timed("diff", () => this.applyDiff(msg));
  }

  applyDiff(msg) {
    const { idx, st } = msg;
    const grid = this.grid;
    const counts = this.counts;
    for (let k = 0; k < idx.length; k++) {
      const i = idx[k];
      if (i >= this.ids.length) continue;
      counts[grid.states[i]] -= 1;
      counts[st[k]] += 1;
      grid.set(i, st[k]);
    }
    this.afterPoll(msg);
    this.requestDraw();
  }

  afterPoll(msg) {
    const generating = this.counts[STATE_CODE.generating];
    const b = this.broadcast;
    if (b && !b.done && b.acceptedAt && msg.startedAt > b.acceptedAt) {
      if (generating > 0) b.sawGenerating = true;
      const quiet = generating === 0 && (b.sawGenerating || Date.now() - b.acceptedAt > 5000);
      if (quiet) {
        b.done = true;
        this.setStatus("broadcast-status", `All ${fmt(b.accepted)} replies complete in ${secs(Date.now() - b.t0)}.`);
      } else {
        this.setStatus("broadcast-status", `Broadcast accepted by ${fmt(b.accepted)}: ${fmt(generating)} generating…`);
      }
    }
    const r = this.recovery;
    if (r && !r.done) this.checkRecovery(msg.startedAt);
  }

  // -- actions ----------------------------------------------------------------------------

  /** Disable the buttons of an operation while its request is in flight. */
  setBusy(selector, busy) {
    for (const b of document.querySelectorAll(selector)) b.disabled = busy;
  }

  startConversations(n) {
    const run = this.runStart(n).finally(() => {
      if (this.starting === run) this.starting = null;
    });
    this.starting = run;
    return run;
  }

  async runStart(n) {
    this.setBusy("[data-start], #forget-btn", true);
    this.dropBanner();
    const t0 = performance.now();
    this.setStatus("start-status", `Starting ${fmt(n)} conversations…`);
    // Titled so the chat workspace can tell them from your own (swarm-marker.js).
    const title = swarmTitle();
    try {
      let left = n;
      while (left > 0) {
        const count = Math.min(left, MAX_PER_REQUEST);
        const body = await apiFetch("/api/v1/conversations/batch", {
          method: "POST",
          body: { count, title },
          token: await currentToken(),
        });
        this.addCells(body.conversation_ids);
        left -= count;
      }
      this.setStatus("start-status", `Started ${fmt(n)} conversations in ${secs(performance.now() - t0)}; ${fmt(this.ids.length)} in the swarm.`);
    } catch (err) {
      this.errorStatus("start-status", err);
    } finally {
      this.setBusy("[data-start], #forget-btn", false);
    }
  }

  async broadcastAll(text) {
    if (this.starting) {
      // Clicked while conversations are being started: wait for them, then
      // broadcast to the whole swarm, the new ones included.
      this.setBusy("#broadcast-btn", true);
      this.setStatus("broadcast-status", "Waiting for the conversations being started: the broadcast goes to all of them once they are.");
      await this.starting;
      this.setBusy("#broadcast-btn", false);
    }
    if (!this.ids.length) {
      this.setStatus("broadcast-status", "Nothing to broadcast to: start some conversations first.");
      return;
    }
    if (!text.trim()) {
      this.setStatus("broadcast-status", "Write a message to broadcast first.");
      $("broadcast-text").focus();
      return;
    }
    this.setBusy("#broadcast-btn", true);
    this.dropBanner();
    const b = { t0: Date.now(), accepted: 0, acceptedAt: 0, sawGenerating: false, done: false };
    this.broadcast = b;
    this.setStatus("broadcast-status", `Broadcasting to ${fmt(this.ids.length)} conversations…`);
    try {
      for (let i = 0; i < this.ids.length; i += MAX_PER_REQUEST) {
        const body = await apiFetch("/api/v1/conversations/broadcast", {
          method: "POST",
          body: { conversation_ids: this.ids.slice(i, i + MAX_PER_REQUEST), message: text },
          token: await currentToken(),
        });
        b.accepted += body.accepted ?? 0;
      }
      b.acceptedAt = Date.now();
      this.setStatus("broadcast-status", `Broadcast accepted by ${fmt(b.accepted)} conversations in ${secs(b.acceptedAt - b.t0)}; replies streaming…`);
      this.worker.postMessage({ type: "poll" });
    } catch (err) {
      this.broadcast = null;
      this.errorStatus("broadcast-status", err);
    } finally {
      this.setBusy("#broadcast-btn", false);
    }
  }

  async killTenPercent() {
    const live = [];
    for (let i = 0; i < this.ids.length; i++) if (HEALTHY.has(this.grid.states[i])) live.push(i);
    const k = Math.round(live.length * 0.1);
    if (!k) {
      this.setStatus("kill-status", "No running conversations to kill: start some first (or wait for their state to load).");
      return;
    }
    this.setBusy("#kill-btn", true);
    this.recovery = null;
    this.setStatus("kill-status", `Killing ${fmt(k)} of ${fmt(live.length)} running conversations…`);
    const chosen = sample(live, k);
    const t0 = Date.now();
    try {
      const token = await currentToken();
      const before = await apiFetch("/api/v1/admin/stats", { token });
      const body = await apiFetch("/api/v1/admin/kill", {
        method: "POST",
        body: { conversation_ids: chosen.map((i) => this.ids[i]) },
        token,
      });
      const killedIds = new Set(body.killed ?? []);
      const killed = chosen.filter((i) => killedIds.has(this.ids[i]));
      // Shown crashed at once: the supervisor may restart them before the next poll.
      for (const i of killed) {
        this.counts[this.grid.states[i]] -= 1;
        this.counts[STATE_CODE.crashed] += 1;
        this.grid.set(i, STATE_CODE.crashed);
      }
      this.worker.postMessage({ type: "mark", idx: Uint32Array.from(killed), state: STATE_CODE.crashed });
      this.recovery = {
        t0,
        cells: killed,
        restarts0: before.restarts_total ?? 0,
        restartsSeenAt: 0,
        done: false,
      };
      this.setStatus("kill-status", `Killed ${fmt(killed.length)} conversations; waiting for the supervisor…`);
      this.requestDraw();
      this.watchRestarts();
    } catch (err) {
      this.errorStatus("kill-status", err);
    } finally {
      this.setBusy("#kill-btn", false);
    }
  }

  async watchRestarts() {
    // The kill is asynchronous on the server: a cell reads "idle" both before
    // its crash and after its restart. Recovery counts once the supervisor's
    // restart counter has moved by as many as were killed.
    const r = this.recovery;
    const deadline = Date.now() + 60_000;
    while (r === this.recovery && !r.restartsSeenAt && Date.now() < deadline) {
      try {
        const stats = await apiFetch("/api/v1/admin/stats", { token: await currentToken() });
        r.restarts = (stats.restarts_total ?? 0) - r.restarts0;
        r.failed = stats.states?.failed ?? 0;
        if (r.restarts >= r.cells.length) {
          r.restartsSeenAt = Date.now();
          this.worker.postMessage({ type: "poll" });
          break;
        }
        this.setStatus("kill-status", `Killed ${fmt(r.cells.length)}: ${fmt(Math.min(r.restarts, r.cells.length))} restarted by the supervisor…`);
      } catch {
        /* try again */
      }
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
    if (r === this.recovery && !r.restartsSeenAt) {
      this.setStatus("kill-status", `Killed ${fmt(r.cells.length)}: only ${fmt(r.restarts ?? 0)} restarted within a minute (restart intensity exceeded? see failed cells).`);
    }
  }

  checkRecovery(pollStartedAt) {
    const r = this.recovery;
    const states = this.grid.states;
    let healthy = 0;
    let failed = 0;
    for (const i of r.cells) {
      if (HEALTHY.has(states[i])) healthy += 1;
      else if (states[i] === STATE_CODE.failed) failed += 1;
    }
    const n = r.cells.length;
    const shown = r.restartsSeenAt ? healthy : Math.min(healthy, r.restarts ?? 0);
    if (r.restartsSeenAt && pollStartedAt > r.restartsSeenAt && healthy === n) {
      r.done = true;
      this.setStatus("kill-status", `Recovered ${fmt(n)} of ${fmt(n)} killed conversations in ${secs(Date.now() - r.t0)}: the supervisor restarted every one.`);
    } else {
      this.setStatus(
        "kill-status",
        `Killed ${fmt(n)}: recovered ${fmt(shown)} of ${fmt(n)} so far${failed ? `, ${fmt(failed)} failed (restart intensity exceeded)` : ""}…`,
      );
    }
  }

  // -- the embedded model's crash rate (GET / PUT /api/v1/admin/faults) -------------------------

  async loadFaults() {
    try {
      const body = await apiFetch("/api/v1/admin/faults", { token: await currentToken() });
      this.showCrashRate(body?.mock_crash_rate ?? 0);
    } catch (err) {
      this.faultsUnavailable(err);
    }
  }

  async setCrashRate(percent) {
    const input = $("crash-rate");
    if (!Number.isFinite(percent) || percent < 0 || percent > 100) {
      input.setAttribute("aria-invalid", "true");
      this.setStatus("faults-status", "Give a crash rate from 0 to 100 %.");
      input.focus();
      return;
    }
    input.removeAttribute("aria-invalid");
    // The buttons stay enabled (and focused): a later click wins, an earlier answer is ignored.
    const seq = (this.faultSeq = (this.faultSeq ?? 0) + 1);
    this.setStatus("faults-status", `Setting the crash rate to ${pct(percent / 100)}…`);
    try {
      const body = await apiFetch("/api/v1/admin/faults", {
        method: "PUT",
        body: { mock_crash_rate: percent / 100 },
        token: await currentToken(),
      });
      if (seq === this.faultSeq) this.showCrashRate(body?.mock_crash_rate ?? percent / 100);
    } catch (err) {
      if (seq === this.faultSeq) this.faultsUnavailable(err);
    }
  }

  showCrashRate(rate) {
    this.crashRate = rate;
    for (const b of document.querySelectorAll("[data-rate]")) {
      b.setAttribute("aria-pressed", String(Math.abs(Number(b.dataset.rate) - rate * 100) < 1e-9));
    }
    const input = $("crash-rate");
    if (document.activeElement !== input) input.value = String(Number((rate * 100).toFixed(4)));
    this.setStatus(
      "faults-status",
      rate > 0
        ? `Now ${pct(rate)} of the embedded model's replies crash their conversation (broadcast to see it).`
        : "Now 0 %: the embedded model never crashes.",
    );
  }

  faultsUnavailable(err) {
    if (err.status === 403) {
      this.setStatus("faults-status", "Setting faults needs a token with the admin role.");
    } else if (err.status === 401) {
      this.onRefused();
    } else {
      const info = describeError(err.code ?? "INTERNAL_ERROR", err.message, err.extra ?? {});
      this.setStatus("faults-status", `${info.title}${info.detail ? ` (${info.detail})` : ""}`);
    }
  }

  /** The server refused the token: renew a dev token silently, else log in again. */
  async onRefused() {
    if (this.renewing) return this.renewing;
    this.renewing = (async () => {
      if (await renewAfterRefusal()) {
        this.session = loadSession();
      } else {
        clearSession();
        this.session = await showLogin({ hide: [$("dashboard")], message: "Your session expired: log in again." });
      }
      this.worker.postMessage({ type: "token", token: this.session.token });
      this.renewing = null;
    })();
    return this.renewing;
  }

  // -- live stats -----------------------------------------------------------------------------

  async streamStats() {
    const pill = $("conn-status");
    let delay = 500;
    for (;;) {
      try {
        pill.dataset.state = "connecting";
        pill.textContent = "Connecting…";
        await readEventStream("/api/v1/admin/stats", {
          token: await currentToken(),
          onEvent: ({ data }) => {
            delay = 500;
            pill.dataset.state = "open";
            pill.textContent = "Live";
            this.onStats(data?.data ?? data);
          },
        });
      } catch (err) {
        if (err.status === 403) {
          this.banner("The operations endpoints need a token with the admin role.", "Log in with such a token (in dev mode every user may use them).");
          pill.dataset.state = "closed";
          pill.textContent = "No access";
          return;
        }
        if (err.status === 401) {
          await this.onRefused();
          continue;
        }
      }
      pill.dataset.state = "reconnecting";
      pill.textContent = `Reconnecting in ${Math.ceil(delay / 1000)} s`;
      await new Promise((resolve) => setTimeout(resolve, delay));
      delay = Math.min(delay * 2, 15_000);
    }
  }

  onStats(s) {
    if (!s || typeof s !== "object") return;
    this.lastStats = s;
    const st = s.states ?? {};
    this.charts.active.push(st.generating ?? 0);
    this.charts.tokens.push(s.tokens_per_s ?? 0);
    this.charts.restarts.push(s.restarts_total ?? 0);
    this.charts.memory.push((s.rss_bytes ?? 0) / 1048576);
    const items = [
      ["Live actors", s.live],
      ["Stored", s.stored],
      ["Passivated", st.passivated],
      ["Failed", st.failed],
      ["Crashes", s.crashes_total],
      ["Messages", s.messages_total],
      ["Tokens", s.tokens_total],
      ["WebSocket connections", s.connections],
    ];
    const line = $("sysline");
    line.replaceChildren(
      ...items.map(([k, v]) => {
        const span = document.createElement("span");
        const b = document.createElement("b");
        b.textContent = fmt(v ?? 0);
        span.append(`${k} `, b);
        return span;
      }),
    );
    this.requestDraw();
  }

  // -- drawing ----------------------------------------------------------------------------------

  requestDraw() {
    if (!this.raf) this.raf = requestAnimationFrame(() => this.timed("draw", () => this.draw()));
  }

  draw() {
    this.raf = 0;
    if (this.grid.needsDraw) this.grid.draw();
    for (const chart of Object.values(this.charts)) chart.draw();
    for (const name of SHOWN_STATES) {
      const node = this.legendNodes.get(name);
      const text = fmt(this.counts[STATE_CODE[name]]);
      if (node.textContent !== text) node.textContent = text;
    }
    const now = Date.now();
    if (now - this.labelAt > 1000) {
      this.labelAt = now;
      const parts = SHOWN_STATES.filter((s) => this.counts[STATE_CODE[s]]).map((s) => `${fmt(this.counts[STATE_CODE[s]])} ${s}`);
      $("swarm-grid").setAttribute(
        "aria-label",
        this.ids.length ? `Grid of ${fmt(this.ids.length)} conversations: ${parts.join(", ") || "loading states"}` : "No conversations yet",
      );
    }
  }

  buildLegend() {
    const legend = $("legend");
    for (const name of SHOWN_STATES) {
      const li = document.createElement("li");
      li.dataset.state = name;
      const sw = document.createElement("span");
      sw.className = `swatch st-${name}`;
      sw.setAttribute("aria-hidden", "true");
      const count = document.createElement("span");
      count.className = "count";
      count.textContent = "0";
      li.append(sw, `${name} `, count);
      legend.append(li);
      this.legendNodes.set(name, count);
    }
  }

  // -- UI ---------------------------------------------------------------------------------------

  bindUi() {
    for (const b of document.querySelectorAll("[data-start]")) {
      b.addEventListener("click", () => this.startConversations(Number(b.dataset.start)));
    }
    $("broadcast-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      this.broadcastAll($("broadcast-text").value);
    });
    $("kill-btn").addEventListener("click", () => this.killTenPercent());
    for (const b of document.querySelectorAll("[data-rate]")) {
      b.addEventListener("click", () => this.setCrashRate(Number(b.dataset.rate)));
    }
    $("faults-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const raw = $("crash-rate").value.trim();
      this.setCrashRate(raw === "" ? Number.NaN : Number(raw));
    });
    $("forget-btn").addEventListener("click", () => this.forget());
    const canvas = $("swarm-grid");
    const tip = $("grid-tip");
    canvas.addEventListener("mousemove", (ev) => {
      const i = this.grid.cellAt(ev.offsetX, ev.offsetY);
      if (i < 0) {
        tip.hidden = true;
        return;
      }
      const c = this.grid.cellCenter(i);
      tip.textContent = `#${fmt(i + 1)} · ${this.ids[i]} · ${STATES[this.grid.states[i]]}`;
      tip.style.left = `${c.x}px`;
      tip.style.top = `${c.y}px`;
      tip.hidden = false;
      canvas.style.cursor = "pointer";
    });
    canvas.addEventListener("mouseleave", () => {
      tip.hidden = true;
    });
    canvas.addEventListener("click", (ev) => {
      const i = this.grid.cellAt(ev.offsetX, ev.offsetY);
      if (i >= 0) window.open(`./#/c/${encodeURIComponent(this.ids[i])}`, "_blank", "noopener");
    });
    new ResizeObserver(() => {
      this.grid.layout();
      for (const chart of Object.values(this.charts)) chart.dirty = true;
      this.requestDraw();
    }).observe($("grid-wrap"));
    document.addEventListener("themechange", () => {
      this.grid.readColors();
      for (const chart of Object.values(this.charts)) chart.dirty = true;
      this.requestDraw();
    });
  }

  setStatus(id, text) {
    const node = $(id);
    if (node.textContent !== text) node.textContent = text;
  }

  errorStatus(id, err) {
    const info = describeError(err.code ?? "INTERNAL_ERROR", err.message, err.extra ?? {});
    this.setStatus(id, "");
    this.banner(info.title, `${info.advice}${info.detail ? ` (${info.detail})` : ""}`);
  }

  banner(title, advice) {
    const box = $("banners");
    box.replaceChildren();
    const div = document.createElement("div");
    div.className = "banner";
    div.dataset.level = "error";
    div.setAttribute("role", "alert");
    const text = document.createElement("div");
    text.className = "banner-text";
    const strong = document.createElement("strong");
    strong.textContent = title;
    text.append(strong, ` ${advice}`);
    const close = document.createElement("button");
    close.type = "button";
    close.className = "icon-button small";
    close.setAttribute("aria-label", "Dismiss");
    close.textContent = "×";
    close.addEventListener("click", () => div.remove());
    div.append(text, close);
    box.append(div);
  }

  dropBanner() {
    $("banners").replaceChildren();
  }
}

new Dashboard().start();

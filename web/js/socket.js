// The chat WebSocket: authentication, request/answer correlation, heartbeat,
// and reconnection with exponential backoff.
//
// Events (an EventTarget):
//   "frame"         detail: a server frame (every one, answers included)
//   "status"        detail: {state, attempt, retryInMs, reason}
//                   state: "connecting" | "open" | "reconnecting" | "closed"
//   "authenticated" detail: {userId, resumed} after every auth_success; listeners
//                   re-join what they had joined (the resumable join).
//   "authfailed"    detail: {code, message} when the server refuses the token (close 4001)

export const WS_PATH = "/api/v1/chat/ws";

/** An answer frame of type "error" to a request, or a connection failure. */
export class RequestError extends Error {
  constructor(code, message, data = {}) {
    super(message);
    this.code = code;
    this.data = data;
  }
}

export class Backoff {
  /** Exponential backoff with jitter: base·2^attempt, capped, ±20 %. */
  constructor({ baseMs = 400, maxMs = 15000, jitter = 0.2, random = Math.random } = {}) {
    Object.assign(this, { baseMs, maxMs, jitter, random });
    this.attempt = 0;
  }

  next() {
    const raw = Math.min(this.maxMs, this.baseMs * 2 ** this.attempt);
    this.attempt += 1;
    return Math.round(raw * (1 - this.jitter + 2 * this.jitter * this.random()));
  }

  reset() {
    this.attempt = 0;
  }
}

export class ChatSocket extends EventTarget {
  /**
   * @param {{url?: string, getToken: () => Promise<string>|string,
   *          heartbeatMs?: number, requestTimeoutMs?: number, backoff?: Backoff}} options
   */
  constructor(options) {
    super();
    const loc = globalThis.location;
    this.url = options.url ?? `${loc.protocol === "https:" ? "wss" : "ws"}://${loc.host}${WS_PATH}`;
    this.getToken = options.getToken;
    this.heartbeatMs = options.heartbeatMs ?? 20000;
    this.requestTimeoutMs = options.requestTimeoutMs ?? 30000;
    this.backoff = options.backoff ?? new Backoff();
    this.ws = null;
    this.state = "closed";
    this.userId = null;
    this._ids = 0;
    this._pending = new Map(); // id -> {resolve, reject, timer, expect}
    this._retryTimer = null;
    this._heartbeat = null;
    this._pongDue = null;
    this._stopped = true;
    this._everOpen = false;
    this._onOnline = () => this.reconnectNow();
  }

  /** Connect (again); reconnects by itself until `close()`. */
  connect() {
    this._stopped = false;
    globalThis.addEventListener?.("online", this._onOnline);
    this._open();
  }

  /** Close for good (log out, leaving the page). */
  close() {
    this._stopped = true;
    globalThis.removeEventListener?.("online", this._onOnline);
    clearTimeout(this._retryTimer);
    this._stopHeartbeat();
    if (this.ws) this.ws.close(1000, "bye");
    this.ws = null;
    this._failPending("closed", "The connection was closed.");
    this._setState("closed", {});
  }

  /** Skip the backoff wait and try now ("Retry now"). */
  reconnectNow() {
    if (this._stopped || this.state === "open" || this.state === "connecting") return;
    clearTimeout(this._retryTimer);
    this._open();
  }

  /** For tests and diagnostics: drop the socket as a network failure would. */
  dropForTest() {
    if (this.ws) this.ws.close(4000, "dropped by the client");
  }

  get isOpen() {
    return this.state === "open";
  }

  _setState(state, extra) {
    this.state = state;
    this.dispatchEvent(new CustomEvent("status", { detail: { state, ...extra } }));
  }

  async _open() {
    clearTimeout(this._retryTimer);
    this._setState("connecting", { attempt: this.backoff.attempt });
    let token;
    try {
      token = await this.getToken();
    } catch (err) {
      this._scheduleRetry(String(err?.message ?? err));
      return;
    }
    if (this._stopped) return;
    let ws;
    try {
      ws = new WebSocket(this.url);
    } catch (err) {
      this._scheduleRetry(String(err?.message ?? err));
      return;
    }
    this.ws = ws;
    let authenticated = false;
    ws.onopen = () => {
      const id = this._nextId();
      ws.send(JSON.stringify({ type: "auth", id, token }));
    };
    ws.onmessage = (ev) => {
      let frame;
      try {
        frame = JSON.parse(ev.data);
      } catch {
        return;
      }
      if (!authenticated) {
        if (frame.type === "auth_success") {
          authenticated = true;
          const resumed = this._everOpen;
          this._everOpen = true;
          this.userId = frame.data?.user_id ?? frame.user_id;
          this.backoff.reset();
          this._setState("open", {});
          this._startHeartbeat();
          this.dispatchEvent(new CustomEvent("authenticated", { detail: { userId: this.userId, resumed } }));
          return;
        }
        if (frame.type === "error") {
          this._authError = frame.data ?? {};
          return;
        }
      }
      if (frame.type === "pong") this._pongDue = null;
      this._settle(frame);
      this.dispatchEvent(new CustomEvent("frame", { detail: frame }));
    };
    ws.onclose = (ev) => {
      if (this.ws !== ws) return;
      this.ws = null;
      this._stopHeartbeat();
      this._failPending("DISCONNECTED", "The connection dropped before the server answered.");
      if (this._stopped) return;
      if (ev.code === 4001) {
        const err = this._authError ?? {};
        this._authError = null;
        this._setState("closed", { reason: ev.reason });
        this.dispatchEvent(
          new CustomEvent("authfailed", {
            detail: { code: err.code ?? "AUTH_FAILED", message: err.message ?? ev.reason ?? "Invalid token" },
          }),
        );
        return;
      }
      this._scheduleRetry(ev.reason || (ev.code === 1006 ? "connection lost" : `closed (${ev.code})`));
    };
  }

  _scheduleRetry(reason) {
    if (this._stopped) return;
    const delay = this.backoff.next();
    this._setState("reconnecting", { attempt: this.backoff.attempt, retryInMs: delay, reason });
    this._retryTimer = setTimeout(() => this._open(), delay);
  }

  _startHeartbeat() {
    this._stopHeartbeat();
    // Browsers answer the server's pings but cannot see a dead peer: an
    // application ping with a deadline finds a half-open connection.
    this._heartbeat = setInterval(() => {
      if (this._pongDue && Date.now() > this._pongDue) {
        this.ws?.close(4000, "no pong");
        return;
      }
      if (!this._pongDue) this._pongDue = Date.now() + Math.min(10000, this.heartbeatMs);
      this.send("ping");
    }, this.heartbeatMs);
  }

  _stopHeartbeat() {
    clearInterval(this._heartbeat);
    this._heartbeat = null;
    this._pongDue = null;
  }

  _nextId() {
    this._ids += 1;
    return `c${this._ids}`;
  }

  /** Send a frame without waiting for its answer; returns its id (or null when not connected). */
  send(type, data) {
    if (!this.ws || this.state !== "open") return null;
    const id = this._nextId();
    const frame = data === undefined ? { type, id } : { type, id, data };
    this.ws.send(JSON.stringify(frame));
    return id;
  }

  /**
   * Send a request and resolve with its answer (the frame whose `reply_to` is
   * its id), or reject with a RequestError (an `error` answer, a timeout, or
   * the connection dropping first).
   */
  request(type, data) {
    return new Promise((resolve, reject) => {
      if (!this.ws || this.state !== "open") {
        reject(new RequestError("DISCONNECTED", "Not connected to the server."));
        return;
      }
      const id = this.send(type, data);
      const timer = setTimeout(() => {
        this._pending.delete(id);
        reject(new RequestError("TIMEOUT", `The server did not answer "${type}" in time.`));
      }, this.requestTimeoutMs);
      this._pending.set(id, { resolve, reject, timer });
    });
  }

  _settle(frame) {
    const rid = frame.reply_to;
    if (rid == null) return;
    const pending = this._pending.get(rid);
    if (!pending) return;
    this._pending.delete(rid);
    clearTimeout(pending.timer);
    // Listeners of "frame" see it too; this tells them a caller handles its error.
    Object.defineProperty(frame, "answered", { value: true });
    if (frame.type === "error") {
      const d = frame.data ?? {};
      pending.reject(new RequestError(d.code ?? "INTERNAL_ERROR", d.message ?? "error", d));
    } else {
      pending.resolve(frame);
    }
  }

  _failPending(code, message) {
    for (const [, p] of this._pending) {
      clearTimeout(p.timer);
      p.reject(new RequestError(code, message));
    }
    this._pending.clear();
  }
}

// The messages of one conversation as the client knows them: pure logic, no DOM.
//
// It applies protocol events in the order they arrive and keeps the rules of
// PROTOCOL.md: history is ordered by turn (each reply follows the user message
// it answers), a regenerated reply replaces the previous one in place, and the
// deltas of a reply are appended exactly once, by `index` — duplicates that a
// resumed join replays are dropped, merged frames (`first_index`) that overlap
// what is already here are trimmed, and a gap is reported so that the caller
// can join again and have the server replay what is missing.

/** @typedef {{
 *   id: string, role: "user"|"assistant", content: string, senderId: string,
 *   createdAt: string, model: string, usage: object|null, finishReason: string|null,
 *   replyTo: string|null, streaming: boolean, nextIndex: number, chunkEnds: number[],
 *   interrupted: boolean, version: number,
 * }} Msg */

export class Transcript {
  constructor(conversationId) {
    this.conversationId = conversationId;
    /** @type {Msg[]} */
    this.messages = [];
    /** @type {Map<string, Msg>} */
    this.byId = new Map();
    /** Messages whose content changed since the last `takeChanges()`. */
    this.changed = new Set();
    /** Set when the order or membership of messages changed. */
    this.structureChanged = true;
  }

  /** The messages changed since the last call, and whether the list itself changed. */
  takeChanges() {
    const out = { changed: [...this.changed], structure: this.structureChanged };
    this.changed.clear();
    this.structureChanged = false;
    return out;
  }

  _touch(msg) {
    msg.version += 1;
    this.changed.add(msg.id);
  }

  static fromWire(m) {
    return {
      id: String(m.id),
      role: m.message_type === "assistant" ? "assistant" : "user",
      content: m.content ?? "",
      senderId: m.sender_id ?? "",
      createdAt: m.created_at ?? "",
      model: m.model ?? (m.message_type === "assistant" ? m.sender_id ?? "" : ""),
      usage: m.usage ?? null,
      finishReason: m.finish_reason ?? null,
      replyTo: null,
      streaming: false,
      nextIndex: 0,
      chunkEnds: [],
      interrupted: false,
      version: 0,
    };
  }

  /**
   * Replace the completed messages with `history` (from `conversation_joined`).
   *
   * A reply still streaming here that the history does not hold is kept: the
   * server replays it right after the join. One that the history holds has
   * completed meanwhile and takes the stored (complete) version.
   */
  loadHistory(history) {
    const kept = this.messages.filter((m) => m.streaming && !history.some((h) => String(h.id) === m.id));
    const msgs = [];
    let lastUser = null;
    for (const wire of history) {
      const msg = Transcript.fromWire(wire);
      if (msg.role === "user") lastUser = msg.id;
      else msg.replyTo = lastUser;
      msgs.push(msg);
    }
    this.messages = msgs;
    this.byId = new Map(msgs.map((m) => [m.id, m]));
    for (const m of kept) this._placeReply(m);
    for (const m of this.messages) this.changed.add(m.id);
    this.structureChanged = true;
  }

  /** A user message is stored (ours or another tab's). Returns the message. */
  messageReceived(wire) {
    const id = String(wire.id);
    const existing = this.byId.get(id);
    if (existing) return existing;
    const msg = Transcript.fromWire(wire);
    this.messages.push(msg);
    this.byId.set(id, msg);
    this.changed.add(id);
    this.structureChanged = true;
    return msg;
  }

  /** A message added by another path (REST, Python API) while we were not joined. */
  messageAdded(wire) {
    if (wire.message_type === "assistant") {
      const msg = Transcript.fromWire(wire);
      const prevUser = [...this.messages].reverse().find((m) => m.role === "user");
      msg.replyTo = prevUser ? prevUser.id : null;
      if (!this.byId.has(msg.id)) this._placeReply(msg);
      return msg;
    }
    return this.messageReceived(wire);
  }

  /** Put an assistant message after the user message it answers, replacing an older reply. */
  _placeReply(msg) {
    const old = msg.replyTo
      ? this.messages.findIndex((m) => m.role === "assistant" && m.replyTo === msg.replyTo && m.id !== msg.id)
      : -1;
    if (old >= 0) {
      this.byId.delete(this.messages[old].id);
      this.messages.splice(old, 1, msg);
    } else {
      const at = msg.replyTo ? this.messages.findIndex((m) => m.id === msg.replyTo) : -1;
      if (at >= 0) this.messages.splice(at + 1, 0, msg);
      else this.messages.push(msg);
    }
    this.byId.set(msg.id, msg);
    this.changed.add(msg.id);
    this.structureChanged = true;
  }

  /** `stream_start`: a reply begins (or a resumed join replays its start). */
  streamStart(data) {
    const id = String(data.message_id);
    const existing = this.byId.get(id);
    if (existing) {
      // Replayed start of a reply we already have (resumable join): keep its text.
      if (!existing.finishReason) existing.streaming = true;
      existing.interrupted = false;
      this._touch(existing);
      return existing;
    }
    const answered_id = data.user_message_id ?? data.reply_to;
    let replyTo = answered_id != null ? String(answered_id) : null;
    if (!replyTo || !this.byId.has(replyTo)) {
      // Older servers do not say which message is answered: the earliest user
      // message without a reply (replies come in arrival order), else the last.
      const answered = new Set(this.messages.filter((m) => m.role === "assistant").map((m) => m.replyTo));
      const open = this.messages.find((m) => m.role === "user" && !answered.has(m.id));
      const last = [...this.messages].reverse().find((m) => m.role === "user");
      replyTo = (open || last || {}).id ?? null;
    }
    const msg = {
      id,
      role: "assistant",
      content: "",
      senderId: data.model ?? "",
      createdAt: new Date().toISOString(),
      model: data.model ?? "",
      usage: null,
      finishReason: null,
      replyTo,
      streaming: true,
      nextIndex: 0,
      chunkEnds: [],
      interrupted: false,
      version: 0,
    };
    this._placeReply(msg);
    return msg;
  }

  /**
   * `stream_content`: append a delta exactly once.
   *
   * Returns "ok", "dup" (already had it: dropped), "gap" (chunks are missing:
   * the caller should join again without `after_index`) or "unknown" (no
   * `stream_start` seen for it yet: the same remedy).
   */
  streamContent(data) {
    const msg = this.byId.get(String(data.message_id));
    if (!msg) return "unknown";
    if (!msg.streaming) return "dup";
    const last = data.index;
    const first = data.first_index ?? last;
    if (last < msg.nextIndex) return "dup";
    if (first > msg.nextIndex) return "gap";
    let text = data.content ?? "";
    if (first < msg.nextIndex) {
      // A merged frame overlapping what we have: the chunks first..nextIndex-1
      // are its prefix, and their lengths are known — unless `first` falls
      // inside a frame that was itself merged (then only a replay can help).
      const before = first > 0 ? msg.chunkEnds[first - 1] : 0;
      if (Number.isNaN(before)) return "gap";
      text = text.slice(msg.chunkEnds[msg.nextIndex - 1] - before);
    }
    const span = last - msg.nextIndex + 1;
    msg.content += text;
    // Where the chunks inside a merged frame end is unknown (NaN); its own end is exact.
    for (let i = 1; i < span; i++) msg.chunkEnds.push(Number.NaN);
    msg.chunkEnds.push(msg.content.length);
    msg.nextIndex = last + 1;
    this._touch(msg);
    return "ok";
  }

  /** `stream_complete`: the reply ended (stop, length, cancelled or error). */
  streamComplete(data) {
    const msg = this.byId.get(String(data.message_id));
    if (!msg) return null;
    msg.streaming = false;
    msg.interrupted = false;
    msg.finishReason = data.finish_reason ?? "stop";
    if (data.usage) msg.usage = data.usage;
    if (data.message && typeof data.message.content === "string") msg.content = data.message.content;
    this._touch(msg);
    return msg;
  }

  /** The reply in progress, if any (the last one: replies stream one at a time). */
  streaming() {
    for (let i = this.messages.length - 1; i >= 0; i--) {
      if (this.messages[i].streaming) return this.messages[i];
    }
    return null;
  }

  /** `after_index` for a resumed join: the last chunk we hold of the reply in progress. */
  resumeIndex() {
    const msg = this.streaming();
    return msg && msg.nextIndex > 0 ? msg.nextIndex - 1 : null;
  }

  /** Replies that were streaming but that the server no longer knows of (cut by a crash). */
  markInterrupted(exceptIds) {
    for (const m of this.messages) {
      if (m.streaming && !exceptIds.has(m.id)) {
        m.streaming = false;
        m.interrupted = true;
        m.finishReason = m.finishReason ?? "error";
        this._touch(m);
      }
    }
  }

  /** The last user message (what Regenerate answers again by default). */
  lastUserMessage() {
    for (let i = this.messages.length - 1; i >= 0; i--) {
      if (this.messages[i].role === "user") return this.messages[i];
    }
    return null;
  }
}

// The messages of one conversation as the client knows them: pure logic, no DOM.
//
// It applies protocol events in the order they arrive and keeps the rules of
// PROTOCOL.md: history is ordered by turn (each reply follows the user message
// it answers), a regenerated reply replaces the previous one in place, and the
// deltas of a reply are appended exactly once, by `index` — duplicates that a
// resumed join replays are dropped, merged frames (`first_index`) that overlap
// what is already here are trimmed, and a frame that would leave a gap is not
// applied (the caller can ask for the rest by name).
//
// Resuming (PROTOCOL.md, lifecycle 6): `resumePoint()` names the reply being
// followed and the last chunk held, for `join_conversation`'s `message_id` and
// `after_index`. A reply that ended while the client was away gets its
// `stream_complete` on the join; one a crash interrupted (`superseded`,
// `finish_reason: "error"`) stays, with the text it had, marked interrupted,
// and the new answer to the same user message is placed after it.

/** @typedef {{
 *   id: string, role: "user"|"assistant", content: string, senderId: string,
 *   createdAt: string, model: string, usage: object|null, finishReason: string|null,
 *   replyTo: string|null, streaming: boolean, nextIndex: number, chunkEnds: number[],
 *   interrupted: boolean, version: number,
 * }} Msg
 * `interrupted`: a crash cut it short and the server answers its user message
 * again (the join said `superseded`); the reply after it is the answer. */

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
   * join replays it or says how it ended (its `stream_complete`). One that the
   * history holds has completed meanwhile and takes the stored (complete)
   * version. An interrupted reply that was answered again is kept too (the
   * history leaves it out). Kept replies go before the history's reply to the
   * same user message, never in its place.
   */
  loadHistory(history) {
    const stored = new Set(history.map((h) => String(h.id)));
    const kept = this.messages.filter((m) => !stored.has(m.id) && (m.streaming || m.interrupted));
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
    const keptIds = new Set(kept.map((m) => m.id));
    for (const m of kept) {
      const at = m.replyTo ? this.messages.findIndex((x) => x.id === m.replyTo) : -1;
      if (at < 0) {
        // Its user message is older than the history window (or unknown).
        if (m.streaming) this.messages.push(m);
        else continue;
      } else {
        let j = at + 1;
        while (j < this.messages.length && this.messages[j].replyTo === m.replyTo && keptIds.has(this.messages[j].id)) j++;
        this.messages.splice(j, 0, m);
      }
      this.byId.set(m.id, m);
    }
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

  /** The other replies to the same user message, in order. */
  _siblings(msg) {
    if (!msg.replyTo) return [];
    return this.messages.filter((m) => m.role === "assistant" && m.replyTo === msg.replyTo && m.id !== msg.id);
  }

  /**
   * Put an assistant message after the user message it answers. It replaces
   * the previous reply (a regeneration), except an interrupted one that was
   * answered again: that one stays, and the new reply goes after it.
   */
  _placeReply(msg) {
    const siblings = this._siblings(msg);
    const old = siblings.find((m) => !m.interrupted);
    if (old) {
      this.byId.delete(old.id);
      this.messages.splice(this.messages.indexOf(old), 1, msg);
    } else {
      const after = siblings.length ? siblings[siblings.length - 1].id : msg.replyTo;
      const at = after ? this.messages.findIndex((m) => m.id === after) : -1;
      if (at >= 0) this.messages.splice(at + 1, 0, msg);
      else this.messages.push(msg);
      for (const m of siblings) this._touch(m); // now "answered again below"
    }
    this.byId.set(msg.id, msg);
    this.changed.add(msg.id);
    this.structureChanged = true;
  }

  _remove(msg) {
    const at = this.messages.indexOf(msg);
    if (at >= 0) this.messages.splice(at, 1);
    this.byId.delete(msg.id);
    this.changed.delete(msg.id);
    this.structureChanged = true;
  }

  /** Whether a later reply answers the same user message (the answer given instead of `msg`). */
  answeredAgain(msg) {
    const siblings = this._siblings(msg);
    return siblings.length > 0 && this.messages.indexOf(siblings[siblings.length - 1]) > this.messages.indexOf(msg);
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
   * Returns "ok", "dup" (already had it: dropped), "gap" (chunks before it
   * are missing: not applied; the caller can join again naming the reply,
   * `resumePoint()`) or "unknown" (no `stream_start` seen for it: not
   * applied; if it is missing from the replay that follows, the next chunk
   * shows the gap). The server sends neither on one connection, and a
   * resumed join names the reply its `after_index` is for.
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

  /**
   * `stream_complete`: the reply ended (stop, length, cancelled or error).
   *
   * On a resumed join it may say `superseded: true`: the reply ended while we
   * were away and its user message was answered again. With
   * `finish_reason: "error"` a crash interrupted it (or the server never
   * stored it): it stays, with the text it had, marked interrupted, and the
   * new answer follows it. Otherwise it was regenerated (in another tab, say):
   * it goes, as a regenerated reply does; the history or the replay holds
   * the reply that replaced it. Returns the message (null if none is left).
   */
  streamComplete(data) {
    const msg = this.byId.get(String(data.message_id));
    if (!msg) return null;
    const finish = data.finish_reason ?? "stop";
    if (data.superseded && finish !== "error") {
      this._remove(msg);
      return null;
    }
    msg.streaming = false;
    msg.interrupted = Boolean(data.superseded);
    msg.finishReason = finish;
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

  /**
   * What a resumed join asks for: `message_id`, the reply in progress here,
   * and `after_index`, the last chunk held of it (absent before its first
   * chunk). Null when no reply is in progress here.
   */
  resumePoint() {
    const msg = this.streaming();
    if (!msg) return null;
    const point = { message_id: msg.id };
    if (msg.nextIndex > 0) point.after_index = msg.nextIndex - 1;
    return point;
  }

  /** The last user message (what Regenerate answers again by default). */
  lastUserMessage() {
    for (let i = this.messages.length - 1; i >= 0; i--) {
      if (this.messages[i].role === "user") return this.messages[i];
    }
    return null;
  }
}

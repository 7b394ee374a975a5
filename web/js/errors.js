// Protocol error codes (PROTOCOL.md, "Error codes") turned into what a person
// needs: what happened, and what to do about it.

const TEXT = {
  AUTH_REQUIRED: ["You are not logged in.", "Log in again to continue."],
  AUTH_FAILED: ["The server did not accept your token.", "Log in again (or paste a fresh token)."],
  INVALID_JSON: ["The app sent something the server could not read.", "Reload the page; if it happens again, report it."],
  INVALID_MESSAGE: ["The server refused the request.", "Check what you entered and try again."],
  UNKNOWN_TYPE: ["The server does not know this request.", "The server may be older than this page: reload it."],
  MESSAGE_TOO_LONG: ["Your message is too long.", "Shorten it (or split it into several messages) and send again."],
  NOT_FOUND: ["That conversation (or message) no longer exists.", "It may have been deleted in another tab; pick another conversation."],
  FORBIDDEN: ["That belongs to another user.", "Log in as its owner, or pick one of your own conversations."],
  RATE_LIMITED: ["You are sending messages too fast.", "Wait a moment and send again."],
  OVERLOADED: ["The server is at capacity.", "Try again in a little while."],
  PROVIDER_ERROR: ["The model backend failed to answer.", "Press Regenerate to try again, or pick another model."],
  TIMEOUT: ["The model did not answer in time.", "Press Regenerate to try again, or pick another model."],
  INTERNAL_ERROR: ["Something went wrong on the server.", "Try again; if it keeps happening, check the server's log."],
  DISCONNECTED: ["The connection dropped before the server answered.", "It reconnects by itself; check whether your message arrived, then send again if needed."],
  NETWORK: ["The server could not be reached.", "Check that it is running and your network is up, then try again."],
  TIMEOUT_CLIENT: ["The server did not answer in time.", "Try again."],
};

/**
 * @param {string} code a protocol error code (or one of this app's)
 * @param {string} [detail] the server's message
 * @param {{retry_after?: number}} [extra]
 * @returns {{code: string, title: string, advice: string, detail: string}}
 */
export function describeError(code, detail = "", extra = {}) {
  const [title, advice0] = TEXT[code] ?? [`Error: ${code}`, "Try again."];
  let advice = advice0;
  if (code === "RATE_LIMITED" && extra.retry_after != null) {
    const secs = Math.max(1, Math.ceil(Number(extra.retry_after)));
    advice = `Wait ${secs} s and send again.`;
  }
  return { code, title, advice, detail: detail && detail !== title ? detail : "" };
}

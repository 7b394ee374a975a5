// HTTP side of the protocol: JSON requests with the bearer token, errors as
// ApiError, and Server-Sent Events read from a fetch body (EventSource cannot
// send an Authorization header).

export class ApiError extends Error {
  constructor(status, code, message, extra = {}) {
    super(message);
    this.status = status;
    this.code = code;
    this.extra = extra;
  }
}

/**
 * Call the API; resolves with the parsed JSON body (null for 204).
 * @param {string} path
 * @param {{method?: string, body?: any, token?: string, signal?: AbortSignal}} opts
 */
export async function apiFetch(path, { method = "GET", body, token, signal } = {}) {
  const headers = { Accept: "application/json" };
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let resp;
  try {
    resp = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal,
    });
  } catch (err) {
    if (err?.name === "AbortError") throw err;
    throw new ApiError(0, "NETWORK", "The server could not be reached.");
  }
  if (resp.status === 204) return null;
  let data = null;
  const text = await resp.text();
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  if (!resp.ok) {
    const err = data?.error ?? {};
    throw new ApiError(resp.status, err.code ?? `HTTP_${resp.status}`, err.message ?? resp.statusText, err);
  }
  return data;
}

/**
 * Read an SSE response from `path`, calling `onEvent({event, data})` for each
 * event (data parsed as JSON when it is JSON). Resolves when the stream ends;
 * rejects on HTTP errors. Abort with `signal`.
 */
export async function readEventStream(path, { token, signal, onEvent }) {
  const headers = { Accept: "text/event-stream" };
  if (token) headers.Authorization = `Bearer ${token}`;
  const resp = await fetch(path, { headers, signal, cache: "no-store" });
  if (!resp.ok) {
    let err = {};
    try {
      err = (await resp.json()).error ?? {};
    } catch {
      /* not JSON */
    }
    throw new ApiError(resp.status, err.code ?? `HTTP_${resp.status}`, err.message ?? resp.statusText, err);
  }
  const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let cut;
    while ((cut = buffer.search(/\r?\n\r?\n/)) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut).replace(/^\r?\n\r?\n/, "");
      let event = "message";
      const lines = [];
      for (const line of block.split(/\r?\n/)) {
        if (line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        const val = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "event") event = val;
        else if (field === "data") lines.push(val);
      }
      if (!lines.length) continue;
      const raw = lines.join("\n");
      let data = raw;
      try {
        data = JSON.parse(raw);
      } catch {
        /* plain text */
      }
      onEvent({ event, data });
    }
  }
}

// The dashboard's poller, off the main thread: it reads every conversation's
// state from the operations endpoint (GET /api/v1/admin/conversations),
// maps the swarm's ids to cell numbers, and posts only the cells that changed
// (two typed arrays, transferred, not copied). Parsing a 10,000-row answer
// therefore never blocks the page.
//
// In:  {type:"init", token, intervalMs} | {type:"token", token} | {type:"add", ids}
//      | {type:"reset"} | {type:"mark", idx: Uint32Array, state} | {type:"poll"}
// Out: {type:"diff", idx: Uint32Array, st: Uint8Array, ms, rows} | {type:"error", status, code, message}

const CODE = { idle: 1, starting: 1, generating: 2, crashed: 3, restarting: 4, failed: 5, passivated: 6 };
const PASSIVATED = 6; // a known conversation the supervisor does not list has no live actor

let token = "";
let intervalMs = 500;
let ids = [];
let index = new Map();
let states = new Uint8Array(0);
let timer = 0;
let inflight = false;
let again = false;

function schedule(delay) {
  clearTimeout(timer);
  timer = setTimeout(poll, delay);
}

async function poll() {
  if (inflight) {
    again = true;
    return;
  }
  if (!ids.length || !token) {
    schedule(intervalMs);
    return;
  }
  inflight = true;
  const t0 = performance.now();
  let ms = 0;
  try {
    const resp = await fetch("/api/v1/admin/conversations?limit=1000000", {
      headers: { Authorization: `Bearer ${token}`, Accept: "application/json" },
      cache: "no-store",
    });
    if (!resp.ok) {
      let err = {};
      try {
        err = (await resp.json()).error ?? {};
      } catch {
        /* not JSON */
      }
      postMessage({ type: "error", status: resp.status, code: err.code ?? `HTTP_${resp.status}`, message: err.message ?? resp.statusText });
    } else {
      const body = await resp.json();
      const rows = body.conversations ?? [];
      const n = ids.length;
      const next = new Uint8Array(n).fill(PASSIVATED);
      for (const row of rows) {
        const i = index.get(row.id);
        if (i !== undefined) next[i] = CODE[row.state] ?? 1;
      }
      const changed = [];
      for (let i = 0; i < n; i++) if (next[i] !== states[i]) changed.push(i);
      const idx = Uint32Array.from(changed);
      const st = new Uint8Array(changed.length);
      for (let k = 0; k < changed.length; k++) st[k] = next[changed[k]];
      states = next;
      ms = performance.now() - t0;
      postMessage({ type: "diff", idx, st, ms, rows: rows.length, startedAt: performance.timeOrigin + t0 }, [idx.buffer, st.buffer]);
    }
  } catch (err) {
    postMessage({ type: "error", status: 0, code: "NETWORK", message: String(err?.message ?? err) });
  } finally {
    inflight = false;
  }
  if (again) {
    again = false;
    schedule(0);
  } else {
    // Never poll faster than twice the time an answer takes: a busy server gets air.
    schedule(Math.max(intervalMs, 2 * ms));
  }
}

onmessage = (ev) => {
  const msg = ev.data;
  switch (msg.type) {
    case "init":
      token = msg.token;
      intervalMs = msg.intervalMs ?? intervalMs;
      schedule(0);
      break;
    case "token":
      token = msg.token;
      break;
    case "add": {
      const start = ids.length;
      ids = ids.concat(msg.ids);
      for (let k = 0; k < msg.ids.length; k++) index.set(msg.ids[k], start + k);
      const grown = new Uint8Array(ids.length);
      grown.set(states);
      states = grown;
      schedule(0);
      break;
    }
    case "reset":
      ids = [];
      index = new Map();
      states = new Uint8Array(0);
      break;
    case "mark":
      for (const i of msg.idx) if (i < states.length) states[i] = msg.state;
      break;
    case "poll":
      schedule(0);
      break;
    default:
      break;
  }
};

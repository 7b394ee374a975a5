// Who is logged in: the token, kept in localStorage (shared by the tabs of one
// browser, so a second tab is logged in too), the dev login, and the login view.

import { ApiError, apiFetch } from "./api.js";

const KEY = "actorchat.session";
const DEV_TOKEN_PATH = "/api/v1/auth/token";

/** @typedef {{token: string, userId: string, mode: "dev"|"token", expiresAt: number|null}} Session */

/** The claims of a JWT, read without checking it (only the server can). */
export function jwtClaims(token) {
  try {
    const part = token.split(".")[1];
    const json = atob(part.replace(/-/g, "+").replace(/_/g, "/").padEnd(Math.ceil(part.length / 4) * 4, "="));
    return JSON.parse(json);
  } catch {
    return {};
  }
}

/** @returns {Session|null} */
export function loadSession() {
  try {
    const s = JSON.parse(localStorage.getItem(KEY) ?? "null");
    return s && typeof s.token === "string" ? s : null;
  } catch {
    return null;
  }
}

export function saveSession(session) {
  localStorage.setItem(KEY, JSON.stringify(session));
}

export function clearSession() {
  localStorage.removeItem(KEY);
}

/** Ask the dev endpoint for a token (404 when the server has a secret: `code` "DEV_AUTH_OFF"). */
export async function devLogin(userId) {
  try {
    const body = await apiFetch(DEV_TOKEN_PATH, { method: "POST", body: { user_id: userId } });
    const ttl = Number(body.expires_in) || 86400;
    return { token: body.token, userId: body.user_id ?? userId, mode: "dev", expiresAt: Date.now() + ttl * 1000 };
  } catch (err) {
    if (err instanceof ApiError && err.status === 404) {
      throw new ApiError(404, "DEV_AUTH_OFF", "Dev login is off on this server (it has a JWT secret): paste a token instead.");
    }
    throw err;
  }
}

export function tokenSession(token) {
  const claims = jwtClaims(token);
  return {
    token,
    userId: claims.sub != null ? String(claims.sub) : "",
    mode: "token",
    expiresAt: claims.exp ? claims.exp * 1000 : null,
  };
}

/**
 * A usable token: a dev token about to expire is renewed for the same user;
 * a pasted one is returned as is (the server says when it has expired).
 */
export async function currentToken() {
  const s = loadSession();
  if (!s) throw new Error("not logged in");
  if (s.mode === "dev" && s.expiresAt && s.expiresAt - Date.now() < 60_000) {
    const fresh = await devLogin(s.userId);
    saveSession(fresh);
    return fresh.token;
  }
  return s.token;
}

/** After the server refused the token: renew a dev one silently; false when the user must log in. */
export async function renewAfterRefusal() {
  const s = loadSession();
  if (!s || s.mode !== "dev") return false;
  try {
    saveSession(await devLogin(s.userId));
    return true;
  } catch {
    return false;
  }
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else node.setAttribute(k, v);
  }
  node.append(...children);
  return node;
}

/**
 * Show the login view in place of `hide` (the page's main content) and
 * resolve with the new session once the user has logged in.
 * @param {{hide: HTMLElement[], message?: string}} options
 * @returns {Promise<Session>}
 */
export function showLogin({ hide, message = "" }) {
  for (const node of hide) node.hidden = true;
  document.getElementById("login")?.remove();
  const user = el("input", {
    id: "login-user",
    name: "user",
    autocomplete: "username",
    maxlength: "64",
    required: "",
    spellcheck: "false",
  });
  const tokenBox = el("textarea", { id: "login-token", rows: "4", spellcheck: "false", autocomplete: "off" });
  const error = el("p", { id: "login-error", class: "error-text", role: "alert" });
  const useToken = el("button", { type: "button", id: "login-token-btn", class: "secondary", text: "Use token" });
  const details = el(
    "details",
    { id: "login-token-details" },
    el("summary", { text: "Use a token instead" }),
    el("p", { class: "muted small", text: "With a JWT secret configured on the server, paste a token signed with it." }),
    el("label", { for: "login-token", text: "Token (JWT)" }),
    tokenBox,
    useToken,
  );
  const devPart = el(
    "div",
    { class: "login-dev" },
    el("label", { for: "login-user", text: "User name" }),
    user,
    el("button", { type: "submit", class: "primary", text: "Log in" }),
  );
  const form = el(
    "form",
    { class: "login-card", "aria-labelledby": "login-title", novalidate: "" },
    el("h1", { id: "login-title", text: "Log in to actorchat" }),
    el("p", { class: "muted", text: "Development mode: pick any user name and the server issues a token for it." }),
    devPart,
    details,
    error,
  );
  const main = el("main", { id: "login", class: "login" }, form);
  document.body.append(main);
  if (message) error.textContent = message;
  const last = loadSession();
  user.value = last?.userId ?? "";
  user.focus();

  return new Promise((resolve) => {
    const done = (session) => {
      saveSession(session);
      main.remove();
      for (const node of hide) node.hidden = false;
      resolve(session);
    };
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const name = user.value.trim();
      if (!name) {
        error.textContent = "Enter a user name (any name works in development mode).";
        user.focus();
        return;
      }
      error.textContent = "";
      form.setAttribute("aria-busy", "true");
      try {
        done(await devLogin(name));
      } catch (err) {
        if (err.code === "DEV_AUTH_OFF") {
          devPart.hidden = true;
          details.open = true;
          tokenBox.focus();
        }
        error.textContent = err.message;
      } finally {
        form.removeAttribute("aria-busy");
      }
    });
    useToken.addEventListener("click", () => {
      const token = tokenBox.value.trim();
      if (token.split(".").length !== 3) {
        error.textContent = "That does not look like a JWT (three dot-separated parts).";
        tokenBox.focus();
        return;
      }
      const session = tokenSession(token);
      if (session.expiresAt && session.expiresAt < Date.now()) {
        error.textContent = "That token has expired: get a fresh one.";
        return;
      }
      done(session);
    });
  });
}

// The page frame both pages share: theme (light, dark, or the system's), the
// user name, log out.

const THEME_KEY = "actorchat.theme";

function systemTheme() {
  return matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light";
}

export function currentTheme() {
  return document.documentElement.dataset.theme || systemTheme();
}

function applyTheme(theme) {
  if (theme) document.documentElement.dataset.theme = theme;
  else delete document.documentElement.dataset.theme;
  const button = document.getElementById("theme-toggle");
  if (button) {
    const dark = currentTheme() === "dark";
    button.setAttribute("aria-pressed", String(dark));
    button.title = dark ? "Switch to the light theme" : "Switch to the dark theme";
  }
  document.dispatchEvent(new CustomEvent("themechange", { detail: { theme: currentTheme() } }));
}

/** Apply the saved theme early (before first paint when called from the module top). */
export function initTheme() {
  applyTheme(localStorage.getItem(THEME_KEY));
  matchMedia("(prefers-color-scheme: dark)").addEventListener("change", () => {
    if (!localStorage.getItem(THEME_KEY)) applyTheme(null);
  });
}

/**
 * Wire the header: theme toggle, user name, log out.
 * @param {{onLogout: () => void}} options
 */
export function initChrome({ onLogout }) {
  initTheme();
  document.getElementById("theme-toggle")?.addEventListener("click", () => {
    const next = currentTheme() === "dark" ? "light" : "dark";
    localStorage.setItem(THEME_KEY, next);
    applyTheme(next);
  });
  document.getElementById("logout")?.addEventListener("click", onLogout);
  // Another tab logged out or in as someone else: follow it.
  addEventListener("storage", (ev) => {
    if (ev.key === "actorchat.session") {
      const who = (v) => {
        try {
          return JSON.parse(v ?? "null")?.userId ?? null;
        } catch {
          return null;
        }
      };
      // A renewed token for the same user changes nothing here.
      if (who(ev.oldValue) !== who(ev.newValue) || ev.newValue === null) location.reload();
    }
    if (ev.key === THEME_KEY) applyTheme(ev.newValue);
  });
}

export function showUser(name) {
  const node = document.getElementById("user-name");
  if (node) node.textContent = name ? `Signed in as ${name}` : "";
  const logout = document.getElementById("logout");
  if (logout) logout.hidden = !name;
}

/** Format a number with thousands separators (1,000). */
export function fmt(n) {
  return Number(n).toLocaleString("en-US");
}

// Markdown for assistant replies: marked (GFM) to HTML, DOMPurify to make it
// safe (model output is untrusted: no scripts, no event handlers, no
// javascript: links), links opened in a new tab, code blocks with a Copy button.

import { Marked } from "../vendor/marked/marked.esm.js";
import DOMPurify from "../vendor/dompurify/purify.es.js";

const marked = new Marked({ gfm: true, breaks: false, async: false });

const escapeHtml = (s) =>
  String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);

// Images in model output are shown as links, never loaded: fetching a URL the
// model wrote can leak the conversation (data in the query string).
marked.use({
  renderer: {
    image({ href, text }) {
      return `<a href="${escapeHtml(href)}">[image: ${escapeHtml(text || "untitled")}]</a>`;
    },
  },
});

DOMPurify.addHook("afterSanitizeAttributes", (node) => {
  if (node.tagName === "A" && node.hasAttribute("href")) {
    node.setAttribute("target", "_blank");
    node.setAttribute("rel", "noopener noreferrer nofollow");
  }
});

/** Markdown text to sanitised HTML. */
export function renderMarkdown(text) {
  const html = marked.parse(text ?? "");
  return DOMPurify.sanitize(html, {
    USE_PROFILES: { html: true },
    FORBID_TAGS: ["style", "form", "input", "button", "textarea", "select", "iframe", "img", "video", "audio", "source", "picture"],
    FORBID_ATTR: ["style"],
  });
}

/** Render `text` into `target`, adding a Copy button and a language label to each code block. */
export function renderInto(target, text) {
  target.innerHTML = renderMarkdown(text);
  for (const pre of target.querySelectorAll("pre")) {
    const code = pre.querySelector("code");
    const lang = /language-([\w+#.-]+)/.exec(code?.className ?? "")?.[1] ?? "";
    const bar = document.createElement("div");
    bar.className = "code-bar";
    const label = document.createElement("span");
    label.textContent = lang || "code";
    const copy = document.createElement("button");
    copy.type = "button";
    copy.className = "copy-code";
    copy.textContent = "Copy";
    copy.setAttribute("aria-label", `Copy ${lang || "code"} to the clipboard`);
    bar.append(label, copy);
    const wrap = document.createElement("div");
    wrap.className = "code-block";
    pre.replaceWith(wrap);
    wrap.append(bar, pre);
    if (!pre.hasAttribute("tabindex")) pre.tabIndex = 0; // scrollable: reachable by keyboard
  }
}

/** One delegated handler for every Copy button under `root`. */
export function handleCopyClicks(root) {
  root.addEventListener("click", async (ev) => {
    const button = ev.target.closest?.(".copy-code");
    if (!button) return;
    const code = button.closest(".code-block")?.querySelector("pre")?.innerText ?? "";
    try {
      await navigator.clipboard.writeText(code);
      button.textContent = "Copied";
    } catch {
      button.textContent = "Copy failed";
    }
    setTimeout(() => {
      button.textContent = "Copy";
    }, 1500);
  });
}

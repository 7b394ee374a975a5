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

const charRef = (c) => `&#${c.charCodeAt(0)};`;

/**
 * Make HTML parse without creating an event-handler attribute, a `style`
 * attribute or a `<style>` element, while reading the same as text.
 *
 * Chromium (156 at least) checks the page's Content-Security-Policy when its
 * HTML parser creates one of those, even in an inert document (DOMParser, a
 * `<template>`): parsing `<img onerror=…>` logs "Executing inline event
 * handler violates … 'script-src 'self''" before any sanitiser has seen the
 * element. The CSP blocks the handler either way and DOMPurify removes it,
 * but the page must not log errors; so the parser must never meet one.
 *
 * The tokenizer starts an attribute name only after whitespace, `/` or a
 * closing quote, and never decodes character references in a name. So every
 * `on…` or `style…` that follows one of those characters, anywhere in the
 * HTML (not only in the raw HTML that marked passes through: where a tag the
 * model wrote ends is the parser's business), gets its second letter written as
 * a character reference: `o&#110;error` is no handler, while in text and in
 * attribute values, where references are decoded, it reads exactly as before. `<style>` becomes
 * `<noembed>`, also raw text, which DOMPurify drops with its content.
 *
 * This is not the security boundary (DOMPurify is); it keeps the console clean.
 */
function defuse(html) {
  return html
    .replace(/<(\/?)style(?=[\s/>]|$)/gi, "<$1noembed") // first: `</style` holds a "/st"
    .replace(/([\s/"'])(o)(n)/gi, (_, sep, o, n) => `${sep}${o}${charRef(n)}`)
    .replace(/([\s/"'])(s)(t)(?=yle)/gi, (_, sep, s, t) => `${sep}${s}${charRef(t)}`);
}

const PURIFY = {
  USE_PROFILES: { html: true },
  FORBID_TAGS: ["style", "form", "input", "button", "textarea", "select", "iframe", "img", "video", "audio", "source", "picture"],
  FORBID_ATTR: ["style"],
  RETURN_DOM_FRAGMENT: true,
};

/** Markdown text to a sanitised DocumentFragment (its nodes are moved, not parsed again, into the page). */
export function renderMarkdown(text) {
  return DOMPurify.sanitize(defuse(marked.parse(text ?? "")), PURIFY);
}

/** Render `text` into `target`, adding a Copy button and a language label to each code block. */
export function renderInto(target, text) {
  target.replaceChildren(renderMarkdown(text));
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

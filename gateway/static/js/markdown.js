// Model output is untrusted: Markdown is rendered by marked, then sanitised by DOMPurify with an
// allow-list, before it touches the page. No images (a remote image in an answer would be fetched,
// and could carry data out in its URL), only http(s) and mailto links, no inline style.

import { Marked } from "../vendor/marked.esm.js";
import DOMPurify from "../vendor/purify.es.mjs";

const ALLOWED_TAGS = [
  "a", "b", "blockquote", "br", "code", "del", "em", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "i",
  "kbd", "li", "ol", "p", "pre", "s", "strong", "sub", "sup", "table", "tbody", "td", "th", "thead",
  "tr", "ul",
];
const ALLOWED_ATTR = ["href", "title", "class", "start", "align"];
const SAFE_URL = /^(?:https?:|mailto:)/i;
const CODE_CLASS = /^language-[\w+#.-]{1,40}$/;

const marked = new Marked({ gfm: true, breaks: false, async: false });
marked.use({
  renderer: {
    // An image becomes a plain link to it: nothing is fetched unless the reader clicks.
    image({ href, title, text }) {
      const label = escapeHtml(text || href || "image");
      const titled = title ? ` title="${escapeHtml(title)}"` : "";
      return href ? `<a href="${escapeHtml(href)}"${titled}>${label}</a>` : label;
    },
  },
});

const purify = DOMPurify(window);
purify.addHook("afterSanitizeAttributes", (node) => {
  if (node.tagName === "A") {
    const href = node.getAttribute("href");
    if (href && !SAFE_URL.test(href.trim())) node.removeAttribute("href");
    if (node.hasAttribute("href")) {
      node.setAttribute("target", "_blank");
      node.setAttribute("rel", "noopener noreferrer nofollow");
    }
  }
  // Classes only name a code block's language: answers cannot borrow the page's own styles.
  if (node.hasAttribute && node.hasAttribute("class")) {
    const keep = node.tagName === "CODE" && CODE_CLASS.test(node.getAttribute("class"));
    if (!keep) node.removeAttribute("class");
  }
});

const SANITIZE = {
  ALLOWED_TAGS,
  ALLOWED_ATTR,
  ADD_ATTR: ["target", "rel"],
  ALLOW_DATA_ATTR: false,
  ALLOWED_URI_REGEXP: SAFE_URL,
  RETURN_DOM_FRAGMENT: true,
};

export function escapeHtml(text) {
  return String(text)
    .replaceAll("&", "&amp;")
    .replaceAll("<", "&lt;")
    .replaceAll(">", "&gt;")
    .replaceAll('"', "&quot;")
    .replaceAll("'", "&#39;");
}

/** Markdown → a sanitised DocumentFragment, with a copy button on each code block. */
export function renderMarkdown(text) {
  const fragment = purify.sanitize(marked.parse(text || ""), SANITIZE);
  for (const pre of fragment.querySelectorAll("pre")) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "copy-code";
    button.textContent = "Copy";
    button.addEventListener("click", () => copyText(pre.querySelector("code")?.textContent ?? pre.textContent, button));
    pre.prepend(button);
  }
  return fragment;
}

export async function copyText(text, button) {
  try {
    await navigator.clipboard.writeText(text);
    flash(button, "Copied");
  } catch {
    flash(button, "Copy failed");
  }
}

function flash(button, label) {
  const before = button.textContent;
  button.textContent = label;
  setTimeout(() => {
    button.textContent = before;
  }, 1200);
}

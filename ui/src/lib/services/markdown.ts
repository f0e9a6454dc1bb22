import DOMPurify from "dompurify";
import { Marked } from "marked";

/** A local address: a path on this site or a fragment (never another host, never a scheme). */
const LOCAL = /^(#|\/(?!\/))/;
let strict = false;

// Markdown may name outside images; loading one would reach outside the site, so only same-origin and
// inline images are kept (the page's CSP would block the rest anyway). In strict mode (text written by the
// model) links to other hosts are not links at all, and no image loads.
DOMPurify.addHook("afterSanitizeAttributes", (node) => {
  if (node.tagName === "IMG") {
    const src = node.getAttribute("src") ?? "";
    if (strict || !/^(data:image\/|blob:|\/(?!\/))/.test(src)) node.removeAttribute("src");
  }
  if (node.tagName === "A") {
    node.setAttribute("rel", "noopener noreferrer");
    const href = node.getAttribute("href") ?? "";
    if (strict && !LOCAL.test(href)) {
      node.removeAttribute("href");
      node.setAttribute("title", href);
      node.classList.add("outside-link");
    }
  }
});

const escapeHtml = (s: string) =>
  s.replace(
    /[&<>"']/g,
    (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c] ?? c,
  );

const markdown = new Marked({ gfm: true });
// The model's text never carries HTML: a raw HTML block or tag shows as the text it is.
const noHtml = new Marked({ gfm: true, renderer: { html: ({ text }) => escapeHtml(text) } });

/** Renders Markdown a person wrote (notes, chat) to sanitized HTML. */
export function renderMarkdown(source: string): string {
  return DOMPurify.sanitize(markdown.parse(source, { async: false }));
}

/**
 * Renders text the model wrote: no raw HTML, no images, no links to other hosts, and `[n]` marks turned into
 * links to the passages cited (outside code).
 */
export function renderModelMarkdown(source: string, citeHref: (ref: number) => string | null): string {
  strict = true;
  let root: HTMLElement;
  try {
    root = DOMPurify.sanitize(noHtml.parse(source, { async: false }), { RETURN_DOM: true }) as HTMLElement;
  } finally {
    strict = false;
  }
  const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
  const texts: Text[] = [];
  while (walker.nextNode()) {
    const n = walker.currentNode as Text;
    if (/\[\d{1,3}\]/.test(n.data) && !n.parentElement?.closest("code, pre, a")) texts.push(n);
  }
  for (const n of texts) {
    const frag = document.createDocumentFragment();
    let last = 0;
    for (const m of n.data.matchAll(/\[(\d{1,3})\]/g)) {
      const href = citeHref(Number(m[1]));
      if (!href) continue;
      frag.append(n.data.slice(last, m.index));
      const a = document.createElement("a");
      a.href = href;
      a.className = "cite-ref";
      a.textContent = m[0];
      frag.append(a);
      last = (m.index ?? 0) + m[0].length;
    }
    frag.append(n.data.slice(last));
    n.replaceWith(frag);
  }
  return root.innerHTML;
}

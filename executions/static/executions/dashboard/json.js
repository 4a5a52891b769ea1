/* A JSON viewer: objects and arrays fold (the first levels open), every value can be copied, and
 * big documents stay cheap because a folded branch is only built when it is opened. */
import { copyButton, el } from "./core.js";

/** jsonView(value, { open: levels open at first (2), label }) → an element. */
export function jsonView(value, options = {}) {
  const open = options.open ?? 2;
  const box = el("div", { class: "json" });
  const text = JSON.stringify(value, null, 2) ?? "undefined";
  box.append(el("div", { class: "json-tools" }, copyButton(text, options.label || "Copy JSON")), node(value, open, null));
  return box;
}

function scalar(value) {
  const kind = value === null ? "null" : typeof value;
  return el("span", { class: "json-" + kind, text: JSON.stringify(value) });
}

function node(value, open, key) {
  const keyPart = key === null ? null : el("span", { class: "json-key", text: typeof key === "number" ? key + ": " : JSON.stringify(key) + ": " });
  if (value === null || typeof value !== "object") return el("div", { class: "json-row" }, keyPart, scalar(value));
  const entries = Array.isArray(value) ? value.map((v, i) => [i, v]) : Object.entries(value);
  const [start, end] = Array.isArray(value) ? ["[", "]"] : ["{", "}"];
  if (!entries.length) return el("div", { class: "json-row" }, keyPart, el("span", { text: start + end }));
  const details = el("details", { class: "json-branch" });
  const count = Array.isArray(value) ? `${entries.length} items` : `${entries.length} keys`;
  details.append(el("summary", {}, keyPart, el("span", { text: start }), el("span", { class: "json-count", text: " " + count + " " }), el("span", { class: "json-close", text: end })));
  let built = false;
  const build = () => {
    if (built) return;
    built = true;
    const children = el("div", { class: "json-children" });
    for (const [k, v] of entries) children.append(node(v, open - 1, k));
    details.append(children, el("div", { class: "json-end", text: end }));
  };
  details.addEventListener("toggle", () => { if (details.open) build(); });
  if (open > 0) { details.open = true; build(); }
  return details;
}

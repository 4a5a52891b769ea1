/* The execution's artifacts: new ones appear as they are stored; text and JSON open in place,
 * images show, anything else downloads. */
import { $, el } from "./core.js";

export function artifactsPart(view) {
  const list = $("#artifacts");
  list.addEventListener("click", async (event) => {
    const link = event.target.closest("a");
    const item = event.target.closest("li[data-id]");
    if (!link || !item) return;
    const type = item.dataset.type || "";
    const box = $("#artifact-view");
    if (type.startsWith("image/")) { event.preventDefault(); box.replaceChildren(el("img", { src: link.href, alt: link.textContent })); return; }
    if (!(type.startsWith("text/") || type.includes("json"))) return; // downloaded as it is
    event.preventDefault();
    const response = await fetch(link.href, { headers: { "X-Tenant": view.tenant }, credentials: "same-origin" });
    const text = await response.text();
    let shown = text;
    if (type.includes("json")) { try { shown = JSON.stringify(JSON.parse(text), null, 2); } catch (e) { /* shown raw */ } }
    box.replaceChildren(el("pre", { text: shown }));
  });
  return {
    event(event) {
      if (event.type !== "data-artifact-created") return;
      const d = event.data || {};
      const empty = $(".empty", list);
      if (empty) empty.remove();
      if (!d.artifact_id || $(`li[data-id="${d.artifact_id}"]`, list)) return;
      list.append(el("li", { "data-id": d.artifact_id, "data-type": d.content_type || "" },
        el("a", { href: `/api/v1/artifacts/${d.artifact_id}/content`, text: d.name || d.artifact_id })));
    },
  };
}

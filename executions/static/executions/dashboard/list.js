/* The executions list: rows follow the tenant's feed live; the start form. */
import { $, el, liveSocket, stateBadge } from "./core.js";
import { startForm } from "./start.js";

export function executionsPage() {
  const table = $("#executions");
  const tenant = $(".tenant select").value;
  const filters = { state: table.dataset.filterState, blueprint: table.dataset.filterBlueprint, q: table.dataset.filterQ };
  const matches = (e) => (!filters.state || e.state === filters.state) && (!filters.blueprint || e.blueprint === filters.blueprint)
    && (!filters.q || e.id.startsWith(filters.q) || e.blueprint.includes(filters.q));
  liveSocket(() => "/ws/executions/?tenant=" + encodeURIComponent(tenant), (frame) => {
    if (frame.type !== "execution") return;
    const e = frame.execution;
    let row = $(`tr[data-id="${e.id}"]`, table);
    if (!row) {
      if (!matches(e)) return;
      const empty = $("tr.empty", table);
      if (empty) empty.remove();
      row = el("tr", { "data-id": e.id },
        el("td", {}, el("a", { href: "/executions/" + e.id + "/" }, el("code", { text: e.id }))),
        el("td", { text: e.blueprint }),
        el("td", {}, el("span", {})),
        el("td", {}, el("time", { datetime: e.created_at, text: e.created_at.replace("T", " ").slice(0, 19) })),
        el("td", {}));
      table.tBodies[0].prepend(row);
    }
    stateBadge(row.cells[2].firstChild, e.state);
    row.cells[4].textContent = e.ended_at ? e.ended_at.slice(11, 19) : "";
    row.classList.add("flash");
    setTimeout(() => row.classList.remove("flash"), 800);
  });
  startForm(tenant);
}

/* The steps table: one row per step, kept current as steps start and end. */
import { $, el, short, stateBadge } from "./core.js";

export function stepsPart(view) {
  const body = $("#steps").tBodies[0];
  return {
    event(event) {
      if (event.type !== "data-step-end" && event.type !== "data-step-failed") return;
      const step = view.steps.get(event.step_id);
      let row = $(`tr[data-step="${event.step_id}"]`, body);
      if (!row) {
        row = el("tr", { "data-step": event.step_id }, el("td", { text: body.rows.length }), el("td", { text: step.name }),
          el("td", {}, el("span", {})), el("td", { text: step.attempt ?? "" }), el("td", {}), el("td", {}, el("code", { class: "output" })));
        body.append(row);
      }
      stateBadge(row.cells[2].firstChild, step.state);
      if (step.duration_ms !== undefined && step.duration_ms !== null) row.cells[4].textContent = step.duration_ms + " ms";
      row.cells[5].firstChild.textContent = short(step.state === "completed" ? step.output : step.error && step.error.message);
    },
  };
}

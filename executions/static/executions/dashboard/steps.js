/* The steps table: a page of steps at a time (thousands of steps cost what one page costs), with a
 * filter by state; durations written as people read them; a step's output (or error) shown whole
 * in the JSON viewer on a click. */
import { $, el, formatDuration, formatNumber, short, stateBadge } from "./core.js";
import { shownState } from "./graph.js";
import { jsonView } from "./json.js";

export const STEPS_PER_PAGE = 50;

export function stepsPart(view) {
  const card = $("#steps-card");
  const body = $("#steps").tBodies[0];
  const stateSelect = $("#steps-state", card);
  const prev = $("#steps-prev", card);
  const next = $("#steps-next", card);
  const status = $("#steps-page", card);
  const detail = $("#steps-detail", card);
  let page = 0;
  let state = "";
  let list = [];
  let changed = true; // something to draw: steps came or changed, the page or the filter moved
  let stayOnLast = false; // the reader is on the last page: new steps show as they come

  function duration(step) {
    if (step.duration_ms !== undefined && step.duration_ms !== null) return step.duration_ms;
    if (step.start && step.end) return step.end - step.start;
    if (step.start && step.state === "running") return Date.now() - step.start;
    return null;
  }

  async function open(step, index) {
    let value = step.state === "failed" || step.state === "cancelled" ? step.error : step.output;
    if (step.output_cut && value === step.output) {
      // A big output is not in the page: read the step whole.
      try {
        const response = await fetch(`/executions/${view.id}/steps/${step.id}.json`, { credentials: "same-origin" });
        if (!response.ok) throw new Error("HTTP " + response.status);
        value = (await response.json()).step.output;
      } catch (e) { value = `The output could not be read (${e.message}).`; }
    }
    detail.hidden = false;
    detail.replaceChildren(
      el("div", { class: "log-detail-head" },
        el("strong", { text: `${index}. ${step.name}` }),
        el("span", { class: "hint", text: ` · ${step.state === "failed" || step.state === "cancelled" ? "error" : "output"}` }),
        el("button", { type: "button", class: "log-close", text: "Close", "aria-label": "Close the step's output" })),
      jsonView(value ?? null, { open: 2, label: "Copy the step's " + (step.state === "failed" ? "error" : "output") }));
    $(".log-close", detail).addEventListener("click", () => { detail.hidden = true; });
  }

  function row(step, index) {
    const failed = step.state === "failed" || step.state === "cancelled";
    const value = failed ? step.error && (step.error.message ?? step.error) : step.output_cut ? step.output_preview : step.output;
    const preview = value === undefined || value === null ? "" : short(value, 80);
    const badge = el("span", {});
    stateBadge(badge, shownState(step, view));
    const button = preview ? el("button", { type: "button", class: "output-open", text: preview, title: "Show it whole", "aria-label": `${step.name}: show the ${failed ? "error" : "output"}` }) : null;
    if (button) button.addEventListener("click", () => open(step, index));
    return el("tr", { "data-step": step.id },
      el("td", { text: index }), el("td", { text: step.name }), el("td", {}, badge), el("td", { text: step.attempt ?? "" }),
      el("td", { text: formatDuration(duration(step)) }), el("td", { class: "output" }, button));
  }

  function draw() {
    changed = false;
    const all = [...view.steps.values()];
    list = state ? all.map((s, i) => [s, i + 1]).filter(([s]) => shownState(s, view) === state) : all.map((s, i) => [s, i + 1]);
    const pages = Math.max(1, Math.ceil(list.length / STEPS_PER_PAGE));
    if (stayOnLast) page = pages - 1;
    page = Math.min(page, pages - 1);
    const slice = list.slice(page * STEPS_PER_PAGE, (page + 1) * STEPS_PER_PAGE);
    body.replaceChildren(...slice.map(([step, index]) => row(step, index)));
    const what = state ? `${formatNumber(list.length)} ${state} of ${formatNumber(all.length)} steps` : `${formatNumber(all.length)} ${all.length === 1 ? "step" : "steps"}`;
    status.textContent = pages > 1 ? `${what} · page ${page + 1} of ${formatNumber(pages)}` : what;
    prev.disabled = page === 0;
    next.disabled = page >= pages - 1;
    prev.hidden = next.hidden = pages <= 1;
  }

  function go(to) {
    const pages = Math.max(1, Math.ceil(list.length / STEPS_PER_PAGE));
    page = Math.max(0, Math.min(to, pages - 1));
    stayOnLast = pages > 1 && page === pages - 1;
    draw();
  }
  prev.addEventListener("click", () => go(page - 1));
  next.addEventListener("click", () => go(page + 1));
  stateSelect.addEventListener("change", () => { state = stateSelect.value; page = 0; stayOnLast = false; draw(); });

  return {
    // A step's shown state can follow the execution's (a wait, a cancel): redraw on those too.
    event(event) { if (event.step_id || view.page.states[event.type]) changed = true; },
    render() { if (changed) draw(); },
    tick() {
      // Running steps' durations grow with the clock: only the rows on this page.
      for (const tr of body.rows) {
        const step = view.steps.get(tr.dataset.step);
        if (step && step.state === "running") tr.cells[4].textContent = formatDuration(duration(step));
      }
    },
  };
}

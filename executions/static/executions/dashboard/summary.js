/* The execution's heading and summary: state, wait reason, usage against the tenant's limits. */
import { $, el, stateBadge } from "./core.js";

export function summaryPart(view) {
  const limits = view.page.limits;
  function renderUsage() {
    const u = view.usage || {};
    const elapsed = view.startedAt ? ((view.endedAt || Date.now()) - view.startedAt) / 1000 : 0;
    const done = [...view.steps.values()].filter((s) => s.state === "completed").length;
    const rows = [
      ["Steps", u.steps ?? done, limits.steps],
      ["Tokens", (u.input_tokens || 0) + (u.output_tokens || 0), limits.tokens],
      ["Cost (USD)", u.cost_usd || 0, limits.cost_usd],
      ["Wall time (s)", Math.round(elapsed * 10) / 10, limits.wall_time_s],
    ];
    $("#usage").replaceChildren(...rows.map(([label, used, limit]) => {
      const percent = limit ? Math.min(100, (100 * used) / limit) : 0;
      return el("div", { class: "bar-row" }, el("span", { class: "bar-label", text: label }),
        el("span", { class: "bar" }, el("span", { class: "bar-fill" + (percent >= 80 ? " warn" : ""), style: { width: percent + "%" } })),
        el("span", { class: "bar-value", text: `${used} / ${limit ?? "no limit"}` }));
    }));
  }
  return {
    render() {
      stateBadge($("#state"), view.state);
      $("#wait-reason").textContent = view.waitReason || "";
      renderUsage();
    },
    tick: renderUsage,
  };
}

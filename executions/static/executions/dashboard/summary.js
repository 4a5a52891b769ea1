/* The execution's heading and summary: its state (in words, read out when it changes), its id
 * with a copy button, input and output in the JSON viewer, why it failed, when it started and
 * ended and for how long, its tokens and cost, and its usage against the tenant's limits. */
import { $, TERMINAL, announce, copyButton, el, formatDuration, formatNumber, formatUsd, localizeTimes, stateBadge } from "./core.js";
import { jsonView } from "./json.js";

const WAIT_WORDS = {
  approval: "waiting for approval",
  user_input: "waiting for input",
  sub_agent: "waiting for a child execution",
  cost_threshold: "waiting: the cost threshold was reached",
  external: "waiting for an outside event",
  checkpoint: "waiting at a checkpoint",
  memory_pressure: "waiting: the worker is short of memory",
};

const STATE_WORDS = {
  queued: "The execution is queued.",
  running: "The execution is running.",
  paused: "The execution is paused.",
  waiting: "The execution is waiting.",
  completed: "The execution completed.",
  failed: "The execution failed.",
  cancelled: "The execution was cancelled.",
};

const CATEGORY_WORDS = {
  llm: "the model's server", tool: "a tool", network: "the network", timeout: "a time limit",
  policy_violation: "a policy", quota_exceeded: "a limit or quota", validation: "invalid data",
  kernel_internal: "the platform itself", cancelled: "a cancel", user_code: "the step's own code",
};

export function summaryPart(view) {
  const limits = view.page.limits;
  const e = view.page.execution;
  let shownState = null, input = false, output = undefined, error = undefined;

  const id = $("#execution-id");
  if (id) id.after(copyButton(view.id, "Copy the execution id"));

  function time(ms) {
    if (!ms) return null;
    const iso = new Date(ms).toISOString();
    const node = el("time", { datetime: iso, text: iso });
    return node;
  }

  function renderTimes() {
    const started = $("#started-at"), ended = $("#ended-at");
    if (started && view.startedAt && !started.querySelector("time")) { started.replaceChildren(time(view.startedAt)); localizeTimes(started); }
    if (ended && view.endedAt && !ended.querySelector("time")) { ended.replaceChildren(time(view.endedAt)); localizeTimes(ended); }
    const duration = $("#duration");
    if (duration) {
      duration.textContent = view.startedAt
        ? formatDuration((view.endedAt || Date.now()) - view.startedAt) + (view.endedAt ? "" : " so far")
        : "";
    }
  }

  function renderMoney() {
    const u = view.usage || {};
    const tokens = $("#tokens"), cost = $("#cost");
    if (tokens) tokens.textContent = `${formatNumber((u.input_tokens || 0) + (u.output_tokens || 0))} (${formatNumber(u.input_tokens || 0)} in, ${formatNumber(u.output_tokens || 0)} out)`;
    if (cost) cost.textContent = formatUsd(u.cost_usd || 0);
  }

  function renderUsage() {
    const u = view.usage || {};
    const elapsed = view.startedAt ? ((view.endedAt || Date.now()) - view.startedAt) : 0;
    const done = [...view.steps.values()].filter((s) => s.state === "completed").length;
    const rows = [
      ["Steps", u.steps ?? done, limits.steps, formatNumber],
      ["Tokens", (u.input_tokens || 0) + (u.output_tokens || 0), limits.tokens, formatNumber],
      ["Cost", u.cost_usd || 0, limits.cost_usd, formatUsd],
      ["Wall time", elapsed / 1000, limits.wall_time_s, (s) => formatDuration(s * 1000)],
    ];
    $("#usage").replaceChildren(...rows.map(([label, used, limit, format]) => {
      const percent = limit ? Math.min(100, (100 * used) / limit) : 0;
      const words = limit ? `${format(used)} / ${format(limit)}` : `${format(used)} (no limit)`;
      const bar = el("span", {
        class: "bar", role: "progressbar", "aria-label": label, "aria-valuemin": "0",
        "aria-valuemax": limit ? String(limit) : null, "aria-valuenow": String(Math.round(used * 10000) / 10000), "aria-valuetext": words,
      }, el("span", { class: "bar-fill" + (percent >= 80 ? " warn" : ""), style: { width: percent + "%" } }));
      return el("div", { class: "bar-row" }, el("span", { class: "bar-label", text: label }), bar, el("span", { class: "bar-value", text: words }));
    }));
  }

  function renderError() {
    const box = $("#error-box");
    const err = view.error;
    if (!box || err === error) return;
    error = err;
    if (!err) { box.hidden = true; return; }
    box.hidden = false;
    const category = err.category || "unknown";
    $("#error-text").textContent = err.message || "No message was recorded.";
    const where = $("#error-where");
    const step = err.step_id ? view.steps.get(err.step_id) : [...view.steps.values()].reverse().find((s) => s.state === "failed");
    const parts = [document.createTextNode("Category: "), el("strong", { id: "error-category", text: category }),
      document.createTextNode(CATEGORY_WORDS[category] ? ` (caused by ${CATEGORY_WORDS[category]})` : "")];
    if (step) {
      parts.push(document.createTextNode("; in step "),
        el("a", { href: "#steps", "data-step-link": step.id, text: step.name }),
        document.createTextNode(step.attempt ? ` (attempt ${step.attempt})` : ""));
    }
    where.replaceChildren(...parts);
  }

  function renderIo() {
    const inBox = $("#input-view"), outBox = $("#output-view");
    if (inBox && !input) { input = true; inBox.replaceChildren(jsonView(e.input ?? null, { label: "Copy the input" })); }
    if (outBox && view.output !== output) {
      output = view.output;
      if (output === undefined || output === null) outBox.replaceChildren(el("p", { class: "hint", text: TERMINAL.has(view.state) ? "No output." : "No output yet." }));
      else outBox.replaceChildren(jsonView(output, { label: "Copy the output" }));
    }
  }

  // A link to the step that failed scrolls to its row and marks it.
  document.addEventListener("click", (event) => {
    const link = event.target.closest("a[data-step-link]");
    if (!link) return;
    const row = document.querySelector(`#steps tr[data-step="${CSS.escape(link.dataset.stepLink)}"]`);
    if (!row) return;
    event.preventDefault();
    row.scrollIntoView({ block: "center" });
    row.classList.add("flash");
    row.setAttribute("tabindex", "-1");
    row.focus();
    setTimeout(() => row.classList.remove("flash"), 1500);
  });

  view.output = e.output;
  view.error = e.error;
  return {
    event(event) {
      const d = event.data || {};
      if (event.type === "data-execution-end") view.output = d.output;
      if (event.type === "data-execution-failed") view.error = d.error;
    },
    render() {
      stateBadge($("#state"), view.state);
      $("#wait-reason").textContent = view.state === "waiting" ? (WAIT_WORDS[view.waitReason] || view.waitReason || "") : "";
      if (shownState !== null && shownState !== view.state) {
        const words = STATE_WORDS[view.state] || `The execution is ${view.state}.`;
        announce(view.state === "waiting" && WAIT_WORDS[view.waitReason] ? `The execution is ${WAIT_WORDS[view.waitReason]}.` : words);
      }
      shownState = view.state;
      renderTimes();
      renderMoney();
      renderUsage();
      renderError();
      renderIo();
    },
    tick() { renderTimes(); renderUsage(); },
  };
}

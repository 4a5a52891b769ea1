/* The model's steps: for each llm step, the messages it sent, its reply as it streams in
 * (data-text-delta), the tools it called with their arguments and results
 * (data-tool-input-available, data-tool-output-available), and its tokens and cost (data-usage).
 * What happened before the page opened comes from the page's step JSON; what happens after,
 * from the socket. */
import { $, el, formatNumber, formatUsd, stateBadge } from "./core.js";
import { shownState } from "./graph.js";
import { jsonView } from "./json.js";

export function llmPart(view) {
  const section = $("#llm"), list = $("#llm-steps");
  if (!section || !list) return {};
  const cards = new Map(); // step id → { root, parts…, usage, calls: Map, seq }

  function card(step) {
    let c = cards.get(step.id);
    if (c) return c;
    const badge = el("span", { class: "state" });
    const usage = el("span", { class: "llm-usage" });
    const reply = el("pre", { class: "llm-reply", "aria-live": "polite" });
    const sent = el("div", { class: "llm-sent" });
    const tools = el("ul", { class: "llm-tools" });
    const requested = el("ul", { class: "llm-requested" });
    const root = el("details", { class: "llm-step", "data-step": step.id, open: "" },
      el("summary", {}, el("strong", { text: step.name }), " ", badge, " ", el("small", { class: "llm-attempt" }), " ", usage),
      el("h4", { text: "Messages sent" }), sent,
      el("h4", { text: "Reply" }), reply,
      el("h4", { class: "llm-requested-title", text: "Tools the model asked for", hidden: "" }), requested,
      el("h4", { class: "llm-tools-title", text: "Tool calls", hidden: "" }), tools);
    sent.append(el("p", { class: "hint", text: "Shown when the step has ended." }));
    c = { root, badge, usage, reply, sent, tools, requested, tally: { input_tokens: 0, output_tokens: 0, cost_usd: 0 }, calls: new Map(), seq: 0, loaded: false };
    cards.set(step.id, c);
    list.append(root);
    section.hidden = false;
    return c;
  }

  function toolCall(c, id, tool) {
    let call = c.calls.get(id);
    if (!call) {
      const args = el("div", { class: "llm-args" }, el("p", { class: "hint", text: "Arguments not yet known." }));
      const out = el("div", { class: "llm-result" }, el("p", { class: "hint", text: "Running…" }));
      const item = el("li", { "data-call": id }, el("strong", { text: tool || "tool" }), " ", el("small", { text: id }),
        el("div", { class: "llm-call" }, el("div", {}, el("h5", { text: "Arguments" }), args), el("div", {}, el("h5", { text: "Result" }), out)));
      call = { item, args, out };
      c.calls.set(id, call);
      c.tools.append(item);
      c.root.querySelector(".llm-tools-title").hidden = false;
    }
    return call;
  }

  function writeUsage(c) {
    const t = c.tally;
    c.usage.textContent = `${formatNumber(t.input_tokens + t.output_tokens)} tokens (${formatNumber(t.input_tokens)} in, ${formatNumber(t.output_tokens)} out), ${formatUsd(t.cost_usd)}`;
  }

  function messages(list) {
    return list.map((m) => el("div", { class: "llm-message role-" + (m.role || "unknown") },
      el("span", { class: "llm-role", text: m.role || "?" }),
      typeof m.content === "string" ? el("pre", { text: m.content }) : m.content === null || m.content === undefined ? el("span", { class: "hint", text: " (no text)" }) : jsonView(m.content, { open: 1 }),
      m.tool_calls ? jsonView(m.tool_calls, { open: 1, label: "Copy the tool calls" }) : null,
      m.tool_call_id ? el("small", { text: " for " + m.tool_call_id }) : null));
  }

  async function load(step) {
    const c = card(step);
    try {
      const response = await fetch(`/executions/${view.id}/steps/${encodeURIComponent(step.id)}.json`, { credentials: "same-origin" });
      if (!response.ok) return;
      const detail = (await response.json()).llm;
      if (!detail) return;
      c.loaded = true;
      c.seq = Math.max(c.seq, detail.last_seq || 0);
      if (detail.sent && detail.sent.length) c.sent.replaceChildren(...messages(detail.sent));
      else c.sent.replaceChildren(el("p", { class: "hint", text: "Not recorded for this step." }));
      if (detail.text) c.reply.textContent = detail.text;
      else if (!c.reply.textContent) c.reply.replaceChildren(el("span", { class: "hint", text: "No text in this step." }));
      if (detail.requested_tools && detail.requested_tools.length) {
        c.root.querySelector(".llm-requested-title").hidden = false;
        c.requested.replaceChildren(...detail.requested_tools.map((t) => el("li", {}, el("strong", { text: t.name }), " ", el("code", { text: t.arguments || "" }))));
      }
      for (const call of detail.tool_calls || []) {
        const shown = toolCall(c, call.id, call.tool);
        if ("input" in call) shown.args.replaceChildren(jsonView(call.input, { open: 3, label: "Copy the arguments" }));
        if ("output" in call) shown.out.replaceChildren(jsonView(call.output, { open: 3, label: "Copy the result" }));
      }
      c.tally = { ...detail.usage };
      writeUsage(c);
    } catch (e) { /* the live parts stay as they are */ }
  }

  for (const step of view.steps.values()) if (step.type === "llm_node") load(step);

  return {
    event(event) {
      const step = view.steps.get(event.step_id);
      if (!step || step.type !== "llm_node") return;
      const c = card(step);
      if (event.seq <= c.seq) return; // already in what was loaded
      const d = event.data || {};
      if (event.type === "data-text-delta") {
        if (c.reply.firstElementChild) c.reply.textContent = "";
        c.reply.append(document.createTextNode(d.delta || ""));
      } else if (event.type === "data-tool-input-available") {
        toolCall(c, d.tool_call_id, d.tool_name).args.replaceChildren(jsonView(d.input, { open: 3, label: "Copy the arguments" }));
      } else if (event.type === "data-tool-output-available") {
        toolCall(c, d.tool_call_id, d.tool_name).out.replaceChildren(jsonView(d.output, { open: 3, label: "Copy the result" }));
      } else if (event.type === "data-usage" && d.delta) {
        for (const key of ["input_tokens", "output_tokens", "cost_usd"]) c.tally[key] += d.delta[key] || 0;
        writeUsage(c);
      } else if (event.type === "data-step-end" || event.type === "data-step-failed") {
        load(step);
      }
    },
    render() {
      for (const step of view.steps.values()) {
        if (step.type !== "llm_node") continue;
        const c = card(step);
        stateBadge(c.badge, shownState(step, view));
        c.root.querySelector(".llm-attempt").textContent = step.attempt > 1 ? `attempt ${step.attempt}` : "";
      }
    },
  };
}

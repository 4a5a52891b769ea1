/* The model's steps: for each llm step, the messages it sent, its reply as it streams in
 * (data-text-delta), the tools it called with their arguments and results
 * (data-tool-input-available, data-tool-output-available), and its tokens and cost (data-usage).
 * What happened before the page opened comes from the step's JSON (?llm=1), read when its card is
 * opened (the latest or running step's card opens by itself; the rest stay folded), two at a time
 * at most; what happens after, from the socket. Live events that arrive while a card's JSON is on
 * its way wait, and only those after the JSON's last_seq are applied: the JSON already holds the
 * others, and applying them first would be overwritten by figures computed before them. */
import { $, el, formatNumber, formatUsd, stateBadge } from "./core.js";
import { shownState } from "./graph.js";
import { jsonView } from "./json.js";

export function llmPart(view) {
  const section = $("#llm"), list = $("#llm-steps");
  if (!section || !list) return {};
  const cards = new Map(); // step id → { root, parts…, usage, calls: Map, seq, loaded, live, pending }
  const IN_FLIGHT = 2; // step JSON requests at once
  const queue = [];
  let inFlight = 0;
  let autoOpened = null; // the card opened by the page (not by the reader), folded when a newer one opens

  function card(step) {
    let c = cards.get(step.id);
    if (c) return c;
    const badge = el("span", { class: "state" });
    const usage = el("span", { class: "llm-usage" });
    const reply = el("pre", { class: "llm-reply", "aria-live": "polite" });
    const sent = el("div", { class: "llm-sent" });
    const tools = el("ul", { class: "llm-tools" });
    const requested = el("ul", { class: "llm-requested" });
    const root = el("details", { class: "llm-step", "data-step": step.id },
      el("summary", {}, el("strong", { text: step.name }), " ", badge, " ", el("small", { class: "llm-attempt" }), " ", usage),
      el("h4", { text: "Messages sent" }), sent,
      el("h4", { text: "Reply" }), reply,
      el("h4", { class: "llm-requested-title", text: "Tools the model asked for", hidden: "" }), requested,
      el("h4", { class: "llm-tools-title", text: "Tool calls", hidden: "" }), tools);
    sent.append(el("p", { class: "hint", text: "Shown when the step has ended." }));
    // seq: the last event the card shows; loaded: its JSON applied; live: every event of the step
    // came over the socket (it started after the page opened), so nothing needs reading until it ends;
    // pending: live events held while its JSON is on its way.
    c = { root, step, badge, usage, reply, sent, tools, requested, tally: { input_tokens: 0, output_tokens: 0, cost_usd: 0 },
      calls: new Map(), seq: 0, loaded: false, live: false, queued: false, fetching: false, again: false, pending: [], touched: false };
    root.querySelector("summary").addEventListener("click", () => { c.touched = true; });
    root.addEventListener("toggle", () => { if (root.open) want(c); });
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

  function request(c) {
    if (c.fetching) { c.again = true; return; }
    if (c.queued) return;
    c.queued = true;
    queue.push(c);
    pump();
  }

  function pump() {
    while (inFlight < IN_FLIGHT && queue.length) {
      const c = queue.shift();
      c.queued = false;
      c.fetching = true;
      inFlight += 1;
      load(c).finally(() => {
        inFlight -= 1;
        c.fetching = false;
        const held = c.pending.splice(0);
        if (c.loaded || c.live) for (const event of held) if (event.seq > c.seq) apply(c, event);
        if (c.again) { c.again = false; request(c); }
        pump();
      });
    }
  }

  // Read a card's JSON if it has not been and is not on its way.
  function want(c) {
    if (!c.loaded && !c.live && !c.queued && !c.fetching) request(c);
  }

  function open(c) {
    c.root.open = true;
    want(c);
  }

  function showDetail(c, detail) {
    c.loaded = true;
    c.seq = Math.max(c.seq, detail.last_seq || 0);
    c.root.dataset.loaded = "";
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
  }

  async function load(c) {
    try {
      const response = await fetch(`/executions/${view.id}/steps/${encodeURIComponent(c.step.id)}.json?llm=1`, { credentials: "same-origin" });
      if (!response.ok) return;
      const detail = (await response.json()).llm;
      if (detail) showDetail(c, detail);
    } catch (e) { /* the live parts stay as they are */ }
  }

  function apply(c, event) {
    const d = event.data || {};
    c.seq = Math.max(c.seq, event.seq);
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
    }
  }

  // On opening: the latest model step's card and any running one's.
  const llmSteps = [...view.steps.values()].filter((step) => step.type === "llm_node");
  for (const step of llmSteps) {
    const c = card(step);
    if (step === llmSteps[llmSteps.length - 1] || step.state === "running") { open(c); autoOpened = c; }
  }

  return {
    event(event) {
      const step = view.steps.get(event.step_id);
      if (!step || step.type !== "llm_node") return;
      const fresh = !cards.has(step.id);
      const c = card(step);
      if (event.type === "data-step-start") {
        // Started while the page is open: every event of it comes over the socket.
        if (fresh || !c.loaded) {
          c.live = true;
          if (autoOpened && autoOpened !== c && !autoOpened.touched) autoOpened.root.open = false;
          autoOpened = c;
          open(c);
        }
        return;
      }
      if (event.type === "data-step-end" || event.type === "data-step-failed") {
        c.live = false;
        c.loaded = false; // what it sent is read once it has ended
        if (c.root.open) request(c);
        return;
      }
      if (c.fetching) { c.pending.push(event); return; } // applied after the JSON, if newer
      if (!c.loaded && !c.live) return; // the JSON read when it is opened holds it
      if (event.seq > c.seq) apply(c, event);
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

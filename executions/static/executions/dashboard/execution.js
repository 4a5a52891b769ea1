/* One execution's page: its state, controls and answers, usage and artifacts, kept live over the
 * execution's websocket; the graph, the timeline and the event log are modules of their own. */
import { $, TERMINAL, api, el, liveSocket, short, stateBadge } from "./core.js";
import { createEventLog } from "./events.js";
import { drawGraph } from "./graph.js";
import { createTimeline } from "./timeline.js";

export function executionPage() {
  const page = JSON.parse($("#page").textContent);
  const view = {
    id: page.execution.id, state: page.execution.state, waitReason: page.execution.wait_reason,
    waitDetail: page.execution.wait_detail, usage: page.execution.usage || {}, lastSeq: 0, steps: {}, stepsDone: 0,
    startedAt: null, endedAt: null, nodeState: {},
  };
  const graph = drawGraph($("#graph"), page.graph);
  const timeline = createTimeline($("#waterfall"));
  const log = createEventLog($("#events"));
  const socket = liveSocket(
    () => `/ws/executions/${view.id}/?tenant=${encodeURIComponent(page.tenant)}&after=${view.lastSeq}`,
    (frame) => {
      if (frame.type === "event") onEvent(frame.event);
      else if (frame.type === "control") { $("#control-result").textContent = `${frame.action}: done (now ${frame.execution.state})`; }
      else if (frame.type === "error") { $("#control-error").textContent = frame.error.message; }
    },
  );

  function onEvent(event) {
    if (event.seq <= view.lastSeq) return;
    view.lastSeq = event.seq;
    log.add(event);
    const d = event.data || {};
    if (d.usage) view.usage = d.usage;
    if (event.type === "data-usage") view.usage = Object.assign({}, view.usage, d);
    if (event.type === "data-execution-start") view.startedAt = Date.parse(event.timestamp);
    if (event.type === "data-step-start") {
      view.steps[event.step_id] = { name: d.name, start: Date.parse(event.timestamp), end: null, state: "running", attempt: d.attempt };
      setNode(d.name, "running");
      timeline.step({ id: event.step_id, ...view.steps[event.step_id] });
    } else if (event.type === "data-step-end" || event.type === "data-step-failed") {
      const step = view.steps[event.step_id];
      const state = event.type === "data-step-end" ? "completed" : "failed";
      if (step) {
        step.end = Date.parse(event.timestamp); step.state = state; setNode(step.name, state);
        timeline.step({ id: event.step_id, ...step });
      }
      if (state === "completed") view.stepsDone += 1;
      upsertStepRow(event, step, d, state);
    }
    if (page.states[event.type]) {
      view.state = page.states[event.type];
      view.waitReason = event.type === "data-execution-waiting" ? d.reason : "";
      view.waitDetail = event.type === "data-execution-waiting" ? d.detail : null;
      if (TERMINAL.has(view.state)) { view.endedAt = Date.parse(event.timestamp); timeline.finish(view.endedAt); }
    }
    if (event.type === "data-artifact-created") addArtifact(d);
    render();
  }

  function setNode(name, state) { view.nodeState[name] = state; graph.set(name, state); }

  function upsertStepRow(event, step, d, state) {
    const body = $("#steps").tBodies[0];
    let row = $(`tr[data-step="${event.step_id}"]`, body);
    if (!row) {
      row = el("tr", { "data-step": event.step_id }, el("td", { text: body.rows.length }), el("td", { text: step ? step.name : d.name || "" }),
        el("td", {}, el("span", {})), el("td", { text: step ? step.attempt : "" }), el("td", {}), el("td", {}, el("code", { class: "output" })));
      body.append(row);
    }
    stateBadge(row.cells[2].firstChild, state);
    if (d.duration_ms !== undefined) row.cells[4].textContent = d.duration_ms + " ms";
    row.cells[5].firstChild.textContent = short(state === "completed" ? d.output : d.error && d.error.message);
  }

  function render() {
    stateBadge($("#state"), view.state);
    $("#wait-reason").textContent = view.waitReason || "";
    document.body.dataset.state = view.state;
    renderControls();
    renderUsage();
  }

  function renderControls() {
    const controls = $("#controls");
    if (!controls) return;
    const inputWait = view.state === "waiting" && (view.waitReason === "approval" || view.waitReason === "user_input");
    const allowed = {
      cancel: !TERMINAL.has(view.state),
      pause: view.state === "running",
      resume: view.state === "paused" || (view.state === "waiting" && !inputWait),
    };
    for (const button of controls.querySelectorAll("button[data-control]")) button.disabled = !allowed[button.dataset.control];
    const answer = $("#answer");
    answer.hidden = !inputWait;
    if (inputWait) {
      const approval = view.waitReason === "approval";
      const prompt = view.waitDetail && view.waitDetail.prompt;
      // A tool waiting for approval asks with the call itself (method, URL, body): show it as JSON.
      $("#answer-prompt").textContent = typeof prompt === "string" && prompt ? prompt
        : prompt ? JSON.stringify(prompt, null, 2) : (approval ? "Approve to continue?" : "Input needed.");
      answer.querySelector('[data-answer="approve"]').hidden = !approval;
      answer.querySelector('[data-answer="deny"]').hidden = !approval;
      answer.querySelector('[data-answer="input"]').hidden = approval;
      $("#answer-input-label").hidden = approval;
    }
    $("#guidance").hidden = TERMINAL.has(view.state);
  }

  function renderUsage() {
    const u = view.usage || {};
    const elapsed = view.startedAt ? ((view.endedAt || Date.now()) - view.startedAt) / 1000 : 0;
    const rows = [
      ["Steps", u.steps ?? view.stepsDone, page.limits.steps],
      ["Tokens", (u.input_tokens || 0) + (u.output_tokens || 0), page.limits.tokens],
      ["Cost (USD)", u.cost_usd || 0, page.limits.cost_usd],
      ["Wall time (s)", Math.round(elapsed * 10) / 10, page.limits.wall_time_s],
    ];
    $("#usage").replaceChildren(...rows.map(([label, used, limit]) => {
      const percent = limit ? Math.min(100, (100 * used) / limit) : 0;
      return el("div", { class: "bar-row" }, el("span", { class: "bar-label", text: label }),
        el("span", { class: "bar" }, el("span", { class: "bar-fill" + (percent >= 80 ? " warn" : ""), style: { width: percent + "%" } })),
        el("span", { class: "bar-value", text: `${used} / ${limit ?? "no limit"}` }));
    }));
  }

  function addArtifact(d) {
    const list = $("#artifacts");
    const empty = $(".empty", list);
    if (empty) empty.remove();
    if (!d.artifact_id || $(`li[data-id="${d.artifact_id}"]`, list)) return;
    list.append(el("li", { "data-id": d.artifact_id, "data-type": d.content_type || "" },
      el("a", { href: `/api/v1/artifacts/${d.artifact_id}/content`, text: d.name || d.artifact_id })));
  }

  $("#artifacts").addEventListener("click", async (event) => {
    const link = event.target.closest("a");
    const item = event.target.closest("li[data-id]");
    if (!link || !item) return;
    const type = item.dataset.type || "";
    const box = $("#artifact-view");
    if (type.startsWith("image/")) { event.preventDefault(); box.replaceChildren(el("img", { src: link.href, alt: link.textContent })); return; }
    if (!(type.startsWith("text/") || type.includes("json"))) return; // downloaded as it is
    event.preventDefault();
    const response = await fetch(link.href, { headers: { "X-Tenant": page.tenant }, credentials: "same-origin" });
    const text = await response.text();
    let shown = text;
    if (type.includes("json")) { try { shown = JSON.stringify(JSON.parse(text), null, 2); } catch (e) { /* shown raw */ } }
    box.replaceChildren(el("pre", { text: shown }));
  });

  const controls = $("#controls");
  if (controls) {
    controls.addEventListener("click", (event) => {
      const button = event.target.closest("button[data-control]");
      if (!button) return;
      $("#control-error").textContent = "";
      $("#control-result").textContent = "";
      if (!socket.send({ type: button.dataset.control, reason: "from the dashboard" })) $("#control-error").textContent = "Not connected; try again in a moment.";
    });
    $("#answer").addEventListener("click", async (event) => {
      const button = event.target.closest("button[data-answer]");
      if (!button) return;
      const kind = button.dataset.answer;
      let body;
      if (kind === "input") {
        try { body = { input: JSON.parse($("#answer-input").value) }; } catch (e) { $("#control-error").textContent = "The answer is not valid JSON."; return; }
      } else body = { approve: kind === "approve" };
      try { await api("POST", `executions/${view.id}/input`, body, page.tenant); $("#control-result").textContent = "Answer sent."; }
      catch (e) { $("#control-error").textContent = e.message; }
    });
    $("#guidance").addEventListener("submit", async (event) => {
      event.preventDefault();
      const text = $("#guidance-text").value.trim();
      if (!text) return;
      try {
        await api("POST", `executions/${view.id}/inbox`, { kind: "guidance", content: text }, page.tenant);
        $("#guidance-text").value = "";
        $("#control-result").textContent = "Guidance sent; the next step reads it.";
      } catch (e) { $("#control-error").textContent = e.message; }
    });
  }
  render();
  setInterval(() => { if (!TERMINAL.has(view.state)) { timeline.tick(); renderUsage(); } }, 1000);
}

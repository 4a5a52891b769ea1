/* One execution's page. The page starts from what the server rendered (the execution, its steps,
 * the seq of its latest event) and follows the execution's websocket from there; each part of the
 * page is a module of its own that takes the events it cares about and draws from `view`:
 *
 *   part = { event(event, view)?, render(view)?, tick(view)? }
 *
 * `event` is called for every new event in seq order, after `view` has taken it in; `render` at
 * most once per animation frame when something changed; `tick` once a second while the execution
 * is not finished (for what grows with the clock: durations, wall time). */
import { $, TERMINAL, liveSocket } from "./core.js";
import { artifactsPart } from "./artifacts.js";
import { childrenPart } from "./children.js";
import { controlsPart } from "./controls.js";
import { eventLogPart } from "./events.js";
import { graphPart } from "./graph.js";
import { llmPart } from "./llm.js";
import { stepsPart } from "./steps.js";
import { summaryPart } from "./summary.js";
import { timelinePart } from "./timeline.js";

export function executionPage() {
  const page = JSON.parse($("#page").textContent);
  const e = page.execution;
  const view = {
    id: e.id,
    tenant: page.tenant,
    page,
    state: e.state,
    waitReason: e.wait_reason,
    waitDetail: e.wait_detail,
    usage: e.usage || {},
    lastSeq: page.last_seq || 0,
    startedAt: e.started_at ? Date.parse(e.started_at) : null,
    endedAt: e.ended_at ? Date.parse(e.ended_at) : null,
    // Steps by id: { id, name, type, state, attempt, start, end, duration_ms, parent }, in order.
    steps: new Map((page.steps || []).map((s) => [s.id, {
      id: s.id, name: s.name, type: s.step_type, state: s.state, attempt: s.attempt, parent: s.parent_step_id || "",
      start: s.started_at ? Date.parse(s.started_at) : null, end: s.ended_at ? Date.parse(s.ended_at) : null,
      duration_ms: s.duration_ms, output: s.output, error: s.error,
      output_cut: s.output_cut || false, output_preview: s.output_preview, interrupted: s.interrupted || false,
    }])),
  };

  let socket = null;
  const send = (frame) => (socket ? socket.send(frame) : false);
  const parts = [
    childrenPart(view), summaryPart(view), controlsPart(view, send), graphPart(view), timelinePart(view), stepsPart(view),
    artifactsPart(view), eventLogPart(view), llmPart(view),
  ];
  const call = (method, ...args) => { for (const part of parts) if (part[method]) part[method](...args); };

  let drawing = false;
  // A part that learns something other than through the execution's events (the tenant feed's
  // news of a child) asks for a frame with view.invalidate().
  view.invalidate = () => scheduleRender();
  function scheduleRender() {
    if (drawing) return;
    drawing = true;
    requestAnimationFrame(() => { drawing = false; call("render", view); document.body.dataset.state = view.state; });
  }

  function take(event) {
    const d = event.data || {};
    if (d.usage) view.usage = d.usage;
    if (event.type === "data-usage") view.usage = Object.assign({}, view.usage, d);
    if (event.type === "data-execution-start" && !view.startedAt) view.startedAt = Date.parse(event.timestamp);
    if (event.type === "data-step-start") {
      const known = view.steps.get(event.step_id) || {};
      view.steps.set(event.step_id, Object.assign(known, {
        id: event.step_id, name: d.name, type: d.step_type || known.type, state: "running", attempt: d.attempt,
        start: Date.parse(event.timestamp), end: null, parent: d.parent_step_id || known.parent || "",
      }));
    } else if (event.type === "data-step-end" || event.type === "data-step-failed") {
      const step = view.steps.get(event.step_id) || { id: event.step_id, name: d.name || "", start: Date.parse(event.timestamp) };
      step.end = Date.parse(event.timestamp);
      step.state = event.type === "data-step-end" ? "completed" : d.error && d.error.category === "cancelled" ? "cancelled" : "failed";
      if (d.duration_ms !== undefined) step.duration_ms = d.duration_ms;
      if (event.type === "data-step-end") {
        step.output = d.output;
        step.output_cut = false;
        if (d.output !== undefined) step.interrupted = Boolean(d.output && typeof d.output === "object" && d.output.interrupted);
      } else step.error = d.error;
      view.steps.set(event.step_id, step);
    }
    if (page.states[event.type]) {
      view.state = page.states[event.type];
      view.waitReason = event.type === "data-execution-waiting" ? d.reason : "";
      view.waitDetail = event.type === "data-execution-waiting" ? d.detail : null;
      if (TERMINAL.has(view.state)) view.endedAt = Date.parse(event.timestamp);
    }
  }

  function onEvent(event) {
    if (event.seq <= view.lastSeq) return;
    view.lastSeq = event.seq;
    take(event);
    call("event", event, view);
    scheduleRender();
  }

  socket = liveSocket(
    () => `/ws/executions/${view.id}/?tenant=${encodeURIComponent(page.tenant)}&after=${view.lastSeq}`,
    (frame) => {
      if (frame.type === "event") onEvent(frame.event);
      else call("frame", frame, view);
    },
  );
  call("render", view);
  document.body.dataset.state = view.state;
  setInterval(() => { if (!TERMINAL.has(view.state)) call("tick", view); }, 1000);
}

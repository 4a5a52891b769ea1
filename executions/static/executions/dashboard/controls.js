/* The execution's controls: cancel (asked first), pause, resume (over the websocket), answers to
 * a wait for approval or input, guidance for the next step, and a rerun or a fork from one of its
 * steps (through the API) that opens the new execution. What happened is said in plain words. */
import { $, TERMINAL, announce, api, el } from "./core.js";

const ORDINAL = (n) => `#${n}`;

export function controlsPart(view, send) {
  const controls = $("#controls");
  if (!controls) return {};
  const result = $("#control-result"), error = $("#control-error");
  // What was asked and not yet seen done: the event that does it says so.
  let awaiting = null;

  function say(text) { result.textContent = text; error.textContent = ""; announce(text); }
  function fail(text) { error.textContent = text; result.textContent = ""; }
  function clear() { error.textContent = ""; result.textContent = ""; }

  const confirm = $("#cancel-confirm");
  controls.addEventListener("click", (event) => {
    const button = event.target.closest("button[data-control]");
    if (!button) return;
    clear();
    if (button.dataset.control === "cancel") {
      confirm.hidden = false;
      $("#cancel-no").focus();
      return;
    }
    control(button.dataset.control);
  });
  $("#cancel-yes").addEventListener("click", () => { confirm.hidden = true; control("cancel"); });
  $("#cancel-no").addEventListener("click", () => { confirm.hidden = true; controls.querySelector('[data-control="cancel"]').focus(); });

  function control(action) {
    if (!send({ type: action, reason: "from the dashboard" })) fail("Not connected; try again in a moment.");
    else say({ cancel: "Cancelling…", pause: "Pausing…", resume: "Resuming…" }[action]);
  }

  $("#answer").addEventListener("click", async (event) => {
    const button = event.target.closest("button[data-answer]");
    if (!button) return;
    const kind = button.dataset.answer;
    let body;
    if (kind === "input") {
      try { body = { input: JSON.parse($("#answer-input").value) }; } catch (e) { fail("The answer is not valid JSON: " + e.message); return; }
    } else body = { approve: kind === "approve" };
    try {
      await api("POST", `executions/${view.id}/input`, body, view.tenant);
      say(kind === "approve" ? "Approved; the execution goes on." : kind === "deny" ? "Denied; the execution goes on without it." : "Answer sent; the execution goes on.");
    } catch (e) { fail("The answer was not taken: " + e.message); }
  });
  $("#guidance").addEventListener("submit", async (event) => {
    event.preventDefault();
    const text = $("#guidance-text").value.trim();
    if (!text) return;
    try {
      await api("POST", `executions/${view.id}/inbox`, { kind: "guidance", content: text }, view.tenant);
      $("#guidance-text").value = "";
      say("Guidance sent; the next step reads it.");
    } catch (e) { fail("The guidance was not sent: " + e.message); }
  });

  // --- rerun and fork -----------------------------------------------------------------------
  $("#rerun").addEventListener("click", async () => {
    clear();
    const button = $("#rerun");
    button.disabled = true;
    try {
      const made = await api("POST", `executions/${view.id}/rerun`, {}, view.tenant);
      say(`Rerun started as ${made.id}; opening it…`);
      location.assign(`/executions/${made.id}/`);
    } catch (e) { fail("Could not rerun: " + e.message); button.disabled = false; }
  });

  const fork = $("#fork"), stepSelect = $("#fork-step"), stateBox = $("#fork-state"), note = $("#fork-note");
  let forkable = false;
  $("#fork-open").addEventListener("click", () => {
    fork.hidden = !fork.hidden;
    $("#fork-open").setAttribute("aria-expanded", String(!fork.hidden));
    if (!fork.hidden) { fillSteps(); stepSelect.focus(); }
  });
  $("#fork-close").addEventListener("click", () => { fork.hidden = true; $("#fork-open").setAttribute("aria-expanded", "false"); });

  function fillSteps(wanted) {
    const steps = [...view.steps.values()];
    const keep = wanted || stepSelect.value;
    stepSelect.replaceChildren(el("option", { value: "", text: "Choose a step…" }), ...steps.map((s, i) => el("option", {
      value: s.id, disabled: s.parent ? "" : null,
      text: `${ORDINAL(i + 1)} ${s.name} (${s.state}${s.parent ? ", inside a branch: not forkable" : ""})`,
    })));
    if (keep && view.steps.has(keep)) { stepSelect.value = keep; loadStep(keep); }
  }
  async function loadStep(stepId) {
    forkable = false;
    $("#fork-send").disabled = true;
    stateBox.value = "";
    if (!stepId) { note.textContent = ""; return; }
    note.textContent = "Reading the state that step was given…";
    try {
      const response = await fetch(`/executions/${view.id}/steps/${encodeURIComponent(stepId)}.json`, { credentials: "same-origin" });
      if (!response.ok) throw new Error(response.status === 404 ? "that step is not there any more" : "HTTP " + response.status);
      const detail = await response.json();
      if (stepSelect.value !== stepId) return;
      forkable = detail.forkable;
      stateBox.value = detail.state === null || detail.state === undefined ? "" : JSON.stringify(detail.state, null, 2);
      note.textContent = detail.forkable ? `${detail.step.name} runs again from this state; edit it if you like.` : `This step cannot be forked from: ${detail.reason}`;
      $("#fork-send").disabled = !detail.forkable;
    } catch (e) { note.textContent = "Could not read the step's state: " + e.message; }
  }
  stepSelect.addEventListener("change", () => loadStep(stepSelect.value));
  fork.addEventListener("submit", async (event) => {
    event.preventDefault();
    clear();
    if (!stepSelect.value) { fail("Choose the step to fork from."); return; }
    if (!forkable) { fail("This step cannot be forked from."); return; }
    let state;
    try { state = JSON.parse(stateBox.value); } catch (e) { fail("The state is not valid JSON: " + e.message); stateBox.focus(); return; }
    $("#fork-send").disabled = true;
    try {
      const made = await api("POST", `executions/${view.id}/fork`, { from_step: stepSelect.value, state }, view.tenant);
      say(`Fork started as ${made.id}; opening it…`);
      location.assign(`/executions/${made.id}/`);
    } catch (e) { fail("Could not fork: " + e.message); $("#fork-send").disabled = false; }
  });
  // A row of the steps table can start a fork from that step.
  document.addEventListener("click", (event) => {
    const button = event.target.closest("button[data-fork-step]");
    if (!button) return;
    fork.hidden = false;
    $("#fork-open").setAttribute("aria-expanded", "true");
    fillSteps(button.dataset.forkStep);
    fork.scrollIntoView({ block: "nearest" });
  });

  function outcome(action, state) {
    if (action === "cancel") {
      if (state === "cancelled") return "Cancelled.";
      if (TERMINAL.has(state)) return `It had already ${state === "completed" ? "completed" : "failed"}; there was nothing to cancel.`;
      awaiting = "cancel";
      return "Cancel requested; the running step stops at its next check.";
    }
    if (action === "pause") {
      if (state === "paused") return "Paused.";
      awaiting = "pause";
      return "Pause requested; it pauses at the next step boundary.";
    }
    if (state === "running") return "Resumed.";
    awaiting = "resume";
    return "Resume requested; it goes on in a moment.";
  }

  return {
    frame(frame) {
      if (frame.type === "control") {
        // The event that ends it may have come first: what the page already saw wins.
        const seen = TERMINAL.has(view.state) || (frame.action === "pause" && view.state === "paused") ? view.state : null;
        say(outcome(frame.action, seen || (frame.execution && frame.execution.state)));
      }
      else if (frame.type === "error") fail(frame.error && frame.error.message ? `That did not work: ${frame.error.message}.` : "That did not work.");
    },
    event(event) {
      if (awaiting === "cancel" && event.type === "data-execution-cancelled") { awaiting = null; say("Cancelled."); }
      else if (awaiting === "pause" && event.type === "data-execution-paused") { awaiting = null; say("Paused at the next step boundary."); }
      else if (awaiting === "resume" && event.type === "data-execution-resumed") { awaiting = null; say("Resumed."); }
      else if (awaiting && ["data-execution-end", "data-execution-failed"].includes(event.type)) {
        awaiting = null;
        say(event.type === "data-execution-end" ? "It completed before the request took effect." : "It failed before the request took effect.");
      }
      if (!fork.hidden && (event.type === "data-step-start" || event.type === "data-step-end")) fillSteps();
    },
    render() {
      const inputWait = view.state === "waiting" && (view.waitReason === "approval" || view.waitReason === "user_input");
      const allowed = {
        cancel: !TERMINAL.has(view.state),
        pause: view.state === "running",
        resume: view.state === "paused" || (view.state === "waiting" && !inputWait),
      };
      for (const button of controls.querySelectorAll("button[data-control]")) button.disabled = !allowed[button.dataset.control];
      if (!allowed.cancel) confirm.hidden = true;
      const forkableNow = (view.page.forkable_states || []).includes(view.state);
      $("#fork-open").disabled = !forkableNow;
      $("#fork-open").title = forkableNow ? "" : "A running execution cannot be forked; pause it or let it end.";
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
    },
  };
}

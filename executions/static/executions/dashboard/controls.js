/* The execution's controls: cancel, pause, resume (over the websocket), answers to a wait for
 * approval or input, guidance for the next step. */
import { $, TERMINAL, api } from "./core.js";

export function controlsPart(view, send) {
  const controls = $("#controls");
  if (!controls) return {};
  controls.addEventListener("click", (event) => {
    const button = event.target.closest("button[data-control]");
    if (!button) return;
    $("#control-error").textContent = "";
    $("#control-result").textContent = "";
    if (!send({ type: button.dataset.control, reason: "from the dashboard" })) $("#control-error").textContent = "Not connected; try again in a moment.";
  });
  $("#answer").addEventListener("click", async (event) => {
    const button = event.target.closest("button[data-answer]");
    if (!button) return;
    const kind = button.dataset.answer;
    let body;
    if (kind === "input") {
      try { body = { input: JSON.parse($("#answer-input").value) }; } catch (e) { $("#control-error").textContent = "The answer is not valid JSON."; return; }
    } else body = { approve: kind === "approve" };
    try { await api("POST", `executions/${view.id}/input`, body, view.tenant); $("#control-result").textContent = "Answer sent."; }
    catch (e) { $("#control-error").textContent = e.message; }
  });
  $("#guidance").addEventListener("submit", async (event) => {
    event.preventDefault();
    const text = $("#guidance-text").value.trim();
    if (!text) return;
    try {
      await api("POST", `executions/${view.id}/inbox`, { kind: "guidance", content: text }, view.tenant);
      $("#guidance-text").value = "";
      $("#control-result").textContent = "Guidance sent; the next step reads it.";
    } catch (e) { $("#control-error").textContent = e.message; }
  });

  return {
    frame(frame) {
      if (frame.type === "control") $("#control-result").textContent = `${frame.action}: done (now ${frame.execution.state})`;
      else if (frame.type === "error") $("#control-error").textContent = frame.error.message;
    },
    render() {
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
    },
  };
}

/* The timeline: one bar per step on a shared time axis.
 * createTimeline(box) returns { step(update), finish(endedAt), tick() }: `step` takes
 * { id, name, state, start, end } (times in ms since the epoch) for a new or changed step. */
import { $, TERMINAL, el } from "./core.js";

/* The part of the execution page: every step of `view` on the timeline. */
export function timelinePart(view) {
  const timeline = createTimeline($("#waterfall"));
  return {
    render() {
      for (const step of view.steps.values()) if (step.start) timeline.step({ ...step });
      if (TERMINAL.has(view.state) && view.endedAt) timeline.finish(view.endedAt);
    },
    tick() { timeline.tick(); },
  };
}

export function createTimeline(box) {
  const steps = new Map();
  let endedAt = null;
  function render() {
    const all = [...steps.values()];
    if (!all.length) { box.textContent = "No steps yet."; return; }
    const t0 = Math.min(...all.map((s) => s.start));
    const now = endedAt || Date.now();
    const t1 = Math.max(now, ...all.map((s) => s.end || now));
    const span = Math.max(1, t1 - t0);
    box.replaceChildren(...all.map((s) => {
      const left = ((s.start - t0) / span) * 100;
      const width = Math.max(0.5, (((s.end || now) - s.start) / span) * 100);
      const bar = el("span", { class: "wf-bar state-" + s.state, style: { left: left + "%", width: width + "%" }, title: `${s.name}: ${(s.end || now) - s.start} ms` });
      return el("div", { class: "wf-row" }, el("span", { class: "wf-label", text: s.name }), el("span", { class: "wf-track" }, bar));
    }));
  }
  return {
    step(update) { steps.set(update.id, Object.assign(steps.get(update.id) || {}, update)); render(); },
    finish(at) { endedAt = at; render(); },
    tick() { if (!endedAt) render(); },
  };
}

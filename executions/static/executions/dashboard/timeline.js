/* The timeline: one bar per step on a shared time axis, nested steps under their parent.
 *
 * Drawn incrementally: a step that starts or ends touches its own row only. A bar's place is CSS:
 * each bar carries its start and duration (--s, --d, in ms) and the box the first moment and the
 * span (--t0, --span), so when the axis grows (a run still going) one write to the box moves every
 * bar. Only the rows in view are in the page (fixed row height, spacers above and below), so
 * thousands of steps cost what a screenful costs.
 *
 * createTimeline(box) returns { update(steps), finish(endedAt), draw() }: `update` takes the new
 * or changed steps ({ id, name, state, parent, start, end, duration_ms, attempt }, times in ms
 * since the epoch); `draw` puts them on screen (at most once a frame: the page calls it from its
 * render). */
import { $, TERMINAL, el, formatDuration, localTime } from "./core.js";
import { shownState } from "./graph.js";

const ROW = 22; // px: .tl-row in log.css
const OVERSCAN = 8;
// The same signs as the graph's (graph.js) and its legend.
const GLYPH = { pending: "○", running: "▶", completed: "✓", failed: "✗", paused: "‖", waiting: "◷", cancelled: "⊘", skipped: "↷" };

export function timelinePart(view) {
  const timeline = createTimeline($("#waterfall"));
  const changed = new Set(view.steps.keys());
  if (view.startedAt) timeline.origin(view.startedAt);
  let executionState = view.state;
  return {
    event(event) { if (event.step_id) changed.add(event.step_id); },
    render() {
      if (view.state !== executionState) {
        // A step's shown state can follow the execution's (a wait, a cancel): look at those again.
        executionState = view.state;
        for (const step of view.steps.values()) if (step.state === "running" || step.interrupted || (step.output && step.output.interrupted)) changed.add(step.id);
      }
      const steps = [];
      for (const id of changed) {
        const step = view.steps.get(id);
        if (step && step.start) steps.push({ ...step, state: shownState(step, view) });
      }
      changed.clear();
      for (const id of view.childrenChanged || []) {
        const child = view.childRuns.get(id);
        if (child && child.start) steps.push(childRow(child, view));
      }
      if (view.childrenChanged) view.childrenChanged.clear();
      if (view.startedAt) timeline.origin(view.startedAt);
      timeline.update(steps);
      timeline.finish(TERMINAL.has(view.state) ? view.endedAt : null);
      timeline.draw();
    },
    tick() { timeline.draw(); },
  };
}

/** A child execution as a row of the timeline: under the last step of the node that started it
 * before it was created, linked to its own page. */
function childRow(child, view) {
  let parent = "";
  for (const step of view.steps.values()) {
    if (step.name === child.node && step.start && step.start <= child.start) parent = step.id;
  }
  return {
    id: "child:" + child.id, name: `child ${child.id} (${child.blueprint})`, state: child.state,
    start: child.start, end: child.end, parent, href: `/executions/${child.id}/`,
  };
}

/** A round step for about `want` ticks over `span` ms: 1, 2 or 5 times a power of ten. */
function tickStep(span, want) {
  const raw = span / want;
  const power = 10 ** Math.floor(Math.log10(raw));
  for (const m of [1, 2, 5, 10]) if (m * power >= raw) return m * power;
  return 10 * power;
}

/** A tick's label: "+0 s", "+500 ms", "+2 s", "+1.5 s", "+2 min", "+1 min 20 s", "+1 h". */
function tickLabel(ms, step) {
  if (ms === 0) return "+0 s";
  if (step < 1000 && ms < 1000) return `+${Math.round(ms)} ms`;
  if (ms < 60_000) return `+${Math.round(ms / 100) / 10} s`;
  if (ms % 3_600_000 === 0) return `+${ms / 3_600_000} h`;
  if (ms % 60_000 === 0 && ms < 3_600_000) return `+${ms / 60_000} min`;
  return "+" + formatDuration(ms);
}

export function createTimeline(box) {
  const records = new Map(); // id → { step, depth, row?, dirty }
  let order = []; // ids, parents before their children
  let t0 = null; // the first moment (ms); bars are placed relative to it
  let maxEnd = 0;
  let endedAt = null;
  let orderChanged = true;
  let range = [0, 0];
  let drawn = []; // the ids of the rows in the page, in order
  let axisKey = "";

  const axis = el("div", { class: "tl-axis", "aria-hidden": "true" });
  const scroller = el("div", { class: "tl-scroll", role: "list", "aria-label": "steps on the timeline" });
  const padTop = el("div", { class: "tl-pad" });
  const rows = el("div", { class: "tl-rows" });
  const padBottom = el("div", { class: "tl-pad" });
  const caption = el("p", { class: "tl-caption hint" });
  // The axis stays at the top of the scroll box (sticky), so it is exactly as wide as the tracks.
  scroller.append(axis, padTop, rows, padBottom);
  box.replaceChildren(caption, scroller);
  let scrolled = false;
  scroller.addEventListener("scroll", () => {
    if (scrolled) return;
    scrolled = true;
    requestAnimationFrame(() => { scrolled = false; drawRows(); });
  }, { passive: true });

  function depthOf(step) {
    let depth = 0;
    let parent = step.parent && records.get(step.parent);
    while (parent && depth < 12) { depth += 1; parent = parent.step.parent && records.get(parent.step.parent); }
    return depth;
  }

  /** The order again from scratch: each step after its parent and the parent's earlier children. */
  function reorder() {
    const children = new Map();
    const roots = [];
    for (const [id, record] of records) {
      const parent = record.step.parent;
      if (parent && records.has(parent) && parent !== id) {
        if (!children.has(parent)) children.set(parent, []);
        children.get(parent).push(id);
      } else roots.push(id);
    }
    order = [];
    const stack = roots.reverse();
    const seen = new Set();
    while (stack.length) {
      const id = stack.pop();
      if (seen.has(id)) continue;
      seen.add(id);
      order.push(id);
      const kids = children.get(id);
      if (kids) for (let i = kids.length - 1; i >= 0; i--) stack.push(kids[i]);
    }
  }

  /** One new step into the order: after its parent's last descendant, else at the end. */
  function place(id) {
    const record = records.get(id);
    const parent = record.step.parent;
    const at = parent ? order.indexOf(parent) : -1;
    if (at < 0) { order.push(id); return; }
    const parentDepth = records.get(parent).depth;
    let i = at + 1;
    while (i < order.length && records.get(order[i]).depth > parentDepth) i++;
    order.splice(i, 0, id);
  }

  function update(steps) {
    const added = [];
    for (const step of steps) {
      let record = records.get(step.id);
      if (!record) {
        record = { step: { ...step }, depth: 0, row: null, dirty: true };
        records.set(step.id, record);
        added.push(step.id);
      } else {
        Object.assign(record.step, step);
        record.dirty = true;
      }
      if (t0 === null || step.start < t0) t0 = step.start;
      if (step.end && step.end > maxEnd) maxEnd = step.end;
    }
    if (!added.length) return;
    for (const id of added) records.get(id).depth = depthOf(records.get(id).step);
    if (added.length > 32) reorder(); else for (const id of added) place(id);
    orderChanged = true;
  }

  function now() { return endedAt || Math.max(Date.now(), maxEnd); }

  function duration(step) {
    if (step.end) return step.duration_ms ?? step.end - step.start;
    return Math.max(0, now() - step.start);
  }

  function fill(record) {
    const { step, depth } = record;
    const state = step.state || "pending";
    const ms = duration(step);
    const text = `${step.name}: ${state}${step.attempt > 1 ? ", attempt " + step.attempt : ""}, ${formatDuration(ms)}`;
    const row = record.row;
    row.dataset.state = state;
    row.title = text;
    row.setAttribute("aria-label", text);
    const [label, track] = row.children;
    label.firstChild.textContent = GLYPH[state] || "○";
    label.lastChild.textContent = step.name;
    label.style.paddingLeft = Math.min(depth, 8) * 0.8 + "rem";
    const bar = track.firstChild;
    bar.dataset.state = state;
    bar.style.setProperty("--s", String(step.start));
    bar.style.setProperty("--d", String(step.end ? step.end - step.start : ms));
    record.dirty = false;
  }

  function rowFor(id) {
    const record = records.get(id);
    if (!record.row) {
      record.row = el("div", { class: "tl-row", role: "listitem", "data-step": id },
        el("span", { class: "tl-label" }, el("span", { class: "tl-glyph", "aria-hidden": "true" }),
          record.step.href ? el("a", { class: "tl-name", href: record.step.href }) : el("span", { class: "tl-name" })),
        el("span", { class: "tl-track" }, el("span", { class: "tl-bar" })));
      record.dirty = true;
    }
    if (record.dirty || (!record.step.end && !endedAt)) fill(record);
    return record.row;
  }

  function drawRows() {
    // At least the box's most (its max-height): before the rows are in, it is only as tall as they.
    const height = Math.max(scroller.clientHeight, 400);
    const top = Math.max(0, scroller.scrollTop - axis.offsetHeight);
    const first = Math.max(0, Math.floor(top / ROW) - OVERSCAN);
    const last = Math.min(order.length, Math.ceil((top + height) / ROW) + OVERSCAN);
    if (orderChanged || first !== range[0] || last !== range[1]) {
      padTop.style.height = first * ROW + "px";
      padBottom.style.height = (order.length - last) * ROW + "px";
      const ids = order.slice(first, last);
      // A step added out of view leaves the rows in view as they are (only a spacer grows).
      const same = ids.length === drawn.length && ids.every((id, i) => id === drawn[i]);
      if (same) for (const id of ids) rowFor(id);
      else rows.replaceChildren(...ids.map(rowFor));
      drawn = ids;
      range = [first, last];
      orderChanged = false;
    } else {
      // The same rows: only those whose step changed (or is still running) are touched.
      for (let i = first; i < last; i++) {
        const record = records.get(order[i]);
        if (record.dirty || (!record.step.end && !endedAt)) fill(record);
      }
    }
  }

  function drawAxis(span) {
    const step = tickStep(span, box.clientWidth < 500 ? 4 : 8);
    const key = span < 1 ? "" : `${step}:${Math.floor(span / step)}:${t0}`;
    if (key === axisKey) return;
    axisKey = key;
    const ticks = [];
    // No tick within half a step of the end: its label would run into the one before.
    for (let t = 0; t === 0 || t <= span - step / 2; t += step) {
      ticks.push(el("span", { class: "tl-tick", title: localTime(new Date(t0 + t).toISOString()), style: { left: (100 * t) / span + "%" } },
        el("span", { text: tickLabel(t, step) })));
    }
    axis.replaceChildren(...ticks);
  }

  function draw() {
    if (!records.size) { caption.textContent = "No steps yet."; axis.replaceChildren(); return; }
    const span = Math.max(1, now() - t0);
    // The one write that places every bar (CSS does the arithmetic).
    box.style.setProperty("--t0", String(t0));
    box.style.setProperty("--span", String(span));
    const count = records.size;
    caption.textContent = `${count.toLocaleString()} ${count === 1 ? "step" : "steps"} over ${formatDuration(span)}` +
      (endedAt ? "" : " so far") + `, from ${localTime(new Date(t0).toISOString())}.`;
    drawAxis(span);
    drawRows();
  }

  return {
    update,
    origin(at) { if (t0 === null || at < t0) t0 = at; },
    finish(at) { endedAt = at || null; if (at && at > maxEnd) maxEnd = at; },
    draw,
    /** The step ids in the order drawn (parents before their children). */
    get order() { return order; },
  };
}

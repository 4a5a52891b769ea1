/* The graph as a picture: nodes in layers by distance from the entry, edges as lines.
 * drawGraph(box, outline) returns { set(nodeName, state) }; graphPart colours it as steps run.
 *
 * A node's state is told by a glyph and its title as well as by its colour. A step that asked
 * for approval or input shows "waiting" while the execution waits (the kernel records it as a
 * completed step whose output says it was interrupted); a step stopped by a cancel shows
 * "cancelled" (the kernel records it failed in the "cancelled" category); where a paused run goes
 * on from shows "paused". A big graph starts folded to a line and, shown, keeps a readable scale
 * in a box that scrolls, with zoom buttons. */
import { $, el, formatNumber } from "./core.js";

export const GLYPHS = {
  pending: "○", running: "▶", completed: "✓", failed: "✗", paused: "‖", waiting: "◷", cancelled: "⊘", skipped: "↷",
};

/** Graphs with more nodes than this start folded. */
export const BIG_GRAPH = 60;

/** How a step is shown: its stored state, told apart where the store says less than a person
 * needs (a wait is not a completion, a cancel is not a failure). */
export function shownState(step, view) {
  if (!step) return "pending";
  if (step.state === "failed" && step.error && step.error.category === "cancelled") return "cancelled";
  if (step.state === "completed" && (step.interrupted || (step.output && typeof step.output === "object" && step.output.interrupted))) {
    if (view.state === "waiting") return "waiting";
    if (view.state === "cancelled" || view.state === "failed") return "cancelled";
  }
  if (step.state === "running" && view.state === "cancelled") return "cancelled";
  return step.state || "pending";
}

export function graphPart(view) {
  const box = $("#graph");
  const outline = view.page.graph;
  const count = outline.nodes.length;
  let graph = null;
  const drawn = new Map();
  view.nextNodes = view.page.next_nodes || [];

  const size = $("#graph-size");
  if (size && count) size.textContent = `${formatNumber(count)} ${count === 1 ? "node" : "nodes"}`;

  function show() {
    graph = drawGraph(box, outline);
    drawn.clear();
    paint();
  }
  function paint() {
    if (!graph) return;
    const latest = new Map();
    for (const step of view.steps.values()) latest.set(step.name, shownState(step, view));
    if (view.state === "paused") {
      for (const name of view.nextNodes) if (latest.get(name) !== "running") latest.set(name, "paused");
    }
    for (const [name, state] of latest) {
      if (drawn.get(name) === state) continue;
      drawn.set(name, state);
      graph.set(name, state);
    }
    for (const name of [...drawn.keys()]) if (!latest.has(name)) { drawn.delete(name); graph.set(name, "pending"); }
  }

  if (count > BIG_GRAPH) {
    const button = el("button", { type: "button", id: "graph-show", class: "primary", text: "Show" });
    box.replaceChildren(el("p", { class: "graph-folded" }, `Graph of ${formatNumber(count)} nodes — `, button));
    button.addEventListener("click", show);
  } else show();

  return {
    event(event) {
      if (event.type === "data-checkpoint" && event.data && Array.isArray(event.data.nodes)) view.nextNodes = event.data.nodes;
    },
    render: paint,
  };
}

export function drawGraph(box, outline) {
  const ns = "http://www.w3.org/2000/svg";
  const nodes = new Map();
  if (!outline.entry) { box.textContent = "No picture for this graph."; return { set() {} }; }
  const depth = new Map([[outline.entry, 0]]);
  const queue = [outline.entry];
  const from = new Map();
  for (const edge of outline.edges) (from.get(edge.from) || from.set(edge.from, []).get(edge.from)).push(edge);
  while (queue.length) {
    const name = queue.shift();
    for (const edge of from.get(name) || []) {
      if (edge.to !== "__end__" && !depth.has(edge.to)) { depth.set(edge.to, depth.get(name) + 1); queue.push(edge.to); }
    }
  }
  for (const n of outline.nodes) if (!depth.has(n.name)) depth.set(n.name, 0);
  const layers = [];
  for (const [name, d] of depth) (layers[d] = layers[d] || []).push(name);
  // Layers run left to right and wrap into bands, so a long chain stays readable.
  const w = 140, h = 32, gx = 36, gy = 18, perBand = 6;
  const tallest = Math.max(...layers.map((l) => l.length));
  const bandHeight = tallest * (h + gy) + gy + 20;
  const bands = Math.ceil(layers.length / perBand);
  const width = Math.min(layers.length, perBand) * (w + gx) + gx;
  const height = bands * bandHeight;
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("class", "graph-svg");
  svg.setAttribute("role", "list");
  const pos = new Map();
  layers.forEach((layer, d) => layer.forEach((name, i) => {
    const band = Math.floor(d / perBand), column = d % perBand;
    const offset = (tallest - layer.length) * (h + gy) / 2;
    pos.set(name, { x: gx + column * (w + gx), y: band * bandHeight + gy + offset + i * (h + gy) });
  }));
  for (const edge of outline.edges) {
    const a = pos.get(edge.from), b = pos.get(edge.to);
    if (!a || !b) continue;
    const line = document.createElementNS(ns, "line");
    const sameBand = Math.abs(a.y - b.y) < bandHeight / 2 && b.x > a.x;
    const ends = sameBand ? { x1: a.x + w, y1: a.y + h / 2, x2: b.x, y2: b.y + h / 2 } : { x1: a.x + w / 2, y1: a.y + h, x2: b.x + w / 2, y2: b.y };
    Object.entries({ ...ends, class: "edge" }).forEach(([k, v]) => line.setAttribute(k, v));
    svg.append(line);
  }
  for (const [name, p] of pos) {
    const g = document.createElementNS(ns, "g");
    g.setAttribute("class", "node state-pending");
    g.setAttribute("data-node", name);
    g.setAttribute("data-state", "pending");
    g.setAttribute("role", "listitem");
    const rect = document.createElementNS(ns, "rect");
    Object.entries({ x: p.x, y: p.y, width: w, height: h, rx: 6 }).forEach(([k, v]) => rect.setAttribute(k, v));
    const glyph = document.createElementNS(ns, "text");
    Object.entries({ x: p.x + 9, y: p.y + h / 2 + 4, class: "glyph" }).forEach(([k, v]) => glyph.setAttribute(k, v));
    glyph.textContent = GLYPHS.pending;
    const text = document.createElementNS(ns, "text");
    Object.entries({ x: p.x + 24, y: p.y + h / 2 + 4, class: "label" }).forEach(([k, v]) => text.setAttribute(k, v));
    text.textContent = name.length > 18 ? name.slice(0, 17) + "…" : name;
    const title = document.createElementNS(ns, "title");
    title.textContent = `${name}: pending`;
    g.append(rect, glyph, text, title);
    svg.append(g);
    nodes.set(name, { g, glyph, title });
  }
  const scroller = el("div", { class: "graph-scroll", tabindex: "0", "aria-label": "graph, scrollable" });
  scroller.append(svg);
  box.replaceChildren(scroller);
  const zoom = zoomer(scroller, svg, width, height, outline.nodes.length > BIG_GRAPH);
  return {
    zoom,
    set(name, state) {
      const node = nodes.get(name);
      if (!node) return;
      node.g.setAttribute("class", "node state-" + state);
      node.g.setAttribute("data-state", state);
      node.glyph.textContent = GLYPHS[state] || "•";
      node.title.textContent = `${name}: ${state}`;
    },
  };
}

/* The picture at a scale: its width in pixels is the graph's times the zoom, in a box that
 * scrolls. A small graph fits its box unless that would make it too small to read. */
const MIN_READABLE = 0.8, MIN_ZOOM = 0.3, MAX_ZOOM = 3;

function zoomer(scroller, svg, width, height, big) {
  const tools = $("#graph-tools");
  const label = $("#graph-zoom");
  let scale = 1;
  function apply(next) {
    scale = Math.min(MAX_ZOOM, Math.max(MIN_ZOOM, next));
    svg.style.width = Math.round(width * scale) + "px";
    svg.style.height = Math.round(height * scale) + "px";
    svg.dataset.zoom = scale.toFixed(2);
    if (label) label.textContent = Math.round(scale * 100) + "%";
  }
  function fit() {
    const room = scroller.clientWidth || width;
    return Math.max(MIN_READABLE, Math.min(1, room / width));
  }
  apply(big ? 1 : fit());
  if (tools) {
    tools.hidden = false;
    tools.onclick = (event) => {
      const button = event.target.closest("button[data-zoom]");
      if (!button) return;
      const how = button.dataset.zoom;
      apply(how === "in" ? scale * 1.25 : how === "out" ? scale / 1.25 : fit());
    };
  }
  if (!big && typeof ResizeObserver !== "undefined") {
    let fitted = true;
    if (tools) tools.addEventListener("click", () => { fitted = false; });
    new ResizeObserver(() => { if (fitted) apply(fit()); }).observe(scroller);
  }
  return { get scale() { return scale; }, apply, fit };
}

/* The graph as a picture: nodes in layers by distance from the entry, edges as lines.
 * drawGraph(box, outline) returns { set(nodeName, state) }; graphPart colours it as steps run. */
import { $ } from "./core.js";

export function graphPart(view) {
  const graph = drawGraph($("#graph"), view.page.graph);
  const drawn = new Map();
  return {
    render() {
      for (const step of view.steps.values()) {
        if (drawn.get(step.name) === step.state) continue;
        drawn.set(step.name, step.state);
        graph.set(step.name, step.state);
      }
    },
  };
}

export function drawGraph(box, outline) {
  const ns = "http://www.w3.org/2000/svg";
  const nodes = new Map();
  if (!outline.entry) { box.textContent = "No picture for this graph."; return { set() {} }; }
  const depth = new Map([[outline.entry, 0]]);
  const queue = [outline.entry];
  while (queue.length) {
    const name = queue.shift();
    for (const edge of outline.edges.filter((e) => e.from === name)) {
      if (edge.to !== "__end__" && !depth.has(edge.to)) { depth.set(edge.to, depth.get(name) + 1); queue.push(edge.to); }
    }
  }
  for (const n of outline.nodes) if (!depth.has(n.name)) depth.set(n.name, 0);
  const layers = [];
  for (const [name, d] of depth) (layers[d] = layers[d] || []).push(name);
  // Layers run left to right and wrap into bands, so a long chain stays readable.
  const w = 130, h = 32, gx = 36, gy = 18, perBand = 6;
  const tallest = Math.max(...layers.map((l) => l.length));
  const bandHeight = tallest * (h + gy) + gy + 20;
  const bands = Math.ceil(layers.length / perBand);
  const width = Math.min(layers.length, perBand) * (w + gx) + gx;
  const height = bands * bandHeight;
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("class", "graph-svg");
  svg.style.maxWidth = width + "px";
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
    const rect = document.createElementNS(ns, "rect");
    Object.entries({ x: p.x, y: p.y, width: w, height: h, rx: 6 }).forEach(([k, v]) => rect.setAttribute(k, v));
    const text = document.createElementNS(ns, "text");
    Object.entries({ x: p.x + w / 2, y: p.y + h / 2 + 4, "text-anchor": "middle" }).forEach(([k, v]) => text.setAttribute(k, v));
    text.textContent = name.length > 20 ? name.slice(0, 19) + "…" : name;
    const title = document.createElementNS(ns, "title");
    title.textContent = name;
    g.append(rect, text, title);
    svg.append(g);
    nodes.set(name, g);
  }
  box.replaceChildren(svg);
  return { set(name, state) { const g = nodes.get(name); if (g) g.setAttribute("class", "node state-" + state); } };
}

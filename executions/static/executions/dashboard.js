/* The dashboard's live parts: websockets that reconnect on their own and resume after the last
 * event seen, the start form, the graph picture, the timeline and the controls. No build step. */
"use strict";

const Enact = (() => {
  const TERMINAL = new Set(["completed", "failed", "cancelled"]);
  function $(selector, root = document) { return root.querySelector(selector); }
  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs)) {
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      // Through the style object: a style attribute would need 'unsafe-inline' (CSP).
      else if (key === "style") Object.assign(node.style, value);
      else node.setAttribute(key, value);
    }
    for (const child of children) node.append(child);
    return node;
  }
  function cookie(name) {
    const found = document.cookie.split("; ").find((c) => c.startsWith(name + "="));
    return found ? decodeURIComponent(found.slice(name.length + 1)) : "";
  }
  function short(value, max = 200) {
    const text = typeof value === "string" ? value : JSON.stringify(value);
    return text && text.length > max ? text.slice(0, max) + "…" : text ?? "";
  }
  function stateBadge(node, state) {
    node.className = "state state-" + state;
    node.textContent = state;
  }

  /* A websocket that comes back by itself. `url()` is asked again on each reconnect, so it can
   * carry the last seq seen; the banner shows while the connection is down. */
  function liveSocket(url, onMessage) {
    const banner = $("#connection");
    let delay = 250;
    let socket = null;
    let closedByUs = false;
    function open() {
      const scheme = location.protocol === "https:" ? "wss://" : "ws://";
      socket = new WebSocket(scheme + location.host + url());
      socket.onopen = () => { delay = 250; banner.hidden = true; document.body.dataset.live = "on"; };
      socket.onmessage = (message) => onMessage(JSON.parse(message.data));
      socket.onclose = (event) => {
        document.body.dataset.live = "off";
        if (closedByUs || event.code >= 4400) return; // refused: reconnecting would not help
        banner.hidden = false;
        setTimeout(open, delay);
        delay = Math.min(delay * 2, 5000);
      };
    }
    open();
    return {
      send(frame) { if (socket && socket.readyState === WebSocket.OPEN) { socket.send(JSON.stringify(frame)); return true; } return false; },
      close() { closedByUs = true; socket && socket.close(); },
    };
  }

  async function api(method, path, body, tenant) {
    const response = await fetch("/api/v1/" + path, {
      method,
      headers: { "Content-Type": "application/json", "X-CSRFToken": cookie("csrftoken"), "X-Tenant": tenant },
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "same-origin",
    });
    const data = response.status === 204 ? null : await response.json();
    if (!response.ok) throw new Error(data && data.error ? data.error.message : "HTTP " + response.status);
    return data;
  }

  /* --- the executions list ---------------------------------------------------------------- */

  function executionsPage() {
    const table = $("#executions");
    const tenant = $(".tenant select").value;
    const filters = { state: table.dataset.filterState, blueprint: table.dataset.filterBlueprint, q: table.dataset.filterQ };
    const matches = (e) => (!filters.state || e.state === filters.state) && (!filters.blueprint || e.blueprint === filters.blueprint)
      && (!filters.q || e.id.startsWith(filters.q) || e.blueprint.includes(filters.q));
    liveSocket(() => "/ws/executions/?tenant=" + encodeURIComponent(tenant), (frame) => {
      if (frame.type !== "execution") return;
      const e = frame.execution;
      let row = $(`tr[data-id="${e.id}"]`, table);
      if (!row) {
        if (!matches(e)) return;
        const empty = $("tr.empty", table);
        if (empty) empty.remove();
        row = el("tr", { "data-id": e.id },
          el("td", {}, el("a", { href: "/executions/" + e.id + "/" }, el("code", { text: e.id }))),
          el("td", { text: e.blueprint }),
          el("td", {}, el("span", {})),
          el("td", {}, el("time", { datetime: e.created_at, text: e.created_at.replace("T", " ").slice(0, 19) })),
          el("td", {}));
        table.tBodies[0].prepend(row);
      }
      stateBadge(row.cells[2].firstChild, e.state);
      row.cells[4].textContent = e.ended_at ? e.ended_at.slice(11, 19) : "";
      row.classList.add("flash");
      setTimeout(() => row.classList.remove("flash"), 800);
    });
    startForm(tenant);
  }

  function startForm(tenant) {
    const form = $("#start-form");
    if (!form) return;
    const blueprints = JSON.parse($("#blueprints").textContent);
    const select = $("#start-blueprint");
    const input = $("#start-input");
    const error = $("#start-error");
    const describe = () => {
      const b = blueprints.find((x) => x.name === select.value);
      $("#start-description").textContent = b ? b.description : "";
      input.value = JSON.stringify(example(b ? b.input_schema : {}), null, 1);
    };
    select.addEventListener("change", describe);
    describe();
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      error.textContent = "";
      let value;
      try { value = JSON.parse(input.value); } catch (e) { error.textContent = "Input is not valid JSON: " + e.message; return; }
      const b = blueprints.find((x) => x.name === select.value);
      const problem = checkSchema(b ? b.input_schema : {}, value);
      if (problem) { error.textContent = problem; return; }
      try {
        const created = await api("POST", "executions", { blueprint: select.value, input: value }, tenant);
        location.href = "/executions/" + created.id + "/";
      } catch (e) { error.textContent = e.message; }
    });
  }

  function example(schema) {
    if (!schema || schema.type !== "object") return {};
    const value = {};
    for (const name of schema.required || []) {
      const prop = (schema.properties || {})[name] || {};
      value[name] = prop.type === "integer" || prop.type === "number" ? (prop.minimum ?? 1) || 1 : prop.type === "boolean" ? false : "";
    }
    return value;
  }

  /* The checks the server makes first, so that a typo is caught before a round trip. */
  function checkSchema(schema, value, path = "input") {
    if (!schema || !schema.type) return null;
    const kind = Array.isArray(value) ? "array" : value === null ? "null" : Number.isInteger(value) ? "integer" : typeof value;
    const fits = schema.type === kind || (schema.type === "number" && kind === "integer");
    if (!fits) return `${path} must be ${schema.type === "object" ? "an" : "a"} ${schema.type}`;
    if (schema.type === "object") {
      for (const name of schema.required || []) if (!(name in value)) return `${path}.${name} is required`;
      for (const [name, prop] of Object.entries(schema.properties || {})) {
        if (name in value) { const problem = checkSchema(prop, value[name], `${path}.${name}`); if (problem) return problem; }
      }
      if (schema.additionalProperties === false) {
        const unknown = Object.keys(value).filter((k) => !(k in (schema.properties || {})));
        if (unknown.length) return `${path}.${unknown[0]} is not expected`;
      }
    }
    return null;
  }

  /* --- one execution ---------------------------------------------------------------------- */

  function executionPage() {
    const page = JSON.parse($("#page").textContent);
    const view = {
      id: page.execution.id, state: page.execution.state, waitReason: page.execution.wait_reason,
      waitDetail: page.execution.wait_detail, usage: page.execution.usage || {}, lastSeq: 0, steps: {}, stepsDone: 0,
      startedAt: null, endedAt: null, nodeState: {},
    };
    const graph = drawGraph($("#graph"), page.graph);
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
      logEvent(event);
      const d = event.data || {};
      if (d.usage) view.usage = d.usage;
      if (event.type === "data-usage") view.usage = Object.assign({}, view.usage, d);
      if (event.type === "data-execution-start") view.startedAt = Date.parse(event.timestamp);
      if (event.type === "data-step-start") {
        view.steps[event.step_id] = { name: d.name, start: Date.parse(event.timestamp), end: null, state: "running", attempt: d.attempt };
        setNode(d.name, "running");
      } else if (event.type === "data-step-end" || event.type === "data-step-failed") {
        const step = view.steps[event.step_id];
        const state = event.type === "data-step-end" ? "completed" : "failed";
        if (step) { step.end = Date.parse(event.timestamp); step.state = state; setNode(step.name, state); }
        if (state === "completed") view.stepsDone += 1;
        upsertStepRow(event, step, d, state);
      }
      if (page.states[event.type]) {
        view.state = page.states[event.type];
        view.waitReason = event.type === "data-execution-waiting" ? d.reason : "";
        view.waitDetail = event.type === "data-execution-waiting" ? d.detail : null;
        if (TERMINAL.has(view.state)) view.endedAt = Date.parse(event.timestamp);
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
      renderWaterfall();
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

    function renderWaterfall() {
      const box = $("#waterfall");
      const steps = Object.values(view.steps);
      if (!steps.length) { box.textContent = "No steps yet."; return; }
      const t0 = Math.min(...steps.map((s) => s.start));
      const now = view.endedAt || Date.now();
      const t1 = Math.max(now, ...steps.map((s) => s.end || now));
      const span = Math.max(1, t1 - t0);
      box.replaceChildren(...steps.map((s) => {
        const left = ((s.start - t0) / span) * 100;
        const width = Math.max(0.5, (((s.end || now) - s.start) / span) * 100);
        const bar = el("span", { class: "wf-bar state-" + s.state, style: { left: left + "%", width: width + "%" }, title: `${s.name}: ${(s.end || now) - s.start} ms` });
        return el("div", { class: "wf-row" }, el("span", { class: "wf-label", text: s.name }), el("span", { class: "wf-track" }, bar));
      }));
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

    function logEvent(event) {
      const body = $("#events").tBodies[0];
      body.append(el("tr", { "data-seq": event.seq }, el("td", { text: event.seq }), el("td", { text: event.timestamp.slice(11, 23) }),
        el("td", { text: event.type }), el("td", {}, el("code", { text: short(event.data, 300) }))));
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
    setInterval(() => { if (!TERMINAL.has(view.state)) { renderWaterfall(); renderUsage(); } }, 1000);
  }

  /* The graph as a picture: nodes in layers by distance from the entry, edges as lines. */
  function drawGraph(box, outline) {
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

  /* What every page does: sizes given as data (bars, columns) become styles, and the tenant
   * switcher submits on change. No inline script or style anywhere (the Content Security Policy
   * refuses them): <body data-page> names the page's own part. */
  function start() {
    for (const node of document.querySelectorAll("[data-width]")) node.style.width = node.dataset.width + "%";
    for (const node of document.querySelectorAll("[data-height]")) node.style.height = node.dataset.height + "%";
    for (const select of document.querySelectorAll("select[data-submit-on-change]")) {
      select.addEventListener("change", () => select.form.submit());
    }
    const pages = { executions: executionsPage, execution: executionPage };
    const run = pages[document.body.dataset.page];
    if (run) run();
  }

  start();
  return { executionsPage, executionPage, checkSchema };
})();

/* The admin's live parts: an execution's change page follows its events over the websocket and
 * sends its controls there; the executions list keeps its state column current. */
"use strict";

(() => {
  const scheme = location.protocol === "https:" ? "wss://" : "ws://";

  function live(path, onMessage) {
    let delay = 250;
    let socket;
    (function open() {
      socket = new WebSocket(scheme + location.host + path());
      socket.onopen = () => { delay = 250; document.body.dataset.live = "on"; };
      socket.onmessage = (m) => onMessage(JSON.parse(m.data));
      socket.onclose = (e) => {
        document.body.dataset.live = "off";
        if (e.code < 4400) { setTimeout(open, delay); delay = Math.min(delay * 2, 5000); }
      };
    })();
    return { send: (frame) => socket.readyState === WebSocket.OPEN && (socket.send(JSON.stringify(frame)), true) };
  }

  // The admin shows a state by its label: "running" reads "Running".
  const label = (state) => state.charAt(0).toUpperCase() + state.slice(1);

  function message(text, level) {
    let list = document.querySelector("ul.messagelist");
    if (!list) {
      list = document.createElement("ul");
      list.className = "messagelist";
      document.querySelector("#content").before(list);
    }
    const item = document.createElement("li");
    item.className = level;
    item.textContent = text;
    list.replaceChildren(item);
  }

  function cell(text, code) {
    const td = document.createElement("td");
    if (code) { const c = document.createElement("code"); c.textContent = text; td.append(c); } else td.textContent = text;
    return td;
  }

  function changePage(config) {
    let lastSeq = config.last_seq;
    const stateField = document.querySelector(".field-state .readonly");
    const log = () => {
      let table = document.querySelector("table.event-log");
      if (!table) {
        const box = document.querySelector(".field-event_log .readonly");
        box.innerHTML = '<table class="event-log"><thead><tr><th>seq</th><th>type</th><th>step</th><th>timestamp</th><th>data</th></tr></thead><tbody></tbody></table>';
        table = box.querySelector("table");
      }
      return table.tBodies[0];
    };
    const socket = live(() => `/ws/executions/${config.id}/?tenant=${encodeURIComponent(config.tenant)}&after=${lastSeq}`, (frame) => {
      if (frame.type === "event") {
        const e = frame.event;
        if (e.seq <= lastSeq) return;
        lastSeq = e.seq;
        const row = document.createElement("tr");
        row.dataset.seq = e.seq;
        row.append(cell(e.seq), cell(e.type), cell(e.step_id || ""), cell(e.timestamp), cell(JSON.stringify(e.data), true));
        log().append(row);
        const state = config.states[e.type];
        if (state && stateField) stateField.textContent = label(state);
        if (e.step_id) stepState(e);
      } else if (frame.type === "control") {
        message(`${frame.action}: done, the execution is ${frame.execution.state}.`, "success");
      } else if (frame.type === "error") {
        message(frame.error.message, "error");
      }
    });
    function stepState(e) {
      const state = { "data-step-start": "running", "data-step-end": "completed", "data-step-failed": "failed" }[e.type];
      if (!state) return;
      for (const row of document.querySelectorAll("#steps-group tbody tr")) {
        const id = row.querySelector(".field-id");
        if (id && id.textContent.trim() === e.step_id) {
          const field = row.querySelector(".field-state p, .field-state");
          if (field) field.textContent = state;
          return;
        }
      }
      const body = document.querySelector("#steps-group tbody");
      if (!body) return;
      const row = document.createElement("tr");
      row.className = "live-step";
      row.dataset.step = e.step_id;
      row.append(cell(""), cell(e.step_id), cell((e.data && e.data.name) || ""), cell(""), cell(state));
      body.append(row);
    }
    for (const form of document.querySelectorAll("form.execution-control")) {
      form.addEventListener("submit", (event) => {
        if (event.defaultPrevented) return; // not confirmed
        const action = form.querySelector("button").value;
        if (socket.send({ type: action, reason: "from the admin" })) event.preventDefault(); // else post the form
      });
    }
  }

  function listPage() {
    const rows = new Map();
    const tenants = new Set();
    for (const row of document.querySelectorAll("#result_list tbody tr")) {
      const box = row.querySelector("input.action-select");
      const tenant = row.querySelector(".field-tenant");
      if (!box || !tenant) continue;
      rows.set(box.value, row);
      tenants.add(tenant.textContent.trim());
    }
    for (const tenant of tenants) {
      live(() => `/ws/executions/?tenant=${encodeURIComponent(tenant)}`, (frame) => {
        if (frame.type !== "execution") return;
        const row = rows.get(frame.execution.id);
        const state = row && row.querySelector(".field-state");
        if (state) state.textContent = label(frame.execution.state);
        const reason = row && row.querySelector(".field-wait_reason");
        if (reason) reason.textContent = frame.execution.wait_reason || "-";
      });
    }
  }

  // A control that asks first (cancel) goes nowhere, neither posted nor over the socket, without a yes.
  for (const form of document.querySelectorAll("form[data-confirm]")) {
    form.addEventListener("submit", (event) => {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  }

  const config = document.getElementById("execution-live");
  if (config) changePage(JSON.parse(config.textContent));
  else if (document.getElementById("result_list")) listPage();
})();

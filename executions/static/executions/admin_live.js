/* The admin's live parts. An execution's change page follows its events over the websocket: the
 * event log grows, and whenever an event changes the execution or a step, the page asks the
 * server for its fields, step rows and controls as they are now (one row per step, in place),
 * so State, Ended at, Error and the buttons follow the run. Controls go over the socket when it
 * is open (else the form posts), and the page says in words what they did. The executions list
 * keeps its state column current and shows executions created after it was loaded. */
"use strict";

(() => {
  const scheme = location.protocol === "https:" ? "wss://" : "ws://";

  // A socket that opens again when it closes: soon after a dropped connection, later (from 5 s,
  // up to a minute) when the server refused it for holding too many of the user's connections
  // (4429: another page may close one), never after another refusal. onOpen runs at each opening.
  function live(path, onMessage, onOpen) {
    let delay = 250, busy = 5000;
    let socket;
    (function open() {
      socket = new WebSocket(scheme + location.host + path());
      socket.onopen = () => { delay = 250; document.body.dataset.live = "on"; if (onOpen) onOpen(); };
      socket.onmessage = (m) => onMessage(JSON.parse(m.data));
      socket.onclose = (e) => {
        document.body.dataset.live = "off";
        if (e.code === 4429) { setTimeout(open, busy * (0.75 + Math.random() / 2)); busy = Math.min(busy * 2, 60000); }
        else if (e.code < 4400) { busy = 5000; setTimeout(open, delay); delay = Math.min(delay * 2, 5000); }
      };
    })();
    return { send: (frame) => socket.readyState === WebSocket.OPEN && (socket.send(JSON.stringify(frame)), true) };
  }

  // The admin shows a state by its label: "running" reads "Running".
  const label = (state) => (state ? state.charAt(0).toUpperCase() + state.slice(1) : "-");

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs)) {
      if (value === undefined || value === null) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else node.setAttribute(key, value);
    }
    node.append(...children.filter((c) => c !== null && c !== undefined));
    return node;
  }

  function message(text, level) {
    let list = document.querySelector("ul.messagelist");
    if (!list) {
      list = el("ul", { class: "messagelist" });
      document.querySelector("#content").before(list);
    }
    list.replaceChildren(el("li", { class: level, text }));
    list.setAttribute("role", "status");
  }

  function cell(text, code) {
    return code ? el("td", {}, el("code", { text })) : el("td", { text: String(text) });
  }

  // An id in an admin URL, quoted as the admin quotes it (django.contrib.admin.utils.quote): "_" is "_5F".
  const adminQuote = (id) => String(id).replace(/[:/_#?;@&=+$,"[\]<>%\n\\]/g, (c) => "_" + c.charCodeAt(0).toString(16).toUpperCase().padStart(2, "0"));

  function csrfToken() {
    const input = document.querySelector("input[name=csrfmiddlewaretoken]");
    if (input) return input.value;
    const found = document.cookie.split("; ").find((c) => c.startsWith("csrftoken="));
    return found ? decodeURIComponent(found.slice("csrftoken=".length)) : "";
  }

  /* --- one execution's change page --------------------------------------------------------- */

  function changePage(config) {
    let lastSeq = config.last_seq;
    let pending = null; // the control this page sent, until the execution's state shows it done
    const words = config.wording;
    const tools = document.querySelector("ul.object-tools");

    const log = () => {
      let table = document.querySelector("table.event-log");
      if (!table) {
        const box = document.querySelector(".field-event_log .readonly");
        table = el("table", { class: "event-log" },
          el("thead", {}, el("tr", {}, ...["seq", "type", "step", "timestamp", "data"].map((h) => el("th", { text: h })))),
          el("tbody"));
        box.replaceChildren(table);
      }
      return table.tBodies[0];
    };

    // Asking the server again: at most one request at a time, and one more if events came meanwhile.
    let asking = false, again = false, timer = null;
    function refresh() {
      clearTimeout(timer);
      timer = setTimeout(ask, 150);
    }
    async function ask() {
      if (asking) { again = true; return; }
      asking = true;
      try {
        const response = await fetch(config.live_url, { credentials: "same-origin", headers: { Accept: "application/json" } });
        if (response.ok) apply(await response.json());
      } catch (e) { /* the next event asks again */ }
      asking = false;
      if (again) { again = false; refresh(); }
    }

    function apply(data) {
      for (const [name, text] of Object.entries(data.fields)) {
        const field = document.querySelector(`.field-${name} .readonly`);
        if (field && field.textContent !== text) field.textContent = text;
      }
      document.body.dataset.state = data.state;
      syncControls(data.controls);
      syncSteps(data.steps);
      settled(data.state);
    }

    // When the state shows that the control this page sent has taken effect, say so.
    function settled(state) {
      const done = { cancel: ["cancelled"], pause: ["paused"], resume: ["running"] }[pending];
      if (!done) return;
      if (done.includes(state)) {
        message(words[{ cancel: "cancelled", pause: "paused", resume: "resumed" }[pending]], "success");
        pending = null;
      } else if (["completed", "failed", "cancelled"].includes(state)) {
        message(words[state] || label(state) + ".", "info");
        pending = null;
      }
    }

    function controlUrl(action) { return config.live_url.replace(/live\/$/, action + "/"); }

    function wire(form) {
      form.addEventListener("submit", (event) => {
        // A control that asks first (cancel) goes nowhere, neither posted nor over the socket, without a yes.
        if (form.dataset.confirm && !window.confirm(form.dataset.confirm)) { event.preventDefault(); return; }
        const action = form.dataset.action || form.querySelector("button").value;
        if (socket.send({ type: action, reason: "from the admin" })) { event.preventDefault(); pending = action; }
      });
    }

    // Offer exactly the controls that apply now, in their usual order, before the page's own tools.
    function syncControls(actions) {
      if (!tools) return;
      const applies = new Set(actions);
      let before = [...tools.children].find((li) => !li.querySelector("form.execution-control")) || null;
      for (const control of [...config.controls].reverse()) {
        const form = tools.querySelector(`form.execution-control[data-action="${control.action}"]`);
        if (!applies.has(control.action)) { if (form) form.closest("li").remove(); continue; }
        if (form) { before = form.closest("li"); continue; }
        const made = el("form", { method: "post", action: controlUrl(control.action), class: "execution-control", "data-action": control.action, "data-confirm": control.confirm || null },
          el("input", { type: "hidden", name: "csrfmiddlewaretoken", value: csrfToken() }),
          el("button", { type: "submit", name: "control", value: control.action, text: control.label }));
        wire(made);
        const item = el("li", {}, made);
        tools.insertBefore(item, before);
        before = item;
      }
    }

    // One row per step, keyed by its id: rows the server rendered are adopted, new ones added,
    // every row written as the server writes it now, in the steps' order.
    function syncSteps(steps) {
      const body = document.querySelector("#steps-group tbody");
      if (!body) return;
      const columns = [...document.querySelectorAll("#steps-group thead th")];
      const rows = new Map();
      const tail = body.querySelector("tr.add-row"); // the admin's own last row stays last
      for (const row of body.querySelectorAll("tr")) {
        if (!row.dataset.step) {
          const id = row.querySelector('td.original input[name$="-id"]');
          if (id) row.dataset.step = id.value;
        }
        if (row.dataset.step) {
          if (rows.has(row.dataset.step)) row.remove(); // never two rows for one step
          else rows.set(row.dataset.step, row);
        }
      }
      let prev = null;
      for (const step of steps) {
        let row = rows.get(step.id);
        if (!row) {
          row = el("tr", { class: "live-step", "data-step": step.id });
          for (const th of columns) {
            const name = [...th.classList].find((c) => c.startsWith("column-"));
            if (!name) { row.append(el("td", { class: th.classList.contains("original") ? "original" : "delete" })); continue; }
            const hidden = th.classList.contains("hidden") ? " hidden" : "";
            row.append(el("td", { class: "field-" + name.slice("column-".length) + hidden }, el("p", { text: name === "column-id" ? step.id : "" })));
          }
        }
        for (const [name, text] of Object.entries(step.cells)) {
          const td = row.querySelector(`td.field-${name}`);
          if (!td) continue;
          const target = td.querySelector("p") || td;
          if (target.textContent !== text) target.textContent = text;
        }
        // In order after the step before it; a row already in its place is not moved (the
        // server sends the latest steps: the rows of earlier ones stay where they are).
        if (prev ? prev.nextElementSibling !== row : !row.parentNode) {
          if (prev) prev.after(row); else body.insertBefore(row, tail);
        }
        prev = row;
      }
    }

    const socket = live(() => `/ws/executions/${config.id}/?tenant=${encodeURIComponent(config.tenant)}&after=${lastSeq}`, (frame) => {
      if (frame.type === "event") {
        const e = frame.event;
        if (e.seq <= lastSeq) return;
        lastSeq = e.seq;
        const row = el("tr", { "data-seq": e.seq });
        row.append(cell(e.seq), cell(e.type), cell(e.step_id || ""), cell(e.timestamp), cell(JSON.stringify(e.data), true));
        log().append(row);
        const state = config.states[e.type];
        if (state) {
          const field = document.querySelector(".field-state .readonly");
          if (field) field.textContent = label(state);
        }
        if (state || e.step_id) refresh();
      } else if (frame.type === "control") {
        const state = frame.execution.state;
        let text;
        if (frame.action === "cancel") {
          if (state === "cancelled") text = words.cancelled;
          else if (["completed", "failed"].includes(state)) text = words.already_ended.replace("{state}", state);
          else text = words.cancel_requested;
        } else {
          text = words[frame.action + "_requested"];
        }
        message(text, "success");
        refresh();
      } else if (frame.type === "error") {
        pending = null;
        message(frame.error.message, "error");
        refresh();
      }
    }, refresh); // at each opening, the page as it is now: what changed before the socket was there

    for (const form of document.querySelectorAll("form.execution-control")) wire(form);
  }

  /* --- the executions list ----------------------------------------------------------------- */

  function listPage(config) {
    const rows = new Map();
    for (const row of document.querySelectorAll("#result_list tbody tr")) {
      const box = row.querySelector("input.action-select");
      if (box) rows.set(box.value, row);
    }
    const since = Date.parse(config.since);
    const fresh = new Set();
    let notice = null;

    function tell() {
      if (!notice) {
        notice = el("p", { class: "executions-new", role: "status" });
        const button = el("button", { type: "button", class: "button", text: "Reload" });
        button.addEventListener("click", () => location.reload());
        notice.append(el("span"), " ", button);
        (document.querySelector("#changelist") || document.querySelector("#content-main")).before(notice);
      }
      const n = fresh.size;
      notice.firstChild.textContent = n === 1 ? "1 new execution since this page was loaded." : `${n} new executions since this page was loaded.`;
    }

    // A row for an execution created after the page was loaded, at the top (only on the unfiltered list).
    function prepend(summary, tenant) {
      const table = document.querySelector("#result_list");
      if (!table || config.filtered) return;
      const row = el("tr", { class: "live-new" });
      for (const th of table.querySelectorAll("thead th")) {
        const column = [...th.classList].find((c) => c.startsWith("column-"));
        const name = column ? column.slice("column-".length) : "";
        if (th.classList.contains("action-checkbox-column")) {
          row.append(el("td", { class: "action-checkbox" },
            el("input", { type: "checkbox", name: "_selected_action", value: summary.id, class: "action-select", "aria-label": "Select this object for an action - " + summary.id })));
        } else if (name === "id") {
          row.append(el("th", { class: "field-id" }, el("a", { href: config.change_url.replace("__id__", adminQuote(summary.id)), text: summary.id })));
        } else {
          const values = {
            tenant, blueprint: summary.blueprint, state: label(summary.state), wait_reason: summary.wait_reason || "-",
            created_at: summary.created_at ? new Date(summary.created_at).toLocaleString() : "-",
            started_at: summary.started_at ? new Date(summary.started_at).toLocaleString() : "-",
            ended_at: summary.ended_at ? new Date(summary.ended_at).toLocaleString() : "-",
          };
          row.append(el("td", { class: "field-" + name, text: name in values ? values[name] : "" }));
        }
      }
      table.tBodies[0].prepend(row);
      rows.set(summary.id, row);
    }

    for (const tenant of config.tenants) {
      live(() => `/ws/executions/?tenant=${encodeURIComponent(tenant)}`, (frame) => {
        if (frame.type !== "execution") return;
        const summary = frame.execution;
        let row = rows.get(summary.id);
        if (!row && !fresh.has(summary.id) && Date.parse(summary.created_at) >= since) {
          fresh.add(summary.id);
          tell();
          prepend(summary, tenant);
          row = rows.get(summary.id);
        }
        if (!row) return;
        const state = row.querySelector(".field-state");
        if (state) state.textContent = label(summary.state);
        const reason = row.querySelector(".field-wait_reason");
        if (reason) reason.textContent = summary.wait_reason || "-";
        const ended = row.querySelector(".field-ended_at");
        if (ended && summary.ended_at && ended.textContent.trim() === "-") ended.textContent = new Date(summary.ended_at).toLocaleString();
      });
    }
  }

  const config = document.getElementById("execution-live");
  const list = document.getElementById("executions-live");
  if (config) changePage(JSON.parse(config.textContent));
  else if (list) listPage(JSON.parse(list.textContent));
})();

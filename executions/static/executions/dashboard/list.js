/* The executions list. The server renders the rows (dashboard/list/row.html); this script keeps
 * them live from the tenant's feed, opens a parent's children under it, writes durations and
 * local times, and runs the operators' bulk actions. Rows it adds come from the server too
 * (?partial=rows), so a row looks the same however it arrived, and the server decides what
 * matches the filters. */
import { $, TERMINAL, announce, api, copyButton, el, formatDuration, formatNumber, liveSocket, localizeTimes, stateBadge, timeZone } from "./core.js";
import { startForm } from "./start.js";

const WAIT_WORDS = {
  approval: "waits for approval", user_input: "waits for input", rate_limit: "waits out a rate limit",
  external: "waits for an external event", checkpoint: "waits at a checkpoint",
  cost_threshold: "waits: over its cost threshold", memory_pressure: "waits for memory",
  sub_agent: "waits for a child execution",
};
const FLUSH_MS = 1000; // frames are taken in batches: one look at the server a second at most
const ANNOUNCE_MS = 5000; // and screen readers hear a summary now and then, not every frame
const LEAVE_MS = 4000; // how long a row that no longer matches stays, marked, before it goes
const ASK_AT_ONCE = 100; // ids named in one look at the server (the server says which it looked at)
const RESYNC_MS = 1000; // sockets that open within this share one look at the server

export function executionsPage() {
  const table = $("#executions");
  if (!table) return;
  const page = JSON.parse($("#list-page").textContent);
  const list = new ExecutionList(table, page);
  list.prepare(table.tBodies[0]);
  list.follow();
  zone(page);
  const switcher = $(".tenant select");
  startForm(switcher ? switcher.value : "");
}

/* The reader's zone: times are written in it, and the date filters are read in it. */
function zone(page) {
  const box = $("#filter-box");
  const used = ["state", "blueprint", "q", "from", "to", "tenant"].some((key) => page.filters[key]);
  if (box && !used && window.matchMedia("(max-width: 600px)").matches) box.open = false; // the rows first
  $("#zone").textContent = timeZone;
  const tz = $('#filters input[name="tz"]');
  const typed = page.filters.from || page.filters.to;
  // Dates typed in another zone (a shared link) stay read in that one until they are typed again.
  if (tz && (!typed || page.filters.tz === timeZone)) tz.value = timeZone;
}

function plural(n, one, many) { return `${formatNumber(n)} ${n === 1 ? one : many}`; }

async function getJSON(url) {
  const response = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
  if (!response.ok) throw new Error("HTTP " + response.status);
  return response.json();
}

function rowsFrom(html) {
  const template = document.createElement("template");
  template.innerHTML = html;
  return [...template.content.querySelectorAll("tr")];
}

class ExecutionList {
  constructor(table, page) {
    this.table = table;
    this.body = table.tBodies[0];
    this.page = page;
    this.filters = page.filters;
    this.total = page.total;
    this.pending = new Map();
    this.flushing = null;
    this.unannounced = { changed: 0, added: 0, left: 0 };
    this.announcing = null;
    // Executions that belong on the first page while this is another: new ones (created since
    // the page was loaded), and, as the total grew beyond them, older ones that now match.
    this.missedNew = new Set();
    this.resyncing = null;
    this.body.addEventListener("click", (event) => {
      const button = event.target.closest("button.disclosure");
      if (button) this.toggleChildren(button);
    });
    setInterval(() => this.tick(), 1000);
    setInterval(() => { localizeTimes(this.table); compactTimes(this.table); }, 30_000); // "3 minutes ago" moves on
    this.bulk = new BulkActions(this);
  }

  /* What the server's rows need from the script: copy buttons, local times, durations. */
  prepare(root) {
    for (const slot of root.querySelectorAll(".copy-slot[data-copy]")) {
      slot.replaceWith(copyButton(slot.dataset.copy, "Copy the id"));
    }
    localizeTimes(root);
    compactTimes(root);
    const rows = root.matches && root.matches("tr") ? [root] : root.querySelectorAll("tr[data-id]");
    const now = Date.now();
    for (const row of rows) paintDuration(row, now);
  }

  tick() {
    const now = Date.now();
    for (const row of this.body.querySelectorAll('tr[data-id][data-ended=""]')) paintDuration(row, now);
  }

  rowsUrl(extra) {
    const query = new URLSearchParams(location.search);
    query.delete("page");
    query.set("partial", "rows");
    for (const [key, value] of Object.entries(extra)) query.set(key, value);
    return location.pathname + "?" + query;
  }

  topRows() { return [...this.body.querySelectorAll('tr[data-id][data-level="0"]:not(.leaving)')]; }

  /* --- the run tree ------------------------------------------------------------------------- */

  async toggleChildren(button) {
    const row = button.closest("tr");
    const id = row.dataset.id;
    if (button.getAttribute("aria-expanded") === "true") {
      this.removeUnder(id);
      this.label(button, false);
      return;
    }
    button.disabled = true;
    try {
      await this.showChildren(row, button);
    } catch (error) {
      announce("The children could not be read: " + error.message);
    } finally {
      button.disabled = false;
    }
  }

  async showChildren(row, button) {
    const id = row.dataset.id;
    const level = Number(row.dataset.level || 0) + 1;
    const data = await getJSON(this.rowsUrl({ children: id, level }));
    this.removeUnder(id);
    const rows = rowsFrom(data.html);
    let after = row;
    for (const child of rows) {
      child.dataset.under = id;
      child.classList.add("child");
      after.after(child);
      after = child;
      this.prepare(child);
    }
    if (data.more) {
      const more = el("tr", { class: "more child", "data-under": id, "data-level": String(level) },
        el("td", { colspan: "9" }, `Showing ${formatNumber(rows.length)} of ${formatNumber(data.total)} children. `,
          el("a", { href: data.more, text: "See them all" })));
      after.after(more);
    }
    button.dataset.children = String(data.total);
    this.label(button, true);
  }

  label(button, open) {
    const n = Number(button.dataset.children);
    button.setAttribute("aria-expanded", open ? "true" : "false");
    button.textContent = `${open ? "▾" : "▸"} ${plural(n, "child", "children")}`;
  }

  removeUnder(id) {
    for (const row of this.body.querySelectorAll(`tr[data-under="${id}"]`)) {
      if (row.dataset.id) this.removeUnder(row.dataset.id);
      row.remove();
    }
  }

  /* --- live --------------------------------------------------------------------------------- */

  follow() {
    // What changed before a socket opened (or while it was down) no frame will say: look again.
    // Several sockets (the operators' page follows up to five tenants) open at about the same
    // time: one look serves them all.
    new MutationObserver(() => {
      if (document.body.dataset.live !== "on" || this.resyncing) return;
      this.resyncing = setTimeout(() => { this.resyncing = null; this.resync(); }, RESYNC_MS);
    }).observe(document.body, { attributes: true, attributeFilter: ["data-live"] });
    for (const slug of this.page.tenants || []) {
      liveSocket(() => "/ws/executions/?tenant=" + encodeURIComponent(slug), (frame) => {
        if (frame.type !== "execution") return;
        this.pending.set(frame.execution.id, frame.execution);
        if (!this.flushing) this.flushing = setTimeout(() => this.flush(), FLUSH_MS);
      });
    }
  }

  async flush() {
    const batch = [...this.pending.values()];
    this.pending.clear();
    const unseen = [];
    const parents = new Set();
    for (const e of batch) {
      const rows = this.body.querySelectorAll(`tr[data-id="${e.id}"]`);
      for (const row of rows) {
        if (this.update(row, e)) this.count("changed");
        if (this.filters.state && e.state !== this.filters.state && !row.dataset.under) this.leave(row, e);
      }
      if (e.parent_id && !this.filters.parent && !this.filters.q) {
        if (!rows.length && this.body.querySelector(`tr[data-id="${e.parent_id}"]`)) parents.add(e.parent_id);
      } else if (!rows.length) unseen.push(e);
    }
    try {
      await this.arrive(unseen);
      for (const id of parents) await this.childrenChanged(id);
    } catch (error) {
      // The next frames look again; the rows already shown were updated.
    }
    this.flushing = null;
    if (this.pending.size) this.flushing = setTimeout(() => this.flush(), FLUSH_MS);
    this.say();
  }

  /* Ask the server about ``ids``, a hundred at a time: {rows (its <tr>s for those that match),
   * asked (the ids it looked at), total}. With no ids, one look for the total. */
  async lookUp(ids, extra = {}) {
    const found = { rows: [], asked: new Set(), total: this.total };
    let start = 0;
    do {
      const data = await getJSON(this.rowsUrl({ ids: ids.slice(start, start + ASK_AT_ONCE).join(","), ...(start ? {} : extra) }));
      found.rows.push(...rowsFrom(data.html));
      for (const id of data.asked || []) found.asked.add(id);
      found.total = data.total;
      start += ASK_AT_ONCE;
    } while (start < ids.length);
    return found;
  }

  /* The unfinished rows as the server has them now (those the filters no longer take leave),
   * and on the first page the executions that came while no socket was open. */
  async resync() {
    const rows = this.topRows().filter((row) => !TERMINAL.has(row.dataset.state));
    if (!rows.length && !this.page.first) return;
    try {
      const newest = this.topRows()[0];
      const extra = this.page.first && newest ? { newer: newest.dataset.created } : {};
      const data = await this.lookUp(rows.map((row) => row.dataset.id), extra);
      const fresh = new Map(data.rows.map((row) => [row.dataset.id, row]));
      for (const row of rows) {
        const now = fresh.get(row.dataset.id);
        if (now) {
          const at = now.dataset;
          if (this.update(row, { state: at.state, wait_reason: at.wait, started_at: at.started, ended_at: at.ended })) this.count("changed");
        } else if (this.filters.state && data.asked.has(row.dataset.id)) this.leave(row, {});
      }
      this.total = data.total;
      if (this.page.first) this.add(data.rows);
      this.paintRange();
      this.say();
    } catch (error) {
      // The frames that follow still keep the rows.
    }
  }

  /* Executions the page does not show: the server says which match the filters (and the total). */
  async arrive(unseen) {
    const candidates = this.page.first ? unseen.filter((e) => this.mayFit(e)) : unseen;
    const data = await this.lookUp(candidates.map((e) => e.id));
    this.total = data.total;
    if (!this.page.first) {
      const created = new Map(candidates.map((e) => [e.id, Date.parse(e.created_at)]));
      const loaded = Date.parse(this.page.loaded_at);
      for (const row of data.rows) {
        if (created.get(row.dataset.id) > loaded) this.missedNew.add(row.dataset.id);
      }
      this.showMissed();
    } else {
      this.add(data.rows);
    }
    this.paintRange();
  }

  /* Rows the server gave that the page does not show yet, each in its place. */
  add(rows) {
    for (const row of rows) {
      if (this.body.querySelector(`tr[data-id="${row.dataset.id}"]`)) continue;
      if (!this.mayFit({ created_at: row.dataset.created })) continue;
      this.place(row);
      this.prepare(row);
      row.classList.add("flash");
      setTimeout(() => row.classList.remove("flash"), 800);
      this.count("added");
    }
    this.trim();
  }

  /* A row older than the page's last, on a full page, belongs to the next page. */
  mayFit(e) {
    const rows = this.topRows();
    if (rows.length < this.filters.size) return true;
    return Date.parse(e.created_at) >= Date.parse(rows[rows.length - 1].dataset.created);
  }

  place(row) {
    const created = Date.parse(row.dataset.created);
    const before = this.topRows().find((r) => Date.parse(r.dataset.created) < created);
    const empty = $("tr.empty", this.body);
    if (empty) empty.remove();
    if (before) before.before(row);
    else this.body.append(row);
  }

  trim() {
    const rows = this.topRows();
    for (const row of rows.slice(this.filters.size)) {
      this.removeUnder(row.dataset.id);
      row.remove();
    }
  }

  async childrenChanged(id) {
    const parent = this.body.querySelector(`tr[data-id="${id}"]`);
    if (!parent) return;
    let button = $("button.disclosure", parent);
    if (button && button.getAttribute("aria-expanded") === "true") {
      await this.showChildren(parent, button);
      return;
    }
    const data = await getJSON(this.rowsUrl({ children: id, level: Number(parent.dataset.level || 0) + 1 }));
    if (!button) {
      button = el("button", { type: "button", class: "disclosure", "aria-expanded": "false" });
      $("td.id", parent).append(button);
    }
    button.dataset.children = String(data.total);
    this.label(button, false);
  }

  update(row, e) {
    const ended = e.ended_at || "";
    const wait = e.wait_reason || "";
    // The same moment is written "+00:00" by the server's rows and "Z" by the feed.
    const sameEnd = ended === row.dataset.ended || Date.parse(ended) === Date.parse(row.dataset.ended);
    if (row.dataset.state === e.state && row.dataset.wait === wait && sameEnd) return false;
    row.dataset.state = e.state;
    row.dataset.wait = wait;
    row.dataset.started = e.started_at || "";
    row.dataset.ended = ended;
    stateBadge($(".state", row), e.state);
    const words = $(".wait", row);
    words.textContent = WAIT_WORDS[wait] || wait.replace(/_/g, " ");
    words.hidden = !wait;
    const cell = $("td.ended", row);
    cell.replaceChildren();
    if (ended) {
      cell.append(el("time", { datetime: ended }));
      localizeTimes(cell);
      compactTimes(cell);
    }
    paintDuration(row, Date.now());
    row.classList.add("flash");
    setTimeout(() => row.classList.remove("flash"), 800);
    return true;
  }

  /* A row the state filter no longer takes: marked, then gone. */
  leave(row, e) {
    if (row.classList.contains("leaving")) return;
    row.classList.add("leaving");
    $(".state-cell", row).append(el("small", { class: "leaving-note", text: ` no longer ${this.filters.state}` }));
    const box = $('input[name="pick"]', row);
    if (box) { box.checked = false; box.disabled = true; }
    this.count("left");
    setTimeout(() => {
      this.removeUnder(row.dataset.id);
      row.remove();
      if (!this.topRows().length && !$("tr.empty", this.body)) {
        this.body.append(el("tr", { class: "empty" }, el("td", { colspan: "9", text: "No execution matches these filters now." })));
      }
      this.paintRange();
      this.bulk.update();
    }, LEAVE_MS);
  }

  paintRange() {
    const shown = this.topRows().length;
    const range = $("#range-shown");
    const start = Math.max(Number(range.dataset.start) || 1, 1);
    range.textContent = shown ? `${formatNumber(start)}–${formatNumber(start + shown - 1)}` : "0";
    $("#total").textContent = formatNumber(this.total);
  }

  showMissed() {
    const fresh = this.missedNew.size;
    const matching = Math.max(0, this.total - this.page.total - fresh);
    if (!fresh && !matching) return;
    const parts = [];
    if (fresh) parts.push(plural(fresh, "new execution", "new executions"));
    if (matching) parts.push(`${plural(matching, "execution", "executions")} that now ${matching === 1 ? "matches" : "match"} the filters`);
    $("#list-news-text").textContent = `${parts.join(" and ")} since this page was loaded.`;
    $("#list-news").hidden = false;
  }

  count(kind) {
    this.unannounced[kind] += 1;
  }

  /* Politely: a summary at most every few seconds. */
  say() {
    if (this.announcing) return;
    const { changed, added, left } = this.unannounced;
    if (!changed && !added && !left) return;
    const parts = [];
    if (changed) parts.push(`${plural(changed, "execution", "executions")} changed`);
    if (added) parts.push(`${formatNumber(added)} new`);
    if (left) parts.push(`${formatNumber(left)} no longer ${left === 1 ? "matches" : "match"} the filter`);
    announce(parts.join(", ") + ".");
    this.unannounced = { changed: 0, added: 0, left: 0 };
    this.announcing = setTimeout(() => { this.announcing = null; this.say(); }, ANNOUNCE_MS);
  }
}

const clockToday = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit" });
const clockOther = new Intl.DateTimeFormat(undefined, { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });

/* In the table a time is short (its title keeps it whole, with the zone the page names):
 * today's as a clock, older ones with their day. */
function compactTimes(root) {
  const today = new Date().toDateString();
  for (const node of root.querySelectorAll("td.created time:not([data-relative]), td.ended time")) {
    const at = new Date(node.getAttribute("datetime"));
    if (Number.isNaN(at.getTime())) continue;
    node.textContent = (at.toDateString() === today ? clockToday : clockOther).format(at);
  }
}

function paintDuration(row, now) {
  const cell = $("td.duration", row);
  if (!cell) return;
  const started = row.dataset.started;
  if (!started) { cell.textContent = ""; return; }
  const ended = row.dataset.ended;
  const running = !ended && !TERMINAL.has(row.dataset.state);
  cell.textContent = formatDuration((ended ? Date.parse(ended) : now) - Date.parse(started));
  cell.classList.toggle("live", running);
}

/* Operators pick rows and cancel or rerun them; the result is said in words. */
class BulkActions {
  constructor(list) {
    this.list = list;
    this.all = $("#pick-all");
    this.cancel = $("#bulk-cancel");
    this.rerun = $("#bulk-rerun");
    this.result = $("#bulk-result");
    if (!this.cancel) return;
    this.all.addEventListener("change", () => {
      for (const box of this.boxes()) box.checked = this.all.checked;
      this.update();
    });
    list.body.addEventListener("change", (event) => { if (event.target.name === "pick") this.update(); });
    this.cancel.addEventListener("click", () => this.run("cancel"));
    this.rerun.addEventListener("click", () => this.run("rerun"));
  }

  boxes() { return [...this.list.body.querySelectorAll('input[name="pick"]:not(:disabled)')]; }

  picked() { return this.boxes().filter((box) => box.checked); }

  update() {
    if (!this.cancel) return;
    const n = this.picked().length;
    const all = this.boxes().length;
    $("#picked").textContent = n ? `${plural(n, "execution", "executions")} selected.` : "None selected.";
    this.cancel.disabled = this.rerun.disabled = n === 0;
    this.all.checked = n > 0 && n === all;
    this.all.indeterminate = n > 0 && n < all;
  }

  async run(action) {
    const boxes = this.picked();
    const n = boxes.length;
    if (!n) return;
    const question = action === "cancel"
      ? `Cancel ${plural(n, "execution", "executions")}?`
      : `Rerun ${plural(n, "execution", "executions")}? Each starts again as a new execution with the same input.`;
    if (!window.confirm(question)) return;
    this.cancel.disabled = this.rerun.disabled = true;
    this.result.textContent = action === "cancel" ? "Cancelling…" : "Starting reruns…";
    const byTenant = new Map();
    for (const box of boxes) {
      const tenant = box.closest("tr").dataset.tenant;
      byTenant.set(tenant, [...(byTenant.get(tenant) || []), box.value]);
    }
    let words;
    try {
      words = action === "cancel" ? await cancelAll(byTenant) : await rerunAll(byTenant);
    } catch (error) {
      words = (action === "cancel" ? "Nothing was cancelled: " : "No rerun was started: ") + error.message;
    }
    this.result.textContent = words;
    announce(words);
    for (const box of boxes) box.checked = false;
    this.update();
  }
}

async function cancelAll(byTenant) {
  const counts = { cancelled: 0, cancel_requested: 0, already_terminal: 0, not_found: 0 };
  for (const [tenant, ids] of byTenant) {
    const result = await api("POST", "executions/cancel", { ids, reason: "cancelled from the executions list" }, tenant);
    for (const key of Object.keys(counts)) counts[key] += result[key] || 0;
  }
  return cancelWords(counts);
}

/** {cancelled: 3, already_terminal: 1} → "3 cancelled, 1 already finished." */
export function cancelWords(counts) {
  const parts = [];
  if (counts.cancelled) parts.push(`${formatNumber(counts.cancelled)} cancelled`);
  if (counts.cancel_requested) {
    parts.push(`${formatNumber(counts.cancel_requested)} asked to stop (${counts.cancel_requested === 1 ? "it stops" : "they stop"} at the next check)`);
  }
  if (counts.already_terminal) parts.push(`${formatNumber(counts.already_terminal)} already finished`);
  if (counts.not_found) parts.push(`${formatNumber(counts.not_found)} not found`);
  return parts.length ? parts.join(", ") + "." : "Nothing to cancel.";
}

async function rerunAll(byTenant) {
  let started = 0;
  const refused = [];
  for (const [tenant, ids] of byTenant) {
    for (const id of ids) {
      try {
        await api("POST", `executions/${id}/rerun`, {}, tenant);
        started += 1;
      } catch (error) {
        refused.push(error.message);
      }
    }
  }
  const parts = [];
  if (started) parts.push(`Started ${plural(started, "rerun", "reruns")}`);
  if (refused.length) {
    const reasons = [...new Set(refused)].join("; ");
    parts.push(`${started ? "" : "No rerun started: "}${formatNumber(refused.length)} refused (${reasons})`);
  }
  return parts.join("; ") + ".";
}

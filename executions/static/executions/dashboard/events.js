/* The event log: every event of the execution in one array, the stored ones read through the API a
 * page at a time in the background, then the live ones appended. Only the rows in view are in the
 * page once the log is long (rows of a fixed height; spacers above and below give the full scroll
 * height), so a log of 100,000 events costs what 40 rows cost. A filter by type and a search over
 * type, step and data narrow it; a click on a row shows the event's data in the JSON viewer. */
import { $, TERMINAL, announce, api, el, formatNumber, short } from "./core.js";
import { jsonView } from "./json.js";

const ROW = 26; // px: .log-scroll tbody tr in log.css
const OVERSCAN = 12; // rows drawn beyond each edge of the view
const WHOLE = 250; // up to this many rows the log is drawn whole
const FIRST_PAGE = 200; // a small first page draws the log soon; the rest come 1,000 at a time
const PAGE = 1000;
const SCAN = 5000; // events searched between pauses

const clock = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit", fractionalSecondDigits: 3, hour12: false });

/** "14:03:07.123" in the reader's time zone. */
export function clockTime(iso) {
  const t = Date.parse(iso);
  return Number.isFinite(t) ? clock.format(t) : "";
}

const nextTask = () => new Promise((resolve) => setTimeout(resolve, 0));

/* The part of the execution page: the stored events up to the page's seq first, then the live
 * ones as they come (held back until the stored ones are in, so the log stays in seq order). */
export function eventLogPart(view) {
  const log = createEventLog($("#event-log"), {
    stepName: (event) => (view.steps.get(event.step_id) || {}).name || (event.data && event.data.name) || "",
    expected: view.lastSeq,
    follow: !TERMINAL.has(view.state),
  });
  const upTo = view.lastSeq;
  const early = [];
  let loaded = false;
  (async () => {
    let after = 0;
    try {
      while (after < upTo) {
        const limit = after === 0 ? FIRST_PAGE : PAGE;
        const page = await api("GET", `executions/${view.id}/events?after=${after}&limit=${limit}`, undefined, view.tenant);
        log.addMany(page.results.filter((event) => event.seq <= upTo));
        if (after === 0) performance.mark("enact:log-first-page");
        if (!page.results.length) break;
        after = page.results[page.results.length - 1].seq;
        await nextTask(); // the page stays responsive between pages
      }
    } catch (error) {
      log.failed(error);
    }
    loaded = true;
    log.addMany(early);
    early.length = 0;
    log.done();
    performance.mark("enact:log-loaded");
  })();
  return { event(event) { if (loaded) log.add(event); else early.push(event); } };
}

/** createEventLog(box, { stepName(event), expected, follow }) → { add, addMany, done, failed }. */
export function createEventLog(box, options = {}) {
  const stepName = options.stepName || (() => "");
  const scroller = $(".log-scroll", box);
  const table = $("table", scroller);
  const body = table.tBodies[0];
  const padTop = $(".log-pad-top", scroller);
  const padBottom = $(".log-pad-bottom", scroller);
  const typeSelect = $("#log-type", box);
  const search = $("#log-search", box);
  const count = $("#log-count", box);
  const detail = $("#log-detail", box);

  const all = []; // every event, in seq order
  let shown = all; // what the filter and search let through (all itself when neither is set)
  const types = new Set();
  let type = "";
  let words = [];
  let loading = true;
  // Stick to the newest row: from the start for a run still going, else once the reader scrolls
  // to the bottom.
  let follow = !!options.follow;
  let selected = null;
  let drawing = false;
  let countDirty = true;
  let generation = 0; // of the filter and search: a scan stops when a newer one starts
  let scanning = false; // a scan is under way: it takes the new events in itself, in order
  let tell = false;
  let failure = ""; // why the stored events could not all be read // read the count out (after the reader changed the filter or the search)

  const text = (event) => (event._text ??= `${event.type} ${stepName(event)} ${JSON.stringify(event.data)}`.toLowerCase());
  const matches = (event) => (!type || event.type === type) && words.every((w) => text(event).includes(w));
  const filtering = () => type !== "" || words.length > 0;
  const atBottom = () => scroller.scrollTop + scroller.clientHeight >= scroller.scrollHeight - ROW;

  function row(event) {
    const name = stepName(event);
    return el("tr", { "data-seq": event.seq, "aria-selected": selected === event ? "true" : "false", class: "type-" + event.type.replace(/^data-/, "") },
      el("td", {}, el("button", { type: "button", class: "log-open", text: event.seq, "aria-label": `Event ${event.seq}: show its data` })),
      el("td", { text: clockTime(event.timestamp), title: event.timestamp }),
      el("td", { text: event.type, title: event.type }),
      el("td", { text: name, title: name }),
      el("td", {}, el("code", { text: short(event.data, 160) })));
  }

  function draw() {
    drawing = false;
    const height = scroller.clientHeight || 400;
    const head = table.tHead ? table.tHead.offsetHeight : 0;
    // Following, the view is the last rows; else where the reader scrolled to.
    const top = Math.max(0, follow ? shown.length * ROW - (height - head) : scroller.scrollTop - head);
    // A short log is drawn whole (the browser's find sees every row); a long one only in view.
    const whole = shown.length <= WHOLE;
    const first = whole ? 0 : Math.max(0, Math.floor(top / ROW) - OVERSCAN);
    const last = whole ? shown.length : Math.min(shown.length, Math.ceil((top + height) / ROW) + OVERSCAN);
    padTop.style.height = first * ROW + "px";
    padBottom.style.height = (shown.length - last) * ROW + "px";
    const rows = [];
    for (let i = first; i < last; i++) rows.push(row(shown[i]));
    body.replaceChildren(...rows);
    if (follow) scroller.scrollTop = scroller.scrollHeight;
    if (countDirty) writeCount();
    if (tell) { tell = false; announce(count.textContent); }
  }

  function schedule() {
    if (drawing) return;
    drawing = true;
    requestAnimationFrame(draw);
  }

  function writeCount() {
    countDirty = false;
    const partial = loading && options.expected > all.length;
    const n = formatNumber(all.length);
    const verb = shown.length === 1 ? "matches" : "match";
    if (!filtering()) count.textContent = partial ? `${n} of ${formatNumber(options.expected)} events loaded…` : `${n} ${all.length === 1 ? "event" : "events"}`;
    else if (scanning) count.textContent = `Searching… ${formatNumber(shown.length)} found so far`;
    else if (partial) count.textContent = `${formatNumber(shown.length)} of the ${n} events loaded so far ${verb}…`;
    else count.textContent = `${formatNumber(shown.length)} of ${n} ${all.length === 1 ? "event" : "events"} ${verb}`;
    if (failure) count.textContent += ". " + failure;
  }

  /* The filter and search again over the whole log, a slice at a time with a pause between (a
   * search over 100,000 events must not freeze the page); a newer change stops an older scan. */
  async function refilter() {
    const mine = ++generation;
    if (!filtering()) { scanning = false; shown = all; countDirty = tell = true; schedule(); return; }
    const found = [];
    shown = found;
    scanning = true;
    for (let i = 0; i < all.length;) {
      const end = Math.min(all.length, i + SCAN);
      for (; i < end; i++) if (matches(all[i])) found.push(all[i]);
      countDirty = true;
      schedule();
      if (i < all.length) { await nextTask(); if (mine !== generation) return; }
    }
    scanning = false;
    countDirty = tell = true;
    schedule();
  }

  function addType(name) {
    if (types.has(name)) return;
    types.add(name);
    const option = el("option", { value: name, text: name });
    const after = [...typeSelect.options].slice(1).find((o) => o.value > name);
    typeSelect.insertBefore(option, after || null);
  }

  function take(events) {
    if (!events.length) return;
    for (const event of events) {
      all.push(event);
      addType(event.type);
      if (shown !== all && !scanning && matches(event)) shown.push(event);
    }
    countDirty = true;
    schedule();
  }

  function open(event) {
    selected = event;
    for (const tr of body.rows) tr.setAttribute("aria-selected", String(tr.dataset.seq === String(event.seq)));
    const name = stepName(event);
    detail.hidden = false;
    detail.replaceChildren(
      el("div", { class: "log-detail-head" },
        el("strong", { text: `Event ${event.seq}` }), el("span", { text: " " + event.type }),
        name ? el("span", { class: "hint", text: " · " + name }) : null,
        el("span", { class: "hint", text: " · " + clockTime(event.timestamp) }),
        el("button", { type: "button", class: "log-close", text: "Close", "aria-label": "Close the event's data" })),
      jsonView(event.data, { open: 2, label: "Copy the event's data" }));
    $(".log-close", detail).addEventListener("click", () => { detail.hidden = true; selected = null; schedule(); });
  }

  // The reader's own scrolling decides whether the log follows: at the bottom it does.
  scroller.addEventListener("scroll", () => { follow = atBottom(); schedule(); }, { passive: true });
  body.addEventListener("click", (e) => {
    const tr = e.target.closest("tr[data-seq]");
    if (!tr) return;
    const seq = Number(tr.dataset.seq);
    const event = shown.find((x) => x.seq === seq) || all.find((x) => x.seq === seq);
    if (event) open(event);
  });
  typeSelect.addEventListener("change", () => { type = typeSelect.value; refilter(); });
  let debounce = null;
  search.addEventListener("input", () => {
    clearTimeout(debounce);
    debounce = setTimeout(() => { words = search.value.toLowerCase().split(/\s+/).filter(Boolean); refilter(); }, 200);
  });
  window.addEventListener("resize", schedule, { passive: true });
  schedule();

  return {
    add(event) { take([event]); },
    addMany(events) { take(events); },
    done() {
      loading = false;
      box.dataset.loaded = "all";
      countDirty = true;
      schedule();
    },
    failed(error) { failure = `The rest of the log could not be read (${error.message}); reload the page to try again.`; countDirty = true; schedule(); },
    get events() { return all; },
  };
}

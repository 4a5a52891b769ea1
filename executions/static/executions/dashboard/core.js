/* What every page of the dashboard shares: DOM helpers, the API, websockets that come back by
 * themselves, and how numbers, sizes, money, durations and times are written. */

export const TERMINAL = new Set(["completed", "failed", "cancelled"]);

export function $(selector, root = document) { return root.querySelector(selector); }

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    // Through the style object: a style attribute would need 'unsafe-inline' (CSP).
    else if (key === "style") Object.assign(node.style, value);
    else node.setAttribute(key, value);
  }
  for (const child of children) if (child !== null && child !== undefined) node.append(child);
  return node;
}

export function cookie(name) {
  const found = document.cookie.split("; ").find((c) => c.startsWith(name + "="));
  return found ? decodeURIComponent(found.slice(name.length + 1)) : "";
}

export function short(value, max = 200) {
  const text = typeof value === "string" ? value : JSON.stringify(value);
  return text && text.length > max ? text.slice(0, max) + "…" : text ?? "";
}

export function stateBadge(node, state) {
  node.className = "state state-" + state;
  node.textContent = state;
}

/* A websocket that comes back by itself. `url()` is asked again on each reconnect, so it can
 * carry the last seq seen; the banner shows while the connection is down. */
export function liveSocket(url, onMessage) {
  const banner = $("#connection");
  let delay = 250;
  let busy = 0; // the wait after a refusal for too many connections, growing to a minute
  let socket = null;
  let closedByUs = false;
  function open() {
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    socket = new WebSocket(scheme + location.host + url());
    socket.onopen = () => { delay = 250; busy = 0; banner.hidden = true; document.body.dataset.live = "on"; };
    socket.onmessage = (message) => onMessage(JSON.parse(message.data));
    socket.onclose = (event) => {
      document.body.dataset.live = "off";
      if (closedByUs) return;
      if (event.code === 4429) {
        // Too many live connections for this user just now (other tabs): try again later, less often.
        banner.hidden = false;
        busy = Math.min(busy ? busy * 2 : 5000, 60000);
        setTimeout(open, busy * (0.75 + Math.random() / 2));
        return;
      }
      if (event.code >= 4400) return; // refused: reconnecting would not help
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

/* The REST API with the page's session (CSRF token, tenant header). Errors carry the API's message. */
export async function api(method, path, body, tenant) {
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

/* --- how things are written ------------------------------------------------------------------ */

const numbers = new Intl.NumberFormat(undefined);
const money = new Intl.NumberFormat(undefined, { style: "currency", currency: "USD", minimumFractionDigits: 2, maximumFractionDigits: 4 });

/** 1234567 → "1,234,567" in the reader's locale. */
export function formatNumber(value) { return value === null || value === undefined || value === "" ? "" : numbers.format(Number(value)); }

/** 1073741824 → "1 GiB". */
export function formatBytes(value) {
  let n = Number(value);
  if (!Number.isFinite(n)) return "";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let unit = 0;
  while (Math.abs(n) >= 1024 && unit < units.length - 1) { n /= 1024; unit += 1; }
  return (unit === 0 ? numbers.format(n) : new Intl.NumberFormat(undefined, { maximumFractionDigits: n < 10 ? 1 : 0 }).format(n)) + " " + units[unit];
}

/** 100 → "$100.00", 0.00042 → "$0.0004". */
export function formatUsd(value) { return value === null || value === undefined ? "" : money.format(Number(value)); }

/** 950 → "950 ms", 83000 → "1 min 23 s", 7384000 → "2 h 3 min". */
export function formatDuration(ms) {
  if (ms === null || ms === undefined || !Number.isFinite(Number(ms))) return "";
  ms = Math.max(0, Math.round(Number(ms)));
  if (ms < 1000) return ms + " ms";
  const s = ms / 1000;
  if (s < 60) return (s < 10 ? s.toFixed(1) : Math.round(s)) + " s";
  const m = Math.floor(s / 60), h = Math.floor(m / 60), d = Math.floor(h / 24);
  if (d) return `${d} d ${h % 24} h`;
  if (h) return `${h} h ${m % 60} min`;
  return `${m} min ${Math.round(s % 60)} s`;
}

const zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
const clock = new Intl.DateTimeFormat(undefined, { year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit", timeZoneName: "short" });
const relative = new Intl.RelativeTimeFormat(undefined, { numeric: "auto" });

/** An ISO time in the reader's time zone, the zone named: "5 Dec 2026, 14:03:07 CET". */
export function localTime(iso) { return iso ? clock.format(new Date(iso)) : ""; }

/** "3 minutes ago", "in 2 hours". */
export function relativeTime(iso, now = Date.now()) {
  if (!iso) return "";
  const seconds = (Date.parse(iso) - now) / 1000;
  const steps = [[60, "second"], [60, "minute"], [24, "hour"], [30, "day"], [12, "month"], [Infinity, "year"]];
  let value = seconds;
  for (const [size, unit] of steps) {
    if (Math.abs(value) < size) return relative.format(Math.round(value), unit);
    value /= size;
  }
  return "";
}

/** Every <time datetime> under root is written in the reader's time zone (its title says which),
 * and those marked data-relative also say how long ago. */
export function localizeTimes(root = document) {
  for (const node of root.querySelectorAll("time[datetime]")) {
    const iso = node.getAttribute("datetime");
    if (!iso) continue;
    node.textContent = "relative" in node.dataset ? relativeTime(iso) : localTime(iso);
    node.title = localTime(iso) + " (" + zone + ")";
  }
}

export const timeZone = zone;

/** A button that copies `text` and says so. */
export function copyButton(text, label = "Copy") {
  const button = el("button", { type: "button", class: "copy", "aria-label": label + ": " + short(text, 60), title: "Copy to the clipboard", text: "Copy" });
  button.addEventListener("click", async () => {
    try { await navigator.clipboard.writeText(text); button.textContent = "Copied"; announce("Copied."); }
    catch (e) { button.textContent = "Not copied"; }
    setTimeout(() => { button.textContent = "Copy"; }, 1200);
  });
  return button;
}

/** Read out a live change to screen readers (the page's one polite aria-live region). */
export function announce(text) {
  let region = document.getElementById("announcer");
  if (!region) {
    region = el("div", { id: "announcer", class: "visually-hidden", "aria-live": "polite", role: "status" });
    document.body.append(region);
  }
  region.textContent = text;
}

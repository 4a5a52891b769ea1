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

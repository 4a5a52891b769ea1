/* The usage, schedules and webhooks pages. The server renders them whole (numbers written, bars
 * sized through data-*); here: the reader's time zone named, a day's figures read out when its
 * column is touched or focused (a title shows on hover only), and a new secret's copy button. */
import { $, announce, copyButton, timeZone } from "./core.js";

/** Where the page says "Times are in UTC", name the zone its times are now written in. */
function nameTheZone() {
  for (const node of document.querySelectorAll(".zone-name")) node.textContent = "your time zone, " + timeZone;
}

/** Each day's column can be focused or tapped; its figures go to the chart's readout line. */
function readableColumns() {
  for (const chart of document.querySelectorAll(".day-chart")) {
    const caption = $("figcaption", chart);
    const readout = document.createElement("output");
    readout.className = "readout";
    caption.append(readout);
    const show = (day) => {
      readout.textContent = day.getAttribute("aria-label");
      for (const other of chart.querySelectorAll(".day.picked")) other.classList.remove("picked");
      day.classList.add("picked");
    };
    for (const day of chart.querySelectorAll(".day")) {
      day.tabIndex = 0;
      day.addEventListener("focus", () => show(day));
      day.addEventListener("mouseenter", () => show(day));
      day.addEventListener("click", () => { show(day); announce(day.getAttribute("aria-label")); });
    }
  }
}

export function usagePage() {
  readableColumns();
}

export function schedulesPage() {
  nameTheZone();
}

export function webhooksPage() {
  nameTheZone();
  for (const secret of document.querySelectorAll("[data-secret]")) {
    secret.after(copyButton(secret.textContent, "Copy the new secret"));
  }
}

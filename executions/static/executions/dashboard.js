/* The dashboard's script: plain ES modules the browser loads as they are (no build step), one per
 * part of a page, in dashboard/. No inline script or style anywhere (the Content Security Policy
 * refuses them): <body data-page> names the page's own part. */
import { localizeTimes } from "./dashboard/core.js";
import { executionPage } from "./dashboard/execution.js";
import { executionsPage } from "./dashboard/list.js";
import { schedulesPage, usagePage, webhooksPage } from "./dashboard/usage.js";

/* What every page does: times rendered by the server are written in the reader's time zone,
 * sizes given as data (bars, columns) become styles, and the tenant switcher submits on change. */
function start() {
  localizeTimes(document);
  for (const node of document.querySelectorAll("[data-width]")) node.style.width = node.dataset.width + "%";
  for (const node of document.querySelectorAll("[data-height]")) node.style.height = node.dataset.height + "%";
  for (const select of document.querySelectorAll("select[data-submit-on-change]")) {
    select.addEventListener("change", () => select.form.submit());
  }
  const pages = { executions: executionsPage, execution: executionPage };
  Object.assign(pages, { usage: usagePage, schedules: schedulesPage, webhooks: webhooksPage });
  const run = pages[document.body.dataset.page];
  if (run) run();
}

start();

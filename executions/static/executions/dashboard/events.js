/* The event log. createEventLog(box) returns { add(event) } for each event in seq order. */
import { $, api, el, short } from "./core.js";

/* The part of the execution page: the stored events first (read through the API a page at a
 * time), then the live ones as they come. */
export function eventLogPart(view) {
  const log = createEventLog($("#events"));
  const upTo = view.lastSeq;
  const early = [];
  let loaded = false;
  (async () => {
    let after = 0;
    while (after < upTo) {
      const page = await api("GET", `executions/${view.id}/events?after=${after}&limit=500`, undefined, view.tenant);
      for (const event of page.results) if (event.seq <= upTo) log.add(event);
      if (!page.results.length) break;
      after = page.results[page.results.length - 1].seq;
    }
    loaded = true;
    for (const event of early) log.add(event);
  })();
  return { event(event) { if (loaded) log.add(event); else early.push(event); } };
}

export function createEventLog(box) {
  const body = box.tBodies[0];
  return {
    add(event) {
      body.append(el("tr", { "data-seq": event.seq }, el("td", { text: event.seq }), el("td", { text: event.timestamp.slice(11, 23) }),
        el("td", { text: event.type }), el("td", {}, el("code", { text: short(event.data, 300) }))));
    },
  };
}

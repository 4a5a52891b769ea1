/* The event log. createEventLog(box) returns { add(event) } for each event in seq order. */
import { el, short } from "./core.js";

export function createEventLog(box) {
  const body = box.tBodies[0];
  return {
    add(event) {
      body.append(el("tr", { "data-seq": event.seq }, el("td", { text: event.seq }), el("td", { text: event.timestamp.slice(11, 23) }),
        el("td", { text: event.type }), el("td", {}, el("code", { text: short(event.data, 300) }))));
    },
  };
}

/* The execution's child executions (a node that runs a blueprint as an execution of its own):
 * view.childRuns, id → { id, blueprint, state, start, end, node }, from the page and then from
 * the tenant's feed while any of them, or the execution itself, is unfinished. The timeline draws
 * each under the step of the node that started it, linked to the child's page. */
import { TERMINAL, liveSocket } from "./core.js";

function childRun(c) {
  return {
    id: c.id, blueprint: c.blueprint, state: c.state, node: c.node || "",
    start: Date.parse(c.started_at || c.created_at), end: c.ended_at ? Date.parse(c.ended_at) : null,
  };
}

export function childrenPart(view) {
  view.childRuns = new Map((view.page.child_runs || []).map((c) => [c.id, childRun(c)]));
  view.childrenChanged = new Set(view.childRuns.keys());
  let feed = null;
  const settled = () => TERMINAL.has(view.state) && [...view.childRuns.values()].every((c) => TERMINAL.has(c.state));

  function follow() {
    if (feed || settled()) return;
    feed = liveSocket(() => "/ws/executions/?tenant=" + encodeURIComponent(view.tenant), (frame) => {
      if (frame.type !== "execution" || frame.execution.parent_id !== view.id) return;
      const known = view.childRuns.get(frame.execution.id);
      const node = known ? known.node : "";
      view.childRuns.set(frame.execution.id, { ...childRun(frame.execution), node });
      view.childrenChanged.add(frame.execution.id);
      view.invalidate();
      if (settled()) { feed.close(); feed = null; }
    });
  }
  follow();
  return { render() { follow(); } };
}

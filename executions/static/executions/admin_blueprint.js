/* A blueprint's page in the admin: the shown version's graph, drawn as the dashboard draws an
 * execution's (dashboard/graph.js), from the outline the server rendered as JSON. */
import { drawGraph } from "./dashboard/graph.js";

const data = document.getElementById("blueprint-outline");
const box = document.getElementById("blueprint-graph");
if (data && box) {
  drawGraph(box, JSON.parse(data.textContent));
  box.dataset.drawn = "yes";
}

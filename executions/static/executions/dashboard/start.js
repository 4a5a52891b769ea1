/* The start form on the executions list: a blueprint, its input as JSON, checked before it is sent. */
import { $, api } from "./core.js";

export function startForm(tenant) {
  const form = $("#start-form");
  if (!form) return;
  const blueprints = JSON.parse($("#blueprints").textContent);
  const select = $("#start-blueprint");
  const input = $("#start-input");
  const error = $("#start-error");
  const describe = () => {
    const b = blueprints.find((x) => x.name === select.value);
    $("#start-description").textContent = b ? b.description : "";
    input.value = JSON.stringify(example(b ? b.input_schema : {}), null, 1);
  };
  select.addEventListener("change", describe);
  describe();
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.textContent = "";
    let value;
    try { value = JSON.parse(input.value); } catch (e) { error.textContent = "Input is not valid JSON: " + e.message; return; }
    const b = blueprints.find((x) => x.name === select.value);
    const problem = checkSchema(b ? b.input_schema : {}, value);
    if (problem) { error.textContent = problem; return; }
    try {
      const created = await api("POST", "executions", { blueprint: select.value, input: value }, tenant);
      location.href = "/executions/" + created.id + "/";
    } catch (e) { error.textContent = e.message; }
  });
}

export function example(schema) {
  if (!schema || schema.type !== "object") return {};
  const value = {};
  for (const name of schema.required || []) {
    const prop = (schema.properties || {})[name] || {};
    value[name] = prop.type === "integer" || prop.type === "number" ? (prop.minimum ?? 1) || 1 : prop.type === "boolean" ? false : "";
  }
  return value;
}

/* The checks the server makes first, so that a typo is caught before a round trip. */
export function checkSchema(schema, value, path = "input") {
  if (!schema || !schema.type) return null;
  const kind = Array.isArray(value) ? "array" : value === null ? "null" : Number.isInteger(value) ? "integer" : typeof value;
  const fits = schema.type === kind || (schema.type === "number" && kind === "integer");
  if (!fits) return `${path} must be ${schema.type === "object" ? "an" : "a"} ${schema.type}`;
  if (schema.type === "object") {
    for (const name of schema.required || []) if (!(name in value)) return `${path}.${name} is required`;
    for (const [name, prop] of Object.entries(schema.properties || {})) {
      if (name in value) { const problem = checkSchema(prop, value[name], `${path}.${name}`); if (problem) return problem; }
    }
    if (schema.additionalProperties === false) {
      const unknown = Object.keys(value).filter((k) => !(k in (schema.properties || {})));
      if (unknown.length) return `${path}.${unknown[0]} is not expected`;
    }
  }
  return null;
}

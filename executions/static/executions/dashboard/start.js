/* The start form on the executions list: a blueprint, its input as JSON (filled with an input the
 * blueprint takes as it is), checked before it is sent. On a phone it folds under a button. */
import { $, api } from "./core.js";

export function startForm(tenant) {
  const form = $("#start-form");
  if (!form) return;
  fold();
  const blueprints = JSON.parse($("#blueprints").textContent) || [];
  const select = $("#start-blueprint");
  const input = $("#start-input");
  const error = $("#start-error");
  const chosen = () => blueprints.find((x) => x.name === select.value);
  const describe = () => {
    const b = chosen();
    $("#start-description").textContent = b ? b.description : "";
    input.value = JSON.stringify(example(b ? b.input_schema : {}), null, 1);
    error.textContent = "";
  };
  select.addEventListener("change", describe);
  describe();
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.textContent = "";
    let value;
    try { value = JSON.parse(input.value); } catch (e) { error.textContent = "Input is not valid JSON: " + e.message; return; }
    const b = chosen();
    const problem = checkSchema(b ? b.input_schema : {}, value);
    if (problem) { error.textContent = problem; return; }
    try {
      const created = await api("POST", "executions", { blueprint: select.value, input: value }, tenant);
      location.href = "/executions/" + created.id + "/";
    } catch (e) { error.textContent = e.message; }
  });
}

/* On a narrow screen the form waits under its button, so the table has the width. */
function fold() {
  const card = $("#start");
  const toggle = $("#start-toggle");
  if (!card || !toggle) return;
  card.classList.add("folded");
  toggle.addEventListener("click", () => {
    const open = card.classList.toggle("open");
    toggle.setAttribute("aria-expanded", open ? "true" : "false");
    toggle.textContent = open ? "Hide the start form" : "Start an execution";
    if (open) $("#start-blueprint").focus();
  });
}

const clone = (value) => JSON.parse(JSON.stringify(value));

function typeOf(schema) {
  const type = Array.isArray(schema.type) ? schema.type.find((t) => t !== "null") || schema.type[0] : schema.type;
  if (type) return type;
  if (schema.properties || schema.required) return "object";
  if (schema.items) return "array";
  return undefined;
}

/** An input the schema takes: its first example, else its default, its first allowed value, or
 * one built from its type, required properties, lengths and bounds. */
export function example(schema) {
  if (!schema || typeof schema !== "object") return {};
  if (Array.isArray(schema.examples) && schema.examples.length) return clone(schema.examples[0]);
  if ("default" in schema) return clone(schema.default);
  if ("const" in schema) return clone(schema.const);
  if (Array.isArray(schema.enum) && schema.enum.length) return clone(schema.enum[0]);
  const branch = (schema.oneOf || schema.anyOf || [])[0];
  if (branch) return example(branch);
  switch (typeOf(schema)) {
    case "object": {
      const value = {};
      const props = schema.properties || {};
      for (const name of schema.required || []) value[name] = example(props[name] || {});
      for (const [name, prop] of Object.entries(props)) if (!(name in value) && prop && "default" in prop) value[name] = clone(prop.default);
      return value;
    }
    case "array": return Array.from({ length: schema.minItems || 0 }, () => example(schema.items || {}));
    case "string": return exampleString(schema);
    case "integer": return exampleNumber(schema, true);
    case "number": return exampleNumber(schema, false);
    case "boolean": return false;
    case "null": return null;
    default: return {};
  }
}

function exampleString(schema) {
  const formats = { "date-time": new Date().toISOString(), date: new Date().toISOString().slice(0, 10), email: "someone@example.com", uri: "https://example.com/", uuid: "00000000-0000-4000-8000-000000000000" };
  let text = formats[schema.format] || "example";
  if (schema.minLength && text.length < schema.minLength) text = text.padEnd(schema.minLength, "x");
  if (schema.maxLength !== undefined && text.length > schema.maxLength) text = text.slice(0, schema.maxLength);
  return text;
}

function exampleNumber(schema, integer) {
  let low = schema.minimum ?? (schema.exclusiveMinimum !== undefined ? schema.exclusiveMinimum + (integer ? 1 : 0.5) : undefined);
  let high = schema.maximum ?? (schema.exclusiveMaximum !== undefined ? schema.exclusiveMaximum - (integer ? 1 : 0.5) : undefined);
  let value = low ?? (high !== undefined ? Math.min(1, high) : 1);
  if (integer) value = Math.ceil(value);
  if (high !== undefined && value > high) value = integer ? Math.floor(high) : high;
  if (schema.multipleOf) value = Math.ceil(value / schema.multipleOf) * schema.multipleOf;
  return value;
}

const article = (kind) => (/^[aeiou]/.test(kind) ? "an " : "a ") + kind;
const kindOf = (value) => Array.isArray(value) ? "array" : value === null ? "null" : Number.isInteger(value) ? "integer" : typeof value;

/* The checks the server makes first, in its words, so that a typo is caught before a round trip. */
export function checkSchema(schema, value, path = "input") {
  if (!schema || typeof schema !== "object") return null;
  const types = schema.type === undefined ? [] : Array.isArray(schema.type) ? schema.type : [schema.type];
  const kind = kindOf(value);
  if (types.length && !types.some((t) => t === kind || (t === "number" && kind === "integer"))) {
    return `${path} must be ${types.map(article).join(" or ")}`;
  }
  if (Array.isArray(schema.enum) && !schema.enum.some((x) => JSON.stringify(x) === JSON.stringify(value))) {
    return `${path} must be one of ${schema.enum.map((x) => JSON.stringify(x)).join(", ")}`;
  }
  if (kind === "string") {
    if (schema.minLength !== undefined && value.length < schema.minLength) return `${path} must be at least ${schema.minLength} characters`;
    if (schema.maxLength !== undefined && value.length > schema.maxLength) return `${path} must be at most ${schema.maxLength} characters`;
  }
  if (kind === "integer" || kind === "number") {
    if (schema.minimum !== undefined && value < schema.minimum) return `${path} must be at least ${schema.minimum}`;
    if (schema.maximum !== undefined && value > schema.maximum) return `${path} must be at most ${schema.maximum}`;
  }
  if (kind === "array") {
    if (schema.minItems !== undefined && value.length < schema.minItems) return `${path} has fewer than ${schema.minItems} items`;
    if (schema.maxItems !== undefined && value.length > schema.maxItems) return `${path} has more than ${schema.maxItems} items`;
    if (schema.items && typeof schema.items === "object") {
      for (let i = 0; i < value.length; i += 1) {
        const problem = checkSchema(schema.items, value[i], `${path}[${i}]`);
        if (problem) return problem;
      }
    }
  }
  if (kind === "object") {
    for (const name of schema.required || []) if (!(name in value)) return `${path}.${name} is required`;
    for (const [name, prop] of Object.entries(schema.properties || {})) {
      if (name in value) { const problem = checkSchema(prop, value[name], `${path}.${name}`); if (problem) return problem; }
    }
    if (schema.additionalProperties === false && !schema.patternProperties) {
      const unknown = Object.keys(value).filter((k) => !(k in (schema.properties || {}))).sort();
      if (unknown.length) return `${path} has unknown fields: ${unknown.join(", ")}`;
    }
  }
  return null;
}

// DOM helpers: elements built from text (never from HTML) and the formats the page shows numbers and times in.

export const $ = (id) => document.getElementById(id);

// el("li", {class: "x", testid: "y", "aria-label": "z", onclick: f}, "text", childNode, ...)
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "testid") node.dataset.testid = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

let uid = 0;
export const nextId = (prefix) => `${prefix}-${++uid}`;

export const pct = (x) => (typeof x === "number" ? `${(100 * x).toFixed(1)} %` : "–");
export const num = (x) => (typeof x === "number" ? (Number.isInteger(x) ? String(x) : x.toFixed(3)) : String(x ?? "–"));

export function when(value) {
  if (!value) return "–";
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? String(value) : date.toLocaleString();
}

// Lines: what each line makes (products, whole categories) and which devices are on it. A frame of a device on a
// line is answered only among that line's products; changing a line makes no model version.

import { api, enc, listOf } from "./api.js";
import { $, el } from "./dom.js";
import { refreshNow } from "./loop.js";
import { fail, say } from "./status.js";

let linesShown = "";

// ids separated by commas (a category may hold spaces), each trimmed
const names = (text) => [...new Set(String(text || "").split(",").map((name) => name.trim()).filter(Boolean))];

function lineRow(line) {
  const name = String(line.line);
  const devices = (line.devices || []).map(String);
  const remove = el(
    "button",
    {
      type: "button",
      testid: "line-delete",
      "aria-label": `Remove line ${name}`,
      onclick: async (event) => {
        event.target.disabled = true;
        try {
          await api(`/v1/lines/${enc(name)}`, { method: "DELETE" });
          say(`Line ${name} removed.`, "ok");
          refreshNow();
        } catch (exc) {
          fail(`Removing line ${name}`, exc);
          event.target.disabled = false;
        }
      },
    },
    "Remove",
  );
  const makes = [...(line.products || []), ...(line.categories || []).map((c) => `all of ${c}`)].join(", ");
  return el(
    "li",
    { class: "row line", testid: "line", "data-line": name },
    el("div", { class: "model-head" }, el("code", { class: "version" }, name), remove),
    el("p", { class: "small", testid: "line-makes" }, makes || "nothing"),
    el("p", { class: "muted small", testid: "line-devices" }, devices.length ? `Devices: ${devices.join(", ")}` : "No device on it."),
  );
}

export async function refreshLines() {
  const lines = listOf(await api("/v1/lines"), "lines").filter((line) => line && line.line);
  const shown = JSON.stringify(lines);
  if (shown === linesShown) return;
  linesShown = shown;
  $("lines-empty").hidden = lines.length > 0;
  $("line-list").replaceChildren(...lines.map(lineRow));
  const choice = $("device-line");
  const picked = choice.value;
  choice.replaceChildren(
    el("option", { value: "" }, "(no line: the whole catalog)"),
    ...lines.map((line) => el("option", { value: line.line }, String(line.line))),
  );
  choice.value = lines.some((line) => line.line === picked) ? picked : "";
}

async function saveLine(event) {
  event.preventDefault();
  const name = $("line-name").value.trim();
  const body = { products: names($("line-products").value), categories: names($("line-categories").value) };
  try {
    const saved = await api(`/v1/lines/${enc(name)}`, { method: "PUT", json: body });
    say(`Line ${name} ${saved.created ? "created" : "replaced"}: ${saved.products.length} product(s), ${saved.categories.length} categories.`, "ok");
    $("line-form").reset();
    refreshNow();
  } catch (exc) {
    fail(`Saving line ${name}`, exc);
  }
}

async function placeDevice(event) {
  event.preventDefault();
  const device = $("device-id").value.trim();
  const line = $("device-line").value || null;
  try {
    await api(`/v1/devices/${enc(device)}`, { method: "PUT", json: { line } });
    say(line ? `Device ${device} is on line ${line}.` : `Device ${device} is on no line.`, "ok");
    refreshNow();
  } catch (exc) {
    fail(`Putting device ${device} on a line`, exc);
  }
}

export function setupLines() {
  $("line-form").addEventListener("submit", saveLine);
  $("device-form").addEventListener("submit", placeDevice);
}

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
  const ranked = rankerText(line.rankers);
  return el(
    "li",
    { class: "row line", testid: "line", "data-line": name },
    el("div", { class: "model-head" }, el("code", { class: "version" }, name), remove),
    el("p", { class: "small", testid: "line-makes" }, makes || "nothing"),
    el("p", { class: "muted small", testid: "line-devices" }, devices.length ? `Devices: ${devices.join(", ")}` : "No device on it."),
    el("p", { class: `small${ranked.failed ? " warning-text" : ""}`, testid: "line-ranker" }, ranked.text),
  );
}

// How the workers rank the line's frames (GET /v1/lines' `rankers`: each worker's last try at the line's own
// classifier, on the current version and this edit of the line)
const absent = (value) => value === null || value === undefined;

function rankerText(rankers) {
  if (absent(rankers)) return { text: "How its frames are ranked: unknown (Redis did not answer).", failed: false };
  if (!rankers.length) {
    return {
      text: "Ranked by the version's head among its products: no worker has fitted the line's own classifier on "
        + "this version yet (one does when it first answers a frame on the line).",
      failed: false,
    };
  }
  const shown = (value) => (absent(value) ? "?" : String(value));
  const told = rankers.map((state) => {
    const where = `${shown(state.worker)} (version ${shown(state.version)})`;
    if (state.outcome === "fitted") {
      const threshold = absent(state.novelty_threshold)
        ? "the version's novelty threshold"
        : `novelty threshold ${Number(state.novelty_threshold).toFixed(3)}`;
      const seconds = Number(state.seconds || 0).toFixed(1);
      return `${where}: its own classifier over ${shown(state.products)} products, ${threshold}, fitted in ${seconds} s`;
    }
    if (state.outcome === "none") {
      return `${where}: the head alone (nothing to fit: fewer than two of its products with training photos, `
        + "more than 500, or a version without training photos)";
    }
    return `${where}: the head alone, its own classifier could not be fitted (see that worker's log)`;
  });
  return { text: `Ranked on ${told.join("; ")}.`, failed: rankers.some((state) => state.outcome === "failed") };
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

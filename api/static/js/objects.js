// Recent objects: the newest decisions per part (frames of one object, one event each), grouped by device, as
// GET /v1/objects gives them: what each device's last parts were, how many frames each had and what decided it.

import { api, listOf } from "./api.js";
import { $, el, pct, when } from "./dom.js";

const SHOWN = 40; // newest objects the page lists, over all devices
const REASONS = {
  agreed: "frames agreed",
  object_end: "last frame",
  max_frames: "most frames",
  next_object: "next part came",
  gap: "device went quiet",
};

let objectsShown = "";

function objectRow(item) {
  const known = item.status === "recognized";
  return el(
    "li",
    { class: known ? "object known" : "object unknown", testid: "object-row", "data-object": String(item.object) },
    el("span", { class: "object-name" }, String(item.object)),
    " ",
    el("strong", { testid: "object-product" }, known ? String(item.product) : "unknown"),
    item.category && !known ? ` (${item.category}?)` : "",
    " · ",
    el("span", { testid: "object-frames" }, `${item.agreeing}/${item.frames} frames agree`),
    ` · ${pct(item.confidence)} · ${REASONS[item.reason] ?? item.reason} · ${when(item.decided_at)}`,
  );
}

function deviceGroup(device, items) {
  return el(
    "li",
    { class: "device-objects", testid: "objects-device", "data-device": device },
    el("h3", {}, device),
    el("ul", { class: "rows" }, items.map(objectRow)),
  );
}

export async function refreshObjects() {
  const objects = listOf(await api(`/v1/objects?limit=${SHOWN}`), "objects");
  const shown = JSON.stringify(objects.map((item) => [item.device, item.object, item.decided_at]));
  if (shown === objectsShown) return;
  objectsShown = shown;
  const byDevice = new Map();
  for (const item of objects) {
    const device = String(item.device);
    if (!byDevice.has(device)) byDevice.set(device, []);
    byDevice.get(device).push(item);
  }
  $("object-list").replaceChildren(...[...byDevice].map(([device, items]) => deviceGroup(device, items)));
  $("objects-empty").hidden = objects.length > 0;
}

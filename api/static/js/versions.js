// Model versions: each one's figures and report plots, the current one marked, any other one activated (or
// rolled back to) with a button.

import { api, enc, listOf, loadImage } from "./api.js";
import { $, el, num, pct, when } from "./dom.js";
import { refreshNow } from "./loop.js";
import { fail, say } from "./status.js";

const FIGURES = [
  ["products", "Products", num],
  ["images", "Photos", num],
  ["cv_accuracy", "CV accuracy", pct],
  ["cv_macro_f1", "CV macro-F1", num],
  ["cv_coverage", "Coverage", pct],
  ["cv_precision_when_recognized", "Precision when named", pct],
  ["product_threshold", "Product threshold", num],
  ["open_set.auroc", "Never-seen AUROC", num],
  ["open_set.unseen_refused", "Never-seen refused", pct],
  ["open_set.known_answered_right", "Known answered right", pct],
];

// what a full training counted that an enrolment changes (its own line says what it added)
const STALE_AFTER_ENROLMENT = new Set(["products", "images"]);

function pick(doc, path) {
  return path.split(".").reduce((value, key) => (value && typeof value === "object" ? value[key] : undefined), doc);
}

// every scalar in the training summary, one level of nesting flattened ("open_set.auroc")
function scalars(doc, prefix = "", depth = 0) {
  const out = [];
  for (const [key, value] of Object.entries(doc || {})) {
    const name = prefix ? `${prefix}.${key}` : key;
    if (value === null || ["number", "string", "boolean"].includes(typeof value)) out.push([name, value]);
    else if (typeof value === "object" && !Array.isArray(value) && depth < 1) out.push(...scalars(value, name, depth + 1));
  }
  return out;
}

let modelsShown = "";
export let currentVersion = null; // as the newest read of /v1/models said (null before it)

function modelRow(entry, current) {
  const version = String(entry.version);
  const trained = entry.training || entry.report || entry.figures || {};
  // an enrolled version carries the full training's figures and its own never-seen calibration
  const enrolment = entry.enrolment && typeof entry.enrolment === "object" ? entry.enrolment : null;
  const training = enrolment ? { ...trained, open_set: enrolment.open_set ?? trained.open_set } : trained;
  const isCurrent = version === current;
  const older = current && version < current; // versions are UTC timestamps: they sort as they were made
  const figures = FIGURES.filter(([key]) => !(enrolment && STALE_AFTER_ENROLMENT.has(key)))
    .map(([key, label, format]) => [label, pick(training, key), format])
    .filter(([, v]) => v !== undefined && v !== null);
  const plots = (entry.report_files || []).filter((file) => String(file).toLowerCase().endsWith(".png"));
  const report = el("details", { class: "report", testid: "model-report" }, el("summary", {}, `Report plots (${plots.length})`));
  const gallery = el("div", { class: "plots" });
  report.append(gallery);
  let loaded = false;
  report.addEventListener("toggle", () => {
    if (!report.open || loaded) return;
    loaded = true;
    for (const file of plots) {
      const alt = `${file} of model version ${version}`;
      const img = el("img", { class: "plot", alt, testid: "model-plot", "data-file": file });
      const figure = el("figure", {});
      const zoom = el("button", { type: "button", class: "zoom", "aria-pressed": "false", title: "Enlarge or shrink" }, img);
      zoom.addEventListener("click", () => {
        zoom.setAttribute("aria-pressed", String(figure.classList.toggle("wide")));
      });
      figure.append(zoom, el("figcaption", { class: "muted small" }, String(file)));
      gallery.append(figure);
      loadImage(img, `/v1/models/${enc(version)}/report/${enc(file)}`, alt);
    }
  });
  const activate = isCurrent
    ? null
    : el(
        "button",
        {
          type: "button",
          testid: "model-activate",
          "aria-label": `${older ? "Roll back to" : "Activate"} model version ${version}`,
          onclick: async (event) => {
            event.target.disabled = true;
            say(`Activating model version ${version}…`, "busy");
            try {
              await api(`/v1/models/${enc(version)}/activate`, { method: "POST" });
              say(`Model version ${version} is now current; the workers load it now.`, "ok");
              refreshNow();
            } catch (exc) {
              fail(`Activating model version ${version}`, exc);
              event.target.disabled = false;
            }
          },
        },
        older ? "Roll back to this" : "Activate",
      );
  return el(
    "li",
    { class: `row model${isCurrent ? " current" : ""}`, testid: "model", "data-version": version },
    el(
      "div",
      { class: "model-head" },
      el("code", { class: "version" }, version),
      isCurrent ? el("span", { class: "badge current", testid: "model-current" }, "current") : null,
      el("span", { class: "muted small" }, `${entry.name ?? ""} ${entry.created_at ? `· ${when(entry.created_at)}` : ""}`),
      activate,
    ),
    enrolment
      ? el(
          "p",
          { class: "small", testid: "model-enrolment" },
          `Enrolled ${enrolment.photos ?? "?"} photo(s) of ${enrolment.product ?? "?"}`,
          enrolment.new_product ? " (new product)" : "",
          enrolment.base_version ? ` on ${enrolment.base_version}` : "",
          enrolment.trained_version ? `; cross-validated figures from the full training ${enrolment.trained_version}` : "",
        )
      : null,
    entry.problem ? el("p", { class: "error-text small", testid: "model-problem" }, String(entry.problem)) : null,
    figures.length
      ? el(
          "dl",
          { class: "figures", testid: "model-figures" },
          figures.map(([label, value, format]) => el("div", {}, el("dt", {}, label), el("dd", {}, format(value)))),
        )
      : el("p", { class: "muted small" }, "No report figures."),
    el(
      "details",
      { class: "all-figures" },
      el("summary", {}, "All figures"),
      el("dl", { class: "figures small" }, scalars(training).map(([k, v]) => el("div", {}, el("dt", {}, k), el("dd", {}, num(v))))),
    ),
    plots.length ? report : null,
  );
}

export async function refreshModels() {
  const doc = await api("/v1/models");
  const versions = listOf(doc, "versions").filter((v) => v && v.version);
  const current = (doc && typeof doc.current === "string" && doc.current) || (versions.find((v) => v.current) || {}).version || null;
  versions.sort((a, b) => (String(a.version) < String(b.version) ? 1 : -1));
  currentVersion = current;
  $("count-version").textContent = current ?? "none";
  // rebuild only when something changed, so open reports stay open
  const shown = JSON.stringify([current, versions.map((v) => v.version)]);
  if (shown === modelsShown) return;
  modelsShown = shown;
  $("model-list").replaceChildren(...versions.map((entry) => modelRow(entry, current)));
}

export function setupModels() {
  $("models-refresh").addEventListener("click", () => {
    modelsShown = ""; // rebuild the list, even if no version changed
    refreshNow();
  });
}

// Enrolments: the ones this tab started (kept for the tab) and, where the API lists them, every recent one, each
// followed until it is done or failed.

import { ApiError, api, enc, listOf } from "./api.js";
import { refreshCatalog } from "./catalog.js";
import { $, el, when } from "./dom.js";
import { refreshNow } from "./loop.js";
import { fail, say } from "./status.js";

const ENROLMENTS_KEY = "partsight.enrolments";
const MAX_ENROLMENTS_SHOWN = 50;
const POLL_MS = 1000; // enrolments still queued or running
const FINAL = new Set(["done", "failed", "missing"]);

const enrolments = new Map(); // id -> {product, doc}
let listingSupported = true; // GET /v1/enrolments (all recent ones, also from the CLI and devices), when served

function saveTracked() {
  const tracked = [...enrolments.entries()].slice(-MAX_ENROLMENTS_SHOWN).map(([id, e]) => ({ id, product: e.product }));
  sessionStorage.setItem(ENROLMENTS_KEY, JSON.stringify(tracked));
}

export function loadTracked() {
  try {
    for (const { id, product } of JSON.parse(sessionStorage.getItem(ENROLMENTS_KEY) || "[]")) {
      if (typeof id === "string") enrolments.set(id, { product, doc: null });
    }
  } catch {
    sessionStorage.removeItem(ENROLMENTS_KEY);
  }
}

export function track(id, product) {
  if (!enrolments.has(id)) enrolments.set(id, { product, doc: null });
  saveTracked();
  renderEnrolments();
  pollEnrolments();
}

function stateOf(entry) {
  return entry.doc && entry.doc.state ? String(entry.doc.state) : "queued";
}

function lookAlikes(confusable) {
  // the existing products its photos were answered as in more than 10% of its fold answers
  if (!Array.isArray(confusable) || confusable.length === 0) return null;
  const named = confusable.map((c) => `${c.product} (${Math.round(Number(c.share) * 100)}%)`).join(", ");
  return el("span", { class: "warning-text small", testid: "enrolment-confusable" }, `looks like ${named}`);
}

function waitingFor(waiting, state) {
  // a queued request the store turned away for now: the head carries as many quick enrolments as it may while a
  // consolidation folds them in (minutes at hundreds of products); its outcome follows when that lands
  if (state !== "queued" || !waiting || typeof waiting !== "object") return null;
  const expected = waiting.expected_s;
  const more = typeof expected === "number" && Number.isFinite(expected) ? `, about ${Math.round(expected)} s more` : "";
  const what = waiting.for === "consolidation" ? "the running consolidation" : String(waiting.for ?? "the store");
  return el("span", { class: "warning-text small", testid: "enrolment-waiting", title: String(waiting.message ?? "") },
    `waits for ${what}${more}`);
}

export function renderEnrolments() {
  const entries = [...enrolments.entries()].sort((a, b) => (a[0] < b[0] ? 1 : -1)); // ids sort by time
  for (const [id] of entries.splice(MAX_ENROLMENTS_SHOWN)) enrolments.delete(id);
  $("enrolment-list").replaceChildren(
    ...entries.map(([id, entry]) => {
      const doc = entry.doc || {};
      const state = stateOf(entry);
      const error = doc.error ? `${doc.error.message ?? ""}${doc.error.code ? ` (${doc.error.code})` : ""}` : null;
      return el(
        "li",
        { class: `row enrolment ${state}`, testid: "enrolment", "data-id": id, "data-state": state },
        el("span", { class: `badge ${state}`, testid: "enrolment-state" }, state),
        el("strong", { testid: "enrolment-product" }, String(doc.product ?? entry.product ?? "?")),
        el("span", { class: "muted small" }, `${doc.photos ?? "?"} photo(s) · ${doc.source ?? "page"} · ${when(doc.created_at)}`),
        doc.version
          ? el("span", { class: "small" }, "made version ", el("code", { testid: "enrolment-version" }, String(doc.version)))
          : null,
        typeof doc.seconds === "number" ? el("span", { class: "muted small" }, `in ${doc.seconds.toFixed(1)} s`) : null,
        error ? el("span", { class: "error-text", testid: "enrolment-error" }, error) : null,
        waitingFor(doc.waiting, state),
        lookAlikes(doc.confusable_with),
        el("code", { class: "muted small id" }, id),
      );
    }),
  );
  $("enrolments-empty").hidden = entries.length > 0;
  const states = entries.map(([, entry]) => stateOf(entry));
  const active = states.filter((s) => !FINAL.has(s)).length;
  const failed = states.filter((s) => s === "failed").length;
  const done = states.filter((s) => s === "done").length;
  $("count-enrolments").textContent = `${active} in progress · ${done} done · ${failed} failed`;
}

let polling = false;

export async function pollEnrolments() {
  if (polling) return;
  polling = true;
  try {
    for (;;) {
      const active = [...enrolments.entries()].filter(([, entry]) => !FINAL.has(stateOf(entry)));
      if (!active.length) break;
      let finished = false;
      for (const [id, entry] of active) {
        try {
          entry.doc = await api(`/v1/enrolments/${enc(id)}`);
        } catch (exc) {
          if (exc instanceof ApiError && exc.status === 404) {
            entry.doc = { ...(entry.doc || {}), state: "missing", error: { code: exc.code, message: exc.message } };
          } else {
            fail(`Checking enrolment ${id}`, exc);
            continue;
          }
        }
        if (FINAL.has(stateOf(entry))) {
          finished = true;
          const doc = entry.doc;
          if (doc.state === "done") say(`Enrolment of ${doc.product} done: model version ${doc.version} is current.`, "ok");
          else fail(`Enrolment of ${doc.product ?? entry.product}`, new ApiError(0, doc.error?.code ?? "failed", doc.error?.message ?? "failed"));
        }
      }
      renderEnrolments();
      if (finished) {
        refreshCatalog().catch(() => {});
        refreshNow();
      }
      await new Promise((resolve) => setTimeout(resolve, POLL_MS));
    }
  } finally {
    polling = false;
  }
}

export async function refreshEnrolmentListing() {
  if (!listingSupported) return;
  let docs;
  try {
    docs = listOf(await api("/v1/enrolments?limit=20"), "enrolments");
  } catch (exc) {
    if (exc instanceof ApiError && (exc.status === 404 || exc.status === 405)) {
      listingSupported = false; // an API without the listing: show the enrolments this tab started
      return;
    }
    if (exc instanceof ApiError && exc.status === 403) return; // a token without the enrol scope: this tab's only
    throw exc;
  }
  for (const doc of docs) {
    if (!doc || !doc.id) continue;
    const entry = enrolments.get(doc.id) || { product: doc.product, doc: null };
    entry.doc = doc;
    enrolments.set(doc.id, entry);
  }
  renderEnrolments();
  pollEnrolments();
}

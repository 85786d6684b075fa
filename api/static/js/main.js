// The partsight operator page: vanilla JS over the /v1 HTTP API, no build step, no external resources.
// Everything the server sends is put into the page as text (textContent, text nodes), never as HTML.
// The entry module: index.html loads it with <script type="module">; each section of the page is a module here.

import { refreshCatalog } from "./catalog.js";
import { $ } from "./dom.js";
import { loadTracked, pollEnrolments, refreshEnrolmentListing, renderEnrolments } from "./enrolments.js";
import { setupLines, refreshLines } from "./lines.js";
import { refreshNow, startRefreshing } from "./loop.js";
import { refreshObjects } from "./objects.js";
import { setupProductForm } from "./products.js";
import { refreshReview, reviewCount } from "./review.js";
import { fail, say } from "./status.js";
import { setupToken } from "./token.js";
import { setupTry } from "./try.js";
import { currentVersion, refreshModels, setupModels } from "./versions.js";

const CATALOG_EVERY = 8; // refresh the catalog every this many ticks (and after each enrolment)

let ticks = 0;
let refreshFailing = false;

// one refresh of everything the page shows; the status line says the first thing that failed, and that the page
// is connected again once nothing does
async function refreshAll() {
  const jobs = [
    ["Reading the review queue", refreshReview],
    ["Reading the model versions", refreshModels],
    ["Reading the enrolments", refreshEnrolmentListing],
    ["Reading the lines", refreshLines],
    ["Reading the recent objects", refreshObjects],
  ];
  if (ticks++ % CATALOG_EVERY === 0) jobs.push(["Reading the catalog", refreshCatalog]);
  const results = await Promise.allSettled(jobs.map(([, job]) => job()));
  const failed = results.findIndex((r) => r.status === "rejected");
  if (failed >= 0) {
    refreshFailing = true;
    fail(jobs[failed][0], results[failed].reason);
  } else if (refreshFailing || $("status").dataset.kind === undefined) {
    refreshFailing = false;
    $("token").setAttribute("aria-invalid", "false");
    say(`Connected: ${reviewCount ?? 0} item(s) to review, model ${currentVersion ?? "none"}.`, "ok");
  }
}

function start() {
  setupToken();
  setupProductForm();
  setupTry();
  $("review-refresh").addEventListener("click", refreshNow);
  setupModels();
  setupLines();
  loadTracked();
  renderEnrolments();
  pollEnrolments();
  startRefreshing(refreshAll);
}

start();

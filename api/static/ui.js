// The partsight operator page: vanilla JS over the /v1 HTTP API, no build step, no external resources.
// Everything the server sends is put into the page as text (textContent, text nodes), never as HTML.

const TOKEN_KEY = "partsight.token";
const ENROLMENTS_KEY = "partsight.enrolments";
const DEVICE = "operator-page"; // the device id "try a photo" sends frames as
const REVIEW_LIMIT = 48;
const MAX_ENROLMENTS_SHOWN = 50;
const REFRESH_MS = 4000; // live counts, review queue, model versions
const POLL_MS = 1000; // enrolments still queued or running
const CATALOG_EVERY = 8; // refresh the catalog every this many ticks (and after each enrolment)
const FINAL = new Set(["done", "failed", "missing"]);
// the API's root, so the page also works behind a reverse proxy that mounts it under a path prefix
const BASE = location.pathname.replace(/\/ui(\/.*)?$/, "");

// ---------------------------------------------------------------- the API

class ApiError extends Error {
  constructor(status, code, message, retryAfter = null) {
    super(message);
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
  }
}

function token() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

async function api(path, { method = "GET", json, body, contentType, as = "json" } = {}) {
  const headers = new Headers();
  if (token()) headers.set("Authorization", `Bearer ${token()}`);
  if (json !== undefined) {
    headers.set("Content-Type", "application/json");
    body = JSON.stringify(json);
  } else if (contentType) {
    headers.set("Content-Type", contentType);
  }
  let response;
  try {
    response = await fetch(BASE + path, { method, headers, body, cache: "no-store" });
  } catch (exc) {
    throw new ApiError(0, "network", `cannot reach the API (${exc.message})`);
  }
  if (!response.ok) {
    let code = `http_${response.status}`;
    let message = response.statusText || "request failed";
    try {
      const doc = await response.json();
      if (doc && doc.error) {
        code = doc.error.code || code;
        message = doc.error.message || message;
      }
    } catch {
      // not JSON (a proxy's error page): keep the status text
    }
    throw new ApiError(response.status, code, message, response.headers.get("Retry-After"));
  }
  if (as === "blob") return response.blob();
  if (response.status === 204) return null;
  return response.json();
}

const enc = encodeURIComponent;

// a list the API may send bare or wrapped ({"items": [...]}, {"products": [...]})
function listOf(doc, key) {
  if (Array.isArray(doc)) return doc;
  if (doc && Array.isArray(doc[key])) return doc[key];
  if (doc && typeof doc[key] === "object" && doc[key] !== null) return Object.values(doc[key]);
  return [];
}

// ---------------------------------------------------------------- DOM helpers

const $ = (id) => document.getElementById(id);

// el("li", {class: "x", testid: "y", "aria-label": "z", onclick: f}, "text", childNode, ...)
function el(tag, props = {}, ...children) {
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
const nextId = (prefix) => `${prefix}-${++uid}`;

const pct = (x) => (typeof x === "number" ? `${(100 * x).toFixed(1)} %` : "–");
const num = (x) => (typeof x === "number" ? (Number.isInteger(x) ? String(x) : x.toFixed(3)) : String(x ?? "–"));

function when(value) {
  if (!value) return "–";
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? String(value) : date.toLocaleString();
}

// ---------------------------------------------------------------- the status line

let refreshFailing = false;

function say(text, kind = "ok") {
  const line = $("status");
  line.textContent = text;
  line.dataset.kind = kind;
  line.setAttribute("role", kind === "error" ? "alert" : "status");
}

function explain(what, exc) {
  if (!(exc instanceof ApiError)) return `${what} failed: ${exc && exc.message ? exc.message : exc}`;
  if (exc.status === 401) {
    return `${what}: not authorised (401). Enter a valid API token above and press "Use token". (${exc.message})`;
  }
  if (exc.status === 403) {
    return `${what}: this token does not have the right for that (403 forbidden). Ask for a token with that scope. (${exc.message})`;
  }
  const retry = exc.retryAfter ? ` Try again in ${exc.retryAfter} s.` : "";
  const http = exc.status ? `, HTTP ${exc.status}` : "";
  return `${what} failed: ${exc.message} (${exc.code}${http}).${retry}`;
}

function fail(what, exc) {
  const auth = exc instanceof ApiError && (exc.status === 401 || exc.status === 403);
  $("token").setAttribute("aria-invalid", auth ? "true" : "false");
  say(explain(what, exc), "error");
}

// ---------------------------------------------------------------- token

function setupToken() {
  const input = $("token");
  input.value = token();
  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const value = input.value.trim();
    if (value) sessionStorage.setItem(TOKEN_KEY, value);
    else sessionStorage.removeItem(TOKEN_KEY);
    input.setAttribute("aria-invalid", "false");
    say(value ? "Token set for this browser tab." : "No token: requests go without one.", "ok");
    refreshNow();
  });
  $("token-clear").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    input.value = "";
    say("Token forgotten.", "ok");
  });
}

// ---------------------------------------------------------------- catalog

const catalog = new Map(); // product id -> record

async function refreshCatalog() {
  const records = listOf(await api("/v1/products"), "products");
  catalog.clear();
  for (const record of records) if (record && record.product) catalog.set(String(record.product), record);
  const products = $("catalog-products");
  products.replaceChildren(
    ...[...catalog.values()]
      .sort((a, b) => String(a.product).localeCompare(String(b.product)))
      .map((r) =>
        el("option", {
          value: r.product,
          label: `${r.name ?? r.product} · ${r.category ?? "?"}${r.enrolled === false ? " · no photos yet" : ""}`,
        }),
      ),
  );
  const categories = [...new Set([...catalog.values()].map((r) => r.category).filter(Boolean))].sort();
  $("catalog-categories").replaceChildren(...categories.map((c) => el("option", { value: c })));
}

function productName(product) {
  const record = catalog.get(product);
  return record && record.name ? record.name : null;
}

// ---------------------------------------------------------------- answers (review items, "try a photo")

function answerSummary(answer, testid) {
  const status = answer && answer.status ? String(answer.status) : "?";
  const named = answer && answer.product ? String(answer.product) : null;
  const label = named ? `${productName(named) ?? (answer.catalog && answer.catalog.name) ?? named}` : null;
  return el(
    "p",
    { class: "summary", testid },
    el("span", { class: `badge ${status}`, testid: `${testid}-status` }, status),
    " ",
    named ? el("strong", { testid: `${testid}-product`, "data-product": named }, named) : el("em", {}, "no product"),
    label && label !== named ? el("span", { class: "muted" }, ` (${label})`) : null,
    // a named product's confidence; an unnamed frame's novelty (its best guesses are in the top-k list)
    named && typeof answer.confidence === "number" ? el("span", { class: "muted" }, ` · ${pct(answer.confidence)}`) : null,
    !named && answer && typeof answer.novelty === "number"
      ? el("span", { class: "muted" }, ` · novelty ${num(answer.novelty)}`)
      : null,
    answer && answer.category && !named ? el("span", { class: "muted" }, ` · category ${answer.category}`) : null,
  );
}

function topK(answer, testid) {
  const entries = (answer && Array.isArray(answer.top_k) ? answer.top_k : []).slice(0, 5);
  return el(
    "ol",
    { class: "topk", testid, "aria-label": "Best products" },
    entries.map((entry) =>
      el(
        "li",
        {},
        el("span", { class: "bar", "data-score": entry.score }, el("span", { class: "fill" })),
        el("span", { class: "name" }, String(entry.product)),
        el("span", { class: "score" }, pct(entry.score)),
      ),
    ),
  );
}

function matchesList(answer, testid) {
  const matches = answer && Array.isArray(answer.matches) ? answer.matches : [];
  if (!matches.length) return el("p", { class: "muted small", testid }, "No nearest photos.");
  return el(
    "ul",
    { class: "matches", testid, "aria-label": "Nearest enrolled photos" },
    matches.slice(0, 3).map((m) =>
      el("li", { title: String(m.photo ?? "") }, `${m.product} `, el("span", { class: "muted" }, `cos ${num(m.similarity)}`)),
    ),
  );
}

// score bars: widths set through the CSSOM (allowed under a strict style-src, unlike style="" attributes)
function sizeBars(root) {
  for (const bar of root.querySelectorAll(".bar")) {
    const score = Math.max(0, Math.min(1, Number(bar.dataset.score) || 0));
    bar.firstChild.style.width = `${(100 * score).toFixed(1)}%`;
  }
}

// ---------------------------------------------------------------- review queue

const reviewCards = new Map(); // item id -> {node, url}
let reviewCount = null;

async function loadImage(img, path, alt) {
  try {
    const blob = await api(path, { as: "blob" });
    const url = URL.createObjectURL(blob);
    img.src = url;
    return url;
  } catch (exc) {
    img.alt = `${alt} (image unavailable: ${exc.message})`;
    img.classList.add("broken");
    return null;
  }
}

function reviewCard(item) {
  const answer = item.answer || {};
  const inputId = nextId("label");
  const what = `frame ${item.frame_id ?? item.id} from ${item.device ?? "?"}`;
  const img = el("img", { class: "thumb", testid: "review-thumb", alt: `Photo of ${what}`, width: 112, height: 112 });
  const input = el("input", {
    id: inputId,
    list: "catalog-products",
    autocomplete: "off",
    placeholder: "product id",
    required: true,
    testid: "review-label-input",
    "aria-label": `Product for ${what}`,
  });
  const labelButton = el("button", { type: "submit", testid: "review-label-button", "aria-label": `Label ${what}` }, "Label");
  const dismissButton = el(
    "button",
    { type: "button", class: "quiet", testid: "review-dismiss-button", "aria-label": `Dismiss ${what}` },
    "Dismiss",
  );
  const form = el(
    "form",
    { class: "label-form", testid: "review-label-form" },
    el("label", { for: inputId, class: "small" }, "Label as"),
    input,
    labelButton,
    dismissButton,
  );
  const node = el(
    "li",
    { class: "card", testid: "review-item", "data-id": item.id, "aria-label": `Review item: ${what}` },
    el("figure", {}, img),
    el(
      "div",
      { class: "card-body" },
      answerSummary(answer, "review-answer"),
      el(
        "p",
        { class: "muted small", testid: "review-meta" },
        `${item.device ?? "?"} · ${when(item.received_at)} · frame ${item.frame_id ?? "?"}`,
      ),
      topK(answer, "review-topk"),
      matchesList(answer, "review-matches"),
      form,
    ),
  );
  sizeBars(node);
  const card = { node, url: null };
  loadImage(img, `/v1/review/${enc(item.id)}/image`, `Photo of ${what}`).then((url) => {
    if (reviewCards.get(item.id) === card) card.url = url;
    else if (url) URL.revokeObjectURL(url);
  });

  const act = async (payload, verb) => {
    labelButton.disabled = dismissButton.disabled = true;
    try {
      const doc = await api(`/v1/review/${enc(item.id)}`, { method: "POST", json: payload });
      dropCard(item.id);
      const enrolment = doc && doc.enrolment;
      if (enrolment) track(String(enrolment), payload.label);
      say(
        payload.label
          ? `Labelled ${what} as ${payload.label}${enrolment ? `; enrolment ${enrolment} queued` : ""}.`
          : `Dismissed ${what}.`,
        "ok",
      );
      refreshNow();
    } catch (exc) {
      fail(`${verb} ${what}`, exc);
    } finally {
      labelButton.disabled = dismissButton.disabled = false;
    }
  };
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const product = input.value.trim();
    if (!product) {
      say("Type or pick a product to label with.", "error");
      return;
    }
    if (!catalog.has(product)) {
      try {
        await refreshCatalog(); // it may have been added since the last refresh
      } catch (exc) {
        fail("Reading the catalog", exc);
        return;
      }
      if (!catalog.has(product)) {
        say(`No product ${product} in the catalog: add it under "New product" first.`, "error");
        return;
      }
    }
    act({ label: product }, "Labelling");
  });
  dismissButton.addEventListener("click", () => act({ dismiss: true }, "Dismissing"));
  return card;
}

function dropCard(id) {
  const card = reviewCards.get(id);
  if (!card) return;
  card.node.remove();
  if (card.url) URL.revokeObjectURL(card.url);
  reviewCards.delete(id);
  $("review-empty").hidden = reviewCards.size > 0;
}

async function refreshReview() {
  let doc;
  try {
    doc = await api(`/v1/review?limit=${REVIEW_LIMIT}`);
  } catch (exc) {
    if (!(exc instanceof ApiError && exc.status === 403)) throw exc;
    // a token for enrolling or recognising only: say so in the panel, not on every refresh in the status line
    for (const id of [...reviewCards.keys()]) dropCard(id);
    $("review-empty").textContent = `This token may not see the review queue (403 forbidden: ${exc.message}).`;
    $("review-empty").hidden = false;
    $("count-review").textContent = "–";
    return;
  }
  $("review-empty").textContent = "Nothing to review.";
  const items = listOf(doc, "items").filter((item) => item && item.id && (!item.status || item.status === "open"));
  const keep = new Set(items.map((item) => item.id));
  for (const id of [...reviewCards.keys()]) if (!keep.has(id)) dropCard(id);
  // add new cards, keep existing ones untouched (an operator may be typing in one), newest first
  const list = $("review-list");
  let previous = null;
  for (const item of items) {
    let card = reviewCards.get(item.id);
    if (!card) {
      card = reviewCard(item);
      reviewCards.set(item.id, card);
    }
    const expected = previous ? previous.node.nextSibling : list.firstChild;
    if (card.node !== expected) list.insertBefore(card.node, expected);
    previous = card;
  }
  $("review-empty").hidden = items.length > 0;
  const total = doc && (doc.open ?? doc.total ?? doc.count);
  reviewCount = typeof total === "number" ? String(total) : `${items.length}${items.length >= REVIEW_LIMIT ? "+" : ""}`;
  $("count-review").textContent = reviewCount;
}

// ---------------------------------------------------------------- enrolments

const enrolments = new Map(); // id -> {product, doc}
let listingSupported = true; // GET /v1/enrolments (all recent ones, also from the CLI and devices), when served

function saveTracked() {
  const tracked = [...enrolments.entries()].slice(-MAX_ENROLMENTS_SHOWN).map(([id, e]) => ({ id, product: e.product }));
  sessionStorage.setItem(ENROLMENTS_KEY, JSON.stringify(tracked));
}

function loadTracked() {
  try {
    for (const { id, product } of JSON.parse(sessionStorage.getItem(ENROLMENTS_KEY) || "[]")) {
      if (typeof id === "string") enrolments.set(id, { product, doc: null });
    }
  } catch {
    sessionStorage.removeItem(ENROLMENTS_KEY);
  }
}

function track(id, product) {
  if (!enrolments.has(id)) enrolments.set(id, { product, doc: null });
  saveTracked();
  renderEnrolments();
  pollEnrolments();
}

function stateOf(entry) {
  return entry.doc && entry.doc.state ? String(entry.doc.state) : "queued";
}

function renderEnrolments() {
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

async function pollEnrolments() {
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

async function refreshEnrolmentListing() {
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

function parseExtra(text) {
  const trimmed = text.trim();
  if (!trimmed) return {};
  if (trimmed.startsWith("{")) {
    const parsed = JSON.parse(trimmed); // a SyntaxError is shown to the operator
    if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) throw new Error("not a JSON object");
    return parsed;
  }
  const extra = {};
  for (const [index, line] of trimmed.split("\n").entries()) {
    if (!line.trim()) continue;
    const at = line.indexOf(":");
    if (at < 1) throw new Error(`line ${index + 1} is not "key: value"`);
    extra[line.slice(0, at).trim()] = line.slice(at + 1).trim();
  }
  return extra;
}

function setupProductForm() {
  const form = $("product-form");
  const known = $("product-known");
  known.addEventListener("change", () => {
    for (const id of ["product-name", "product-category"]) {
      $(id).required = !known.checked;
      $(id).disabled = known.checked;
    }
    $("product-extra").disabled = known.checked;
  });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const product = $("product-id").value.trim();
    const files = [...$("product-photos").files];
    if (!files.length) {
      say("Choose one or more photos of the product.", "error");
      return;
    }
    const submit = form.querySelector("button[type=submit]");
    submit.disabled = true;
    try {
      if (!known.checked) {
        let extra;
        try {
          extra = parseExtra($("product-extra").value);
        } catch (exc) {
          say(`Further fields: ${exc.message}.`, "error");
          return;
        }
        const record = { ...extra, product, name: $("product-name").value.trim(), category: $("product-category").value.trim() };
        say(`Adding ${product} to the catalog…`, "busy");
        try {
          await api("/v1/products", { method: "POST", json: record });
          refreshCatalog().catch(() => {}); // the new product is a label the review queue may use now
        } catch (exc) {
          if (exc instanceof ApiError && exc.status === 409) {
            fail(`Adding ${product}`, exc);
            say(`${$("status").textContent} Tick "Known product" to add photos to it.`, "error");
            return;
          }
          throw exc;
        }
      }
      const body = new FormData();
      for (const file of files) body.append("photo", file, file.name);
      say(`Uploading ${files.length} photo(s) of ${product}…`, "busy");
      const doc = await api(`/v1/products/${enc(product)}/photos`, { method: "POST", body });
      track(String(doc.enrolment), product);
      say(`Enrolment ${doc.enrolment} of ${product} queued (${files.length} photo(s)).`, "ok");
      form.reset();
      known.dispatchEvent(new Event("change"));
    } catch (exc) {
      fail(`Enrolling ${product}`, exc);
    } finally {
      submit.disabled = false;
    }
  });
}

// ---------------------------------------------------------------- try a photo

function renderAnswer(box, doc) {
  const timings = doc.timings_ms && typeof doc.timings_ms === "object" ? doc.timings_ms : null;
  const total = timings && typeof timings.total === "number" ? ` · ${timings.total.toFixed(0)} ms` : "";
  box.replaceChildren(
    answerSummary(doc, "try-result"),
    el(
      "p",
      { class: "muted small" },
      `model ${doc.model ? `${doc.model.name} ${doc.model.version}` : "?"}${total}`,
      typeof doc.novelty === "number" ? ` · novelty ${num(doc.novelty)}` : "",
    ),
    topK(doc, "try-topk"),
    matchesList(doc, "try-matches"),
    el("details", {}, el("summary", {}, "Answer JSON"), el("pre", { testid: "try-json" }, JSON.stringify(doc, null, 2))),
  );
  sizeBars(box);
  box.hidden = false;
}

function setupTry() {
  const form = $("try-form");
  const box = $("try-answer");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const file = $("try-photo").files[0];
    if (!file) {
      say("Choose a photo to try.", "error");
      return;
    }
    const submit = form.querySelector("button[type=submit]");
    submit.disabled = true;
    say(`Recognising ${file.name}…`, "busy");
    try {
      const doc = await api(`/v1/recognize?device=${enc(DEVICE)}`, {
        method: "POST",
        body: file,
        contentType: file.type || "application/octet-stream",
      });
      renderAnswer(box, doc);
      say(doc.product ? `${file.name}: ${doc.status} as ${doc.product}.` : `${file.name}: ${doc.status}.`, "ok");
    } catch (exc) {
      box.replaceChildren(el("p", { class: "error-text", testid: "try-error" }, explain(`Recognising ${file.name}`, exc)));
      box.hidden = false;
      fail(`Recognising ${file.name}`, exc);
    } finally {
      submit.disabled = false;
    }
  });
}

// ---------------------------------------------------------------- model versions

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
let currentVersion = null;

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

async function refreshModels() {
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

// ---------------------------------------------------------------- refresh loop

let ticks = 0;
let timer = null;
let ticking = false; // one refresh at a time; a refresh asked for meanwhile runs right after it
let again = false;

async function tick() {
  clearTimeout(timer);
  if (ticking) {
    again = true;
    return;
  }
  ticking = true;
  try {
    await refreshAll();
  } finally {
    ticking = false;
  }
  timer = setTimeout(tick, again ? 0 : document.hidden ? 4 * REFRESH_MS : REFRESH_MS);
  again = false;
}

async function refreshAll() {
  const jobs = [
    ["Reading the review queue", refreshReview],
    ["Reading the model versions", refreshModels],
    ["Reading the enrolments", refreshEnrolmentListing],
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

function refreshNow() {
  clearTimeout(timer);
  timer = setTimeout(tick, 0);
}

function start() {
  setupToken();
  setupProductForm();
  setupTry();
  $("review-refresh").addEventListener("click", refreshNow);
  $("models-refresh").addEventListener("click", () => {
    modelsShown = "";
    refreshNow();
  });
  loadTracked();
  renderEnrolments();
  pollEnrolments();
  tick();
}

start();

// The review queue: frames the service could not name, or barely named, labelled with a product or dismissed.

import { ApiError, api, enc, listOf, loadImage } from "./api.js";
import { answerSummary, matchesList, sizeBars, topK } from "./answers.js";
import { catalog, refreshCatalog } from "./catalog.js";
import { $, el, nextId, when } from "./dom.js";
import { track } from "./enrolments.js";
import { refreshNow } from "./loop.js";
import { fail, say } from "./status.js";

const REVIEW_LIMIT = 48;

const reviewCards = new Map(); // item id -> {node, url}
export let reviewCount = null; // the open items, as the header shows them (null before the first read)

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

export async function refreshReview() {
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

// The review queue: frames the service could not name, or barely named, labelled with a product or dismissed.

import { ApiError, api, enc, listOf, loadImage } from "./api.js";
import { answerSummary, matchesList, sizeBars, topK } from "./answers.js";
import { catalog, refreshCatalog } from "./catalog.js";
import { $, el, nextId, pct, when } from "./dom.js";
import { track } from "./enrolments.js";
import { refreshNow } from "./loop.js";
import { fail, say } from "./status.js";

const REVIEW_LIMIT = 48; // clusters shown
const REVIEW_SCAN = 400; // the newest open items grouped into them (the API reads each item's record)
const MORE_THUMBS = 5; // a cluster's frames shown beside its most typical one

const reviewCards = new Map(); // cluster id -> {node, urls, items, input}
export let reviewCount = null; // the open items, as the header shows them (null before the first read)

function thumbnail(what, testid, size) {
  const kind = size === 112 ? "thumb" : "thumb small-thumb";
  return el("img", { class: kind, testid, alt: `Photo of ${what}`, width: size, height: size });
}

function clusterCard(cluster) {
  const answer = cluster.answer || {};
  const size = Number(cluster.size) || cluster.items.length;
  const frames = cluster.frame_ids || [];
  const inputId = nextId("label");
  const what = size > 1 ? `${size} look-alike frames from ${cluster.devices.join(", ")}` : `frame ${frames[0] ?? cluster.id} from ${cluster.devices[0] ?? "?"}`;
  const img = thumbnail(what, "review-thumb", 112);
  const others = cluster.items.filter((id) => id !== cluster.representative).slice(0, MORE_THUMBS);
  const more = others.map((id) => [id, thumbnail(`another of ${what}`, "review-thumb-more", 52)]);
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
    size > 1 ? `Dismiss all ${size}` : "Dismiss",
  );
  const guess = cluster.best_guess;
  const acceptButton = guess
    ? el(
        "button",
        { type: "button", testid: "review-accept", "data-product": guess.product, "aria-label": `Accept ${guess.product} for ${what}` },
        `Accept ${guess.product}`,
      )
    : null;
  const buttons = [labelButton, dismissButton, acceptButton].filter(Boolean);
  const form = el(
    "form",
    { class: "label-form", testid: "review-label-form" },
    el("label", { for: inputId, class: "small" }, size > 1 ? `Label all ${size} as` : "Label as"),
    input,
    labelButton,
    dismissButton,
  );
  const node = el(
    "li",
    { class: "card", testid: "review-item", "data-id": cluster.id, "data-size": size, "aria-label": `Review: ${what}` },
    el("figure", {}, img, more.length ? el("div", { class: "more-thumbs" }, more.map(([, thumb]) => thumb)) : null),
    el(
      "div",
      { class: "card-body" },
      answerSummary(answer, "review-answer"),
      size > 1
        ? el("p", { class: "small", testid: "review-cluster-size" }, `${size} frames alike, likely one product`)
        : null,
      el(
        "p",
        { class: "muted small", testid: "review-meta" },
        `${cluster.devices.join(", ") || "?"} · ${when(cluster.last_received_at)} · frame ${frames.slice(0, 3).join(", ")}${frames.length > 3 ? ", …" : ""}`,
      ),
      guess
        ? el(
            "p",
            { class: "small", testid: "review-guess" },
            `Best guess ${guess.product}: first for ${guess.frames} of ${size} frame(s), mean score ${pct(guess.mean_score)} `,
            acceptButton,
          )
        : null,
      topK(answer, "review-topk"),
      matchesList(answer, "review-matches"),
      form,
    ),
  );
  sizeBars(node);
  const card = { node, urls: [], items: cluster.items.join(","), input, busy: false };
  const show = (id, image, label) =>
    loadImage(image, `/v1/review/${enc(id)}/image`, label).then((url) => {
      if (reviewCards.get(cluster.id) === card) card.urls.push(url);
      else if (url) URL.revokeObjectURL(url);
    });
  show(cluster.representative, img, `Photo of ${what}`);
  for (const [id, thumb] of more) show(id, thumb, `another of ${what}`);

  const act = async (payload, verb) => {
    card.busy = true; // a refresh meanwhile keeps this card as it is
    for (const button of buttons) button.disabled = true;
    try {
      const doc = await api("/v1/review/batch", { method: "POST", json: { items: cluster.items, ...payload } });
      dropCard(cluster.id);
      const enrolment = doc && doc.enrolment;
      if (enrolment) track(String(enrolment), payload.label);
      const enrolled = doc && Array.isArray(doc.enrolled) ? doc.enrolled.length : 0;
      say(
        payload.label
          ? `Labelled ${what} as ${payload.label}${enrolment ? `; enrolment ${enrolment} of ${enrolled} photo(s) queued` : ""}.`
          : `Dismissed ${what}.`,
        "ok",
      );
      refreshNow();
    } catch (exc) {
      fail(`${verb} ${what}`, exc);
    } finally {
      card.busy = false;
      for (const button of buttons) button.disabled = false;
    }
  };
  const labelWith = async (product) => {
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
  };
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const product = input.value.trim();
    if (!product) {
      say("Type or pick a product to label with.", "error");
      return;
    }
    labelWith(product);
  });
  if (acceptButton) acceptButton.addEventListener("click", () => labelWith(guess.product));
  dismissButton.addEventListener("click", () => act({ dismiss: true }, "Dismissing"));
  return card;
}

function dropCard(id) {
  const card = reviewCards.get(id);
  if (!card) return;
  card.node.remove();
  for (const url of card.urls) if (url) URL.revokeObjectURL(url);
  reviewCards.delete(id);
  $("review-empty").hidden = reviewCards.size > 0;
}

// an API without numpy (the bridge image) cannot group: its items come one card each
const singleton = (item) => ({
  id: item.id,
  size: 1,
  items: [item.id],
  frame_ids: [item.frame_id],
  representative: item.id,
  best_guess: null,
  devices: [item.device ?? "?"],
  last_received_at: item.received_at,
  answer: item.answer,
});

async function groupedQueue() {
  try {
    return await api(`/v1/review?group=cluster&limit=${REVIEW_LIMIT}&scan=${REVIEW_SCAN}`);
  } catch (exc) {
    if (!(exc instanceof ApiError && exc.status === 503)) throw exc;
    const doc = await api(`/v1/review?limit=${REVIEW_LIMIT}`);
    const items = listOf(doc, "items");
    return { clusters: items.map(singleton), items_grouped: items.length, more_items: items.length >= REVIEW_LIMIT };
  }
}

export async function refreshReview() {
  let doc;
  try {
    doc = await groupedQueue();
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
  const clusters = listOf(doc, "clusters").filter((cluster) => cluster && cluster.id && Array.isArray(cluster.items));
  const keep = new Set(clusters.map((cluster) => cluster.id));
  for (const [id, card] of [...reviewCards.entries()]) if (!keep.has(id) && !card.busy) dropCard(id);
  // add new cards, rebuild those whose frames changed unless an operator is typing in one or acting on it, largest
  // first
  const list = $("review-list");
  let previous = null;
  for (const cluster of clusters) {
    let card = reviewCards.get(cluster.id);
    const typing = card && (card.busy || card.input.value || document.activeElement === card.input);
    if (card && card.items !== cluster.items.join(",") && !typing) {
      dropCard(cluster.id);
      card = undefined;
    }
    if (!card) {
      card = clusterCard(cluster);
      reviewCards.set(cluster.id, card);
    }
    const expected = previous ? previous.node.nextSibling : list.firstChild;
    if (card.node !== expected) list.insertBefore(card.node, expected);
    previous = card;
  }
  $("review-empty").hidden = clusters.length > 0;
  const items = typeof doc.items_grouped === "number" ? doc.items_grouped : clusters.reduce((n, c) => n + c.items.length, 0);
  reviewCount = `${items}${doc.more_items ? "+" : ""}`;
  $("count-review").textContent = reviewCount;
}

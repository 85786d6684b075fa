// Answers, as review items and "try a photo" show them: the verdict, the best products, the nearest photos.

import { productName } from "./catalog.js";
import { el, num, pct } from "./dom.js";

export function answerSummary(answer, testid) {
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

export function topK(answer, testid) {
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

export function matchesList(answer, testid) {
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
export function sizeBars(root) {
  for (const bar of root.querySelectorAll(".bar")) {
    const score = Math.max(0, Math.min(1, Number(bar.dataset.score) || 0));
    bar.firstChild.style.width = `${(100 * score).toFixed(1)}%`;
  }
}

// "Try a photo": one photo recognised as a camera's frame would be, its answer shown in full.

import { api, enc } from "./api.js";
import { answerSummary, matchesList, sizeBars, topK } from "./answers.js";
import { $, el, num } from "./dom.js";
import { explain, fail, say } from "./status.js";

const DEVICE = "operator-page"; // the device id "try a photo" sends frames as

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

export function setupTry() {
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
